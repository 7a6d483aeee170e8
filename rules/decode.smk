"""Step decoding (GPU, the VAE only): one job per batch; step videos and a contact sheet per run.

Changing decode.steps reruns these jobs and what reads them, never sampling.
"""


rule decode_batch:
    input:
        unpack(weights_inputs),
        runs=receipt_of("sample"),
    output:
        receipt_pattern("decode"),
    log:
        results("logs/decode/{variant}/{batch}.log"),
    benchmark:
        results("benchmarks/decode/{variant}/{batch}.tsv")
    conda:
        "../envs/gpu.yaml"
    resources:
        gpu=1,
        # the VAE only: 2.4 GB max RSS measured (Wan, 1024x1024, H200 rehearsal)
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=batch_minutes("decode"),
    params:
        family=lambda wc: family(wc.variant),
        weights=lambda wc: model_dir(variant_model(wc)),
        steps=PLAN.decode_steps,
        sheet_frames=config["decode"]["sheet_frames"],
        tiled=config["decode"]["tiled"],
        device=config["device"],
        members=members_of("decode"),
    script:
        "../workflow/scripts/decode_batch.py"
