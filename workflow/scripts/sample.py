"""Snakemake entry point: sample one input for one variant and write its records."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # compute jobs never reach the hub; downloads are separate rules

from stepscope.jobs import sample_job
from stepscope.logs import redirect_to_log
from stepscope.models import limit_cpu_threads

with redirect_to_log(snakemake.log[0]):
    limit_cpu_threads(snakemake.threads)
    wc = snakemake.wildcards
    sample_job(
        family=snakemake.params.family,
        weights_dir=snakemake.params.weights,
        loras=list(snakemake.params.loras),
        source=dict(snakemake.params.source),
        settings=dict(snakemake.params.settings),
        record=dict(snakemake.params.record),
        seeds=list(snakemake.params.seeds),
        out_dirs=[snakemake.output.meta_json.rsplit("/", 1)[0]],
        ensemble=snakemake.params.ensemble,
        device=dict(snakemake.params.device),
        labels={
            "variant": wc.variant,
            "split": wc.split,
            "task": wc.task,
            "sample": wc.sample,
            "run": wc.run,
        },
    )
