"""CPU rules: every figure from stored records (no model, no GPU, no re-sampling)."""


rule run_figures:
    input:
        maps=under(RUN_DIR, "activations.npz"),
        table=under(RUN_DIR, "activations.parquet"),
        schedule=under(RUN_DIR, "schedule.parquet"),
        meta=under(RUN_DIR, "meta.json"),
    output:
        report(
            directory(FIGURE_RUN_DIR),
            patterns=["{name}.png"],
            caption="../report/run_figures.rst",
            category="Token analysis: {variant}",
            subcategory="{split} / {task}",
            labels={"sample": "{sample}", "run": "{run}", "figure": "{name}"},
        ),
    log:
        results("logs/figures/runs/{variant}/{split}/{task}/{sample}/{run}.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        layers=figure_layers(),
        steps=config["figures"]["steps"],
    script:
        "../workflow/scripts/run_figures.py"


rule group_figures:
    input:
        runs=lambda wc: [f"{run}/meta.json" for run in group_runs(wc)],
        maps=lambda wc: [f"{run}/activations.npz" for run in group_runs(wc)],
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
        layers=figure_layers(),
    script:
        "../workflow/scripts/group_figures.py"
