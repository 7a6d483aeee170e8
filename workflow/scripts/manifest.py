"""Snakemake entry point: scan the bench into the manifest and the manifest-errors table."""

from stepscope.jobs.runs import write_manifest
from stepscope.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    write_manifest(
        snakemake.params.bench,
        list(snakemake.params.splits),
        list(snakemake.params.task_globs),
        snakemake.params.max_samples,
        snakemake.output.manifest,
        snakemake.output.errors,
    )
