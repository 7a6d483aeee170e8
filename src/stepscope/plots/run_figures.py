"""Figures of one run, drawn from its reduced maps (docs/records.md; no raw hidden state needed).

Every ``plot_*`` function takes a `RunRecords` (or a run directory) and an output PNG path,
writes the PNG (`style.save`) and returns a dict with the numbers it drew (arrays as numpy), plus
``figsize``, ``dpi``, ``clims`` and ``switch_marks``. Functions that draw one layer at several
steps use one colour scale for all those steps. Temporal energy here is ours, the mean token norm
of a latent frame (``frame_energy``); the seed's (``frame_l2``) is drawn by
stepscope.plots.seed_figures. Which files the workflow writes: stepscope.plots.figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps

from stepscope.plots.helpers import (
    GRID_NOTE,
    MAX_FRAMES,
    TOP_CHANNELS,
    activations,
    as_records,
    as_steps,
    draw_mosaic,
    edges,
    frame_indices,
    integer_ticks,
    mosaic_figsize,
    pca_to_rgb,
    run_label,
    step_label,
)
from stepscope.plots.style import (
    ENERGY_CMAP,
    MAX_WIDTH_IN,
    NORM_CMAP,
    SIGNED_CMAP,
    mark_switch,
    new_figure,
    save,
    switch_legend,
)
from stepscope.records import RunRecords, expert_switch_step


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
    rec = as_records(rec)
    steps = as_steps(rec, steps)
    norms = np.stack([rec.map(layer, s, "norm", pass_) for s in steps])  # (S, f, h, w)
    fidx = frame_indices(norms.shape[1], max_frames)
    shown = norms[:, fidx]
    vmin, vmax = float(norms.min()), float(norms.max())
    _, _, h, w = norms.shape
    fig = new_figure(*mosaic_figsize(len(steps), len(fidx), h, w, extra_w=2.6, extra_h=1.7))
    ax = fig.subplots()
    im = draw_mosaic(
        ax,
        shown,
        [step_label(rec, s, short=True) for s in steps],
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
    return save(
        fig, path, {"layer": layer, "steps": steps, "frames": fidx, "norm": shown, "vmin": vmin, "vmax": vmax}
    )


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
    rec = as_records(rec)
    steps = as_steps(rec, steps)
    rgbs, explained = [], []
    for step in steps:
        rgbs.append(pca_to_rgb(rec.map(layer, step, "pca", pass_)))
        explained.append(rec.map(layer, step, "pca_explained", pass_).astype(np.float64))
    rgb = np.stack(rgbs)
    explained = np.stack(explained)
    fidx = frame_indices(rgb.shape[1], max_frames)
    shown = rgb[:, fidx]
    _, _, h, w, _ = rgb.shape
    fig = new_figure(*mosaic_figsize(len(steps), len(fidx), h, w, extra_w=2.4, extra_h=1.9))
    ax = fig.subplots()
    row_labels = [
        f"{step_label(rec, s, short=True)}\nEV {ev[0]:.0%} {ev[1]:.0%} {ev[2]:.0%}"
        for s, ev in zip(steps, explained, strict=True)
    ]
    draw_mosaic(ax, shown, row_labels, [f"frame {f}" for f in fidx])
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
    return save(
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
    rec = as_records(rec)
    steps = as_steps(rec, steps)
    energy = np.stack([rec.map(layer, s, "frame_energy", pass_).astype(np.float64) for s in steps])
    fig = new_figure(8.0, 4.6)
    ax = fig.subplots()
    cmap = colormaps[ENERGY_CMAP]
    frames = np.arange(energy.shape[1])
    for i, step in enumerate(steps):
        color = cmap(i / max(1, len(steps) - 1) * 0.9)
        ax.plot(frames, energy[i], marker="o", markersize=4, color=color, label=step_label(rec, step))
    ax.set_xlabel("latent frame")
    ax.set_ylabel("mean token L2 norm in the frame\n(stepscope's temporal energy)")
    ax.set_xticks(frames if len(frames) <= 25 else frames[:: int(np.ceil(len(frames) / 25))])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="denoising step", title_fontsize=8)
    ax.set_title(
        f"Temporal energy per latent frame: layer {layer}, {pass_} pass\n{run_label(rec.meta)}", fontsize=10
    )
    return save(fig, path, {"layer": layer, "steps": steps, "energy": energy})


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
    rec = as_records(rec)
    steps = as_steps(rec, steps)
    channels, variances = [], []
    for step in steps:
        var = rec.map(layer, step, "channel_var", pass_).astype(np.float64)
        order = np.argsort(-var, kind="stable")[: min(top, var.size)]
        channels.append(order)
        variances.append(var[order])
    channels, variances = np.stack(channels), np.stack(variances)
    dim = rec.map(layer, steps[0], "channel_var", pass_).size
    fig = new_figure(10.0, min(15.0, 1.4 + 2.0 * len(steps)))
    axes = np.atleast_1d(fig.subplots(len(steps), 1, squeeze=False)[:, 0])
    for i, step in enumerate(steps):
        ax = axes[i]
        x = np.arange(channels.shape[1])
        ax.bar(x, variances[i], color=colormaps[ENERGY_CMAP](0.35))
        ax.set_xticks(x, [str(c) for c in channels[i]], fontsize=7, rotation=90 if dim >= 1000 else 0)
        ax.set_ylabel("variance", fontsize=8)
        ax.set_title(step_label(rec, step), fontsize=9, loc="left")
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xlabel("channel index (sorted by variance over all tokens, descending)")
    fig.suptitle(
        f"Top-{channels.shape[1]} channels by variance (of {dim}): layer {layer}, {pass_} pass\n{run_label(rec.meta)}",
        fontsize=10,
    )
    return save(fig, path, {"layer": layer, "steps": steps, "channels": channels, "variances": variances})


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
    rec = as_records(rec)
    (step,) = as_steps(rec, step)
    maps = rec.map(layer, step, "topk_maps", pass_).astype(np.float64)  # (k, f, h, w)
    channels = rec.map(layer, step, "topk_channels", pass_)
    var = rec.map(layer, step, "channel_var", pass_)
    fidx = frame_indices(maps.shape[1], max_frames)
    shown = maps[:, fidx]
    k, _, h, w = shown.shape
    limits = np.abs(maps).max(axis=(1, 2, 3))
    limits[limits == 0] = 1.0
    scaled = shown / limits[:, None, None, None]
    fig = new_figure(*mosaic_figsize(k, len(fidx), h, w, extra_w=2.8, extra_h=1.7))
    ax = fig.subplots()
    row_labels = [
        f"ch {int(c)}\nvar {float(var[c]):.3g}\nmax|v| {lim:.3g}"
        for c, lim in zip(channels, limits, strict=True)
    ]
    im = draw_mosaic(
        ax, scaled, row_labels, [f"frame {f}" for f in fidx], cmap=SIGNED_CMAP, vmin=-1.0, vmax=1.0
    )
    ax.set_xlabel(f"latent frame ({GRID_NOTE})", fontsize=9)
    ax.set_ylabel("channel (descending variance)", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.9, aspect=30, label="channel value / max |value| of that channel")
    fig.suptitle(
        f"Top-{k} variance channels across latent frames: layer {layer}, {step_label(rec, step)}, {pass_} pass\n"
        f"{run_label(rec.meta)}",
        fontsize=10,
    )
    return save(
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
    rec = as_records(rec)
    steps = as_steps(rec, steps)
    table = activations(rec, pass_)
    layers = list(layers) if layers is not None else rec.layers
    values = np.full((len(steps), len(layers)), np.nan)
    for i, step in enumerate(steps):
        rows = table.loc[table["step"] == step].set_index("layer")["mean_norm"]
        values[i] = [rows.get(layer, np.nan) for layer in layers]
    fig = new_figure(8.0, 4.6)
    ax = fig.subplots()
    cmap = colormaps[ENERGY_CMAP]
    for i, step in enumerate(steps):
        ax.plot(
            layers,
            values[i],
            marker="o",
            color=cmap(i / max(1, len(steps) - 1) * 0.9),
            label=step_label(rec, step),
        )
    ax.set_xticks(layers)
    ax.set_xlabel("DiT block (layer index)")
    ax.set_ylabel("mean token L2 norm")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="denoising step", title_fontsize=8)
    ax.set_title(f"Mean token norm across layers, {pass_} pass\n{run_label(rec.meta)}", fontsize=10)
    return save(fig, path, {"steps": steps, "layers": layers, "mean_norm": values})


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
    rec = as_records(rec)
    (step,) = as_steps(rec, step)
    layers = list(layers) if layers is not None else rec.layers
    norms = np.stack([rec.map(layer, step, "norm", pass_) for layer in layers])  # (L, f, h, w)
    fidx = frame_indices(norms.shape[1], max_frames)
    shown = norms[:, fidx]
    _, _, h, w = norms.shape
    width, height = mosaic_figsize(len(layers), len(fidx), h, w, extra_w=2.6, extra_h=1.5)
    fig = new_figure(width, height + 0.25 * len(layers))
    axes = np.atleast_1d(fig.subplots(len(layers), 1, squeeze=False)[:, 0])
    row_clims = []
    for i, layer in enumerate(layers):
        vmin, vmax = (
            clims[layer] if clims and layer in clims else (float(norms[i].min()), float(norms[i].max()))
        )
        row_clims.append((vmin, vmax))
        ax = axes[i]
        im = draw_mosaic(
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
        f"Token norm, layers x latent frames: {step_label(rec, step)}, {pass_} pass\n{run_label(rec.meta)}",
        fontsize=10,
    )
    return save(
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
    rec = as_records(rec)
    table = activations(rec, pass_)
    layers = list(layers) if layers is not None else rec.layers
    switch = expert_switch_step(rec.schedule)
    fig = new_figure(9.0, 4.8)
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
    mark_switch(ax, switch)
    ax.set_xlabel("denoising step (0 = noisiest)")
    ax.set_ylabel("mean token L2 norm")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=2 if len(layers) > 6 else 1)
    ax.set_title(
        f"Mean token norm per layer across denoising steps, {pass_} pass\n{run_label(rec.meta)}", fontsize=10
    )
    return save(fig, path, {"curves": curves, "switch_step": switch})


def plot_step_frame_energy(
    rec: RunRecords | str | Path,
    path: str | Path,
    *,
    layer: int,
    pass_: str = "cond",
) -> dict[str, Any]:
    """Heatmap of the temporal energy (mean token norm per latent frame): frames x steps."""
    rec = as_records(rec)
    steps = rec.captured_steps
    energy = np.stack([rec.map(layer, s, "frame_energy", pass_).astype(np.float64) for s in steps])  # (S, f)
    switch = expert_switch_step(rec.schedule)
    frames = energy.shape[1]
    fig = new_figure(min(MAX_WIDTH_IN, max(8.5, 4.0 + 0.16 * len(steps))), min(9.0, 3.4 + 0.22 * frames))
    ax = fig.subplots()
    mesh = ax.pcolormesh(edges(steps), edges(range(frames)), energy.T, cmap=ENERGY_CMAP)
    mark_switch(ax, switch, cmap=ENERGY_CMAP)
    switch_legend(fig, ax)
    ax.set_yticks(integer_ticks(frames))
    ax.set_xlabel("denoising step (0 = noisiest)")
    ax.set_ylabel("latent frame")
    fig.colorbar(mesh, ax=ax, label="mean token L2 norm in the frame\n(stepscope's temporal energy)")
    ax.set_title(
        f"Temporal energy (mean token norm per latent frame) across steps: layer {layer}, {pass_} pass\n"
        f"{run_label(rec.meta)}",
        fontsize=10,
    )
    return save(fig, path, {"layer": layer, "steps": steps, "energy": energy, "switch_step": switch})

