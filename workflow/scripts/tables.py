"""Snakemake entry point: merge scores; accuracy tables; Chain-of-Steps figures; failed runs."""

from pathlib import Path

from stepscope.jobs.analysis import tables_job
from stepscope.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    tables_job(
        receipts=list(snakemake.input.receipts),
        extra_score_tables=list(snakemake.input.evalkit),
        metric=snakemake.params.metric,
        out_scores=snakemake.output.scores,
        out_dir=str(Path(snakemake.output.summary).parent),
        figure_dir=snakemake.output.figures,
    )
