"""Snakemake entry point: decode chosen steps' x0_hat of one run."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # compute jobs never reach the hub; downloads are separate rules

from pathlib import Path

from stepscope.jobs import decode_job
from stepscope.logs import redirect_to_log
from stepscope.models import limit_cpu_threads

with redirect_to_log(snakemake.log[0]):
    limit_cpu_threads(snakemake.threads)
    decode_job(
        family=snakemake.params.family,
        weights_dir=snakemake.params.weights,
        run_dir=str(Path(snakemake.input.meta).parent),
        steps=snakemake.params.steps,
        out_dir=snakemake.output.videos,
        sheet_frames=snakemake.params.sheet_frames,
        device=dict(snakemake.params.device),
        sheet=snakemake.output.sheet,
        summary=snakemake.output.summary,
    )
