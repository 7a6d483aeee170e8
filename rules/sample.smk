"""GPU jobs: one per variant x split x task x sample x seed (or ensemble), writing the core's records."""


def weights_inputs(wildcards):
    variant = config["variants"][wildcards.variant]
    return {"weights": model_marker(variant["model"]), "loras": lora_files(wildcards.variant)}


rule sample:
    input:
        unpack(weights_inputs),
        sample=sample_inputs,
    output:
        **{name.replace(".", "_"): RUN_DIR + "/" + name for name in RECORDS},
    params:
        family=lambda wc: family(wc.variant),
        weights=lambda wc: model_dir(config["variants"][wc.variant]["model"]),
        loras=lambda wc: lora_params(wc.variant),
        source=sample_source,
        settings=run_settings,
        record=config["record"],
        seeds=run_seeds,
        ensemble=lambda wc: None if wc.run.startswith("seed") else wc.run,
        device=config["device"],
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: 48000 * attempt,
        runtime=lambda wc, attempt: 120 * attempt,
    log:
        RESULTS + "/logs/sample/{variant}/{split}/{task}/{sample}/{run}.log",
    benchmark:
        RESULTS + "/benchmarks/sample/{variant}/{split}/{task}/{sample}/{run}.tsv"
    conda:
        "../envs/gpu.yaml"
    script:
        "../workflow/scripts/sample.py"


def video_source(wildcards):
    """The run whose final video a scorer-layout path stands for."""
    for variant in config["run_variants"]:
        for run in SEED_RUNS + ENSEMBLE_RUNS:
            if video_model_name(variant, run) == wildcards.model:
                return run_path(RUN_DIR + "/video.mp4", variant=variant, run=run, **dict(wildcards.items()))
    raise ValueError(f"no run is laid out as videos/{wildcards.model}")


rule final_video_layout:
    input:
        video_source,
    output:
        RESULTS + "/videos/{model}/{split}/{task}/{sample}.mp4",
    localrule: True
    log:
        RESULTS + "/logs/videos/{model}/{split}/{task}/{sample}.log",
    shell:
        # A hard link is atomic and costs no copy; across file systems, copy then rename.
        "(ln -f {input} {output} || (cp {input} {output}.tmp && mv {output}.tmp {output})) > {log} 2>&1"
