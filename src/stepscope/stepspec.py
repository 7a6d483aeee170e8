"""Step specifications that fit any schedule.

A spec is ``all``, ``none``, or comma-separated parts, each one of:

* ``7`` or ``0-19``: a step index or an inclusive range;
* ``every:K``: steps 0, K, 2K, ... of the schedule;
* ``first`` / ``last``: the first / last step;
* ``P%``: the step at P percent of the schedule, ``round(P/100 * (steps-1))``.

The relative forms (``every:K``, ``last``, ``P%``) make one default valid for 8, 40 or 50 steps;
``every:10,last`` selects 0,10,20,30,40,49 of a 50-step schedule and 0,10,20,30,39 of 40 steps.
"""

from __future__ import annotations

import re

from stepscope.errors import StepScopeError

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
_EVERY = re.compile(r"^every:(\d+)$")
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")
FORMS = "'all', 'none', or parts such as '0-19,45-49', 'every:5', 'first', 'last', '50%'"


def _parts(spec: str | int | list) -> list[str]:
    if isinstance(spec, int):
        spec = str(spec)
    if isinstance(spec, list):
        spec = ",".join(str(part) for part in spec)
    return [part.replace(" ", "") for part in str(spec).strip().lower().split(",")]


def is_relative(spec: str | int | list | None) -> bool:
    """Whether a spec needs the schedule's length to be resolved (every:K, last, P%)."""
    if spec is None or isinstance(spec, int):
        return False
    return any(not _RANGE.match(part) for part in _parts(spec) if part not in ("all", "none", "", "first"))


def is_empty(spec: str | int | list | None) -> bool:
    """Whether a spec selects no step at all, whatever the schedule (``none`` or empty)."""
    if isinstance(spec, list):
        return not spec
    return spec is not None and str(spec).strip().lower() in ("", "none")


def parse_steps(spec: str | int | list | None, num_steps: int | None = None) -> frozenset[int] | None:
    """Parse a step spec; None means every step. Ranges are inclusive.

    With `num_steps`, every step must exist (0 .. num_steps-1), so a typo fails before a GPU job
    starts. Without it, relative parts (every:K, last, P%) fail: pass the schedule's length.
    """
    if spec is None:
        return None
    if isinstance(spec, list) and not spec:
        return frozenset()
    parts = _parts(spec)
    if parts == ["all"]:
        return None
    if parts in (["none"], [""]):
        return frozenset()
    steps: set[int] = set()
    for part in parts:
        steps.update(_part_steps(spec, part, num_steps))
    if num_steps is not None:
        beyond = sorted(step for step in steps if step >= num_steps)
        if beyond:
            raise StepScopeError(
                f"step spec {spec!r} names step(s) {beyond} but there are only {num_steps} steps (0-{num_steps - 1})"
            )
    return frozenset(steps)


def _part_steps(spec, part: str, num_steps: int | None) -> range | list[int]:
    match = _RANGE.match(part)
    if match:
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) is not None else start
        if end < start:
            raise StepScopeError(f"malformed step spec {spec!r}: range {start}-{end} runs backwards")
        return range(start, end + 1)
    if part == "first":
        return [0]
    every, percent = _EVERY.match(part), _PERCENT.match(part)
    if part != "last" and not every and not percent:
        raise StepScopeError(f"malformed step spec {spec!r}: use {FORMS}")
    if every and int(every.group(1)) < 1:
        raise StepScopeError(f"malformed step spec {spec!r}: every:K needs K >= 1")
    if percent and float(percent.group(1)) > 100:
        raise StepScopeError(f"malformed step spec {spec!r}: {part} is beyond the schedule (0-100%)")
    if num_steps is None:
        raise StepScopeError(f"step spec {spec!r}: {part!r} depends on the schedule's length; resolve it per run")
    if part == "last":
        return [num_steps - 1]
    if every:
        return range(0, num_steps, int(every.group(1)))
    return [round(float(percent.group(1)) / 100 * (num_steps - 1))]


def resolve_steps(spec: str | int | list | None, num_steps: int) -> list[int]:
    """The concrete, sorted list of steps a spec selects."""
    parsed = parse_steps(spec, num_steps)
    return list(range(num_steps)) if parsed is None else sorted(parsed)
