"""What the lockstep loop is doing right now, published for the forward hooks on the DiT blocks.

The loop owns one `StepContext` per `sample_lockstep` call and updates it before every DiT
forward; capture (`capture.Recorder`) and the probes' block hooks read it instead of being told
field by field or re-deriving the state by counting calls. No torch import: plain data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StepContext:
    """The loop's state at the current DiT forward.

    ``trajectory``: index of the lockstep state (the seed's position in ``seeds``); ``pass_``: the
    CFG pass the adapter announced (``cond`` / ``uncond``), None outside a velocity evaluation;
    ``grid``: the (f, h, w) token grid of the video tokens, where known (see `capture.Recorder`).
    """

    step: int = -1
    trajectory: int = 0
    pass_: str | None = None
    expert: str | None = None
    grid: tuple[int, int, int] | None = None

    def set_pass(self, name: str) -> None:
        """The adapter's ``on_pass`` callback: it calls it right before each CFG pass's forward."""
        self.pass_ = name
