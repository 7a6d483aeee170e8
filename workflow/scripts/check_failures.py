"""Snakemake entry point: fail, naming every failed run, when the plan has any (the rest completed)."""

from stepscope.jobs.analysis import check_failures
from stepscope.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    check_failures(snakemake.input[0])
