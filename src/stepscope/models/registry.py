"""The model families: one entry per diffsynth pipeline the sampling loop can drive.

Adding a family: write its adapter (the contract is `stepscope.models.adapter.FamilyAdapter`), its
weight layout in `stepscope.models.weight_layouts.LAYOUTS`, add one line here and its name to the
schema's `models.*.family` enum (tests/test_registries.py checks that they agree). The registry is
torch-free so the Snakefile and CPU jobs can list families; an adapter is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from stepscope.errors import StepScopeError

if TYPE_CHECKING:
    from stepscope.models.adapter import FamilyAdapter

# family name -> "module:attribute" of its adapter instance
FAMILIES = {
    "wan2.2": "stepscope.models.wan:WAN22",
    "wan2.1": "stepscope.models.wan:WAN21",
    "ltx2.3": "stepscope.models.ltx:LTX23",
}
FAMILY_NAMES = tuple(FAMILIES)


def get_family(name: str) -> FamilyAdapter:
    """The adapter for a family name; unknown names fail with the list of known ones, a missing
    package with its name (e.g. PyAV, which diffsynth's LTX-2 pipeline imports but diffsynth itself
    only lists under its `audio` extra: the GPU rehearsal's first LTX-2.3 job failed on it)."""
    try:
        module, attribute = FAMILIES[name].split(":")
    except KeyError:
        raise StepScopeError(
            f"unknown model family {name!r}: choose one of {', '.join(FAMILY_NAMES)}"
        ) from None
    try:
        return getattr(importlib.import_module(module), attribute)
    except ModuleNotFoundError as error:
        package = (error.name or "stepscope").split(".")[0]
        if package == "stepscope":  # our own module missing: a bug, not an install problem
            raise
        raise StepScopeError(
            f"the {name} family needs the Python package {package!r}, which is not installed here "
            f"({error}): install it (pip install {package}); the GPU jobs' conda environment "
            "envs/gpu.yaml lists it"
        ) from error
