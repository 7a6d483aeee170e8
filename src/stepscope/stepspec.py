"""Step specifications: ``all`` or comma-separated indices and ranges like ``0-19,45-49``."""

from __future__ import annotations

import re

from .errors import StepScopeError

_PART = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_steps(spec: str | int | list | None, num_steps: int | None = None) -> frozenset[int] | None:
    """Parse a step spec; None means every step. Ranges are inclusive.

    With `num_steps`, every step must exist (0 .. num_steps-1), so a typo fails before a GPU job starts.
    """
    if spec is None:
        return None
    if isinstance(spec, int):
        spec = str(spec)
    if isinstance(spec, list):
        spec = ",".join(str(part) for part in spec)
    text = str(spec).strip().lower()
    if text == "all":
        return None
    if text in ("", "none"):
        return frozenset()
    steps: set[int] = set()
    for part in text.split(","):
        match = _PART.match(part)
        if not match:
            raise StepScopeError(
                f"malformed step spec {spec!r}: use 'all' or indices/ranges like '0-19,45-49'"
            )
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) is not None else start
        if end < start:
            raise StepScopeError(f"malformed step spec {spec!r}: range {start}-{end} runs backwards")
        steps.update(range(start, end + 1))
    if num_steps is not None:
        beyond = sorted(step for step in steps if step >= num_steps)
        if beyond:
            raise StepScopeError(
                f"step spec {spec!r} names step(s) {beyond} but there are only {num_steps} steps (0-{num_steps - 1})"
            )
    return frozenset(steps)


def resolve_steps(spec: str | int | list | None, num_steps: int) -> list[int]:
    """The concrete, sorted list of steps a spec selects."""
    parsed = parse_steps(spec, num_steps)
    return list(range(num_steps)) if parsed is None else sorted(parsed)
