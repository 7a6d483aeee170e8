"""Snakemake entry point: one probe's whole sweep on one variant x sample (one model load)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # compute jobs never reach the hub; downloads are separate rules

from stepscope.logs import redirect_to_log
from stepscope.models.loading import limit_cpu_threads
from stepscope.probes.job import probe_job

with redirect_to_log(snakemake.log[0]):
    limit_cpu_threads(snakemake.threads)
    wc = snakemake.wildcards
    swap_source = snakemake.params.swap_source
    probe_job(
        kind=wc.probe,
        family=snakemake.params.family,
        weights_dir=snakemake.params.weights,
        sources=dict(snakemake.params.sources),
        loras=list(snakemake.params.loras),
        source=dict(snakemake.params.source),
        settings=dict(snakemake.params.settings),
        record=dict(snakemake.params.record),
        seed=int(snakemake.params.seed),
        spec=dict(snakemake.params.spec),
        out_dir=snakemake.output[0],
        device=dict(snakemake.params.device),
        labels={"variant": wc.variant, "split": wc.split, "task": wc.task, "sample": wc.sample},
        swap_source=dict(swap_source) if swap_source else None,
    )
