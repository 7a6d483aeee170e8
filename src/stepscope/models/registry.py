"""Model families: adapters that let one sampling loop drive each diffsynth pipeline."""

from __future__ import annotations

from stepscope.models.adapter import FamilyAdapter, StepScopeError
from stepscope.models.wan import WAN21, WAN22

FAMILY_NAMES = ("wan2.2", "wan2.1", "ltx2.3")


def get_family(name: str) -> FamilyAdapter:
    """The adapter for a family name; unknown names fail with the list of known ones."""
    if name in ("wan2.2", "wan2.1"):
        return {"wan2.2": WAN22, "wan2.1": WAN21}[name]
    if name == "ltx2.3":
        from stepscope.models.ltx import LTX23

        return LTX23
    raise StepScopeError(f"unknown model family {name!r}: choose one of {', '.join(FAMILY_NAMES)}")
