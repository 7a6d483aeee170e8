"""Snakemake entry point: builtin scores of one run's final video and decoded step videos."""

from stepscope.analysis_jobs import score_run_job
from stepscope.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    score_run_job(
        run_dir=snakemake.input.video.rsplit("/", 1)[0],
        decoded_summary=snakemake.input.decoded,
        sample_dir=snakemake.params.sample_dir,
        labels=dict(snakemake.params.labels),
        out=snakemake.output[0],
    )
