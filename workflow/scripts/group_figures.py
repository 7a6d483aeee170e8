"""Snakemake entry point: figures across the samples and seeds of one variant x task."""

from pathlib import Path

from stepscope.logs import redirect_to_log
from stepscope.plots.figures import render_group_figures
from stepscope.records import is_complete

with redirect_to_log(snakemake.log[0]):
    # Runs that failed have no records; the group is drawn from the ones that exist.
    run_dirs = [Path(path) for path in snakemake.params.run_dirs if is_complete(path)]
    Path(snakemake.output[0]).mkdir(parents=True, exist_ok=True)
    if run_dirs:
        render_group_figures(run_dirs, snakemake.output[0], layers=snakemake.params.layers)
    else:
        print("no run of this group has records: nothing to draw")
