"""Token-analysis figures from the per-run records (CPU only, matplotlib Agg).

Every ``plot_*`` function takes a `RunRecords` (or a run directory) and an output PNG path,
writes the PNG atomically and returns a dict with the numbers it drew (arrays as numpy), plus
``figsize`` (inches), ``dpi``, ``clims`` (the colour limits read back from the drawn images, where
there are images) and ``switch_marks`` (how many expert-switch markers were drawn). Figures are
drawn from the reduced maps of docs/records.md; no raw hidden state is needed.

Conventions
- Token "energy" is the per-token L2 norm over channels (the ``norm`` map).
- Image panels show at most 8 latent frames (evenly subsampled, first and last kept) unless
  `max_frames` says otherwise (None = all; config `figures.max_frames`).
- Temporal energy here is ours, the mean token norm of a latent frame (``frame_energy``); the
  seed's is the L2 norm of the frame's token matrix (``frame_l2``, `RunRecords.frame_l2`), drawn
  by stepscope.plots.seed_figures under the seed's file names. Each figure's axis label says which.
- Functions that draw one layer at several steps use one colour scale for all those steps.
- Across-steps plots of Wan2.2 runs (schedule ``expert`` has both ``high_noise`` and
  ``low_noise``) mark the expert switch with a dashed vertical line between the last high-noise
  step and the first low-noise step, labelled in the legend.

File names written by `render_run_figures(run_dir, out_dir)`; ``L20`` = layer 20 (two digits),
``S0013`` = step 13 (four digits); "chosen steps" = the ``steps`` argument, by default the first,
middle and last captured step plus, for Wan2.2, the first low-noise step:
- ``norm_vs_step.png``: mean token norm of every layer vs denoising step (all captured steps).
- ``layer_mean_norm.png``: mean token norm vs layer, one line per chosen step.
- ``layer_frame_grid_S0013.png``: layer x frame grid of token-norm maps, one file per chosen step
  (colour scale per layer, the same in every one of these files).
- per layer ``L20``:
  - ``step_frame_energy_L20.png``: step x latent-frame heatmap of the temporal energy (all steps).
  - ``norm_heatmap_L20.png``: token-norm maps, chosen steps x frames, one shared colour scale.
  - ``pca_rgb_L20.png``: first 3 principal components as RGB, chosen steps x frames.
  - ``temporal_energy_L20.png``: mean token norm per latent frame, one line per chosen step.
  - ``channel_importance_L20.png``: top-20 channel variances, one panel per chosen step.
  - ``topk_maps_L20_S0049.png``: the top-6 variance channels' maps across frames, at each of
    ``topk_steps`` (by default every chosen step that has spatial maps).

File names written by `render_group_figures(run_dirs, out_dir)`:
- ``group_norm_vs_step.png``: mean +- 1 s.d. across runs of the norm-vs-step curve, per layer.
- ``group_energy_matrix.png``: layer x step matrix of the mean token norm, averaged over runs.
- ``group_fg_bg_energy.png``: the same for foreground and background tokens and their
  difference (only when a foreground mask can be derived from the first-frame image(s)).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stepscope.atomic import atomic_path
from stepscope.records import RunRecords, expert_switch_step

DPI = 120
MAX_WIDTH_IN = 16.0
MAX_FRAMES = 8
TOP_CHANNELS = 20
SWITCH_GID = "expert-switch"
NORM_CMAP = "magma"
ENERGY_CMAP = "viridis"
SIGNED_CMAP = "RdBu_r"

__all__ = [
    "foreground_mask",
    "frame_indices",
    "default_steps",
    "norm_clim",
    "plot_norm_heatmaps",
    "plot_pca_rgb",
    "plot_temporal_energy",
    "plot_channel_importance",
    "plot_topk_channel_maps",
    "plot_layer_mean_norm",
    "plot_layer_frame_grid",
    "plot_norm_vs_step",
    "plot_step_frame_energy",
    "plot_group_norm_vs_step",
    "plot_group_energy_matrix",
    "plot_group_fg_bg",
    "render_run_figures",
    "render_group_figures",
]


# --------------------------------------------------------------------------- helpers


def _records(rec: RunRecords | str | Path) -> RunRecords:
    return rec if isinstance(rec, RunRecords) else RunRecords(Path(rec))


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(min(width, MAX_WIDTH_IN), height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path, result: dict[str, Any]) -> dict[str, Any]:
    data_axes = [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]  # skip colour-bar axes
    mappables = [m for ax in data_axes for m in (*ax.images, *ax.collections) if m.get_array() is not None]
    result["clims"] = [tuple(float(v) for v in m.get_clim()) for m in mappables]
    result["switch_marks"] = sum(1 for ax in fig.axes for line in ax.lines if line.get_gid() == SWITCH_GID)
    result["figsize"] = tuple(float(v) for v in fig.get_size_inches())
    result["dpi"] = DPI
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, pil_kwargs={"compress_level": 3})
    result["path"] = Path(path)
    return result


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


def _step_label(rec: RunRecords, step: int, *, short: bool = False) -> str:
    row = rec.schedule.loc[rec.schedule["step"] == step]
    if row.empty:
        return f"step {step}"
    t = float(row["timestep"].iloc[0])
    expert = str(row["expert"].iloc[0])
    if short:
        return f"step {step}\nt={t:.0f}"
    extra = f", {expert.replace('_', '-')} expert" if expert != "dit" else ""
    return f"step {step} (t={t:.0f}{extra})"


def _mark_switch(ax, switch: int | None, *, color: str = "0.15", label: str | None = None) -> None:
    if switch is None:
        return
    ax.axvline(
        switch - 0.5,
        color=color,
        linestyle="--",
        linewidth=1.4,
        gid=SWITCH_GID,
        label=label or f"expert switch (high→low noise) before step {switch}",
    )


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


def _as_steps(rec: RunRecords, steps: int | Sequence[int] | None) -> list[int]:
    if steps is None:
        return default_steps(rec)
    steps = [int(steps)] if np.isscalar(steps) else [int(s) for s in steps]
    missing = sorted(set(steps) - set(rec.captured_steps))
    if missing:
        raise ValueError(f"steps {missing} were not captured in {rec.path} (captured: {rec.captured_steps})")
    return steps


def _nearest(available: Sequence[int], wanted: Sequence[int]) -> list[int]:
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


def _mosaic_figsize(
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


def _draw_mosaic(ax, panels: np.ndarray, row_labels, col_labels, **imshow_kw):
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


GRID_NOTE = "each panel: token grid, width →, height ↓"


def _table(rec: RunRecords, pass_: str):
    table = rec.activations
    return table.loc[table["pass"] == pass_]


# --------------------------------------------------------------------------- per run, per step


def plot_norm_heatmaps(
    rec: RunRecords | str | Path,
    path: str | Path,
    *,
    layer: int,
    steps: int | Sequence[int] | None = None,
    pass_: str = "cond",
    max_frames: int | None = MAX_FRAMES,
) -> dict[str, Any]:
    """Token-norm heatmap per latent frame (columns) at each step (rows); one colour scale."""
    rec = _records(rec)
    steps = _as_steps(rec, steps)
    norms = np.stack([rec.map(layer, s, "norm", pass_) for s in steps])  # (S, f, h, w)
    fidx = frame_indices(norms.shape[1], max_frames)
    shown = norms[:, fidx]
    vmin, vmax = float(norms.min()), float(norms.max())
    _, _, h, w = norms.shape
    fig = _new_figure(*_mosaic_figsize(len(steps), len(fidx), h, w, extra_w=2.6, extra_h=1.7))
    ax = fig.subplots()
    im = _draw_mosaic(
        ax,
        shown,
        [_step_label(rec, s, short=True) for s in steps],
        [f"frame {f}" for f in fidx],
        cmap=NORM_CMAP,
        vmin=vmin,
        vmax=vmax,
    )
    ax.set_xlabel(f"latent frame ({GRID_NOTE})", fontsize=9)
    ax.set_ylabel("denoising step", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.9, aspect=30, label="token L2 norm (energy)")
    sub = f", {len(fidx)} of {norms.shape[1]} latent frames" if len(fidx) < norms.shape[1] else ""
    fig.suptitle(
        f"Token norm per latent frame: layer {layer}, {pass_} pass (one colour scale for all steps{sub})\n"
        f"{run_label(rec.meta)}",
        fontsize=10,
    )
    return _save(
        fig, path, {"layer": layer, "steps": steps, "frames": fidx, "norm": shown, "vmin": vmin, "vmax": vmax}
    )


def pca_to_rgb(pca: np.ndarray) -> np.ndarray:
    """Min-max normalise each of the 3 components over all frames and tokens to [0, 1]."""
    pca = np.asarray(pca, dtype=np.float64)
    lo = pca.min(axis=(0, 1, 2), keepdims=True)
    span = pca.max(axis=(0, 1, 2), keepdims=True) - lo
    rgb = np.where(span > 0, (pca - lo) / np.where(span > 0, span, 1.0), 0.5)
    return rgb.astype(np.float32)


def plot_pca_rgb(
    rec: RunRecords | str | Path,
    path: str | Path,
    *,
    layer: int,
    steps: int | Sequence[int] | None = None,
    pass_: str = "cond",
    max_frames: int | None = MAX_FRAMES,
) -> dict[str, Any]:
    """Tokens projected on their first 3 principal components, shown as RGB per frame and step.

    Each component is min-max normalised over all frames of its step (PCA bases differ between
    steps, so colours compare across frames, not across steps).
    """
    rec = _records(rec)
    steps = _as_steps(rec, steps)
    rgbs, explained = [], []
    for step in steps:
        rgbs.append(pca_to_rgb(rec.map(layer, step, "pca", pass_)))
        explained.append(rec.map(layer, step, "pca_explained", pass_).astype(np.float64))
    rgb = np.stack(rgbs)
    explained = np.stack(explained)
    fidx = frame_indices(rgb.shape[1], max_frames)
    shown = rgb[:, fidx]
    _, _, h, w, _ = rgb.shape
    fig = _new_figure(*_mosaic_figsize(len(steps), len(fidx), h, w, extra_w=2.4, extra_h=1.9))
    ax = fig.subplots()
    row_labels = [
        f"{_step_label(rec, s, short=True)}\nEV {ev[0]:.0%} {ev[1]:.0%} {ev[2]:.0%}"
        for s, ev in zip(steps, explained, strict=True)
    ]
    _draw_mosaic(ax, shown, row_labels, [f"frame {f}" for f in fidx])
    ax.set_xlabel(f"latent frame ({GRID_NOTE})", fontsize=9)
    ax.set_ylabel("denoising step", fontsize=9)
    if len(steps) == 1:
        ev = explained[0]
        what = (
            f"R, G, B = PC1, PC2, PC3 with explained variance {ev[0]:.1%}, {ev[1]:.1%}, {ev[2]:.1%} "
            f"(sum {ev.sum():.1%})"
        )
    else:
        what = "R, G, B = PC1, PC2, PC3; EV at left = explained variance of PC1, PC2, PC3 at that step"
    fig.suptitle(
        f"PCA of tokens as RGB (min-max per component and step): layer {layer}, {pass_} pass\n"
        f"{what}\n{run_label(rec.meta)}",
        fontsize=10,
    )
    return _save(
        fig, path, {"layer": layer, "steps": steps, "frames": fidx, "rgb": shown, "explained": explained}
    )


def plot_temporal_energy(
    rec: RunRecords | str | Path,
    path: str | Path,
    *,
    layer: int,
    steps: int | Sequence[int] | None = None,
    pass_: str = "cond",
) -> dict[str, Any]:
    """Mean token norm of each latent frame ("temporal energy"), one line per step."""
    rec = _records(rec)
    steps = _as_steps(rec, steps)
    energy = np.stack([rec.map(layer, s, "frame_energy", pass_).astype(np.float64) for s in steps])
    fig = _new_figure(8.0, 4.6)
    ax = fig.subplots()
    cmap = colormaps[ENERGY_CMAP]
    frames = np.arange(energy.shape[1])
    for i, step in enumerate(steps):
        color = cmap(i / max(1, len(steps) - 1) * 0.9)
        ax.plot(frames, energy[i], marker="o", markersize=4, color=color, label=_step_label(rec, step))
    ax.set_xlabel("latent frame")
    ax.set_ylabel("mean token L2 norm in the frame\n(stepscope's temporal energy)")
    ax.set_xticks(frames if len(frames) <= 25 else frames[:: int(np.ceil(len(frames) / 25))])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="denoising step", title_fontsize=8)
    ax.set_title(
        f"Temporal energy per latent frame: layer {layer}, {pass_} pass\n{run_label(rec.meta)}", fontsize=10
    )
    return _save(fig, path, {"layer": layer, "steps": steps, "energy": energy})


def plot_channel_importance(
    rec: RunRecords | str | Path,
    path: str | Path,
    *,
    layer: int,
    steps: int | Sequence[int] | None = None,
    pass_: str = "cond",
    top: int = TOP_CHANNELS,
) -> dict[str, Any]:
    """Bar chart of the `top` channel variances (over all tokens), one panel per step."""
    rec = _records(rec)
    steps = _as_steps(rec, steps)
    channels, variances = [], []
    for step in steps:
        var = rec.map(layer, step, "channel_var", pass_).astype(np.float64)
        order = np.argsort(-var, kind="stable")[: min(top, var.size)]
        channels.append(order)
        variances.append(var[order])
    channels, variances = np.stack(channels), np.stack(variances)
    dim = rec.map(layer, steps[0], "channel_var", pass_).size
    fig = _new_figure(10.0, min(15.0, 1.4 + 2.0 * len(steps)))
    axes = np.atleast_1d(fig.subplots(len(steps), 1, squeeze=False)[:, 0])
    for i, step in enumerate(steps):
        ax = axes[i]
        x = np.arange(channels.shape[1])
        ax.bar(x, variances[i], color=colormaps[ENERGY_CMAP](0.35))
        ax.set_xticks(x, [str(c) for c in channels[i]], fontsize=7, rotation=90 if dim >= 1000 else 0)
        ax.set_ylabel("variance", fontsize=8)
        ax.set_title(_step_label(rec, step), fontsize=9, loc="left")
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xlabel("channel index (sorted by variance over all tokens, descending)")
    fig.suptitle(
        f"Top-{channels.shape[1]} channels by variance (of {dim}): layer {layer}, {pass_} pass\n{run_label(rec.meta)}",
        fontsize=10,
    )
    return _save(fig, path, {"layer": layer, "steps": steps, "channels": channels, "variances": variances})


def plot_topk_channel_maps(
    rec: RunRecords | str | Path,
    path: str | Path,
    *,
    layer: int,
    step: int,
    pass_: str = "cond",
    max_frames: int | None = MAX_FRAMES,
) -> dict[str, Any]:
    """The stored top-k variance channels' values on the token grid, channels x frames.

    Each channel (row) is divided by its largest absolute value (given in the row label), so one
    symmetric colour scale [-1, 1] serves all rows.
    """
    rec = _records(rec)
    (step,) = _as_steps(rec, step)
    maps = rec.map(layer, step, "topk_maps", pass_).astype(np.float64)  # (k, f, h, w)
    channels = rec.map(layer, step, "topk_channels", pass_)
    var = rec.map(layer, step, "channel_var", pass_)
    fidx = frame_indices(maps.shape[1], max_frames)
    shown = maps[:, fidx]
    k, _, h, w = shown.shape
    limits = np.abs(maps).max(axis=(1, 2, 3))
    limits[limits == 0] = 1.0
    scaled = shown / limits[:, None, None, None]
    fig = _new_figure(*_mosaic_figsize(k, len(fidx), h, w, extra_w=2.8, extra_h=1.7))
    ax = fig.subplots()
    row_labels = [
        f"ch {int(c)}\nvar {float(var[c]):.3g}\nmax|v| {lim:.3g}"
        for c, lim in zip(channels, limits, strict=True)
    ]
    im = _draw_mosaic(
        ax, scaled, row_labels, [f"frame {f}" for f in fidx], cmap=SIGNED_CMAP, vmin=-1.0, vmax=1.0
    )
    ax.set_xlabel(f"latent frame ({GRID_NOTE})", fontsize=9)
    ax.set_ylabel("channel (descending variance)", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.9, aspect=30, label="channel value / max |value| of that channel")
    fig.suptitle(
        f"Top-{k} variance channels across latent frames: layer {layer}, {_step_label(rec, step)}, {pass_} pass\n"
        f"{run_label(rec.meta)}",
        fontsize=10,
    )
    return _save(
        fig,
        path,
        {
            "layer": layer,
            "step": step,
            "frames": fidx,
            "channels": np.asarray(channels),
            "maps": shown,
            "limits": limits,
        },
    )


def plot_layer_mean_norm(
    rec: RunRecords | str | Path,
    path: str | Path,
    *,
    steps: int | Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
    pass_: str = "cond",
) -> dict[str, Any]:
    """Mean token norm (activations table) vs layer, one line per step."""
    rec = _records(rec)
    steps = _as_steps(rec, steps)
    table = _table(rec, pass_)
    layers = list(layers) if layers is not None else rec.layers
    values = np.full((len(steps), len(layers)), np.nan)
    for i, step in enumerate(steps):
        rows = table.loc[table["step"] == step].set_index("layer")["mean_norm"]
        values[i] = [rows.get(layer, np.nan) for layer in layers]
    fig = _new_figure(8.0, 4.6)
    ax = fig.subplots()
    cmap = colormaps[ENERGY_CMAP]
    for i, step in enumerate(steps):
        ax.plot(
            layers,
            values[i],
            marker="o",
            color=cmap(i / max(1, len(steps) - 1) * 0.9),
            label=_step_label(rec, step),
        )
    ax.set_xticks(layers)
    ax.set_xlabel("DiT block (layer index)")
    ax.set_ylabel("mean token L2 norm")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="denoising step", title_fontsize=8)
    ax.set_title(f"Mean token norm across layers, {pass_} pass\n{run_label(rec.meta)}", fontsize=10)
    return _save(fig, path, {"steps": steps, "layers": layers, "mean_norm": values})


def plot_layer_frame_grid(
    rec: RunRecords | str | Path,
    path: str | Path,
    *,
    step: int,
    layers: Sequence[int] | None = None,
    pass_: str = "cond",
    clims: dict[int, tuple[float, float]] | None = None,
    max_frames: int | None = MAX_FRAMES,
) -> dict[str, Any]:
    """Token-norm maps, layers (rows) x latent frames (columns), at one step.

    Each layer row has its own colour scale and colour bar: ``clims[layer]`` when given
    (render_run_figures passes the layer's range over all chosen steps, so the files of
    different steps compare), else the range of that layer at this step.
    """
    rec = _records(rec)
    (step,) = _as_steps(rec, step)
    layers = list(layers) if layers is not None else rec.layers
    norms = np.stack([rec.map(layer, step, "norm", pass_) for layer in layers])  # (L, f, h, w)
    fidx = frame_indices(norms.shape[1], max_frames)
    shown = norms[:, fidx]
    _, _, h, w = norms.shape
    width, height = _mosaic_figsize(len(layers), len(fidx), h, w, extra_w=2.6, extra_h=1.5)
    fig = _new_figure(width, height + 0.25 * len(layers))
    axes = np.atleast_1d(fig.subplots(len(layers), 1, squeeze=False)[:, 0])
    row_clims = []
    for i, layer in enumerate(layers):
        vmin, vmax = (
            clims[layer] if clims and layer in clims else (float(norms[i].min()), float(norms[i].max()))
        )
        row_clims.append((vmin, vmax))
        ax = axes[i]
        im = _draw_mosaic(
            ax,
            shown[i : i + 1],
            [f"layer {layer}"],
            [f"frame {f}" for f in fidx] if i == 0 else [""] * len(fidx),
            cmap=NORM_CMAP,
            vmin=vmin,
            vmax=vmax,
        )
        cbar = fig.colorbar(im, ax=ax, shrink=0.95, aspect=8, pad=0.01)
        cbar.ax.tick_params(labelsize=7)
    axes[0].set_xlabel(f"latent frame ({GRID_NOTE})", fontsize=9)
    scale = "fixed across the rendered steps" if clims else "this step's range"
    fig.supylabel(f"DiT layer (colour: token L2 norm, scale per layer, {scale})", fontsize=9)
    fig.suptitle(
        f"Token norm, layers x latent frames: {_step_label(rec, step)}, {pass_} pass\n{run_label(rec.meta)}",
        fontsize=10,
    )
    return _save(
        fig, path, {"step": step, "layers": layers, "frames": fidx, "norm": shown, "row_clims": row_clims}
    )


def plot_norm_vs_step(
    rec: RunRecords | str | Path,
    path: str | Path,
    *,
    layers: Sequence[int] | None = None,
    pass_: str = "cond",
) -> dict[str, Any]:
    """Mean token norm of each layer vs denoising step (activations table's ``mean_norm``)."""
    rec = _records(rec)
    table = _table(rec, pass_)
    layers = list(layers) if layers is not None else rec.layers
    switch = expert_switch_step(rec.schedule)
    fig = _new_figure(9.0, 4.8)
    ax = fig.subplots()
    cmap = colormaps["plasma"]
    curves = {}
    for i, layer in enumerate(layers):
        rows = table.loc[table["layer"] == layer].sort_values("step")
        steps = rows["step"].to_numpy()
        values = rows["mean_norm"].to_numpy(dtype=np.float64)
        curves[layer] = (steps, values)
        ax.plot(
            steps, values, marker=".", color=cmap(i / max(1, len(layers) - 1) * 0.85), label=f"layer {layer}"
        )
    _mark_switch(ax, switch)
    ax.set_xlabel("denoising step (0 = noisiest)")
    ax.set_ylabel("mean token L2 norm")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=2 if len(layers) > 6 else 1)
    ax.set_title(
        f"Mean token norm per layer across denoising steps, {pass_} pass\n{run_label(rec.meta)}", fontsize=10
    )
    return _save(fig, path, {"curves": curves, "switch_step": switch})


