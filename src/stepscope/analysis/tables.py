"""Result tables from the tidy score table (see stepscope.analysis.score_table.SCORE_COLUMNS).

* :func:`summary_table` -- per variant x split x task: single-seed mean and std, best-of-K
  (oracle), every ensemble configuration's mean and its gain over the single-seed mean; plus
  per-split and Overall rows weighted by number of videos (VBVR-Bench leaderboard style).
* :func:`ablation_table` -- ensemble window start/end and K parsed from seed names
  ``ens-<strategy>-k<K>-<start>-<end>[-rescale]``, per split and overall.
* :func:`write_table` writes Parquet, CSV and Markdown atomically.

Every table names the scorer and metric (mode) of its numbers in columns ``scorer`` and
``metric``, and its Markdown file starts with the same label (:func:`scoring.score_label`).

Definitions: docs/scoring.md.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from stepscope.analysis.score_table import FAILED, SKIPPED, STATUS_METRICS, select_scores
from stepscope.analysis.scoring import score_label
from stepscope.atomic import write_parquet, write_text
from stepscope.errors import StepScopeError
from stepscope.run_names import parse_ensemble_run

SAMPLE_KEYS = ["split", "task", "sample"]
VIDEO_KEYS = ["variant", *SAMPLE_KEYS, "seed"]
ALL = "ALL"
OVERALL = "Overall"

SUMMARY_BASE_COLUMNS = [
    "scorer", "metric", "level", "variant", "split", "task", "n_samples", "n_videos", "n_seeds",
    "n_failed", "single_mean", "single_std", "best_of_k", "best_of_k_gain",
]  # fmt: skip
ABLATION_COLUMNS = [
    "scorer", "metric", "variant", "ensemble", "strategy", "k", "start", "end", "rescale", "level", "split",
    "n_samples", "mean", "single_mean", "gain",
]  # fmt: skip


def is_single_seed(seed: str) -> bool:
    return bool(re.fullmatch(r"\d+", str(seed)))


def single_seed_videos(videos: pd.DataFrame) -> pd.DataFrame:
    """The single-seed rows. The mask is cast to bool: an empty object-dtype mask would be taken
    as a list of column labels and drop every column (no scored run at all, e.g. all failed)."""
    return videos[videos["seed"].map(is_single_seed).astype(bool)]


def parse_ensemble(name: str) -> dict | None:
    """An ensemble run's fields {strategy, k, start, end, rescale} (stepscope.run_names); None for
    anything else (a seed, or a name stepscope does not make)."""
    try:
        return parse_ensemble_run(str(name))._asdict()
    except StepScopeError:
        return None


def _ensemble_sort_key(name: str):
    p = parse_ensemble(name)
    return (
        (0, p["strategy"], p["k"], p["start"], p["end"], p["rescale"], name)
        if p
        else (1, "", 0, 0, 0, 0, name)
    )


def video_scores(
    scores: pd.DataFrame, *, metric: str = "total", scorer: str | None = None, step: int = -1
) -> pd.DataFrame:
    """One value per video (variant, split, task, sample, seed) for one metric and step.

    ``scorer=None`` is allowed only when a single scorer has ``metric``. Duplicate rows of
    the same video are averaged.
    """
    df, _ = select_scores(scores[scores["step"] == step], metric, scorer)
    df = df.astype({k: str for k in VIDEO_KEYS})
    return df.groupby(VIDEO_KEYS, as_index=False, sort=True)["value"].mean()


def video_status(scores: pd.DataFrame, *, scorer: str, step: int = -1) -> pd.DataFrame:
    """Per video, whether the scorer failed on it (scored 0.0, as EvalKit does) or skipped it
    (no evaluator for its task): columns ``VIDEO_KEYS + [evalkit_failed, evalkit_skipped]``."""
    df = scores[
        (scores["scorer"] == scorer) & (scores["step"] == step) & scores["metric"].isin(STATUS_METRICS)
    ]
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype=str) for c in VIDEO_KEYS}).assign(
            **{m: pd.Series(dtype=bool) for m in STATUS_METRICS}
        )
    df = df.astype({k: str for k in VIDEO_KEYS})
    wide = df.pivot_table(index=VIDEO_KEYS, columns="metric", values="value", aggfunc="max")
    return wide.reindex(columns=list(STATUS_METRICS)).fillna(0.0).gt(0).reset_index()


def _with_status(
    scores: pd.DataFrame, metric: str, scorer: str | None, step: int
) -> tuple[pd.DataFrame, str]:
    """Video values joined with the scorer's status flags; skipped videos have value NaN."""
    _, scorer = select_scores(scores, metric, scorer)
    videos = video_scores(scores, metric=metric, scorer=scorer, step=step)
    merged = videos.merge(video_status(scores, scorer=scorer, step=step), on=VIDEO_KEYS, how="outer")
    merged[list(STATUS_METRICS)] = merged[list(STATUS_METRICS)].fillna(False).astype(bool)
    return merged.sort_values(VIDEO_KEYS, ignore_index=True), scorer


