"""Snakemake entry point: merge scores; accuracy tables; Chain-of-Steps figures."""

from pathlib import Path

from stepscope.analysis_jobs import tables_job
from stepscope.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    tables_job(
        score_tables=list(snakemake.input.scores),
        divergence_tables=list(snakemake.input.divergence),
        run_for_schedule=dict(snakemake.params.schedules),
        metric=snakemake.params.metric,
        out_scores=snakemake.output.scores,
        out_dir=str(Path(snakemake.output.summary).parent),
        figure_dir=snakemake.output.figures,
    )
