"""CPU rules: builtin scores per run and per decoded step, cross-seed divergence, accuracy tables."""

SCORE_TABLE = RESULTS + "/scores/runs/{variant}/{split}/{task}/{sample}/{run}.parquet"
DIVERGENCE_TABLE = RESULTS + "/scores/divergence/{variant}/{split}/{task}/{sample}.parquet"


def scored_runs():
    """Runs with a ground truth to score against (bench samples, not custom inputs)."""
    return [run for run in all_runs() if run["split"] != CUSTOM_SPLIT]


def divergence_groups():
    """(variant, split, task, sample) with at least two seeds to compare."""
    if len(SEED_RUNS) < 2:
        return []
    groups = {(r["variant"], r["split"], r["task"], r["sample"]) for r in scored_runs()}
    return [dict(zip(("variant", "split", "task", "sample"), group)) for group in sorted(groups)]


rule score_run:
    input:
        video=RUN_DIR + "/video.mp4",
        decoded=DECODED_DIR + "/decoded.json",
        sample=sample_inputs,
    output:
        SCORE_TABLE,
    params:
        sample_dir=lambda wc: sample_source(wc)["sample_dir"],
        labels=lambda wc: dict(wc.items()),
    log:
        RESULTS + "/logs/score/{variant}/{split}/{task}/{sample}/{run}.log",
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow/scripts/score_run.py"


rule divergence:
    input:
        lambda wc: [run_path(RUN_DIR + "/steps.safetensors", run=run, **dict(wc.items())) for run in SEED_RUNS],
    output:
        DIVERGENCE_TABLE,
    params:
        labels=lambda wc: dict(wc.items()),
    log:
        RESULTS + "/logs/divergence/{variant}/{split}/{task}/{sample}.log",
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow/scripts/divergence.py"


rule tables:
    input:
        scores=[run_path(SCORE_TABLE, **run) for run in scored_runs()],
        divergence=[run_path(DIVERGENCE_TABLE, **group) for group in divergence_groups()],
    output:
        scores=RESULTS + "/tables/scores.parquet",
        summary=report(
            RESULTS + "/tables/summary.csv",
            caption="../report/summary.rst",
            category="Tables",
        ),
        summary_md=RESULTS + "/tables/summary.md",
        ablation=report(
            RESULTS + "/tables/ablation.csv",
            caption="../report/ablation.rst",
            category="Tables",
        ),
        figures=report(
            directory(RESULTS + "/figures/chain_of_steps"),
            patterns=["{name}.png"],
            caption="../report/chain_of_steps.rst",
            category="Chain-of-Steps",
        ),
    params:
        metric=config["scoring"]["metric"],
        schedules=lambda wc: {
            variant: run_path(RUN_DIR, variant=variant, run=SEED_RUNS[0], **dict(zip(("split", "task", "sample"), next(inputs()))))
            for variant in config["run_variants"]
        },
    log:
        RESULTS + "/logs/tables.log",
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow/scripts/tables.py"
