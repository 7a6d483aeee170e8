"""Snakemake entry point: write a tiny random-weight twin (its manifest is the rule's output, written last)."""

from pathlib import Path

from stepscope.logs import redirect_to_log
from stepscope.models import make_tiny_weights

with redirect_to_log(snakemake.log[0]):
    make_tiny_weights(snakemake.params.family, Path(snakemake.output[0]).parent)
