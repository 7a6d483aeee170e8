"""Snakemake entry point: one probe's tables (Parquet + CSV summary) and figures over all its runs."""

from stepscope.logs import redirect_to_log
from stepscope.probes.tables import probe_table_job

with redirect_to_log(snakemake.log[0]):
    probe_table_job(
        kind=snakemake.wildcards.probe,
        probe_dirs=list(snakemake.input),
        metric=snakemake.params.metric,
        out_table=snakemake.output.table,
        out_summary=snakemake.output.summary,
        figure_dir=snakemake.output.figures,
    )
