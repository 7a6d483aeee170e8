"""The seed's token-visualization figures, under the seed's file names, drawn from our records.

The official tools (OpenSenseNova/Demystifying_Video_Reasoning, tools/token_visualization.py and
tools/custom_token_visualization.py) draw these from raw block outputs inside the step callback;
we draw the same quantities from the reduced maps of docs/records.md, on the CPU, after sampling.
Per step S in `--viz_steps` (folder ``feature_maps/step_SSSS/``) and layer LL:

| file | quantity (as the seed computes it) |
| --- | --- |
| ``LLL_norm.png`` | per-token L2 norm, one panel per latent frame, each with its own colour scale |
| ``LLL_pca.png`` | tokens on their first 3 principal components (centred), min-max per component over all frames, as RGB; title: summed explained variance |
| ``LLL_temporal.png`` | temporal energy per latent frame = L2 norm of the frame's token matrix (``frame_l2``) |
| ``LLL_ch_imp.png`` | the 20 highest channel variances, unbiased (N - 1) as torch's ``var`` |
| ``LLL_top_ch.png`` | the 6 highest-variance channels' maps, channels x frames, colour range per channel |
| ``norm_across_layers.png`` | mean token norm per layer |
| ``layer_grid.png`` | token-norm maps, layers x frames |

and over every captured step, in ``feature_maps/summary/``: ``norm_evolution.png`` (mean token norm
vs step per layer) and ``temporal_heatmap_LLL.png`` (steps x frames of ``frame_l2``). All latent
frames are shown, as in the seed. Every function returns the numbers it drew (see stepscope.plots.style.save).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stepscope.plots.style import new_figure, save
from stepscope.records import RunRecords

SEED_TOP_CHANNELS = 20
SEED_TOP_MAPS = 6


def seed_pca_rgb(pca: np.ndarray) -> np.ndarray:
    """Min-max per component over all frames and tokens, with the seed's +1e-8 in the span."""
    pca = np.asarray(pca, dtype=np.float64)
    lo = pca.min(axis=(0, 1, 2), keepdims=True)
    hi = pca.max(axis=(0, 1, 2), keepdims=True)
    return (pca - lo) / (hi - lo + 1e-8)


def unbiased_channel_var(rec: RunRecords, layer: int, step: int) -> np.ndarray:
    """The seed ranks channels by torch's default (unbiased) variance: ours (population) x N/(N-1)."""
    var = rec.map(layer, step, "channel_var").astype(np.float64)
    tokens = int(np.prod(rec.map(layer, step, "norm").shape))
    return var * tokens / max(tokens - 1, 1)


def _panel_grid(
    panels: np.ndarray, row_labels, column_prefix: str, *, cmap: str, row_range: bool, label_size=9
):
    """Rows x frames of maps (R, f, h, w), one axes each, as the seed lays them out; with
    `row_range` each row shares its own colour range, else every panel is scaled on its own."""
    rows, frames = panels.shape[:2]
    fig = new_figure(3 * frames, 2.5 * rows)
    axes = fig.subplots(rows, frames, squeeze=False)
    for row in range(rows):
        limits = {"vmin": float(panels[row].min()), "vmax": float(panels[row].max())} if row_range else {}
        for frame in range(frames):
            ax = axes[row, frame]
            ax.imshow(panels[row, frame], cmap=cmap, aspect="auto", **limits)
            ax.set_xticks([])
            ax.set_yticks([])
            if frame == 0:
                ax.set_ylabel(row_labels[row], fontsize=label_size)
            if row == 0:
                ax.set_title(f"{column_prefix}{frame}", fontsize=9)
    return fig


def _frame_panels(fig, count: int):
    return np.atleast_1d(fig.subplots(1, count, squeeze=False)[0])


