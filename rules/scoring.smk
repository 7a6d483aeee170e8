"""CPU rules: the VBVR-Bench scorer on the videos tree, accuracy tables, and the failure check.

Builtin scores per run and the cross-seed divergence are written by the analysis batches
(rules/figures.smk); the tables pool what their receipts list.
"""


rule score_evalkit:
    input:
        lambda wc: PLAN.receipts("sample"),
    output:
        results("scores/evalkit.parquet"),
    log:
        results("logs/score_evalkit.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        videos_root=lambda wc: results("videos"),
        bench=lambda wc: PLAN.bench_root(),
        module=config["scoring"]["evalkit_module"],
        model_map=PLAN.evalkit_model_map(),
    script:
        "../workflow/scripts/score_evalkit.py"


rule tables:
    input:
        receipts=lambda wc: PLAN.receipts("analysis"),
        evalkit=PLAN.evalkit_tables(),
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
        failures=report(
            results("tables/failures.csv"),
            caption="../report/failures.rst",
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
    script:
        "../workflow/scripts/tables.py"


rule check_failures:
    input:
        results("tables/failures.csv"),
    output:
        touch(results("tables/all_runs_succeeded")),
    log:
        results("logs/check_failures.log"),
    localrule: True
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow/scripts/check_failures.py"
