"""CPU rules: every figure from stored records (no model, no GPU, no re-sampling)."""

FIGURE_RUN_DIR = RESULTS + "/figures/runs/{variant}/{split}/{task}/{sample}/{run}"
FIGURE_GROUP_DIR = RESULTS + "/figures/groups/{variant}/{split}/{task}"


def figure_layers():
    layers = config["figures"]["layers"]
    return None if layers == "all" else list(layers)


def group_runs(wildcards):
    """Every single-seed run of one variant x task (the samples x seeds a group figure pools)."""
    return [
        run_path(RUN_DIR, variant=wildcards.variant, split=wildcards.split, task=wildcards.task, sample=sample, run=run)
        for sample in (["00000"] if wildcards.split == CUSTOM_SPLIT else SAMPLES)
        for run in SEED_RUNS
    ]


def figure_groups():
    return sorted({(r["variant"], r["split"], r["task"]) for r in all_runs()})


rule run_figures:
    input:
        maps=RUN_DIR + "/activations.npz",
        table=RUN_DIR + "/activations.parquet",
        schedule=RUN_DIR + "/schedule.parquet",
        meta=RUN_DIR + "/meta.json",
    output:
        report(
            directory(FIGURE_RUN_DIR),
            patterns=["{name}.png"],
            caption="../report/run_figures.rst",
            category="Token analysis: {variant}",
            subcategory="{split} / {task}",
            labels={"sample": "{sample}", "run": "{run}", "figure": "{name}"},
        ),
    params:
        layers=figure_layers(),
        steps=config["figures"]["steps"],
    log:
        RESULTS + "/logs/figures/runs/{variant}/{split}/{task}/{sample}/{run}.log",
    conda:
        "../envs/cpu.yaml"
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
    params:
        layers=figure_layers(),
    log:
        RESULTS + "/logs/figures/groups/{variant}/{split}/{task}.log",
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow/scripts/group_figures.py"
