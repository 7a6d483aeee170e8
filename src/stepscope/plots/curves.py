"""Chain-of-Steps figures: per-step score curves (per task, per split) and cross-seed divergence.

Drawn from the tidy score table and the divergence tables (stepscope.analysis.chain_of_steps
computes the curves and the emergence step); each marks the emergence step and the Wan2.2
expert switch (stepscope.plots.style.mark_switch).
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path

import pandas as pd

from stepscope.analysis.chain_of_steps import curve_final_score, emergence_step, step_curves
from stepscope.analysis.score_table import select_scores
from stepscope.analysis.scoring import score_label
from stepscope.plots.style import DEFAULT_PNG, mark_switch, panel_figure, save


def _score_title(title: str | None, scorer: str, metric: str, width: int) -> str:
    """Figure title naming the scorer and mode of the curves, wrapped to fit the figure."""
    return "\n".join([*([title] if title else []), *textwrap.wrap(score_label(scorer, metric), width)])


def plot_step_curves(
    scores: pd.DataFrame,
    target: str | os.PathLike,
    *,
    metric: str = "total",
    scorer: str | None = None,
    variant: str | None = None,
    switch_step: int | None = None,
    frac: float = 0.95,
    ncols: int = 4,
    title: str | None = None,
) -> Path:
    """One panel per (split, task): mean step curve +- std over videos (single seeds), the
    final video's score (dashed), the emergence step (dot) and the expert switch (`style.mark_switch`)."""
    df = scores if variant is None else scores[scores["variant"] == variant]
    _, scorer = select_scores(df, metric, scorer)
    curves = step_curves(df, metric=metric, scorer=scorer, by=("split", "task"))
    groups = list(curves.groupby(["split", "task"], sort=True))
    n = max(1, len(groups))
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = panel_figure(nrows, ncols)
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    for ax, ((split, task), g) in zip(axes.flat, groups, strict=False):
        steps_g = g[g["step"] >= 0]
        final_score = curve_final_score(g)
        x, y, sd = steps_g["step"].to_numpy(), steps_g["mean"].to_numpy(), steps_g["std"].fillna(0).to_numpy()
        ax.plot(x, y, color="tab:blue", lw=1.5, label=metric)
        ax.fill_between(x, y - sd, y + sd, color="tab:blue", alpha=0.2, lw=0)
        if math.isfinite(final_score):
            ax.axhline(final_score, color="gray", ls=":", lw=1, label="final video")
        em = emergence_step(x, y, final_score, frac) if len(x) else None
        if em is not None:
            ax.plot([em], [y[list(x).index(em)]], "o", color="tab:green", label=f"emergence ({em})")
            ax.axvline(em, color="tab:green", ls=":", lw=1)
        mark_switch(ax, switch_step)
        ax.set_title(f"{task}\n{split}", fontsize=8)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.legend(fontsize=6, loc="lower right")
    fig.suptitle(_score_title(title, scorer, metric, width=40 * ncols), fontsize=9)
    return save(fig, target, compress_level=DEFAULT_PNG)["path"]


def _plot_grouped(ax, df: pd.DataFrame, value: str, group_col: str | None, x_col: str = "step") -> None:
    if group_col is None or group_col not in df:
        groups = [("all", df)]
    else:
        groups = list(df.groupby(group_col, sort=True))
    for name, g in groups:
        agg = g.groupby(x_col)[value].agg(["mean", "std"]).reset_index()
        x, y, sd = agg[x_col].to_numpy(), agg["mean"].to_numpy(), agg["std"].fillna(0).to_numpy()
        (line,) = ax.plot(x, y, lw=1.5, label=str(name))
        ax.fill_between(x, y - sd, y + sd, color=line.get_color(), alpha=0.2, lw=0)


def plot_split_curves(
    scores: pd.DataFrame,
    target: str | os.PathLike,
    *,
    metric: str = "total",
    scorer: str | None = None,
    variant: str | None = None,
    switch_step: int | None = None,
    title: str | None = None,
) -> Path:
    """Step score curves aggregated per split: mean over tasks of the task mean curves,
    band = +- std across tasks."""
    df = scores if variant is None else scores[scores["variant"] == variant]
    _, scorer = select_scores(df, metric, scorer)
    curves = step_curves(df, metric=metric, scorer=scorer, by=("split", "task"))
    curves = curves[curves["step"] >= 0]
    fig, axes = panel_figure(size=(5.0, 3.5))
    ax = axes[0, 0]
    _plot_grouped(ax, curves, "mean", "split")
    mark_switch(ax, switch_step)
    ax.set_xlabel("step")
    ax.set_ylabel(f"{metric} (mean over tasks)")
    ax.legend(fontsize=7)
    ax.set_title(_score_title(title, scorer, metric, width=60), fontsize=8)
    return save(fig, target, compress_level=DEFAULT_PNG)["path"]


def plot_divergence(
    divergence: pd.DataFrame,
    target: str | os.PathLike,
    *,
    value: str = "latent_divergence",
    group_col: str | None = "split",
    switch_step: int | None = None,
    title: str | None = None,
) -> Path:
    """Divergence vs step; with ``group_col`` present (e.g. split) one line per group: mean
    over the group's rows (samples/tasks) +- std; otherwise a single curve."""
    fig, axes = panel_figure(size=(5.0, 3.5))
    ax = axes[0, 0]
    _plot_grouped(ax, divergence, value, group_col)
    mark_switch(ax, switch_step)
    ax.set_xlabel("step")
    ax.set_ylabel(value.replace("_", " "))
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    return save(fig, target, compress_level=DEFAULT_PNG)["path"]

