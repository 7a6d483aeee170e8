"""Figures across the runs of one group (the seeds and samples of one variant x task).

Only the activations tables are read for the curves and matrices, one run at a time; the
foreground/background figure reads the norm maps one at a time. Which files: stepscope.plots.figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stepscope.plots.helpers import activations, edges, sample_info
from stepscope.plots.masks import foreground_mask
from stepscope.plots.style import (
    ENERGY_CMAP,
    MAX_WIDTH_IN,
    SIGNED_CMAP,
    mark_group_switches,
    new_figure,
    save,
    switch_legend,
)
from stepscope.records import RunRecords, expert_switch_step


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
            yield rec.meta, activations(rec, pass_), expert_switch_step(rec.schedule)
        finally:
            rec.close()


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
    fig = new_figure(4.6 * ncols + 0.6, 3.2 * nrows + 1.0)
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False))
    for i, layer in enumerate(layers):
        ax = axes.flat[i]
        ax.fill_between(
            steps, mean[i] - std[i], mean[i] + std[i], color="C0", alpha=0.25, label="± 1 s.d. across runs"
        )
        ax.plot(steps, mean[i], color="C0", marker=".", label=f"mean of {stack.shape[0]} runs")
        mark_group_switches(ax, switches)
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
    return save(
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


def _matrix_panel(fig, ax, matrix, layers, steps, *, cmap, vmin, vmax, label, title, switches):
    mesh = ax.pcolormesh(edges(steps), edges(range(len(layers))), matrix, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_ylim(len(layers) - 0.5, -0.5)  # first layer on top
    ax.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    ax.set_xlabel("denoising step (0 = noisiest)")
    ax.set_ylabel("DiT layer")
    ax.set_title(title, fontsize=10)
    mark_group_switches(ax, switches, cmap=cmap)
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
    fig = new_figure(min(MAX_WIDTH_IN, max(8.5, 5.0 + 0.16 * len(steps))), 2.8 + 0.4 * len(layers))
    ax = fig.subplots()
    _matrix_panel(
        fig, ax, matrix, layers, steps, cmap=ENERGY_CMAP, vmin=None, vmax=None,
        label=f"mean token L2 norm\n(mean of {stack.shape[0]} runs)",
        title=f"Mean token energy (mean token L2 norm), layer x step, {pass_} pass\n{_group_label(metas)}",
        switches=switches,
    )  # fmt: skip
    switch_legend(fig, ax)
    return save(fig, path, {"layers": layers, "steps": steps, "matrix": matrix, "switch_steps": switches})


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
            table = activations(rec, pass_)
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
    fig = new_figure(
        min(MAX_WIDTH_IN, 3 * max(4.2, 3.2 + 0.1 * len(common_steps))), 3.2 + 0.4 * len(common_layers)
    )
    axes = fig.subplots(1, 3)
    n = len(used)
    _matrix_panel(
        fig, axes[0], fg_mean, common_layers, common_steps, cmap=ENERGY_CMAP, vmin=vmin, vmax=vmax,
        label="mean token L2 norm", title="foreground tokens", switches=switches,
    )  # fmt: skip
    _matrix_panel(
        fig, axes[1], bg_mean, common_layers, common_steps, cmap=ENERGY_CMAP, vmin=vmin, vmax=vmax,
        label="mean token L2 norm", title="background tokens", switches=switches,
    )  # fmt: skip
    _matrix_panel(
        fig, axes[2], diff, common_layers, common_steps, cmap=SIGNED_CMAP, vmin=-dlim, vmax=dlim,
        label="foreground − background", title="foreground − background", switches=switches,
    )  # fmt: skip
    switch_legend(fig, axes[0])
    where = "all latent frames" if frames == "all" else "latent frame 0"
    fig.suptitle(
        f"Foreground vs background token energy (mask from the first frame, applied to {where}; "
        f"mean of {n} runs, foreground {np.mean(fractions):.0%} of tokens), {pass_} pass\n{_group_label(metas)}",
        fontsize=10,
    )
    return save(
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

