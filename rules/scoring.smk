"""CPU rules: builtin scores per run and per decoded step, cross-seed divergence, accuracy tables."""


rule score_run:
    input:
        video=under(RUN_DIR, "video.mp4"),
        decoded=under(DECODED_DIR, "decoded.json"),
        sample=sample_inputs,
    output:
        SCORE_TABLE,
    log:
        results("logs/score/{variant}/{split}/{task}/{sample}/{run}.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        sample_dir=lambda wc: sample_source(wc)["sample_dir"],
        labels=lambda wc: dict(wc.items()),
    script:
        "../workflow/scripts/score_run.py"


rule divergence:
    input:
        lambda wc: [
            run_path(under(RUN_DIR, "steps.safetensors"), run=run, **dict(wc.items()))
            for run in SEED_RUNS
        ],
    output:
        DIVERGENCE_TABLE,
    log:
        results("logs/divergence/{variant}/{split}/{task}/{sample}.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        labels=lambda wc: dict(wc.items()),
    script:
        "../workflow/scripts/divergence.py"


rule score_evalkit:
    input:
        [final_video(**run) for run in scored_runs()],
    output:
        results("scores/evalkit.parquet"),
    log:
        results("logs/score_evalkit.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        videos_root=lambda wc: results("videos"),
        bench=lambda wc: bench_root(),
        module=config["scoring"]["evalkit_module"],
        model_map={
            video_model_name(v, r): (v, seed_label(r))
            for v in config["run_variants"]
            for r in SEED_RUNS + ENSEMBLE_RUNS
        },
    script:
        "../workflow/scripts/score_evalkit.py"


rule tables:
    input:
        scores=[run_path(SCORE_TABLE, **run) for run in scored_runs()]
        + evalkit_tables(),
        divergence=[
            run_path(DIVERGENCE_TABLE, **group) for group in divergence_groups()
        ],
    output:
        scores=results("tables/scores.parquet"),
        summary=report(
            results("tables/summary.csv"),
            caption="../report/summary.rst",
            category="Tables",
        ),
        summary_md=results("tables/summary.md"),
        ablation=report(
            results("tables/ablation.csv"),
            caption="../report/ablation.rst",
            category="Tables",
        ),
        figures=report(
            directory(results("figures/chain_of_steps")),
            patterns=["{name}.png"],
            caption="../report/chain_of_steps.rst",
            category="Chain-of-Steps",
        ),
    log:
        results("logs/tables.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        metric=config["scoring"]["metric"],
        schedules=lambda wc: {
            variant: run_path(
                RUN_DIR,
                variant=variant,
                run=SEED_RUNS[0],
                **dict(zip(("split", "task", "sample"), next(inputs()))),
            )
            for variant in config["run_variants"]
        },
    script:
        "../workflow/scripts/tables.py"
