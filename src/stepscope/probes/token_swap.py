"""Probe ``token_swap``: at one step, layer and CFG pass, replace one run's block output by another
run's; sweep the layer and see which clean run the final video follows (docs/probes.md)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from stepscope.bench import read_sample
from stepscope.errors import StepScopeError
from stepscope.probes.job import ProbeJob, resolve_layers
from stepscope.sampling.blocks import block_tokens, replace_block_tokens
from stepscope.sampling.context import StepContext

SWAP_SOURCES = ("next_sample", "next_image", "prompt", "same")


class TokenCapture:
    """Keeps the block outputs of one run at `step` (listed layers and passes), on `store` (host by default)."""

    def __init__(self, context: StepContext, step: int, passes=("cond",), store: str = "cpu"):
        self.context = context
        self.step = int(step)
        self.passes = tuple(passes)
        self.store = store
        self.tokens: dict[tuple[int, str], torch.Tensor] = {}

    def hook(self, layer: int, expert: str):
        def fn(module, inputs, output):
            t = self.context
            if t.step == self.step and t.pass_ in self.passes and t.trajectory == 0:
                self.tokens[(layer, t.pass_)] = block_tokens(output).detach().to(self.store, copy=True)
            return None

        return fn


class TokenSwap:
    """At `step`, trajectory k replaces the output of block ``layer_of[k]`` (None = no swap) in the
    listed passes by the captured source tokens; the rest of the model runs on unchanged."""

    def __init__(
        self,
        context: StepContext,
        step: int,
        layer_of: Sequence[int | None],
        captured: dict[tuple[int, str], torch.Tensor],
        passes=("cond",),
    ):
        self.context = context
        self.step = int(step)
        self.layer_of = list(layer_of)
        self.captured = captured
        self.passes = tuple(passes)
        self.swaps = 0

    def hook(self, layer: int, expert: str):
        def fn(module, inputs, output):
            t = self.context
            if t.step != self.step or t.pass_ not in self.passes or self.layer_of[t.trajectory] != layer:
                return None
            source = self.captured.get((layer, t.pass_))
            if source is None:
                raise StepScopeError(f"no source tokens captured for layer {layer}, pass {t.pass_}")
            self.swaps += 1
            return replace_block_tokens(output, source)

        return fn


def swap_source_info(target: dict[str, Any], swap_source: dict[str, Any]) -> dict[str, Any]:
    """The source run's inputs for a token swap (see SWAP_SOURCES)."""
    kind = swap_source.get("kind", "next_sample")
    if kind not in SWAP_SOURCES:
        raise StepScopeError(f"unknown swap source {kind!r}: choose one of {', '.join(SWAP_SOURCES)}")
    if kind == "same":
        return dict(target)
    if kind == "prompt":
        prompt = swap_source.get("prompt")
        if not prompt or not str(prompt).strip():
            raise StepScopeError(
                "token_swap.source is 'prompt' but token_swap.prompt is empty: give the prompt"
            )
        return {**target, "prompt": str(prompt)}
    other = read_sample(swap_source["sample_dir"])
    if kind == "next_image":
        return {**target, "image": other["image"], "source_sample_dir": other["sample_dir"]}
    return {
        **target,
        "image": other["image"],
        "prompt": other["prompt"],
        "source_sample_dir": other["sample_dir"],
    }


def run(job: ProbeJob, spec: dict[str, Any]) -> dict[str, Any]:
    step = int(spec.get("step", 0))
    if not 0 <= step < job.steps:
        raise StepScopeError(f"token_swap.step {step} does not exist: there are {job.steps} steps")
    layers = resolve_layers(spec.get("layers", "all"), job.num_blocks())
    passes = tuple(spec.get("passes", ("cond",)))
    swap_source = dict(job.swap_source or {"kind": spec.get("source", "same")})
    swap_source.setdefault("prompt", spec.get("prompt"))
    source_info = swap_source_info(job.info, swap_source)
    store = "cpu" if str(job.pipe.device).startswith("cuda") else str(job.pipe.device)

    source_context = StepContext()
    capture = TokenCapture(source_context, step, passes, store=store)
    with job.hooks_on_blocks(layers, capture.hook):
        source_result = job.sample(1, info=source_info, context=source_context)[0]
    source_condition = {
        "name": "source",
        "source": swap_source["kind"],
        "prompt": source_info["prompt"],
        "image": source_info["image"],
    }
    source_labels = dict(job.labels)
    if source_info.get("source_sample_dir"):
        source_labels["sample"] = Path(source_info["source_sample_dir"]).name
    job.write(source_result, source_condition, info=source_info, labels=source_labels)
    del source_result

    context = StepContext()
    swap = TokenSwap(context, step, [None, *layers], capture.tokens, passes)
    with job.hooks_on_blocks(layers, swap.hook):
        results = job.sample(1 + len(layers), context=context)
    expected = len(layers) * len(passes)
    if swap.swaps != expected:
        raise StepScopeError(
            f"{swap.swaps} block outputs were swapped, expected {expected} (one per layer and pass): "
            "a pass did not run (cfg_scale 1 has no uncond pass)"
        )
    conditions = [{"name": "target"}] + [
        {"name": f"layer{layer:02d}", "layer": layer, "step": step, "passes": list(passes)}
        for layer in layers
    ]
    return job.write_sweep(
        results,
        conditions,
        step=step,
        layers=layers,
        passes=list(passes),
        source={key: value for key, value in source_condition.items() if key != "name"},
        source_sample_dir=source_info.get("source_sample_dir"),
    )
