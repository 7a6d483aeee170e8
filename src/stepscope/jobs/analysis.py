"""The work behind the workflow's CPU rules (scores, divergence, tables); no model, no GPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from stepscope.analysis.chain_of_steps import divergence_curve
from stepscope.analysis.proxy_scorer import score_runs
from stepscope.analysis.score_table import RunId, merge_score_tables, write_score_table
from stepscope.analysis.tables import build_tables
from stepscope.atomic import write_parquet, write_text
from stepscope.errors import StepScopeError
from stepscope.jobs.plan import Receipt
from stepscope.plots.curves import plot_divergence, plot_split_curves, plot_step_curves
from stepscope.records import RunRecords, expert_switch_step
from stepscope.sampling.ensemble import seed_label


def score_run_job(
    *, run_dir: str, decoded_summary: str | None, sample_dir: str, labels: dict[str, str], out: str
) -> None:
    """stepscope-proxy scores of a run's final video (step -1) and of each decoded step video."""
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
    return expert_switch_step(RunRecords(run_dir).schedule)


def tables_job(
    *,
    receipts: list[str],
    metric: str,
    out_scores: str,
    out_dir: str,
    figure_dir: str,
    extra_score_tables: list[str] | None = None,
) -> list[Path]:
    """Merge the scores the analysis batches wrote (their receipts list them), write the accuracy
    tables, the Chain-of-Steps figures and ``failures.csv`` (every run that did not make it, with
    the reason; also listed at the end of ``summary.md``)."""
    analysed = [Receipt.read(path) for path in receipts]
    score_tables = [path for receipt in analysed for path in receipt.extra.get("score_tables", [])]
    divergence_tables = [path for receipt in analysed for path in receipt.extra.get("divergence_tables", [])]
    scores = merge_score_tables(score_tables + list(extra_score_tables or []), out_scores)
    build_tables(scores, out_dir, metric=metric)
    failures = failure_table(analysed)
    write_failures(failures, Path(out_dir))
    figures = []
    figure_root = Path(figure_dir)
    figure_root.mkdir(parents=True, exist_ok=True)
    run_for_schedule: dict[str, str] = {}
    for receipt in analysed:
        if receipt.extra.get("run_dirs"):
            run_for_schedule.setdefault(receipt.variant, receipt.extra["run_dirs"][0])
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


FAILURE_COLUMNS = ["variant", "split", "task", "sample", "run", "stage", "error"]


def failure_table(receipts: list[Receipt]) -> pd.DataFrame:
    """One row per run that did not make it through the last stage: the stage it failed in
    (sample, decode or analysis) and the error."""
    rows = []
    for receipt in receipts:
        for member in receipt.failed:
            split, task, sample, run = member["key"].split("/")
            stage = member.get("failed_stage", receipt.stage)
            rows.append([receipt.variant, split, task, sample, run, stage, member.get("error", "")])
    return pd.DataFrame(rows, columns=FAILURE_COLUMNS)


def run_name(row: Any) -> str:
    return f"{row.variant}/{row.split}/{row.task}/{row.sample}/{row.run}"


def write_failures(failures: pd.DataFrame, out_dir: Path) -> None:
    """failures.csv (header only when every run succeeded) and a section of summary.md."""
    write_text(out_dir / "failures.csv", failures.to_csv(index=False))
    summary = out_dir / "summary.md"
    text = summary.read_text() if summary.exists() else ""
    if failures.empty:
        text += "\n## Failed runs\n\nNone: every planned run produced its records, figures and scores.\n"
    else:
        lines = [f"- {run_name(row)}: failed in {row.stage}: {row.error}" for row in failures.itertuples()]
        text += f"\n## Failed runs ({len(failures)})\n\n" + "\n".join(lines) + "\n"
    write_text(summary, text)


def check_failures(failures_csv: str) -> None:
    """Fail, naming every failed run, when the plan has runs that did not make it."""
    failures = pd.read_csv(failures_csv, dtype=str, keep_default_na=False)
    if failures.empty:
        return
    for row in failures.itertuples():
        print(f"{run_name(row)} failed in {row.stage}: {row.error}")
    # Only the exception's last line reaches the console (stepscope.logs): it carries the first causes.
    first = "; ".join(
        f"{run_name(row)} in {row.stage}: {shorten(row.error, CAUSE_CHARS)}"
        for row in failures.head(FIRST_CAUSES).itertuples()
    )
    more = f" (and {len(failures) - FIRST_CAUSES} more)" if len(failures) > FIRST_CAUSES else ""
    raise StepScopeError(
        f"{len(failures)} run(s) failed, every other run completed; fix their inputs (or drop them from "
        f"the plan) and rerun, which redoes only these (all reasons in {failures_csv}). "
        f"First causes: {first}{more}"
    )


FIRST_CAUSES = 3
CAUSE_CHARS = 400


def shorten(text: str, limit: int) -> str:
    """One line of at most `limit` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
