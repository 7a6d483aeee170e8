"""Snakemake entry point: download a Hugging Face repo snapshot (allow patterns only), resumably."""

from stepscope.logs import redirect_to_log
from stepscope.models.hub import download_snapshot

with redirect_to_log(snakemake.log[0]):
    download_snapshot(
        repo_id=snakemake.params.repo_id,
        revision=snakemake.wildcards.revision,
        repo_type=snakemake.params.repo_type,
        allow_patterns=list(snakemake.params.allow_patterns),
        marker=snakemake.output[0],
    )