def _summarise(videos: pd.DataFrame, ensembles: list[str], scorer: str) -> dict:
    skipped = int(videos[SKIPPED].sum())
    is_single = videos["seed"].map(is_single_seed).astype(bool)  # see single_seed_videos
    videos = videos[~videos[SKIPPED]]
    single = videos[is_single.loc[videos.index]]
    per_sample = single.groupby(SAMPLE_KEYS)["value"]
    sample_mean = per_sample.mean()
    per_seed = single.groupby("seed")["value"].mean()
    single_mean = float(single["value"].mean()) if len(single) else math.nan
    best = float(per_sample.max().mean()) if len(single) else math.nan
    row = {
        "n_samples": int(len(sample_mean)),
        "n_videos": int(len(single)),
        "n_seeds": int(single["seed"].nunique()),
        "n_failed": int(single[FAILED].sum()),
        "single_mean": single_mean,
        "single_std": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan,
        "best_of_k": best,
        "best_of_k_gain": best - single_mean,
        "note": f"{skipped} video(s) not scored: no {scorer} evaluator for the task" if skipped else "",
    }
    for name in ensembles:
        ens = videos[videos["seed"] == name].set_index(SAMPLE_KEYS)["value"]
        row[f"mean[{name}]"] = float(ens.mean()) if len(ens) else math.nan
        matched = ens.index.intersection(sample_mean.index)
        row[f"gain[{name}]"] = (
            float((ens.loc[matched] - sample_mean.loc[matched]).mean()) if len(matched) else math.nan
        )
    return row


def summary_table(
    scores: pd.DataFrame, *, metric: str = "total", scorer: str | None = None, step: int = -1
) -> pd.DataFrame:
    """Per variant: one row per (split, task) (``level="task"``), one per split
    (``level="split"``, task ``ALL``) and one Overall row (``level="overall"``, split
    ``Overall``, task ``ALL``). Aggregate rows pool all videos of their scope, so they
    weight tasks by their number of videos (overall = mean over all videos).

    Columns: ``scorer, metric, level, variant, split, task, n_samples, n_videos, n_seeds,
    n_failed, single_mean, single_std, best_of_k, best_of_k_gain``, per ensemble configuration
    ``mean[<name>]`` and ``gain[<name>]``, and ``note``. n_failed: videos the scorer could not
    evaluate, scored 0.0 and counted in the means (EvalKit's convention); videos it skipped (no
    evaluator for the task) are left out and counted in ``note``, so a task with no evaluator
    still has a row that says so. single_mean: mean over all single-seed videos; single_std: sample
    std (ddof=1) across seeds of each seed's mean; best_of_k: mean over samples of the best
    single seed; gain[<name>]: mean over the samples that have the ensemble of (ensemble
    score - that sample's single-seed mean).
    """
    videos, scorer = _with_status(scores, metric, scorer, step)
    ensembles = sorted({s for s in videos["seed"] if not is_single_seed(s)}, key=_ensemble_sort_key)
    label = {"scorer": scorer, "metric": metric}
    rows = []
    for variant, vg in videos.groupby("variant", sort=True):
        for (split, task), tg in vg.groupby(["split", "task"], sort=True):
            rows.append(
                {
                    **label,
                    "level": "task",
                    "variant": variant,
                    "split": split,
                    "task": task,
                    **_summarise(tg, ensembles, scorer),
                }
            )
        for split, sg in vg.groupby("split", sort=True):
            rows.append(
                {
                    **label,
                    "level": "split",
                    "variant": variant,
                    "split": split,
                    "task": ALL,
                    **_summarise(sg, ensembles, scorer),
                }
            )
        rows.append(
            {
                **label,
                "level": "overall",
                "variant": variant,
                "split": OVERALL,
                "task": ALL,
                **_summarise(vg, ensembles, scorer),
            }
        )
    ens_cols = [c for name in ensembles for c in (f"mean[{name}]", f"gain[{name}]")]
    out = pd.DataFrame(rows, columns=[*SUMMARY_BASE_COLUMNS, *ens_cols, "note"])
    return out.astype({"n_samples": "int64", "n_videos": "int64", "n_seeds": "int64", "n_failed": "int64"})


