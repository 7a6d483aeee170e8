"""GPU jobs: one per variant x split x task x sample x seed (or ensemble), writing the core's records."""


rule sample:
    input:
        unpack(weights_inputs),
        sample=sample_inputs,
    output:
        **{name.replace(".", "_"): under(RUN_DIR, "") + name for name in RECORDS},
    log:
        results("logs/sample/{variant}/{split}/{task}/{sample}/{run}.log"),
    benchmark:
        results("benchmarks/sample/{variant}/{split}/{task}/{sample}/{run}.tsv")
    conda:
        "../envs/gpu.yaml"
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: 48000 * attempt,
        runtime=lambda wc, attempt: 120 * attempt,
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
    script:
        "../workflow/scripts/sample.py"


rule final_video_layout:
    input:
        video_source,
    output:
        results("videos/{model}/{split}/{task}/{sample}.mp4"),
    log:
        results("logs/videos/{model}/{split}/{task}/{sample}.log"),
    localrule: True
    conda:
        "../envs/cpu.yaml"
    shell:
        # A hard link is atomic and costs no copy; across file systems, copy then rename.
        "(ln -f {input} {output} || (cp {input} {output}.tmp && mv {output}.tmp {output})) > {log} 2>&1"
