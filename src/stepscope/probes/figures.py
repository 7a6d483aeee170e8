"""The probe figures (CPU, no torch), one function per probe kind that the registry names.

Drawn with the one style of every figure (`stepscope.plots.style`: figure, save, switch marker).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from stepscope.plots.style import DEFAULT_PNG, mark_switch, panel_figure, save, switch_legend


def _switch_of(table: pd.DataFrame) -> int | None:
    if "switch_step" not in table:
        return None
    values = table["switch_step"].dropna()
    return int(values.iloc[0]) if len(values) else None


def _integer_ticks(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_noise(table: pd.DataFrame, target: str | Path, *, position: str, metric: str, title: str) -> Path:
    """Score vs the swept position (mean +- std over samples) against the clean runs' mean."""
    df = table[table["metric"] == metric]
    perturbed = df[df["perturbed"]].groupby(position)["value"].agg(["mean", "std"]).reset_index()
    clean = df.loc[~df["perturbed"], "value"]
    fig, axes = panel_figure(size=(5.0, 3.5))
    ax = axes[0, 0]
    x = perturbed[position].astype(float).to_numpy()
    y, sd = perturbed["mean"].to_numpy(), perturbed["std"].fillna(0).to_numpy()
    ax.plot(x, y, "o-", color="tab:blue", lw=1.5, label=f"noise at {position}")
    ax.fill_between(x, y - sd, y + sd, color="tab:blue", alpha=0.2, lw=0)
    if len(clean):
        ax.axhline(
            float(clean.mean()), color="0.3", ls=":", lw=1.2, label=f"unperturbed ({clean.mean():.3f})"
        )
    if position == "step":
        mark_switch(ax, _switch_of(df))
    ax.set_xlabel("injection step" if position == "step" else "noised latent frame")
    ax.set_ylabel(f"{metric} (stepscope-proxy, not VBVR's score)")
    ax.set_ylim(0.0, 1.0)  # proxy scores lie in [0, 1]
    _integer_ticks(ax)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return save(fig, target, compress_level=DEFAULT_PNG)["path"]


