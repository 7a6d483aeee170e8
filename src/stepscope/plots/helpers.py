"""Shared pieces of the token figures: which steps and frames to show, labels, panel mosaics.

Conventions (all figures): token "energy" is the per-token L2 norm over channels (the ``norm``
map); image panels show at most `MAX_FRAMES` latent frames (evenly subsampled, first and last
kept) unless `max_frames` says otherwise (None = all; config `figures.max_frames`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps

from stepscope.plots.style import MAX_WIDTH_IN
from stepscope.records import RunRecords, expert_switch_step

MAX_FRAMES = 8
TOP_CHANNELS = 20
GRID_NOTE = "each panel: token grid, width →, height ↓"


def as_records(rec: RunRecords | str | Path) -> RunRecords:
    return rec if isinstance(rec, RunRecords) else RunRecords(Path(rec))


def sample_info(meta: dict[str, Any]) -> dict[str, Any]:
    """split/task/sample of a run: top-level keys in workflow runs, a nested `sample` dict otherwise."""
    return meta["sample"] if isinstance(meta.get("sample"), dict) else meta


def run_label(meta: dict[str, Any]) -> str:
    """``variant · split / task / sample · seed k`` from meta.json."""
    sample = sample_info(meta)
    where = " / ".join(str(sample[k]) for k in ("split", "task", "sample") if sample.get(k) is not None)
    if "seeds" in meta:
        seed = "seeds " + ",".join(str(s) for s in meta["seeds"])
    else:
        seed = f"seed {meta.get('seed', '?')}"
    parts = [str(meta.get("variant", "?")), where or "custom input", seed]
    return "  ·  ".join(parts)


def step_label(rec: RunRecords, step: int, *, short: bool = False) -> str:
    row = rec.schedule.loc[rec.schedule["step"] == step]
    if row.empty:
        return f"step {step}"
    t = float(row["timestep"].iloc[0])
    expert = str(row["expert"].iloc[0])
    if short:
        return f"step {step}\nt={t:.0f}"
    extra = f", {expert.replace('_', '-')} expert" if expert != "dit" else ""
    return f"step {step} (t={t:.0f}{extra})"


def frame_indices(frames: int, max_frames: int | None = MAX_FRAMES) -> np.ndarray:
    """At most `max_frames` evenly spaced latent-frame indices, first and last kept (None: all)."""
    if max_frames is None or frames <= max_frames:
        return np.arange(frames)
    return np.unique(np.round(np.linspace(0, frames - 1, max_frames)).astype(int))


def default_steps(rec: RunRecords, n: int = 3) -> list[int]:
    """`n` evenly spaced captured steps (first and last kept) plus the Wan2.2 switch step."""
    captured = rec.captured_steps
    idx = np.unique(np.round(np.linspace(0, len(captured) - 1, min(n, len(captured)))).astype(int))
    chosen = {captured[i] for i in idx}
    switch = expert_switch_step(rec.schedule)
    if switch is not None and switch in captured:
        chosen.add(switch)
    return sorted(chosen)


def as_steps(rec: RunRecords, steps: int | Sequence[int] | None) -> list[int]:
    if steps is None:
        return default_steps(rec)
    steps = [int(steps)] if np.isscalar(steps) else [int(s) for s in steps]
    missing = sorted(set(steps) - set(rec.captured_steps))
    if missing:
        raise ValueError(f"steps {missing} were not captured in {rec.path} (captured: {rec.captured_steps})")
    return steps


def nearest(available: Sequence[int], wanted: Sequence[int]) -> list[int]:
    """For each wanted step, the closest available one (deduplicated, sorted)."""
    if not available:
        return []
    return sorted({min(available, key=lambda step: abs(step - target)) for target in wanted})


def norm_clim(rec: RunRecords, layer: int, steps: Sequence[int], pass_: str = "cond") -> tuple[float, float]:
    """(min, max) of the token norms of one layer over the given steps (all frames)."""
    lo, hi = np.inf, -np.inf
    for step in steps:
        norm = rec.map(layer, step, "norm", pass_)
        lo, hi = min(lo, float(norm.min())), max(hi, float(norm.max()))
    return lo, hi


def pca_to_rgb(pca: np.ndarray) -> np.ndarray:
    """Min-max normalise each of the 3 components over all frames and tokens to [0, 1]."""
    pca = np.asarray(pca, dtype=np.float64)
    lo = pca.min(axis=(0, 1, 2), keepdims=True)
    span = pca.max(axis=(0, 1, 2), keepdims=True) - lo
    rgb = np.where(span > 0, (pca - lo) / np.where(span > 0, span, 1.0), 0.5)
    return rgb.astype(np.float32)


def _mosaic(panels: np.ndarray, fill: float = np.nan) -> tuple[np.ndarray, int]:
    """Tile panels (R, C, h, w[, 3]) into one image with `fill` gaps; returns (image, gap)."""
    rows, cols, h, w = panels.shape[:4]
    gap = max(1, min(h, w) // 8)
    shape = (rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap) + panels.shape[4:]
    image = np.full(shape, fill, dtype=np.float32)
    for i in range(rows):
        for j in range(cols):
            image[i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = panels[i, j]
    return image, gap


def mosaic_figsize(
    rows: int, cols: int, h: int, w: int, *, extra_w: float, extra_h: float
) -> tuple[float, float]:
    """Figure size (inches) for a mosaic of rows x cols panels of h x w tokens."""
    gap = max(1, min(h, w) // 8)
    aspect = (rows * h + (rows - 1) * gap) / (cols * w + (cols - 1) * gap)
    axes_w = min(1.9 * cols, MAX_WIDTH_IN - extra_w)
    axes_w = max(axes_w, 3.0)
    if axes_w * aspect > 14.0 - extra_h:
        axes_w = (14.0 - extra_h) / aspect
    return axes_w + extra_w, max(axes_w * aspect + extra_h, 3.6)


def draw_mosaic(ax, panels: np.ndarray, row_labels, col_labels, **imshow_kw):
    """Draw a panel mosaic on one axes (much faster than one axes per panel)."""
    rgb = panels.ndim == 5
    image, gap = _mosaic(panels, fill=1.0 if rgb else np.nan)
    rows, cols, h, w = panels.shape[:4]
    if not rgb:
        cmap = colormaps[imshow_kw.pop("cmap")].with_extremes(bad="white")
        imshow_kw["cmap"] = cmap
    im = ax.imshow(image, interpolation="nearest", **imshow_kw)
    ax.set_xticks([j * (w + gap) + (w - 1) / 2 for j in range(cols)], col_labels, fontsize=8)
    ax.set_yticks([i * (h + gap) + (h - 1) / 2 for i in range(rows)], row_labels, fontsize=8)
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return im


def activations(rec: RunRecords, pass_: str):
    table = rec.activations
    return table.loc[table["pass"] == pass_]


def edges(values: Sequence[int]) -> np.ndarray:
    """Cell edges around sorted integer positions (midpoints; +-0.5 at the ends)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[v[0] - min(0.5, mid[0] - v[0])], mid, [v[-1] + min(0.5, v[-1] - mid[-1])]])


def integer_ticks(n: int, max_ticks: int = 25) -> np.ndarray:
    return np.arange(0, n, int(np.ceil(n / max_ticks)))

