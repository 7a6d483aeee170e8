"""Snakemake entry point: figures, stepscope-proxy scores and cross-seed divergence of one batch's runs."""

from stepscope.jobs.batches import run_analysis_batch
from stepscope.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    run_analysis_batch(
        layers=snakemake.params.layers,
        steps=snakemake.params.steps,
        max_frames=snakemake.params.max_frames,
        members=list(snakemake.params.members),
        divergences=list(snakemake.params.divergences),
        receipt=snakemake.output.receipt,
        variant=snakemake.wildcards.variant,
        report_figures=snakemake.output.figures,
        report_sheets=snakemake.output.sheets,
    )
