"""The one look of every figure: figure creation, the PNG save helper, the expert-switch marker.

Every figure module (run, group, seed, score-curve and probe figures) draws through these so that
one event looks the same everywhere. The Wan2.2 expert switch (`records.expert_switch_step`, the
first step of the ``low_noise`` expert) is drawn as a dashed vertical line *between* the last
high-noise step and the first low-noise step (x = switch - 0.5), in a colour that contrasts with
what is behind it (`switch_color`), labelled `switch_label`. Matplotlib Agg only, no pyplot state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stepscope.atomic import atomic_path

DPI = 120  # token-map figures (run, group, seed)
CURVE_DPI = 110  # small line-plot figures (score curves, divergence, probes)
MAX_WIDTH_IN = 16.0
NORM_CMAP = "magma"
ENERGY_CMAP = "viridis"
SIGNED_CMAP = "RdBu_r"
FAST_PNG = 3  # zlib level of the token-map figures (large images: faster to write)
DEFAULT_PNG = 6  # zlib's default level, kept by the line-plot figures
SWITCH_GID = "expert-switch"
SWITCH_STYLE = {"linestyle": "--", "linewidth": 1.4}
DARK = "0.15"
LIGHT = "white"


def new_figure(width: float, height: float, *, dpi: int = DPI) -> Figure:
    """A constrained-layout figure on an Agg canvas, at most `MAX_WIDTH_IN` wide."""
    fig = Figure(figsize=(min(width, MAX_WIDTH_IN), height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def panel_figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (4.0, 3.0)):
    """A grid of `size`-inch line-plot panels at `CURVE_DPI`: (figure, axes array (nrows, ncols))."""
    fig = new_figure(size[0] * ncols, size[1] * nrows, dpi=CURVE_DPI)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def save(
    fig: Figure, path: str | Path, result: dict[str, Any] | None = None, *, compress_level: int = FAST_PNG
) -> dict[str, Any]:
    """Write `fig` as a PNG atomically at its own dpi; return `result` plus what was drawn.

    Added keys: ``path``, ``figsize`` (inches), ``dpi``, ``clims`` (colour limits read back from
    the drawn images/meshes, colour bars skipped) and ``switch_marks`` (expert-switch markers).
    """
    result = {} if result is None else result
    data_axes = [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]
    mappables = [m for ax in data_axes for m in (*ax.images, *ax.collections) if m.get_array() is not None]
    result["clims"] = [tuple(float(v) for v in m.get_clim()) for m in mappables]
    result["switch_marks"] = sum(1 for ax in fig.axes for line in ax.lines if line.get_gid() == SWITCH_GID)
    result["figsize"] = tuple(float(v) for v in fig.get_size_inches())
    result["dpi"] = fig.dpi
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi, pil_kwargs={"compress_level": compress_level})
    result["path"] = Path(path)
    return result


def switch_color(cmap: str | None = None) -> str:
    """White over a dark colour map (mean luminance < 0.5: viridis, magma), else dark grey."""
    if cmap is None:
        return DARK
    rgb = colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3]
    return LIGHT if float((rgb @ [0.2126, 0.7152, 0.0722]).mean()) < 0.5 else DARK


def switch_label(switch: int, runs: tuple[int, int] | None = None) -> str:
    """The marker's legend text; `runs` = (runs switching there, runs drawn) in group figures."""
    label = f"expert switch (high→low noise) before step {switch}"
    return label if runs is None else f"{label} ({runs[0]}/{runs[1]} runs)"


def mark_switch(
    ax, switch: int | None, *, cmap: str | None = None, runs: tuple[int, int] | None = None
) -> None:
    """Draw the expert switch between steps switch-1 and switch; `cmap` = the colour map behind it."""
    if switch is None:
        return
    ax.axvline(
        switch - 0.5, color=switch_color(cmap), gid=SWITCH_GID, label=switch_label(switch, runs), **SWITCH_STYLE
    )


def mark_group_switches(ax, switches: list[int | None], *, cmap: str | None = None) -> None:
    """One marker per distinct switch step of the runs, saying how many runs switch there."""
    for step in sorted({s for s in switches if s is not None}):
        mark_switch(ax, step, cmap=cmap, runs=(switches.count(step), len(switches)))


def switch_legend(fig: Figure, ax) -> None:
    """Legend of the switch markers below the axes (inside, over a heatmap, it would hide data)."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=DARK, label=line.get_label(), **SWITCH_STYLE)
        for line in ax.lines
        if line.get_gid() == SWITCH_GID
    ]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", fontsize=8, frameon=False)
