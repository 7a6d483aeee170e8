"""Snakemake entry point: generate the VBVR-format demo bench; the marker file is written last."""

from pathlib import Path

from stepscope.atomic import write_json
from stepscope.bench import generate_demo_bench
from stepscope.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    params = snakemake.params
    root = generate_demo_bench(
        Path(snakemake.output[0]).parent,
        splits=params.splits,
        tasks_per_split=params.tasks_per_split,
        samples_per_task=params.samples_per_task,
        size=params.size,
        num_frames=params.num_frames,
    )
    write_json(snakemake.output[0], {"source": "stepscope demo bench", **dict(params.items())})
