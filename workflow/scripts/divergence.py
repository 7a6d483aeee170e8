"""Snakemake entry point: cross-seed divergence of x0_hat per step for one sample."""

from stepscope.analysis_jobs import divergence_job
from stepscope.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    divergence_job(
        run_dirs=[path.rsplit("/", 1)[0] for path in snakemake.input],
        labels=dict(snakemake.params.labels),
        out=snakemake.output[0],
    )
