"""Snakemake entry point: sample the runs of one batch that are not up to date (one model load)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # compute jobs never reach the hub; downloads are separate rules

from stepscope.jobs.batches import run_sample_batch
from stepscope.logs import redirect_to_log
from stepscope.models.loading import limit_cpu_threads

with redirect_to_log(snakemake.log[0]):
    limit_cpu_threads(snakemake.threads)
    run_sample_batch(
        family=snakemake.params.family,
        weights_dir=snakemake.params.weights,
        sources=dict(snakemake.params.sources),
        loras=list(snakemake.params.loras),
        device=dict(snakemake.params.device),
        members=list(snakemake.params.members),
        receipt=snakemake.output[0],
        variant=snakemake.wildcards.variant,
        bench_plan=dict(snakemake.params.bench_plan),
    )
