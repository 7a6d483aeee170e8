"""CPU rules: every figure and stepscope-proxy score from stored records (no model, no GPU, no re-sampling)."""


rule analysis_batch:
    input:
        unpack(lambda wc: PLAN.analysis_inputs(batch_of(wc))),
    output:
        receipt=receipt_pattern("analysis"),
        figures=report(
            directory(results("report/figures/{variant}/{batch}")),
            patterns=["{split}/{task}/{sample}/{run}/{name}.png"],
            caption="../report/run_figures.rst",
            category="Token analysis: {variant}",
            subcategory="{split} / {task}",
            labels={"sample": "{sample}", "run": "{run}", "figure": "{name}"},
        ),
        sheets=report(
            directory(results("report/sheets/{variant}/{batch}")),
            patterns=["{split}/{task}/{sample}/{run}.png"],
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
    log:
        results("logs/analysis/{variant}/{batch}.log"),
    benchmark:
        results("benchmarks/analysis/{variant}/{batch}.tsv")
    conda:
        "../envs/cpu.yaml"
    resources:
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=batch_minutes("analysis"),
    params:
        layers=PLAN.figure_layers(),
        steps=config["figures"]["steps"],
        max_frames=config["figures"]["max_frames"],
        members=members_of("analysis"),
        divergences=lambda wc: [
            item.as_params() for item in PLAN.divergence_items(batch_of(wc))
        ],
    script:
        "../workflow/scripts/analysis_batch.py"


rule group_figures:
    input:
        lambda wc: PLAN.group_receipts(*group_key(wc)),
    output:
        report(
            directory(FIGURE_GROUP_DIR),
            patterns=["{name}.png"],
            caption="../report/group_figures.rst",
            category="Across samples: {variant}",
            subcategory="{split} / {task}",
            labels={"figure": "{name}"},
        ),
    log:
        results("logs/figures/groups/{variant}/{split}/{task}.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        layers=PLAN.figure_layers(),
        run_dirs=lambda wc: PLAN.group_run_dirs(*group_key(wc)),
    script:
        "../workflow/scripts/group_figures.py"