def plot_seed_norm(rec: RunRecords, path: Path, *, layer: int, step: int) -> dict[str, Any]:
    norm = rec.map(layer, step, "norm").astype(np.float64)
    fig = new_figure(4 * len(norm) + 1, 4)
    for index, ax in enumerate(_frame_panels(fig, len(norm))):
        image = ax.imshow(norm[index], cmap="viridis", aspect="auto")
        ax.set_title(f"Frame {index}")
        ax.axis("off")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"Step {step} L{layer} Norm (per-token L2 norm)")
    return save(fig, path, {"norm": norm})


def plot_seed_pca(rec: RunRecords, path: Path, *, layer: int, step: int) -> dict[str, Any]:
    rgb = seed_pca_rgb(rec.map(layer, step, "pca"))
    explained = float(rec.map(layer, step, "pca_explained").astype(np.float64).sum())
    fig = new_figure(4 * len(rgb) + 1, 4)
    for index, ax in enumerate(_frame_panels(fig, len(rgb))):
        ax.imshow(np.clip(rgb[index], 0, 1))
        ax.set_title(f"Frame {index}")
        ax.axis("off")
    fig.suptitle(f"Step {step} L{layer} PCA  (var={explained * 100:.1f}%)")
    return save(fig, path, {"rgb": rgb, "explained": explained})


def plot_seed_temporal(rec: RunRecords, path: Path, *, layer: int, step: int) -> dict[str, Any]:
    energy = rec.frame_l2(layer, step)
    fig = new_figure(6, 4)
    ax = fig.subplots()
    ax.plot(range(len(energy)), energy, "o-", lw=2, ms=8, color="coral")
    ax.set_xlabel("Frame Index")
    ax.set_ylabel("Energy (L2 norm of the frame's tokens)")
    ax.set_xticks(range(len(energy)))
    ax.set_title(f"Step {step} L{layer} Temporal Energy")
    return save(fig, path, {"energy": energy})


def plot_seed_channel_importance(rec: RunRecords, path: Path, *, layer: int, step: int) -> dict[str, Any]:
    var = unbiased_channel_var(rec, layer, step)
    count = min(SEED_TOP_CHANNELS, var.size)
    channels = np.argsort(-var, kind="stable")[:count]
    fig = new_figure(8, max(3, count * 0.25))
    ax = fig.subplots()
    ax.barh(range(count), var[channels][::-1], color="teal")
    ax.set_yticks(range(count), [str(c) for c in channels[::-1]], fontsize=7)
    ax.set_xlabel("Variance (unbiased)")
    ax.set_ylabel("Channel ID")
    ax.set_title(f"Step {step} L{layer} Ch Importance")
    return save(fig, path, {"channels": channels, "variances": var[channels]})


def plot_seed_top_channels(rec: RunRecords, path: Path, *, layer: int, step: int) -> dict[str, Any]:
    maps = rec.map(layer, step, "topk_maps").astype(np.float64)[:SEED_TOP_MAPS]  # (k, f, h, w)
    channels = rec.map(layer, step, "topk_channels")[:SEED_TOP_MAPS]
    fig = _panel_grid(
        maps, [f"Ch{int(c)}" for c in channels], "Fr", cmap="RdBu_r", row_range=True, label_size=8
    )  # colour range per channel, over its frames
    fig.suptitle(f"Step {step} L{layer} Top Channels")
    return save(fig, path, {"channels": np.asarray(channels), "maps": maps})


def plot_seed_norm_across_layers(
    rec: RunRecords, path: Path, *, layers: Sequence[int], step: int
) -> dict[str, Any]:
    values = [float(rec.map(layer, step, "norm").astype(np.float64).mean()) for layer in layers]
    fig = new_figure(max(6, len(layers) * 0.5), 4)
    ax = fig.subplots()
    ax.bar(range(len(layers)), values, tick_label=[str(layer) for layer in layers], color="steelblue")
    ax.set_xlabel("Layer")
    ax.set_ylabel("Mean Token Norm")
    ax.set_title(f"Step {step} - Norm Across Layers")
    return save(fig, path, {"layers": list(layers), "mean_norm": np.asarray(values)})


