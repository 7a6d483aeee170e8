"""Snakemake entry point: figures across the samples and seeds of one variant x task."""

from pathlib import Path

from stepscope.figures import render_group_figures
from stepscope.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    run_dirs = [Path(path).parent for path in snakemake.input.runs]
    render_group_figures(run_dirs, snakemake.output[0], layers=snakemake.params.layers)
