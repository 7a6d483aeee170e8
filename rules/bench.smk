"""The bench: generated (demo) or downloaded; and its manifest with per-sample problems."""


rule demo_bench:
    output:
        RESOURCES + "/demo-bench/.stepscope_source.json",
    params:
        splits=config["bench"]["splits"],
        tasks_per_split=lambda wc: int(TASKS.groupby("split").size().max()),
        samples_per_task=config["bench"]["samples_per_task"],
        size=config["bench"]["demo_size"],
        num_frames=config["bench"]["demo_frames"],
    log:
        "logs/bench/demo_bench.log",
    script:
        "../workflow/scripts/demo_bench.py"


rule manifest:
    input:
        bench_marker(),
    output:
        manifest=RESULTS + "/manifest.parquet",
        errors=RESULTS + "/manifest_errors.parquet",
    params:
        bench=bench_root(),
        splits=config["bench"]["splits"],
        task_globs=config["bench"]["task_globs"],
        max_samples=config["bench"]["samples_per_task"],
    log:
        RESULTS + "/logs/manifest.log",
    script:
        "../workflow/scripts/manifest.py"