def _edges(values: Sequence[int]) -> np.ndarray:
    """Cell edges around sorted integer positions (midpoints; +-0.5 at the ends)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[v[0] - min(0.5, mid[0] - v[0])], mid, [v[-1] + min(0.5, v[-1] - mid[-1])]])


def _integer_ticks(n: int, max_ticks: int = 25) -> np.ndarray:
    return np.arange(0, n, int(np.ceil(n / max_ticks)))


def _switch_legend(fig: Figure, ax) -> None:
    """Legend of the expert-switch marker below the axes (inside, it would hide data)."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color="0.15", linestyle="--", linewidth=1.4, label=line.get_label())
        for line in ax.lines
        if line.get_gid() == SWITCH_GID
    ]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", fontsize=8, frameon=False)


def plot_step_frame_energy(
    rec: RunRecords | str | Path,
    path: str | Path,
    *,
    layer: int,
    pass_: str = "cond",
) -> dict[str, Any]:
    """Heatmap of the temporal energy (mean token norm per latent frame): frames x steps."""
    rec = _records(rec)
    steps = rec.captured_steps
    energy = np.stack([rec.map(layer, s, "frame_energy", pass_).astype(np.float64) for s in steps])  # (S, f)
    switch = expert_switch_step(rec.schedule)
    frames = energy.shape[1]
    fig = _new_figure(min(MAX_WIDTH_IN, max(8.5, 4.0 + 0.16 * len(steps))), min(9.0, 3.4 + 0.22 * frames))
    ax = fig.subplots()
    mesh = ax.pcolormesh(_edges(steps), _edges(range(frames)), energy.T, cmap=ENERGY_CMAP)
    _mark_switch(ax, switch, color="white")
    _switch_legend(fig, ax)
    ax.set_yticks(_integer_ticks(frames))
    ax.set_xlabel("denoising step (0 = noisiest)")
    ax.set_ylabel("latent frame")
    fig.colorbar(mesh, ax=ax, label="mean token L2 norm in the frame\n(stepscope's temporal energy)")
    ax.set_title(
        f"Temporal energy (mean token norm per latent frame) across steps: layer {layer}, {pass_} pass\n"
        f"{run_label(rec.meta)}",
        fontsize=10,
    )
    return _save(fig, path, {"layer": layer, "steps": steps, "energy": energy, "switch_step": switch})


