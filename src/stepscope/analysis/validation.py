"""Measures of the validation benchmark (benchmarks/validation.py) that are not already workflow analyses.

Scores, step curves, emergence steps, probe summaries and ensembles come from the workflow's own
functions (`stepscope.jobs.analysis`, `stepscope.analysis.chain_of_steps`, `stepscope.probes`); this module
adds what the demo tasks allow beyond them: a static-first-frame baseline, bootstrap intervals, and
the *candidate mass* of the two-answer task (docs/validation.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GREEN_MARGIN = 60  # a target outline pixel: green exceeds red and blue by this much
# Object intensity of a pixel: its L1 (RGB) distance from the background, mapped linearly from
# OBJECT_FLOOR (0: background, VAE haze) to the first frame's object (1); OBJECT_FULL if none.
OBJECT_FLOOR = 30
OBJECT_FULL = 180


def bootstrap_ci(
    values: Sequence[float], *, level: float = 0.95, draws: int = 2000, seed: int = 0
) -> list[float]:
    """Percentile bootstrap interval of the mean (NaN for fewer than two values)."""
    x = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if len(x) < 2:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(draws, len(x)))].mean(axis=1)
    tail = (1.0 - level) / 2
    return [float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))]


def static_first_video(first_frame: np.ndarray, num_frames: int) -> np.ndarray:
    """The baseline that holds the first frame: uint8 (T, H, W, 3)."""
    return np.repeat(np.asarray(first_frame, dtype=np.uint8)[None], num_frames, axis=0)


def _green(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 1] - rgb[..., 0] > GREEN_MARGIN) & (rgb[..., 1] - rgb[..., 2] > GREEN_MARGIN)


def target_boxes(first_frame: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of the two green target outlines of the two-answer task: upper, lower."""
    rgb = np.asarray(first_frame, dtype=int)
    green = _green(rgb)
    half = rgb.shape[0] // 2
    boxes = []
    for rows in (slice(0, half), slice(half, rgb.shape[0])):
        ys, xs = np.nonzero(green[rows])
        if not len(ys):
            raise ValueError(
                "no green target outline in this half of the first frame: not a two-answer sample"
            )
        boxes.append(
            (int(ys.min()) + rows.start, int(ys.max()) + rows.start + 1, int(xs.min()), int(xs.max()) + 1)
        )
    return boxes


def candidate_mass(frame: np.ndarray, first_frame: np.ndarray) -> list[float]:
    """Per target (upper, lower): the mean object intensity inside the target outline.

    Intensity: distance from the background (the first frame's corner colour), 0 for background,
    1 at the first frame's object colour; target-green pixels count 0. A video that commits to one answer
    has mass near 1 on one target and near 0 on the other; a blend of both answers (superposition)
    shows mass on both, a faint blend partial mass on both.
    """
    rgb = np.asarray(frame, dtype=int)
    first = np.asarray(first_frame, dtype=int)
    background = first[0, 0]
    first_distance = np.abs(first - background).sum(-1)
    solid = first_distance[(first_distance > 2 * OBJECT_FLOOR) & ~_green(first)]
    full = float(np.median(solid)) if solid.size else OBJECT_FULL  # the object's own colour
    distance = np.abs(rgb - background).sum(-1)
    intensity = np.clip((distance - OBJECT_FLOOR) / max(full - OBJECT_FLOOR, 1.0), 0.0, 1.0)
    intensity[_green(rgb)] = 0.0
    inset = max(1, rgb.shape[0] // 20)  # inside the outline (and its compression halo)
    return [
        float(intensity[y0 + inset : y1 - inset, x0 + inset : x1 - inset].mean())
        for y0, y1, x0, x1 in target_boxes(first_frame)
    ]


def commitment(masses_by_step: Sequence[Sequence[float]]) -> dict[str, list[float]]:
    """Split per-step (upper, lower) masses into the finally chosen target and the other one."""
    m = np.asarray(masses_by_step, dtype=float)
    chosen = int(np.argmax(m[-1]))
    return {"chosen": m[:, chosen].tolist(), "other": m[:, 1 - chosen].tolist()}
