"""The bench: generated (demo) or downloaded; and its manifest with per-sample problems."""


rule demo_bench:
    output:
        resources("demo-bench/.stepscope_source.json"),
    log:
        results("logs/bench/demo_bench.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        splits=config["bench"]["splits"],
        tasks_per_split=lambda wc: int(TASKS.groupby("split").size().max()),
        samples_per_task=config["bench"]["samples_per_task"],
        size=config["bench"]["demo_size"],
        num_frames=config["bench"]["demo_frames"],
    script:
        "../workflow/scripts/demo_bench.py"


rule manifest:
    input:
        lambda wc: PLAN.manifest_inputs(),
    output:
        manifest=results("manifest.parquet"),
        errors=results("manifest_errors.parquet"),
    log:
        results("logs/manifest.log"),
    conda:
        "../envs/cpu.yaml"
    params:
        bench=lambda wc: PLAN.bench_root(),
        splits=config["bench"]["splits"],
        task_globs=config["bench"]["task_globs"],
        max_samples=config["bench"]["samples_per_task"],
    script:
        "../workflow/scripts/manifest.py"
