"""The probes by name: the one list the workflow (rules/probes_common.smk), the config schema's test
and both probe jobs read. Adding a probe = one module plus one `Probe` line here (docs/probes.md).

Each part is named as ``"module:function"`` and imported only when used, so that naming the probes
imports nothing: the GPU job imports a probe's sweep (torch, diffsynth), the CPU table job its table,
summary and figure code (torch-free, except tables that compare latents).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from stepscope.errors import StepScopeError


@dataclass(frozen=True)
class Probe:
    """Where one probe's parts live.

    ``run(job, spec) -> dict``: the sweep (GPU; `probes.job.ProbeJob`), returns the probe.json fields;
    ``table(probe_dirs) -> DataFrame``; ``summary(table, metric) -> DataFrame``;
    ``figures(table, summary, figure_dir, metric) -> list[Path]``. ``x0_every_step``: the sweep keeps
    x0_hat at every step whatever ``record.x0_steps`` says (its table compares them all).
    """

    name: str
    run: str
    table: str
    summary: str
    figures: str
    x0_every_step: bool = False

    def part(self, name: str) -> Callable:
        """The named part (``run``, ``table``, ``summary``, ``figures``), imported now."""
        module, _, function = getattr(self, name).partition(":")
        return getattr(importlib.import_module(module), function)


_P = "stepscope.probes."
PROBES: dict[str, Probe] = {
    probe.name: probe
    for probe in (
        Probe(
            "noise_step",
            run=_P + "noise_step:run",
            table=_P + "tables:noise_table",
            summary=_P + "tables:noise_step_summary",
            figures=_P + "figures:noise_step_figures",
        ),
        Probe(
            "noise_frame",
            run=_P + "noise_frame:run",
            table=_P + "tables:noise_table",
            summary=_P + "tables:noise_frame_summary",
            figures=_P + "figures:noise_frame_figures",
        ),
        Probe(
            "sensitivity",
            run=_P + "sensitivity:run",
            table=_P + "latent_tables:sensitivity_table",
            summary=_P + "tables:sensitivity_summary",
            figures=_P + "figures:sensitivity_figures",
            x0_every_step=True,
        ),
        Probe(
            "token_swap",
            run=_P + "token_swap:run",
            table=_P + "latent_tables:swap_table",
            summary=_P + "tables:swap_summary",
            figures=_P + "figures:token_swap_figures",
        ),
    )
}
KINDS = tuple(PROBES)


def get_probe(name: str) -> Probe:
    """The probe called `name`; unknown names fail with the list of known ones."""
    if name not in PROBES:
        raise StepScopeError(f"unknown probe {name!r}: choose one of {', '.join(KINDS)}")
    return PROBES[name]
