"""Snakemake entry point: lay a final video out as <model>/<split>/<task>/<index>.mp4 for the VBVR scorer."""

from stepscope.jobs import link_video
from stepscope.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    link_video(snakemake.input[0], snakemake.output[0])