def plot_seed_layer_grid(rec: RunRecords, path: Path, *, layers: Sequence[int], step: int) -> dict[str, Any]:
    norms = np.stack([rec.map(layer, step, "norm").astype(np.float64) for layer in layers])  # (L, f, h, w)
    fig = _panel_grid(norms, [f"L{layer}" for layer in layers], "Frame ", cmap="viridis", row_range=False)
    fig.suptitle(f"Step {step} - Layer Grid")
    return save(fig, path, {"norm": norms})


def plot_seed_norm_evolution(rec: RunRecords, path: Path, *, layers: Sequence[int]) -> dict[str, Any]:
    steps = rec.captured_steps
    curves = {
        layer: np.array([rec.map(layer, s, "norm").astype(np.float64).mean() for s in steps])
        for layer in layers
    }
    fig = new_figure(12, 5)
    ax = fig.subplots()
    for layer, values in curves.items():
        ax.plot(steps, values, "o-", label=f"L{layer}", ms=3)
    ax.set_xlabel("Diffusion Step")
    ax.set_ylabel("Mean Token Norm")
    ax.set_title("Feature Norm Evolution Across Steps")
    ax.legend(fontsize=8)
    return save(fig, path, {"steps": steps, "curves": curves})


def plot_seed_temporal_heatmap(rec: RunRecords, path: Path, *, layer: int) -> dict[str, Any]:
    steps = rec.captured_steps
    energy = np.stack([rec.frame_l2(layer, s) for s in steps])  # (S, f)
    fig = new_figure(max(6, energy.shape[1] * 1.5), max(4, len(steps) * 0.15))
    ax = fig.subplots()
    image = ax.imshow(energy, aspect="auto", cmap="hot")
    ax.set_xlabel("Frame Index")
    ax.set_ylabel("Step")
    ax.set_yticks(range(len(steps)), [str(s) for s in steps], fontsize=6)
    ax.set_title(f"Layer {layer} - Temporal Energy Heatmap (L2 norm of the frame's tokens)")
    fig.colorbar(image, ax=ax)
    return save(fig, path, {"steps": steps, "energy": energy})


PER_LAYER = {
    "norm": plot_seed_norm,
    "pca": plot_seed_pca,
    "temporal": plot_seed_temporal,
    "ch_imp": plot_seed_channel_importance,
    "top_ch": plot_seed_top_channels,
}
PER_STEP = {"norm_across_layers": plot_seed_norm_across_layers, "layer_grid": plot_seed_layer_grid}


def render_seed_feature_maps(
    run_dir: str | Path, out_dir: str | Path, *, layers: Sequence[int], viz_steps: Sequence[int] | None
) -> list[Path]:
    """Write ``out_dir/feature_maps/step_SSSS/*`` for each of `viz_steps` (None: every captured step)
    and ``out_dir/feature_maps/summary/*`` over every captured step; returns the paths."""
    root = Path(out_dir) / "feature_maps"
    if not layers:  # nothing captured: the seed leaves an empty summary folder
        (root / "summary").mkdir(parents=True, exist_ok=True)
        return []
    rec = RunRecords(Path(run_dir))
    paths: list[Path] = []
    try:
        captured = rec.captured_steps
        steps = captured if viz_steps is None else [s for s in captured if s in set(viz_steps)]
        for step in steps:
            folder = root / f"step_{step:04d}"
            for layer in layers:
                for suffix, plot in PER_LAYER.items():
                    paths.append(
                        plot(rec, folder / f"L{layer:02d}_{suffix}.png", layer=layer, step=step)["path"]
                    )
            for name, plot in PER_STEP.items():
                paths.append(plot(rec, folder / f"{name}.png", layers=sorted(layers), step=step)["path"])
        summary = root / "summary"
        paths.append(
            plot_seed_norm_evolution(rec, summary / "norm_evolution.png", layers=sorted(layers))["path"]
        )
        for layer in sorted(layers):
            paths.append(
                plot_seed_temporal_heatmap(rec, summary / f"temporal_heatmap_L{layer:02d}.png", layer=layer)[
                    "path"
                ]
            )
        return paths
    finally:
        rec.close()