# --------------------------------------------------------------------------- across runs


def _group_label(metas: list[dict[str, Any]]) -> str:
    variants = sorted({str(m.get("variant", "?")) for m in metas})
    tasks = sorted({str(sample_info(m).get("task", "custom")) for m in metas})
    samples = {(str(sample_info(m).get("task")), str(sample_info(m).get("sample"))) for m in metas}
    task_text = ", ".join(tasks) if len(tasks) <= 2 else f"{len(tasks)} tasks"
    return f"{len(metas)} runs ({len(samples)} samples)  ·  {', '.join(variants)}  ·  {task_text}"


def _run_summaries(run_dirs: Sequence[str | Path], pass_: str):
    """Yield (meta, table, switch) per run, one run at a time (tables only, no maps)."""
    for run_dir in run_dirs:
        rec = RunRecords(Path(run_dir))
        try:
            yield rec.meta, _table(rec, pass_), expert_switch_step(rec.schedule)
        finally:
            rec.close()


def _mark_group_switches(ax, switches: list[int | None], color: str = "0.15") -> None:
    distinct = sorted({s for s in switches if s is not None})
    for s in distinct:
        n = sum(1 for x in switches if x == s)
        _mark_switch(ax, s, color=color, label=f"expert switch before step {s} ({n}/{len(switches)} runs)")


