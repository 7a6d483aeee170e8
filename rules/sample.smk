"""Sampling (GPU): one job per batch of inputs of one variant, one model load, records per run."""


rule sample_batch:
    input:
        unpack(weights_inputs),
        samples=batch_sample_inputs,
    output:
        receipt_pattern("sample"),
    log:
        results("logs/sample/{variant}/{batch}.log"),
    benchmark:
        results("benchmarks/sample/{variant}/{batch}.tsv")
    conda:
        "../envs/gpu.yaml"
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: 48000 * attempt,
        runtime=batch_minutes("sample"),
    params:
        family=lambda wc: family(wc.variant),
        weights=lambda wc: model_dir(config["variants"][wc.variant]["model"]),
        loras=lambda wc: lora_params(wc.variant),
        device=config["device"],
        members=sample_members,
        bench_plan=bench_plan(),
    script:
        "../workflow/scripts/sample_batch.py"
