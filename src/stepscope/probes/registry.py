"""The probes by name: the one list the workflow (rules/probes_common.smk), the config schema's test
and both probe jobs read. Adding a probe = its module ``stepscope.probes.<name>`` (with ``run``) plus
one `Probe` entry in `PROBES`, and its config section in the schema (docs/probes.md).

Parts are named ``"module:function"`` (modules of this package) and imported only when used, so
naming the probes imports nothing: the GPU job imports a probe's sweep (torch, diffsynth), the CPU
table job its table, summary and figure code (torch-free, except tables that compare latents).
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
    table: str
    summary: str
    figures: str
    x0_every_step: bool = False

    @property
    def run(self) -> str:
        """The sweep is ``run`` in the probe's own module, ``stepscope.probes.<name>``."""
        return f"{self.name}:run"

    def part(self, name: str) -> Callable:
        """The named part (``run``, ``table``, ``summary``, ``figures``), imported now."""
        module, _, function = getattr(self, name).partition(":")
        return getattr(importlib.import_module(f"stepscope.probes.{module}"), function)


PROBES: dict[str, Probe] = {
    probe.name: probe
    for probe in (
        Probe("noise_step", "tables:noise_table", "tables:noise_step_summary", "figures:noise_step_figures"),
        Probe(
            "noise_frame", "tables:noise_table", "tables:noise_frame_summary", "figures:noise_frame_figures"
        ),
        Probe(
            "sensitivity",
            "latent_tables:sensitivity_table",
            "tables:sensitivity_summary",
            "figures:sensitivity_figures",
            x0_every_step=True,
        ),
        Probe("token_swap", "latent_tables:swap_table", "tables:swap_summary", "figures:token_swap_figures"),
    )
}
KINDS = tuple(PROBES)


def get_probe(name: str) -> Probe:
    """The probe called `name`; unknown names fail with the list of known ones."""
    if name not in PROBES:
        raise StepScopeError(f"unknown probe {name!r}: choose one of {', '.join(KINDS)}")
    return PROBES[name]
