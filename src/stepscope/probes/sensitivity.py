"""Probe ``sensitivity``: inject noise at one step (as ``noise_step``) and measure how much the later
states move: linear CKA dissimilarity between the perturbed and the clean trajectory's x0_hat latents
(from the records, by the table job) and full block outputs (on the device, while sampling, here); a
curve over the injection step, with the Wan2.2 expert switch marked (docs/probes.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from stepscope.atomic import write_parquet
from stepscope.errors import StepScopeError
from stepscope.probes.common import cka_dissimilarity
from stepscope.probes.files import HIDDEN_CKA
from stepscope.probes.job import ProbeJob, resolve_layers
from stepscope.probes.noise_step import step_sweep
from stepscope.sampling.blocks import block_tokens
from stepscope.sampling.context import StepContext


class HiddenSensitivity:
    """Linear CKA dissimilarity of full block outputs, perturbed trajectory vs clean, computed on the
    device while sampling (a 14B model's block output is far too large to store per step).

    Trajectory 0 is the clean run; trajectory k (k >= 1) was perturbed at ``injection_steps[k - 1]``.
    At every step from its injection on, each perturbed trajectory's output of each layer (in the
    listed CFG passes) is compared with the clean one of the same step, which runs first.
    """

    def __init__(self, context: StepContext, injection_steps: Sequence[int], passes=("cond",)):
        self.context = context
        self.injection_steps = list(injection_steps)
        self.passes = tuple(passes)
        self.clean: dict[tuple[int, str], tuple[int, torch.Tensor]] = {}
        self.rows: list[dict[str, Any]] = []

    def hook(self, layer: int, expert: str):
        def fn(module, inputs, output):
            t = self.context
            if t.pass_ not in self.passes:
                return None
            tokens = block_tokens(output).detach()
            if t.trajectory == 0:
                self.clean[(layer, t.pass_)] = (t.step, tokens.clone())
                return None
            injected = self.injection_steps[t.trajectory - 1]
            if t.step < injected:
                return None
            clean_step, clean = self.clean[(layer, t.pass_)]
            if clean_step != t.step:
                raise StepScopeError("the clean trajectory must run first in every step")
            self.rows.append(
                {
                    "injection_step": injected,
                    "step": t.step,
                    "layer": layer,
                    "pass": t.pass_,
                    "expert": expert,
                    "dissimilarity": cka_dissimilarity(clean, tokens),
                }
            )
            return None

        return fn

    def table(self) -> pd.DataFrame:
        columns = ["injection_step", "step", "layer", "pass", "expert", "dissimilarity"]
        return pd.DataFrame(self.rows, columns=columns)


def run(job: ProbeJob, spec: dict[str, Any]) -> dict[str, Any]:
    hook, conditions = step_sweep(job, spec)
    layers = spec.get("layers")
    if layers is None:
        layers = list((job.base_meta["record"] or {}).get("layers", []))
    layers = resolve_layers(layers, job.num_blocks()) if layers else []
    passes = tuple(spec.get("passes", ("cond",)))
    context = StepContext()
    hidden = HiddenSensitivity(context, [condition["step"] for condition in conditions[1:]], passes)
    with job.hooks_on_blocks(layers, hidden.hook):
        results = job.sample(len(conditions), hook, context=context)
    fields = job.write_sweep(results, conditions, layers=layers)
    write_parquet(job.out / HIDDEN_CKA, hidden.table())
    return fields
