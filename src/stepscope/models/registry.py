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
    """The adapter for a family name; unknown names fail with the list of known ones."""
    try:
        module, attribute = FAMILIES[name].split(":")
    except KeyError:
        raise StepScopeError(
            f"unknown model family {name!r}: choose one of {', '.join(FAMILY_NAMES)}"
        ) from None
    return getattr(importlib.import_module(module), attribute)
