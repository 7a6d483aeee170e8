"""The tidy score table every scorer writes: columns, row construction, Parquet IO, selection.

One row per (video, metric): ``SCORE_COLUMNS`` (docs/scoring.md). Scorers are in
stepscope.analysis.scoring (registry), proxy_scorer and evalkit.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import pandas as pd

from stepscope.atomic import write_parquet

SCORE_COLUMNS = ("variant", "split", "task", "sample", "seed", "step", "scorer", "metric", "value")
FINAL_STEP = -1  # ``step`` of the final video (as opposed to the decoded x0_hat of a step)
RENAMED_SCORERS = {"builtin": "stepscope-proxy"}  # old name -> name (it is not VBVR's score)

# Status rows of the EvalKit adapter (value 1.0), next to the scores of the same video.
FAILED = "evalkit_failed"  # EvalKit could not evaluate the video: scored 0.0, as EvalKit does
SKIPPED = "evalkit_skipped"  # no EvalKit evaluator for the task folder: no score
STATUS_METRICS = (FAILED, SKIPPED)


class RunId(NamedTuple):
    """Identity of one scored video: a run (variant x sample x seed) at one step."""

    variant: str
    split: str
    task: str
    sample: str
    seed: str  # "1", "2", ... or an ensemble name like "ens-latent-k3-0-10"
    step: int = FINAL_STEP  # -1 = the final video; >= 0 = decoded x0_hat of that step


def select_scores(scores: pd.DataFrame, metric: str, scorer: str | None = None) -> tuple[pd.DataFrame, str]:
    """Rows of one metric from one scorer, and that scorer's name.

    ``scorer=None`` picks the only scorer that has ``metric``; a metric from several scorers
    must name one (numbers of different scorers are never pooled).
    """
    df = scores[scores["metric"] == metric]
    if scorer is None:
        found = sorted(df["scorer"].unique())
        if len(found) > 1:
            raise ValueError(f"the table mixes scorers {found} for metric {metric!r}; pass scorer=")
        scorer = found[0] if found else "none"
    return df[df["scorer"] == scorer], scorer


def empty_score_table() -> pd.DataFrame:
    return _typed(pd.DataFrame({c: [] for c in SCORE_COLUMNS}))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.loc[:, list(SCORE_COLUMNS)].copy()
    for column in ("variant", "split", "task", "sample", "seed", "scorer", "metric"):
        frame[column] = frame[column].astype(str)
    frame["step"] = frame["step"].astype("int64")
    frame["value"] = frame["value"].astype("float64")
    return frame.reset_index(drop=True)


def score_rows(run_id: RunId | Mapping[str, Any], scores: Mapping[str, float], scorer: str) -> list[dict]:
    """Tidy rows (one per metric) for one scored video."""
    ids = run_id._asdict() if isinstance(run_id, RunId) else dict(run_id)
    missing = [k for k in RunId._fields if k not in ids and k != "step"]
    if missing:
        raise KeyError(f"run id lacks {missing}: {ids}")
    base = {
        "variant": str(ids["variant"]),
        "split": str(ids["split"]),
        "task": str(ids["task"]),
        "sample": str(ids["sample"]),
        "seed": str(ids["seed"]),
        "step": int(ids.get("step", FINAL_STEP)),
        "scorer": scorer,
    }
    return [{**base, "metric": str(metric), "value": float(value)} for metric, value in scores.items()]


def rows_to_table(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    rows = list(rows)
    if not rows:
        return empty_score_table()
    return _typed(pd.DataFrame(rows))


def write_score_table(target: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write a score table as Parquet, atomically."""
    write_parquet(target, _typed(table))


def read_score_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a score table; rows written under a renamed scorer (``builtin``) get its new name."""
    table = _typed(pd.read_parquet(path))
    table["scorer"] = table["scorer"].replace(RENAMED_SCORERS)
    return table


def merge_score_tables(
    paths: Iterable[str | os.PathLike], target: str | os.PathLike | None = None
) -> pd.DataFrame:
    """Concatenate score tables (e.g. one per run) and optionally write the result."""
    tables = [read_score_table(p) for p in paths]
    merged = _typed(pd.concat(tables, ignore_index=True)) if tables else empty_score_table()
    if target is not None:
        write_score_table(target, merged)
    return merged

