"""Sampling (GPU): one job per batch of inputs of one variant, one model load, records per run."""


rule sample_batch:
    input:
        unpack(weights_inputs),
        samples=lambda wc: PLAN.batch_sample_inputs(batch_of(wc).units),
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
        # offload "seed" keeps every weight in host memory (bf16): Wan2.2 two 14B experts + umT5
        # + VAE ~ 69 GB, LTX-2.3 22B DiT + Gemma-3 12B + VAEs ~ 70 GB; plus activations. Measured
        # max RSS on the H200 rehearsal: Wan2.2 66.7 GiB, Wan2.1 46.2 GiB (benchmarks/RESULTS.md).
        mem_mb=lambda wc, attempt: 96000 * attempt,
        runtime=batch_minutes("sample"),
    params:
        family=lambda wc: family(wc.variant),
        weights=lambda wc: model_dir(variant_model(wc)),
        sources=lambda wc: model_sources(variant_model(wc)),
        loras=lambda wc: lora_params(wc.variant),
        device=config["device"],
        members=members_of("sample"),
        bench_plan=PLAN.bench_plan(),
    script:
        "../workflow/scripts/sample_batch.py"
