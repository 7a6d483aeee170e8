"""The work behind the workflow's CPU rules (scores, divergence, tables); no model, no GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .atomic import write_parquet
from .chain_of_steps import (
    divergence_curve,
    plot_divergence,
    plot_split_curves,
    plot_step_curves,
    switch_step_from_schedule,
)
from .ensemble import seed_label
from .records import RunRecords
from .scoring import RunId, merge_score_tables, score_runs, write_score_table
from .tables import build_tables


def score_run_job(
    *, run_dir: str, decoded_summary: str | None, sample_dir: str, labels: dict[str, str], out: str
) -> None:
    """Builtin scores of a run's final video (step -1) and of each decoded step video."""
    base = {key: labels[key] for key in ("variant", "split", "task", "sample")}
    seed = seed_label(labels["run"])
    items = [(RunId(**base, seed=seed, step=-1), str(Path(run_dir) / "video.mp4"), sample_dir)]
    if decoded_summary:
        decoded = json.loads(Path(decoded_summary).read_text())
        videos = Path(decoded_summary).parent / "steps"
        items += [
            (RunId(**base, seed=seed, step=int(step)), str(videos / f"step_{int(step):04d}.mp4"), sample_dir)
            for step in decoded["steps"]
        ]
    write_score_table(out, score_runs(items))


def divergence_job(*, run_dirs: list[str], labels: dict[str, str], out: str) -> None:
    """Cross-seed divergence of x0_hat per step, for one variant and sample."""
    curve = divergence_curve(run_dirs)
    for key in ("variant", "split", "task", "sample"):
        curve.insert(0, key, labels[key])
    curve["switch_step"] = switch_step(run_dirs[0])
    write_parquet(out, curve)


def switch_step(run_dir: str) -> int | None:
    """First step of Wan2.2's low-noise expert in a run (None for one-DiT families)."""
    return switch_step_from_schedule(RunRecords(run_dir).schedule)


def tables_job(
    *,
    score_tables: list[str],
    divergence_tables: list[str],
    run_for_schedule: dict[str, str],
    metric: str,
    out_scores: str,
    out_dir: str,
    figure_dir: str,
) -> list[Path]:
    """Merge per-run scores, write the accuracy tables and the Chain-of-Steps figures."""
    scores = merge_score_tables(score_tables, out_scores)
    build_tables(scores, out_dir, metric=metric)
    figures = []
    figure_root = Path(figure_dir)
    for variant, run_dir in run_for_schedule.items():
        switch = switch_step(run_dir)
        figures.append(
            plot_step_curves(
                scores,
                figure_root / f"{variant}.step_curves.png",
                metric=metric,
                variant=variant,
                switch_step=switch,
            )
        )
        figures.append(
            plot_split_curves(
                scores,
                figure_root / f"{variant}.split_curves.png",
                metric=metric,
                variant=variant,
                switch_step=switch,
            )
        )
        parts = [pd.read_parquet(path) for path in divergence_tables]
        parts = [part for part in parts if (part["variant"] == variant).all()]
        if parts:
            divergence = pd.concat(parts, ignore_index=True)
            figures.append(
                plot_divergence(
                    divergence,
                    figure_root / f"{variant}.divergence.png",
                    switch_step=switch,
                    title=f"{variant}: cross-seed divergence of x0-hat",
                )
            )
    return figures
