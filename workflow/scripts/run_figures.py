"""Snakemake entry point: the per-run figure set from one run's records."""

from pathlib import Path

from stepscope.figures import render_run_figures
from stepscope.logs import redirect_to_log
from stepscope.records import RunRecords
from stepscope.stepspec import parse_steps

with redirect_to_log(snakemake.log[0]):
    run_dir = Path(snakemake.input.meta).parent
    captured = RunRecords(run_dir).captured_steps
    wanted = parse_steps(snakemake.params.steps)
    steps = None if wanted is None else [step for step in captured if step in wanted] or None
    render_run_figures(run_dir, snakemake.output[0], layers=snakemake.params.layers, steps=steps)
