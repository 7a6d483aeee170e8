"""Run folder names: ``seed<N>`` for a plain run, ``ens-<strategy>-k<K>-<start>-<end>[-rescale]``
for a multi-seed ensemble (stepscope.sampling.ensemble).

The one owner of that grammar: the workflow's wildcard constraint, the plan, the ensemble spec and
the score tables all build and parse names here. Torch-free: the Snakefile imports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from stepscope.errors import StepScopeError

STRATEGIES = ("latent", "velocity", "x0")
SEED_PREFIX = "seed"
_STRATEGY = "|".join(STRATEGIES)
# Without groups of its own, so that Snakemake can embed it as a wildcard constraint.
RUN_PATTERN = rf"{SEED_PREFIX}[0-9]+|ens-(?:{_STRATEGY})-k[0-9]+-[0-9]+-[0-9]+(?:-rescale)?"
_ENSEMBLE = re.compile(rf"^ens-({_STRATEGY})-k(\d+)-(\d+)-(\d+)(-rescale)?$")
ENSEMBLE_FORM = "ens-<strategy>-k<K>-<start>-<end>[-rescale]"


class EnsembleName(NamedTuple):
    """The fields an ensemble run's name spells."""

    strategy: str
    k: int
    start: int
    end: int
    rescale: bool


def seed_run(seed: int) -> str:
    return f"{SEED_PREFIX}{int(seed)}"


def is_seed_run(run: str) -> bool:
    return run.startswith(SEED_PREFIX)


def run_seed(run: str) -> int:
    """The seed of a plain run (``seed7`` -> 7)."""
    if not is_seed_run(run):
        raise StepScopeError(f"not a seed run: {run!r} (expected {SEED_PREFIX}<N>)")
    return int(run[len(SEED_PREFIX) :])


def ensemble_run(strategy: str, k: int, start: int, end: int, rescale: bool = False) -> str:
    return f"ens-{strategy}-k{k}-{start}-{end}" + ("-rescale" if rescale else "")


def parse_ensemble_run(name: str) -> EnsembleName:
    match = _ENSEMBLE.match(name)
    if not match:
        raise StepScopeError(f"not an ensemble name: {name!r} (expected {ENSEMBLE_FORM})")
    strategy, k, start, end, rescale = match.groups()
    return EnsembleName(strategy, int(k), int(start), int(end), rescale is not None)


def seed_label(run: str) -> str:
    """A run folder name as the score tables' `seed` column: 'seed1' -> '1', ensembles keep their name."""
    return run[len(SEED_PREFIX) :] if is_seed_run(run) else run


@dataclass(frozen=True)
class EnsembleSpec:
    """A multi-seed ensemble as the config and its run name give it (merged by
    `stepscope.sampling.ensemble.EnsembleHook`); torch-free, so the config checks can build it."""

    strategy: str = "latent"
    k: int = 3
    start: int = 0
    end: int = 10
    rescale: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise StepScopeError(
                f"unknown ensemble strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}"
            )
        if self.k < 1 or self.start < 0 or self.end < self.start:
            raise StepScopeError(f"bad ensemble {self}: need k >= 1 and 0 <= start <= end")

    @property
    def name(self) -> str:
        return ensemble_run(self.strategy, self.k, self.start, self.end, self.rescale)

    @classmethod
    def from_name(cls, name: str) -> EnsembleSpec:
        return cls(*parse_ensemble_run(name))

    def seeds(self, first_seed: int) -> list[int]:
        return [first_seed + index for index in range(self.k)]
