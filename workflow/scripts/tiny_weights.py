"""Snakemake entry point: write a tiny random-weight twin (its manifest is the rule's output, written last).

Under a lock beside the folder, once: a second checkout sharing resources/ keeps the folder a first
one completed (and may be loading) instead of writing it again (stepscope.models.shared_folders).
"""

from pathlib import Path

from stepscope.logs import redirect_to_log
from stepscope.models.loading import make_tiny_weights
from stepscope.models.shared_folders import publish_once

with redirect_to_log(snakemake.log[0]):
    marker = Path(snakemake.output[0])
    made = publish_once(
        marker.parent, lambda folder: make_tiny_weights(snakemake.params.family, folder), marker.name
    )
    print("written" if made else f"kept: {marker.parent} was completed by another process")
