"""Snakemake entry point: decode the chosen steps of one batch's runs (one VAE load)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # compute jobs never reach the hub; downloads are separate rules

from stepscope.jobs.batches import run_decode_batch
from stepscope.logs import redirect_to_log
from stepscope.models.loading import limit_cpu_threads

with redirect_to_log(snakemake.log[0]):
    limit_cpu_threads(snakemake.threads)
    run_decode_batch(
        family=snakemake.params.family,
        weights_dir=snakemake.params.weights,
        device=dict(snakemake.params.device),
        steps=snakemake.params.steps,
        sheet_frames=snakemake.params.sheet_frames,
        tiled=snakemake.params.tiled,
        members=list(snakemake.params.members),
        receipt=snakemake.output[0],
        variant=snakemake.wildcards.variant,
    )
