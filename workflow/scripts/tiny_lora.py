"""Snakemake entry point: a random LoRA that fits a tiny twin's expert (stands in for the VBVR LoRAs)."""

from stepscope.logs import redirect_to_log
from stepscope.models.loading import load_pipeline, make_tiny_lora

with redirect_to_log(snakemake.log[0]):
    from stepscope.models.registry import get_family

    family = get_family(snakemake.params.family)
    pipe = load_pipeline(snakemake.params.family, snakemake.params.weights, device="cpu")
    target = family.lora_targets(pipe)[snakemake.params.target]
    make_tiny_lora(
        target,
        snakemake.output[0],
        seed=int(snakemake.params.seed),
        scale=0.3,
        match=family.tiny_lora_match,
    )
