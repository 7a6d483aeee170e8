"""The paper's probes (docs/probes.md): one GPU job per probe x variant x sample runs the whole sweep
with one model load; one CPU job per probe scores and compares the runs into tables and figures.
"""


rule probe:
    input:
        unpack(weights_inputs),
        sample=probe_sample_inputs,
    output:
        directory(PROBE_DIR),
    log:
        results("logs/probes/{probe}/{variant}/{split}/{task}/{sample}.log"),
    benchmark:
        results("benchmarks/probes/{probe}/{variant}/{split}/{task}/{sample}.tsv")
    conda:
        "../envs/gpu.yaml"
    resources:
        gpu=1,
        # offload "seed" keeps every weight in host memory (bf16): Wan2.2 two 14B experts + umT5
        # + VAE ~ 69 GB, LTX-2.3 22B DiT + Gemma-3 12B + VAEs ~ 70 GB; plus activations. Measured
        # max RSS of a Wan2.2 noise_frame probe job on the H200 rehearsal: 66.5 GiB.
        mem_mb=lambda wc, attempt: 96000 * attempt,
        runtime=lambda wc, attempt: 1440 * attempt,
    params:
        family=lambda wc: family(wc.variant),
        weights=lambda wc: model_dir(config["variants"][wc.variant]["model"]),
        sources=lambda wc: model_sources(config["variants"][wc.variant]["model"]),
        loras=lambda wc: lora_params(wc.variant),
        source=sample_source,
        swap_source=probe_swap_source,
        settings=run_settings,
        record=config["record"],
        seed=probe_seed(),
        spec=lambda wc: PROBES[wc.probe],
        device=config["device"],
    script:
        "../workflow/scripts/probe_run.py"


rule probe_table:
    input:
        probe_dirs,
    output:
        table=PROBE_TABLE,
        summary=report(
            PROBE_SUMMARY,
            caption="../report/probes.rst",
            category="Probes",
            subcategory="{probe}",
            labels={"probe": "{probe}", "file": "summary table"},
        ),
        figures=report(
            directory(PROBE_FIGURES),
            patterns=["{name}.png"],
            caption="../report/probes.rst",
            category="Probes",
            subcategory="{probe}",
            labels={"probe": "{probe}", "file": "{name}"},
        ),
    log:
        results("logs/probes/tables/{probe}.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        metric=config["scoring"]["metric"],
    script:
        "../workflow/scripts/probe_table.py"