def _group_matrix(run_dirs, layers, pass_):
    """Mean over runs of the layer x step mean_norm matrix on the steps common to all runs."""
    metas, switches, tables = [], [], []
    for meta, table, switch in _run_summaries(run_dirs, pass_):
        metas.append(meta)
        switches.append(switch)
        tables.append(table[["layer", "step", "mean_norm"]])
    if not tables:
        raise ValueError("no runs given")
    layer_sets = [set(t["layer"]) for t in tables]
    step_sets = [set(t["step"]) for t in tables]
    layers = sorted(set.intersection(*layer_sets)) if layers is None else list(layers)
    steps = sorted(set.intersection(*step_sets))
    stack = np.full((len(tables), len(layers), len(steps)), np.nan)
    for r, table in enumerate(tables):
        pivot = table.pivot_table(index="layer", columns="step", values="mean_norm")
        stack[r] = pivot.reindex(index=layers, columns=steps).to_numpy()
    return metas, switches, layers, steps, stack


def plot_group_norm_vs_step(
    run_dirs: Sequence[str | Path],
    path: str | Path,
    *,
    layers: Sequence[int] | None = None,
    pass_: str = "cond",
) -> dict[str, Any]:
    """Per layer: mean (line) and +- 1 s.d. (band) across runs of the norm-vs-step curve.

    Only the activations tables are read, one run at a time; steps are those common to all runs.
    """
    metas, switches, layers, steps, stack = _group_matrix(run_dirs, layers, pass_)
    mean = stack.mean(axis=0)
    std = stack.std(axis=0)
    ncols = min(3, len(layers))
    nrows = int(np.ceil(len(layers) / ncols))
    fig = _new_figure(4.6 * ncols + 0.6, 3.2 * nrows + 1.0)
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False))
    for i, layer in enumerate(layers):
        ax = axes.flat[i]
        ax.fill_between(
            steps, mean[i] - std[i], mean[i] + std[i], color="C0", alpha=0.25, label="± 1 s.d. across runs"
        )
        ax.plot(steps, mean[i], color="C0", marker=".", label=f"mean of {stack.shape[0]} runs")
        _mark_group_switches(ax, switches)
        ax.set_title(f"layer {layer}", fontsize=10)
        ax.set_xlabel("denoising step")
        ax.set_ylabel("mean token L2 norm")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(layers) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(
        f"Mean token norm vs denoising step across runs, {pass_} pass\n{_group_label(metas)}", fontsize=10
    )
    return _save(
        fig,
        path,
        {
            "layers": layers,
            "steps": steps,
            "mean": mean,
            "std": std,
            "per_run": stack,
            "switch_steps": switches,
        },
    )