def ablation_table(
    scores: pd.DataFrame, *, metric: str = "total", scorer: str | None = None, step: int = -1
) -> pd.DataFrame:
    """One row per variant x ensemble configuration x (each split, Overall).

    Columns: ``variant, ensemble, strategy, k, start, end, rescale, level, split, n_samples, mean,
    single_mean, gain``; ``single_mean`` is the single-seed mean over the same samples the
    ensemble covers (mean of per-sample seed means) and ``gain = mean - single_mean``.
    Seed names that do not parse as ``ens-<strategy>-k<K>-<start>-<end>[-rescale]`` are skipped.
    """
    _, scorer = select_scores(scores, metric, scorer)
    videos = video_scores(scores, metric=metric, scorer=scorer, step=step)
    single = single_seed_videos(videos)
    sample_mean = single.groupby(["variant", *SAMPLE_KEYS])["value"].mean()
    rows = []
    names = sorted({s for s in videos["seed"] if parse_ensemble(s)}, key=_ensemble_sort_key)
    for name in names:
        spec = parse_ensemble(name)
        ens = videos[videos["seed"] == name]
        for variant, eg in ens.groupby("variant", sort=True):
            scopes = [("split", split, g) for split, g in eg.groupby("split", sort=True)]
            scopes.append(("overall", OVERALL, eg))
            for level, split, g in scopes:
                values = g.set_index(["variant", *SAMPLE_KEYS])["value"]
                matched = values.index.intersection(sample_mean.index)
                base = float(sample_mean.loc[matched].mean()) if len(matched) else math.nan
                mean_matched = float(values.loc[matched].mean()) if len(matched) else math.nan
                rows.append(
                    {
                        "scorer": scorer,
                        "metric": metric,
                        "variant": variant,
                        "ensemble": name,
                        **spec,
                        "level": level,
                        "split": split,
                        "n_samples": int(len(values)),
                        "mean": float(values.mean()),
                        "single_mean": base,
                        "gain": mean_matched - base,
                    }
                )
    out = pd.DataFrame(rows, columns=ABLATION_COLUMNS)
    return out.astype(
        {"k": "int64", "start": "int64", "end": "int64", "rescale": "bool", "n_samples": "int64"}
    )


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _fmt(value, floatfmt: str) -> str:
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float | np.floating):
        return "" if math.isnan(value) else format(float(value), floatfmt)
    return str(value).replace("|", "\\|")


def to_markdown(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """GitHub Markdown table (pandas' to_markdown when tabulate is installed)."""
    try:
        import tabulate  # noqa: F401

        return df.to_markdown(index=False, floatfmt=floatfmt, missingval="") + "\n"
    except ImportError:
        return markdown_table(df, floatfmt)


def markdown_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """Dependency-free Markdown table writer."""
    header = "| " + " | ".join(str(c) for c in df.columns) + " |"
    align = (
        "| "
        + " | ".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in df.columns)
        + " |"
    )
    body = ["| " + " | ".join(_fmt(v, floatfmt) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, align, *body]) + "\n"


def write_table(
    df: pd.DataFrame, stem: str | os.PathLike, floatfmt: str = ".3f", title: str | None = None
) -> dict[str, Path]:
    """Write ``<stem>.parquet``, ``<stem>.csv`` and ``<stem>.md`` (``title`` as its first
    line) atomically."""
    stem = Path(stem)
    paths = {ext: stem.with_name(stem.name + "." + ext) for ext in ("parquet", "csv", "md")}
    write_parquet(paths["parquet"], df)
    write_text(paths["csv"], df.to_csv(index=False))
    write_text(paths["md"], (f"{title}\n\n" if title else "") + to_markdown(df, floatfmt))
    return paths


def build_tables(
    scores: pd.DataFrame | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    metric: str = "total",
    scorer: str | None = None,
    step: int = -1,
    prefix: str = "",
) -> Mapping[str, pd.DataFrame]:
    """Build the summary and ablation tables and write them under ``out_dir`` as
    ``<prefix>summary.{parquet,csv,md}`` and ``<prefix>ablation.{parquet,csv,md}``."""
    if not isinstance(scores, pd.DataFrame):
        scores = pd.read_parquet(scores)
    _, scorer = select_scores(scores[scores["step"] == step], metric, scorer)
    title = f"Scores: {score_label(scorer, metric)}, step {step}"
    out_dir = Path(out_dir)
    tables = {
        "summary": summary_table(scores, metric=metric, scorer=scorer, step=step),
        "ablation": ablation_table(scores, metric=metric, scorer=scorer, step=step),
    }
    for name, df in tables.items():
        write_table(df, out_dir / f"{prefix}{name}", title=title)
    return tables
