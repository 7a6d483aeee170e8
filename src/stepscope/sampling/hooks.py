"""The hook interface of the lockstep sampling loop (no torch import: light for the workflow)."""

from __future__ import annotations

from typing import Any


class StepHook:
    """Reads and may replace the K lockstep states; return None to leave them unchanged."""

    def on_latents(self, step: int, sigma: float, latents: list[Any]) -> list[Any] | None:
        return None

    def on_velocity(
        self, step: int, sigma: float, latents: list[Any], velocities: list[Any]
    ) -> list[Any] | None:
        return None