def _matrix_panel(fig, ax, matrix, layers, steps, *, cmap, vmin, vmax, label, title, switches, switch_color):
    mesh = ax.pcolormesh(_edges(steps), _edges(range(len(layers))), matrix, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_ylim(len(layers) - 0.5, -0.5)  # first layer on top
    ax.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    ax.set_xlabel("denoising step (0 = noisiest)")
    ax.set_ylabel("DiT layer")
    ax.set_title(title, fontsize=10)
    _mark_group_switches(ax, switches, color=switch_color)
    fig.colorbar(mesh, ax=ax, label=label)


def plot_group_energy_matrix(
    run_dirs: Sequence[str | Path],
    path: str | Path,
    *,
    layers: Sequence[int] | None = None,
    pass_: str = "cond",
) -> dict[str, Any]:
    """Layer x step matrix of the mean token norm, averaged over runs."""
    metas, switches, layers, steps, stack = _group_matrix(run_dirs, layers, pass_)
    matrix = stack.mean(axis=0)
    fig = _new_figure(min(MAX_WIDTH_IN, max(8.5, 5.0 + 0.16 * len(steps))), 2.8 + 0.4 * len(layers))
    ax = fig.subplots()
    _matrix_panel(
        fig, ax, matrix, layers, steps, cmap=ENERGY_CMAP, vmin=None, vmax=None,
        label=f"mean token L2 norm\n(mean of {stack.shape[0]} runs)",
        title=f"Mean token energy (mean token L2 norm), layer x step, {pass_} pass\n{_group_label(metas)}",
        switches=switches, switch_color="white",
    )  # fmt: skip
    _switch_legend(fig, ax)
    return _save(fig, path, {"layers": layers, "steps": steps, "matrix": matrix, "switch_steps": switches})


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights: the fraction of each output cell covered by each input pixel."""
    edges = np.linspace(0.0, n_in, n_out + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    pix = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, pix + 1) - np.maximum(lo, pix), 0.0, None)
    return overlap / (hi - lo)


def foreground_mask(
    image: str | Path | np.ndarray, height: int, width: int, threshold: float = 0.5
) -> np.ndarray:
    """Boolean (height, width) token-grid mask of the first frame's foreground.

    Foreground pixels are those whose RGB colour differs from the background colour, taken as the
    most common colour of the image; the pixel mask is downsampled to the token grid by area
    average and thresholded (> `threshold`).
    """
    if not isinstance(image, np.ndarray):
        import imageio.v2 as imageio

        image = imageio.imread(image)
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    rgb = image[..., :3].astype(np.uint32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    values, counts = np.unique(packed, return_counts=True)
    background = values[counts.argmax()]
    pixels = (packed != background).astype(np.float64)
    frac = _area_matrix(pixels.shape[0], height) @ pixels @ _area_matrix(pixels.shape[1], width).T
    return frac > threshold


def _first_frames(run_dirs, first_frame) -> list[Path | None]:
    if first_frame is None:
        out = []
        for run_dir in run_dirs:
            image = RunRecords(Path(run_dir)).meta.get("image")
            out.append(Path(image) if image and Path(image).is_file() else None)
        return out
    if isinstance(first_frame, (str, Path)):
        return [Path(first_frame)] * len(run_dirs)
    first_frame = [Path(p) if p is not None else None for p in first_frame]
    if len(first_frame) != len(run_dirs):
        raise ValueError("first_frame must be one path or one path per run")
    return first_frame


def plot_group_fg_bg(
    run_dirs: Sequence[str | Path],
    path: str | Path,
    first_frame: str | Path | Sequence[str | Path | None] | None = None,
    *,
    layers: Sequence[int] | None = None,
    pass_: str = "cond",
    frames: str = "all",
) -> dict[str, Any] | None:
    """Layer x step matrices of the mean token norm over foreground and background tokens.

    `first_frame` is one image for all runs (e.g. seeds of one sample), one per run, or None to
    use each run's ``meta["image"]``. The token mask comes from `foreground_mask` and is applied
    to every latent frame (``frames="all"``) or only to latent frame 0 (``frames="first"``).
    Runs without a usable mask (no image, or a mask that is all foreground or all background)
    are skipped; returns None (and writes nothing) when no run has one. Maps are read one at a
    time.
    """
    run_dirs = list(run_dirs)
    images = _first_frames(run_dirs, first_frame)
    metas, switches, per_run_fg, per_run_bg, fractions, used = [], [], [], [], [], []
    common_steps: list[int] | None = None
    common_layers = None
    for run_dir, image in zip(run_dirs, images, strict=True):
        if image is None or not Path(image).is_file():
            continue
        rec = RunRecords(Path(run_dir))
        try:
            table = _table(rec, pass_)
            h, w = int(table["height"].iloc[0]), int(table["width"].iloc[0])
            mask = foreground_mask(image, h, w)
            if mask.all() or not mask.any():
                continue
            run_layers = sorted(set(table["layer"])) if layers is None else list(layers)
            steps = sorted(set(table["step"]))
            fg = np.full((len(run_layers), len(steps)), np.nan)
            bg = np.full_like(fg, np.nan)
            for i, layer in enumerate(run_layers):
                for j, step in enumerate(steps):
                    norm = rec.map(layer, step, "norm", pass_).astype(np.float64)
                    if frames == "first":
                        norm = norm[:1]
                    fg[i, j] = norm[:, mask].mean()
                    bg[i, j] = norm[:, ~mask].mean()
            metas.append(rec.meta)
            switches.append(expert_switch_step(rec.schedule))
            per_run_fg.append((run_layers, steps, fg))
            per_run_bg.append(bg)
            fractions.append(float(mask.mean()))
            used.append(Path(run_dir))
            common_steps = steps if common_steps is None else sorted(set(common_steps) & set(steps))
            common_layers = (
                run_layers if common_layers is None else [x for x in common_layers if x in run_layers]
            )
        finally:
            rec.close()
    if not used:
        return None
    fg_stack, bg_stack = [], []
    for (run_layers, steps, fg), bg in zip(per_run_fg, per_run_bg, strict=True):
        li = [run_layers.index(x) for x in common_layers]
        si = [steps.index(s) for s in common_steps]
        fg_stack.append(fg[np.ix_(li, si)])
        bg_stack.append(bg[np.ix_(li, si)])
    fg_mean, bg_mean = np.mean(fg_stack, axis=0), np.mean(bg_stack, axis=0)
    diff = fg_mean - bg_mean
    vmin, vmax = float(min(fg_mean.min(), bg_mean.min())), float(max(fg_mean.max(), bg_mean.max()))
    dlim = float(np.abs(diff).max()) or 1.0
    fig = _new_figure(
        min(MAX_WIDTH_IN, 3 * max(4.2, 3.2 + 0.1 * len(common_steps))), 3.2 + 0.4 * len(common_layers)
    )
    axes = fig.subplots(1, 3)
    n = len(used)
    _matrix_panel(
        fig, axes[0], fg_mean, common_layers, common_steps, cmap=ENERGY_CMAP, vmin=vmin, vmax=vmax,
        label="mean token L2 norm", title="foreground tokens", switches=switches, switch_color="white",
    )  # fmt: skip
    _matrix_panel(
        fig, axes[1], bg_mean, common_layers, common_steps, cmap=ENERGY_CMAP, vmin=vmin, vmax=vmax,
        label="mean token L2 norm", title="background tokens", switches=switches, switch_color="white",
    )  # fmt: skip
    _matrix_panel(
        fig, axes[2], diff, common_layers, common_steps, cmap=SIGNED_CMAP, vmin=-dlim, vmax=dlim,
        label="foreground − background", title="foreground − background", switches=switches, switch_color="0.15",
    )  # fmt: skip
    _switch_legend(fig, axes[0])
    where = "all latent frames" if frames == "all" else "latent frame 0"
    fig.suptitle(
        f"Foreground vs background token energy (mask from the first frame, applied to {where}; "
        f"mean of {n} runs, foreground {np.mean(fractions):.0%} of tokens), {pass_} pass\n{_group_label(metas)}",
        fontsize=10,
    )
    return _save(
        fig,
        path,
        {
            "layers": common_layers,
            "steps": common_steps,
            "fg": fg_mean,
            "bg": bg_mean,
            "diff": diff,
            "runs": used,
            "mask_fraction": fractions,
            "switch_steps": switches,
        },
    )


# --------------------------------------------------------------------------- drivers


def render_run_figures(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    layers: Sequence[int] | None = None,
    steps: Sequence[int] | None = None,
    topk_steps: Sequence[int] | None = None,
    pass_: str = "cond",
    max_frames: int | None = MAX_FRAMES,
) -> list[Path]:
    """Write the per-run figure set (file names in the module docstring); return the paths.

    `layers` defaults to every captured layer; `steps` (for the per-step figures) defaults to
    3 evenly spaced captured steps (first, middle, last) plus, for Wan2.2, the first low-noise
    step (see `default_steps`). `topk_steps` (steps with a top-6 channel-map figure per layer)
    defaults to every one of `steps` that has spatial maps; the channel-importance figure covers
    all of `steps`. `max_frames` caps the latent frames shown in image panels (None: all).
    """
    rec = RunRecords(Path(run_dir))
    out = Path(out_dir)
    try:
        layers = list(layers) if layers is not None else rec.layers
        steps = _as_steps(rec, steps)
        # PCA and top-k maps exist only at the run's spatial steps (record.map_steps).
        spatial = [step for step in steps if step in rec.spatial_steps] or _nearest(rec.spatial_steps, steps)
        if topk_steps is None:
            topk_steps = spatial
        else:
            topk_steps = [step for step in _as_steps(rec, topk_steps) if step in rec.spatial_steps]
        paths: list[Path] = []

        def keep(result: dict[str, Any]) -> None:
            paths.append(result["path"])

        keep(plot_norm_vs_step(rec, out / "norm_vs_step.png", layers=layers, pass_=pass_))
        keep(plot_layer_mean_norm(rec, out / "layer_mean_norm.png", steps=steps, layers=layers, pass_=pass_))
        clims = {layer: norm_clim(rec, layer, steps, pass_) for layer in layers}
        for step in steps:
            keep(
                plot_layer_frame_grid(
                    rec,
                    out / f"layer_frame_grid_S{step:04d}.png",
                    step=step,
                    layers=layers,
                    pass_=pass_,
                    clims=clims,
                    max_frames=max_frames,
                )
            )
        for layer in layers:
            tag = f"L{layer:02d}"
            keep(plot_step_frame_energy(rec, out / f"step_frame_energy_{tag}.png", layer=layer, pass_=pass_))
            keep(
                plot_norm_heatmaps(
                    rec, out / f"norm_heatmap_{tag}.png", layer=layer, steps=steps, pass_=pass_,
                    max_frames=max_frames,
                )
            )
            if spatial:
                keep(
                    plot_pca_rgb(
                        rec, out / f"pca_rgb_{tag}.png", layer=layer, steps=spatial, pass_=pass_,
                        max_frames=max_frames,
                    )
                )
            keep(
                plot_temporal_energy(
                    rec, out / f"temporal_energy_{tag}.png", layer=layer, steps=steps, pass_=pass_
                )
            )
            keep(
                plot_channel_importance(
                    rec, out / f"channel_importance_{tag}.png", layer=layer, steps=steps, pass_=pass_
                )
            )
            for step in topk_steps:
                keep(
                    plot_topk_channel_maps(
                        rec, out / f"topk_maps_{tag}_S{step:04d}.png", layer=layer, step=step, pass_=pass_,
                        max_frames=max_frames,
                    )
                )
        return paths
    finally:
        rec.close()


def render_group_figures(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    first_frame: str | Path | Sequence[str | Path | None] | None = None,
    *,
    layers: Sequence[int] | None = None,
    pass_: str = "cond",
) -> list[Path]:
    """Write the cross-run figures (file names in the module docstring); return the paths.

    ``group_fg_bg_energy.png`` is written only when a foreground mask can be derived (see
    `plot_group_fg_bg` for how `first_frame` is used).
    """
    run_dirs = [Path(p) for p in run_dirs]
    out = Path(out_dir)
    paths = [
        plot_group_norm_vs_step(run_dirs, out / "group_norm_vs_step.png", layers=layers, pass_=pass_)["path"],
        plot_group_energy_matrix(run_dirs, out / "group_energy_matrix.png", layers=layers, pass_=pass_)[
            "path"
        ],
    ]
    result = plot_group_fg_bg(
        run_dirs, out / "group_fg_bg_energy.png", first_frame, layers=layers, pass_=pass_
    )
    if result is not None:
        paths.append(result["path"])
    return paths
