"""Step decoding (GPU): the chosen steps' x0_hat to step videos and a contact sheet.

Changing decode.steps reruns these jobs and what reads them, never sampling.
"""


rule decode_steps:
    input:
        unpack(weights_inputs),
        steps=under(RUN_DIR, "steps.safetensors"),
        meta=under(RUN_DIR, "meta.json"),
    output:
        videos=directory(under(DECODED_DIR, "steps")),
        sheet=report(
            under(DECODED_DIR, "contact_sheet.png"),
            caption="../report/contact_sheet.rst",
            category="Step decoding",
            subcategory="{variant}",
            labels={
                "split": "{split}",
                "task": "{task}",
                "sample": "{sample}",
                "run": "{run}",
            },
        ),
        summary=under(DECODED_DIR, "decoded.json"),
    log:
        results("logs/decode/{variant}/{split}/{task}/{sample}/{run}.log"),
    benchmark:
        results("benchmarks/decode/{variant}/{split}/{task}/{sample}/{run}.tsv")
    conda:
        "../envs/gpu.yaml"
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: 32000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
    params:
        family=lambda wc: family(wc.variant),
        weights=lambda wc: model_dir(config["variants"][wc.variant]["model"]),
        steps=config["decode"]["steps"],
        sheet_frames=config["decode"]["sheet_frames"],
        device=config["device"],
    script:
        "../workflow/scripts/decode_steps.py"
