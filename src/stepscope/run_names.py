"""Run folder names: ``seed<N>`` for a plain run, ``ens-<strategy>-k<K>-<start>-<end>[-rescale]``
for a multi-seed ensemble (stepscope.sampling.ensemble).

The one owner of that grammar: the workflow's wildcard constraint, the plan, the ensemble spec and
the score tables all build and parse names here. Torch-free: the Snakefile imports it.
"""

from __future__ import annotations

import re
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