def plot_sensitivity(table: pd.DataFrame, summary: pd.DataFrame, target: str | Path, *, title: str) -> Path:
    """Mean later-step CKA dissimilarity vs injection step, one line per representation, with the
    expert switch (red dashed) and each curve's peak (marker) so the two can be told apart."""
    fig, axes = panel_figure(size=(5.5, 3.8))
    ax = axes[0, 0]
    for representation, group in summary.groupby("representation", sort=True):
        group = group.sort_values("injection_step")
        style = dict(lw=2.0, color="black") if representation == "x0" else dict(lw=1.2, alpha=0.8)
        (line,) = ax.plot(
            group["injection_step"], group["mean_after"], "o-", ms=3, label=representation, **style
        )
        peak = group.loc[group["mean_after"].idxmax()]
        ax.plot([peak["injection_step"]], [peak["mean_after"]], "*", ms=11, color=line.get_color())
    mark_switch(ax, _switch_of(table))
    _integer_ticks(ax)
    ax.set_xlabel("injection step")
    ax.set_ylabel("1 - linear CKA (mean over later steps)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title, fontsize=9)
    return save(fig, target, compress_level=DEFAULT_PNG)["path"]


def plot_sensitivity_heatmap(table: pd.DataFrame, target: str | Path, *, title: str) -> Path:
    """x0_hat dissimilarity for every (injection step, later step) pair."""
    df = table[table["representation"] == "x0"]
    grid = df.groupby(["injection_step", "step"])["dissimilarity"].mean().unstack("step")
    fig, axes = panel_figure(size=(5.0, 4.0))
    ax = axes[0, 0]
    image = ax.imshow(
        grid.to_numpy(dtype=float),
        aspect="auto",
        origin="lower",
        vmin=0.0,
        vmax=1.0,
        cmap="magma",
        extent=(grid.columns.min() - 0.5, grid.columns.max() + 0.5, -0.5, len(grid.index) - 0.5),
    )
    ax.set_yticks(range(len(grid.index)), [str(s) for s in grid.index], fontsize=7)
    switch = _switch_of(df)
    if switch is not None:
        mark_switch(ax, switch, cmap="magma")
        switch_legend(fig, ax)
    ax.set_xlabel("step")
    ax.set_ylabel("injection step")
    fig.colorbar(image, ax=ax, label="1 - linear CKA of x0-hat")
    ax.set_title(title, fontsize=9)
    return save(fig, target, compress_level=DEFAULT_PNG)["path"]


def plot_swap(table: pd.DataFrame, summary: pd.DataFrame, target: str | Path, *, title: str) -> Path:
    """Where the outcome goes when one layer's tokens are swapped: 0 = the target's, 1 = the source's."""
    fig, axes = panel_figure(size=(5.5, 3.8))
    ax = axes[0, 0]
    agg = table.groupby("layer").agg(
        latent=("source_fraction", "mean"),
        latent_sd=("source_fraction", "std"),
        frames_t=("frames_to_target", "mean"),
        frames_s=("frames_to_source", "mean"),
    )
    x = agg.index.to_numpy()
    ax.plot(x, agg["latent"], "o-", color="tab:purple", lw=1.8, label="final latent")
    ax.fill_between(
        x,
        agg["latent"] - agg["latent_sd"].fillna(0),
        agg["latent"] + agg["latent_sd"].fillna(0),
        color="tab:purple",
        alpha=0.2,
        lw=0,
    )
    total = (agg["frames_t"] + agg["frames_s"]).replace(0, np.nan)
    ax.plot(
        x,
        (agg["frames_t"] / total).fillna(0),
        "s--",
        color="tab:orange",
        lw=1.2,
        ms=3,
        label="decoded frames",
    )
    ax.axhline(0.5, color="0.5", ls=":", lw=1)
    for index, row in enumerate(summary[summary["flip"]].itertuples()):
        ax.axvline(
            row.layer - 0.5, color="tab:red", ls="--", lw=1, label="outcome flips" if index == 0 else None
        )
    ax.set_ylim(-0.02, 1.02)
    _integer_ticks(ax)
    ax.set_xlabel("swapped layer")
    ax.set_ylabel("source fraction  d_t / (d_t + d_s)")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return save(fig, target, compress_level=DEFAULT_PNG)["path"]


def _noise_figures(table: pd.DataFrame, root: Path, position: str, metric: str) -> list[Path]:
    return [
        plot_noise(
            group,
            root / f"{variant}.score_vs_{position}.png",
            position=position,
            metric=metric,
            title=f"{variant}: noise at {position} ({group['sample'].nunique()} sample(s))",
        )
        for variant, group in table.groupby("variant", sort=True)
    ]


def noise_step_figures(table: pd.DataFrame, summary: pd.DataFrame, root: Path, metric: str) -> list[Path]:
    """Per variant: score vs injection step."""
    return _noise_figures(table, root, "step", metric)


def noise_frame_figures(table: pd.DataFrame, summary: pd.DataFrame, root: Path, metric: str) -> list[Path]:
    """Per variant: score vs noised latent frame."""
    return _noise_figures(table, root, "frame", metric)


def sensitivity_figures(table: pd.DataFrame, summary: pd.DataFrame, root: Path, metric: str) -> list[Path]:
    """Per variant: the sensitivity curves and the x0-hat heatmap."""
    figures = []
    for variant, group in table.groupby("variant", sort=True):
        part = summary[summary["variant"] == variant]
        figures.append(
            plot_sensitivity(
                group, part, root / f"{variant}.sensitivity.png", title=f"{variant}: step sensitivity"
            )
        )
        figures.append(
            plot_sensitivity_heatmap(
                group,
                root / f"{variant}.sensitivity_heatmap.png",
                title=f"{variant}: x0-hat change after an injection",
            )
        )
    return figures


def token_swap_figures(table: pd.DataFrame, summary: pd.DataFrame, root: Path, metric: str) -> list[Path]:
    """Per variant: where the outcome goes vs the swapped layer, titled with the step's expert."""
    figures = []
    for variant, group in table.groupby("variant", sort=True):
        part = summary[summary["variant"] == variant]
        step = int(group["swap_step"].iloc[0])
        switch = _switch_of(group)
        expert = "" if switch is None else f", {'low' if step >= switch else 'high'}-noise expert"
        figures.append(
            plot_swap(
                group,
                part,
                root / f"{variant}.token_swap.png",
                title=f"{variant}: token swap at step {step}{expert}\nsource: {group['source'].iloc[0]}",
            )
        )
    return figures
