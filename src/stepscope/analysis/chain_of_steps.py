"""Chain-of-Steps analyses: per-step score curves and cross-seed divergence of x0_hat.

* :func:`emergence_step` / :func:`curve_auc` summarise a step score curve (the score of the
  decoded x0_hat video at every denoising step).
* :func:`latent_divergence` / :func:`frame_divergence` measure how far the seeds' predictions
  of the clean video are apart at one step; :func:`divergence_curve` does that for every
  step, reading one step at a time via :class:`stepscope.records.RunRecords`.
* :func:`step_curves` / :func:`curve_summary` aggregate the tidy score table into curves.

The figures drawn from these are in stepscope.plots.curves.

Definitions: docs/scoring.md.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stepscope.analysis.score_table import select_scores

# --------------------------------------------------------------------------------------------
# Curve summaries
# --------------------------------------------------------------------------------------------


def _clean_curve(steps: Sequence[float], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    steps_a = np.asarray(steps, dtype=np.float64).ravel()
    scores_a = np.asarray(scores, dtype=np.float64).ravel()
    if steps_a.shape != scores_a.shape:
        raise ValueError(f"steps and scores differ in length: {steps_a.shape} vs {scores_a.shape}")
    keep = np.isfinite(steps_a) & np.isfinite(scores_a)
    order = np.argsort(steps_a[keep], kind="stable")
    return steps_a[keep][order], scores_a[keep][order]


def emergence_step(
    steps: Sequence[int],
    scores: Sequence[float],
    final_score: float,
    frac: float = 0.95,
    *,
    sustained: bool = False,
) -> int | None:
    """First step whose score reaches ``frac * final_score``, or None.

    Steps are taken in increasing order; NaN scores are ignored. With ``sustained=True`` the
    step must also start a run that stays at or above the threshold up to the last step.
    Returns None when no step qualifies or ``final_score`` is not finite.
    """
    if final_score is None or not math.isfinite(final_score):
        return None
    s, y = _clean_curve(steps, scores)
    threshold = frac * final_score
    ok = y >= threshold
    if not ok.any():
        return None
    if not sustained:
        return int(s[np.argmax(ok)])
    if not ok[-1]:
        return None
    last_bad = np.flatnonzero(~ok)
    first = 0 if len(last_bad) == 0 else last_bad[-1] + 1
    return int(s[first])


def curve_auc(steps: Sequence[int], scores: Sequence[float]) -> float:
    """Trapezoid area under the score curve divided by the step range.

    This is the mean score over the step range, so it lies in [0, 1] for scores in [0, 1].
    A single point returns its score; an empty curve returns NaN.
    """
    s, y = _clean_curve(steps, scores)
    if len(s) == 0:
        return math.nan
    if len(s) == 1 or s[-1] == s[0]:
        return float(y.mean())
    area = float(np.sum((y[1:] + y[:-1]) * np.diff(s)) / 2.0)
    return area / float(s[-1] - s[0])


# --------------------------------------------------------------------------------------------
# Cross-seed divergence
# --------------------------------------------------------------------------------------------


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor without importing torch
        x = x.detach().to("cpu")
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _mean_pairwise_relative(arrays: list[np.ndarray], scale: float, chunk: int) -> float:
    """Mean over seed pairs of ||a - b||_2 divided by the mean over seeds of ||a||_2.

    Works chunk-wise along the first axis (float64 accumulation) to bound memory.
    """
    if len(arrays) < 2:
        raise ValueError("divergence needs at least two seeds")
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays):
        raise ValueError(f"seeds differ in shape: {[a.shape for a in arrays]}")
    k = len(arrays)
    pairs = list(itertools.combinations(range(k), 2))
    sq_dist = np.zeros(len(pairs))
    sq_norm = np.zeros(k)
    flat = [a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1) for a in arrays]
    n = flat[0].shape[0]
    for start in range(0, n, chunk):
        block = [f[start : start + chunk].astype(np.float64) / scale for f in flat]
        for i, b in enumerate(block):
            sq_norm[i] += float(np.sum(b * b))
        for p, (i, j) in enumerate(pairs):
            d = block[i] - block[j]
            sq_dist[p] += float(np.sum(d * d))
    mean_dist = float(np.sqrt(sq_dist).mean())
    mean_norm = float(np.sqrt(sq_norm).mean())
    if mean_norm == 0.0:
        return 0.0 if mean_dist == 0.0 else math.inf
    return mean_dist / mean_norm


def latent_divergence(latents_by_seed: Sequence[Any]) -> float:
    """Cross-seed divergence of x0_hat latents at one step.

    ``D = mean_{i<j} ||z_i - z_j||_2 / mean_i ||z_i||_2`` over the K >= 2 seeds' latents
    (tensors or arrays of one shape, e.g. ``(C, F, H, W)``), in float64. D = 0 iff all seeds
    agree; by the triangle inequality D <= 2; independent isotropic latents of equal norm
    give about sqrt(2).
    """
    arrays = [_as_numpy(z) for z in latents_by_seed]
    return _mean_pairwise_relative(arrays, 1.0, chunk=4)


def frame_divergence(frames_by_seed: Sequence[Any]) -> float:
    """Cross-seed divergence of decoded frames ``(T, H, W, 3)``, same formula as
    :func:`latent_divergence` on pixel values scaled to [0, 1] (uint8 / 255; float arrays
    are taken as already in [0, 1])."""
    arrays = [_as_numpy(f) for f in frames_by_seed]
    scale = 255.0 if arrays and arrays[0].dtype == np.uint8 else 1.0
    return _mean_pairwise_relative(arrays, scale, chunk=8)


def divergence_curve(
    run_dirs_by_seed: Sequence[str | os.PathLike], steps: Iterable[int] | None = None
) -> pd.DataFrame:
    """Latent divergence across seeds at every step: ``DataFrame(step, latent_divergence)``.

    ``run_dirs_by_seed``: one run directory per seed, all of the same variant and sample.
    ``steps`` defaults to the steps recorded in every run. One step's latents of all seeds
    are in memory at a time.
    """
    from stepscope.records import RunRecords

    runs = [RunRecords(Path(d)) for d in run_dirs_by_seed]
    if len(runs) < 2:
        raise ValueError("divergence_curve needs at least two seeds")
    if steps is None:
        common = set(runs[0].recorded_steps)
        for run in runs[1:]:
            common &= set(run.recorded_steps)
        steps = sorted(common)
    rows = [
        {"step": int(step), "latent_divergence": latent_divergence([r.x0_hat(step) for r in runs])}
        for step in steps
    ]
    return pd.DataFrame(rows, columns=["step", "latent_divergence"]).astype(
        {"step": "int64", "latent_divergence": "float64"}
    )


# --------------------------------------------------------------------------------------------
# Curve tables from the tidy score table
# --------------------------------------------------------------------------------------------


def step_curves(
    scores: pd.DataFrame,
    *,
    metric: str = "total",
    scorer: str | None = None,
    by: Sequence[str] = ("variant", "split", "task"),
    seeds: str = "single",
) -> pd.DataFrame:
    """Mean/std/count of the per-step score over videos, per group, from the tidy table.

    Returns columns ``*by, step, mean, std, n``; step -1 (final video) is kept. ``seeds``:
    ``"single"`` keeps numeric seeds only, ``"all"`` keeps ensembles too. ``scorer=None``: the
    only scorer that has ``metric``.
    """
    df, _ = select_scores(scores, metric, scorer)
    if seeds == "single":
        df = df[df["seed"].astype(str).str.fullmatch(r"\d+")]
    grouped = df.groupby([*by, "step"], sort=True)["value"]
    out = grouped.agg(mean="mean", std="std", n="count").reset_index()
    return out


def curve_final_score(curve: pd.DataFrame) -> float:
    """Final score of one group's mean curve (`step_curves` rows): the mean at step -1 (the final
    video), else the last step's mean, NaN for an empty curve."""
    final = curve.loc[curve["step"] == -1, "mean"]
    if len(final):
        return float(final.iloc[0])
    steps = curve[curve["step"] >= 0]
    return float(steps["mean"].iloc[-1]) if len(steps) else math.nan


def curve_summary(
    scores: pd.DataFrame,
    *,
    metric: str = "total",
    scorer: str | None = None,
    by: Sequence[str] = ("variant", "split", "task"),
    frac: float = 0.95,
) -> pd.DataFrame:
    """Emergence step and AUC of each group's mean step curve (final score = step -1 mean,
    or the last step's mean if step -1 is absent). Columns: ``*by, final_score,
    emergence_step, auc``."""
    curves = step_curves(scores, metric=metric, scorer=scorer, by=by)
    rows = []
    for key, group in curves.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        steps_df = group[group["step"] >= 0]
        final_score = curve_final_score(group)
        em = emergence_step(steps_df["step"], steps_df["mean"], final_score, frac)
        rows.append(
            {
                **dict(zip(by, key, strict=True)),
                "final_score": final_score,
                "emergence_step": em if em is not None else pd.NA,
                "auc": curve_auc(steps_df["step"], steps_df["mean"]) if len(steps_df) else math.nan,
            }
        )
    out = pd.DataFrame(rows, columns=[*by, "final_score", "emergence_step", "auc"])
    out["emergence_step"] = out["emergence_step"].astype("Int64")
    return out
