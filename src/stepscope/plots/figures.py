"""The figure lists: which figures the workflow draws per run and per group, under which file names.

A figure is a ``plot_*`` function (stepscope.plots.run_figures / group_figures) plus one
`Figure` line in `RUN_FIGURES` or `GROUP_FIGURES`; `render_run_figures` and
`render_group_figures` iterate those lists (docs/extending.md, "Add a figure").

File names per run (``L20`` = layer 20, ``S0013`` = step 13; "chosen steps" = the ``steps``
argument, by default the first, middle and last captured step plus, for Wan2.2, the first
low-noise step):
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

File names per group:
- ``group_norm_vs_step.png``: mean +- 1 s.d. across runs of the norm-vs-step curve, per layer.
- ``group_energy_matrix.png``: layer x step matrix of the mean token norm, averaged over runs.
- ``group_fg_bg_energy.png``: the same for foreground and background tokens and their
  difference (only when a foreground mask can be derived from the first-frame image(s)).

Across-steps figures of Wan2.2 runs mark the expert switch (stepscope.plots.style.mark_switch).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stepscope.plots.group_figures import plot_group_energy_matrix, plot_group_fg_bg, plot_group_norm_vs_step
from stepscope.plots.helpers import MAX_FRAMES, as_steps, nearest, norm_clim
from stepscope.plots.run_figures import (
    plot_channel_importance,
    plot_layer_frame_grid,
    plot_layer_mean_norm,
    plot_norm_heatmaps,
    plot_norm_vs_step,
    plot_pca_rgb,
    plot_step_frame_energy,
    plot_temporal_energy,
    plot_topk_channel_maps,
)
from stepscope.records import RunRecords


@dataclass(frozen=True)
class Figure:
    """One figure of a list: `plot(source, path, **kwargs)` writes `file` for each loop value.

    ``each``: loops, ``"kwarg=context_list"`` (e.g. ``"layer=layers"``: one file per layer,
    passed as ``layer=``); the file name is formatted with those kwargs. ``needs``: keyword
    arguments taken from the render context, ``"kwarg"`` or ``"kwarg=context_name"``. ``when``:
    a context entry that must be non-empty for the figure to be drawn. A function returning None
    (nothing to draw) writes nothing.
    """

    file: str
    plot: Callable[..., dict[str, Any] | None]
    each: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    when: str | None = None


def _pairs(specs: Sequence[str]) -> list[tuple[str, str]]:
    return [tuple(spec.split("=")) if "=" in spec else (spec, spec) for spec in specs]


def draw(figures: Sequence[Figure], source: Any, out: Path, context: dict[str, Any]) -> list[Path]:
    """Draw every figure of a list from `source` (a run's records or a group's run dirs) into `out`."""
    paths: list[Path] = []
    for figure in figures:
        if figure.when is not None and not context[figure.when]:
            continue
        kwargs = {name: context[key] for name, key in _pairs(figure.needs)}
        loops = _pairs(figure.each)
        for values in itertools.product(*(context[key] for _, key in loops)):
            each = {name: value for (name, _), value in zip(loops, values, strict=True)}
            result = figure.plot(source, out / figure.file.format(**each), **each, **kwargs)
            if result is not None:
                paths.append(result["path"])
    return paths


RUN_FIGURES = [
    Figure("norm_vs_step.png", plot_norm_vs_step, needs=("layers", "pass_")),
    Figure("layer_mean_norm.png", plot_layer_mean_norm, needs=("steps", "layers", "pass_")),
    Figure("layer_frame_grid_S{step:04d}.png", plot_layer_frame_grid, each=("step=steps",),
           needs=("layers", "pass_", "clims", "max_frames")),  # fmt: skip
    Figure("step_frame_energy_L{layer:02d}.png", plot_step_frame_energy, each=("layer=layers",), needs=("pass_",)),
    Figure("norm_heatmap_L{layer:02d}.png", plot_norm_heatmaps, each=("layer=layers",),
           needs=("steps", "pass_", "max_frames")),  # fmt: skip
    Figure("pca_rgb_L{layer:02d}.png", plot_pca_rgb, each=("layer=layers",),
           needs=("steps=spatial", "pass_", "max_frames"), when="spatial"),  # fmt: skip
    Figure("temporal_energy_L{layer:02d}.png", plot_temporal_energy, each=("layer=layers",), needs=("steps", "pass_")),
    Figure("channel_importance_L{layer:02d}.png", plot_channel_importance, each=("layer=layers",),
           needs=("steps", "pass_")),  # fmt: skip
    Figure("topk_maps_L{layer:02d}_S{step:04d}.png", plot_topk_channel_maps, each=("layer=layers", "step=topk_steps"),
           needs=("pass_", "max_frames")),  # fmt: skip
]

GROUP_FIGURES = [
    Figure("group_norm_vs_step.png", plot_group_norm_vs_step, needs=("layers", "pass_")),
    Figure("group_energy_matrix.png", plot_group_energy_matrix, needs=("layers", "pass_")),
    Figure("group_fg_bg_energy.png", plot_group_fg_bg, needs=("first_frame", "layers", "pass_")),
]


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
    """Write the `RUN_FIGURES` of one run (file names in the module docstring); return the paths.

    `layers` defaults to every captured layer; `steps` (for the per-step figures) defaults to
    3 evenly spaced captured steps (first, middle, last) plus, for Wan2.2, the first low-noise
    step (see `helpers.default_steps`). `topk_steps` (steps with a top-6 channel-map figure per
    layer) defaults to every one of `steps` that has spatial maps; the channel-importance figure
    covers all of `steps`. `max_frames` caps the latent frames shown in image panels (None: all).
    """
    rec = RunRecords(Path(run_dir))
    try:
        layers = list(layers) if layers is not None else rec.layers
        steps = as_steps(rec, steps)
        # PCA and top-k maps exist only at the run's spatial steps (record.map_steps).
        spatial = [step for step in steps if step in rec.spatial_steps] or nearest(rec.spatial_steps, steps)
        if topk_steps is None:
            topk_steps = spatial
        else:
            topk_steps = [step for step in as_steps(rec, topk_steps) if step in rec.spatial_steps]
        context = {
            "layers": layers,
            "steps": steps,
            "spatial": spatial,
            "topk_steps": topk_steps,
            "pass_": pass_,
            "max_frames": max_frames,
            "clims": {layer: norm_clim(rec, layer, steps, pass_) for layer in layers},
        }
        return draw(RUN_FIGURES, rec, Path(out_dir), context)
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
    """Write the `GROUP_FIGURES` across runs (file names in the module docstring); return the paths.

    ``group_fg_bg_energy.png`` is written only when a foreground mask can be derived (see
    `group_figures.plot_group_fg_bg` for how `first_frame` is used).
    """
    context = {"first_frame": first_frame, "layers": layers, "pass_": pass_}
    return draw(GROUP_FIGURES, [Path(p) for p in run_dirs], Path(out_dir), context)
