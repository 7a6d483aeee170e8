"""Snakemake entry point: score the videos tree with the user-installed VBVR-Bench scorer."""

from stepscope.analysis.evalkit import score_with_evalkit
from stepscope.logs import redirect_to_log

with redirect_to_log(snakemake.log[0]):
    score_with_evalkit(
        snakemake.params.videos_root,
        snakemake.params.bench,
        snakemake.output[0],
        module=snakemake.params.module,
        model_map={name: tuple(ids) for name, ids in dict(snakemake.params.model_map).items()},
    )
