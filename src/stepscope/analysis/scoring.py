"""Scoring generated videos against VBVR-Bench samples.

Two scorers write rows of one tidy table (see ``SCORE_COLUMNS`` and docs/scoring.md):

* ``vbvr-evalkit`` -- the reference: an adapter around VBVR-EvalKit (:func:`score_with_evalkit`,
  module ``vbvr_bench``), which is not on PyPI and must run in its own pinned environment
  (envs/evalkit.txt: numpy 1.26.4, opencv-python 4.10.0.84, Pillow 10.4.0, ...).
* ``stepscope-proxy`` -- our deterministic NumPy + Pillow approximation of VBVR-Bench's weighted
  mode (:func:`score_video`), for machines without EvalKit and for the cheap per-step curves. It
  is *not* VBVR's score: its rank agreement with EvalKit is only moderate (docs/scoring.md).

This module imports neither torch nor cv2, so it also runs inside the EvalKit environment
(``pip install --no-deps -e .`` plus pandas and pyarrow there).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from stepscope.atomic import write_parquet
from stepscope.bench import SCORING_FILES

# --------------------------------------------------------------------------------------------
# Tidy table
# --------------------------------------------------------------------------------------------

SCORE_COLUMNS = ("variant", "split", "task", "sample", "seed", "step", "scorer", "metric", "value")
FINAL_STEP = -1  # ``step`` of the final video (as opposed to the decoded x0_hat of a step)

PROXY = "stepscope-proxy"  # our approximation; was called "builtin" (renamed: it is not VBVR's score)
EVALKIT = "vbvr-evalkit"  # VBVR-EvalKit, the reference scorer
SCORERS = (PROXY, EVALKIT)
RENAMED_SCORERS = {"builtin": PROXY}

# What each (scorer, metric) number is, for table and figure labels.
SCORER_TITLES = {
    PROXY: "stepscope-proxy (approximation, not VBVR's score)",
    EVALKIT: "VBVR-EvalKit",
}
METRIC_MODES = {
    "total": "weighted sum of the proxy's 5 dimensions",
    "task_specific": "task-specific mode (leaderboard)",
    "weighted": "composite mode (5 weighted dimensions)",
}
# Status rows of the EvalKit adapter (value 1.0), next to the scores of the same video.
FAILED = "evalkit_failed"  # EvalKit could not evaluate the video: scored 0.0, as EvalKit does
SKIPPED = "evalkit_skipped"  # no EvalKit evaluator for the task folder: no score
STATUS_METRICS = (FAILED, SKIPPED)

WEIGHTS: dict[str, float] = {
    "first_frame_fidelity": 0.15,
    "final_frame_match": 0.35,
    "temporal_smoothness": 0.15,
    "visual_quality": 0.10,
    "task_progress": 0.25,
}
METRICS = (*WEIGHTS, "total")

SAMPLE_FILES = SCORING_FILES  # what a score reads of a bench sample (stepscope.bench owns the names)


class RunId(NamedTuple):
    """Identity of one scored video: a run (variant x sample x seed) at one step."""

    variant: str
    split: str
    task: str
    sample: str
    seed: str  # "1", "2", ... or an ensemble name like "ens-latent-k3-0-10"
    step: int = FINAL_STEP  # -1 = the final video; >= 0 = decoded x0_hat of that step


def check_scorer_names(names: Iterable[str]) -> None:
    """Fail with the new name for a renamed scorer (config ``scoring.scorers``)."""
    for name in names:
        if name in RENAMED_SCORERS:
            raise ValueError(
                f"config error at `scoring.scorers`: the scorer {name!r} was renamed "
                f"{RENAMED_SCORERS[name]!r}: it approximates VBVR-Bench, it is not VBVR's score "
                f"(docs/scoring.md); write {RENAMED_SCORERS[name]!r}"
            )


def score_label(scorer: str, metric: str) -> str:
    """What a number is, for tables and figures: metric, scorer and mode."""
    mode = METRIC_MODES.get(metric)
    return f"{metric} [{SCORER_TITLES.get(scorer, scorer)}" + (f"; {mode}]" if mode else "]")


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


def score_runs(
    items: Iterable[tuple[RunId | Mapping[str, Any], np.ndarray | str | os.PathLike, str | os.PathLike]],
    *,
    max_side: int = 256,
    max_frames: int = 32,
) -> pd.DataFrame:
    """Score videos with the stepscope-proxy scorer and return the tidy table.

    ``items`` yields ``(ids, frames, sample_dir)``: ``ids`` a :class:`RunId` or a mapping with
    variant, split, task, sample, seed and optionally step (default -1); ``frames`` a uint8
    ``(T, H, W, 3)`` array or the path of a video file (read lazily, one item at a time);
    ``sample_dir`` the bench sample folder. Sample references are cached, so scoring every
    step of one sample reads its ground truth once.
    """
    rows: list[dict] = []
    for ids, frames, sample_dir in items:
        scores = score_video(frames, sample_dir, max_side=max_side, max_frames=max_frames)
        rows.extend(score_rows(ids, scores, PROXY))
    return rows_to_table(rows)


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


# --------------------------------------------------------------------------------------------
# Image helpers (NumPy + Pillow only)
# --------------------------------------------------------------------------------------------


def _gaussian_kernel(sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-(x**2) / (2 * sigma**2))
    return (k / k.sum()).astype(np.float32)


_KERNEL = _gaussian_kernel()


def _filter_last2(x: np.ndarray, kernel: np.ndarray = _KERNEL) -> np.ndarray:
    """Separable 'same' filter over the last two axes with reflect padding."""
    r = len(kernel) // 2
    h, w = x.shape[-2:]
    pad = [(0, 0)] * (x.ndim - 2)
    mode = "reflect" if min(h, w) > r else "edge"
    xp = np.pad(x, [*pad, (r, r), (0, 0)], mode=mode)
    y = kernel[0] * xp[..., 0:h, :]
    for i in range(1, len(kernel)):
        y = y + kernel[i] * xp[..., i : i + h, :]
    yp = np.pad(y, [*pad, (0, 0), (r, r)], mode=mode)
    z = kernel[0] * yp[..., :, 0:w]
    for i in range(1, len(kernel)):
        z = z + kernel[i] * yp[..., :, i : i + w]
    return z


_C1 = 0.01**2
_C2 = 0.03**2


@dataclass(frozen=True)
class _SsimRef:
    """Per-reference statistics reused across many SSIM evaluations (channels first)."""

    img: np.ndarray  # (3, h, w) float32 in [0, 1]
    mu: np.ndarray
    var: np.ndarray


def _ssim_ref(img_hwc: np.ndarray) -> _SsimRef:
    img = np.ascontiguousarray(np.moveaxis(img_hwc, -1, 0), dtype=np.float32)
    mu = _filter_last2(img)
    var = _filter_last2(img * img) - mu * mu
    return _SsimRef(img, mu, var)


def ssim_maps(frames: np.ndarray, ref: np.ndarray | _SsimRef) -> np.ndarray:
    """SSIM maps of frames ``(N, h, w, 3)`` (float in [0, 1]) against one reference image.

    Gaussian window (sigma 1.5, 11 taps), C1 = 0.01^2, C2 = 0.03^2 (data range 1), computed per
    RGB channel and averaged over channels. Returns ``(N, h, w)`` float32.
    """
    if not isinstance(ref, _SsimRef):
        ref = _ssim_ref(ref)
    out = np.empty((len(frames), *ref.img.shape[1:]), dtype=np.float32)
    for i, frame in enumerate(frames):  # one frame at a time bounds memory
        x = np.ascontiguousarray(np.moveaxis(frame, -1, 0), dtype=np.float32)
        mu = _filter_last2(x)
        var = _filter_last2(x * x) - mu * mu
        cov = _filter_last2(x * ref.img) - mu * ref.mu
        num = (2 * mu * ref.mu + _C1) * (2 * cov + _C2)
        den = (mu * mu + ref.mu * ref.mu + _C1) * (var + ref.var + _C2)
        out[i] = (num / den).mean(axis=0)
    return out


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two ``(h, w, 3)`` float images in [0, 1] (see :func:`ssim_maps`)."""
    return float(ssim_maps(a[None], b)[0].mean())


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    if frame.shape[-1] == 1:
        frame = np.repeat(frame, 3, axis=-1)
    frame = frame[..., :3]
    if frame.dtype == np.uint8:
        return frame
    frame = np.nan_to_num(frame.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    if frame.size and frame.max() <= 1.0:
        frame = frame * 255.0
    return np.clip(np.rint(frame), 0, 255).astype(np.uint8)


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize one frame to ``size`` = (h, w) with Pillow's antialiased bilinear filter."""
    from PIL import Image

    frame = _to_uint8(frame)
    if frame.shape[:2] == size:
        return frame
    image = Image.fromarray(np.ascontiguousarray(frame))
    return np.asarray(image.resize((size[1], size[0]), Image.Resampling.BILINEAR))


def _load_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _work_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _sample_indices(n: int, max_frames: int) -> np.ndarray:
    """Evenly spaced frame indices (first and last always included), at most max_frames."""
    if n <= 0:
        raise ValueError("video has no frames")
    if n <= max_frames:
        return np.arange(n)
    return np.unique(np.rint(np.linspace(0, n - 1, max_frames)).astype(int))


def _iter_video(path: str | os.PathLike) -> Iterator[np.ndarray]:
    import imageio.v2 as imageio

    reader = imageio.get_reader(str(path), format="FFMPEG")
    try:
        for frame in reader:
            yield np.asarray(frame)[..., :3]
    finally:
        reader.close()


@dataclass
class _Clip:
    """Frames sampled in time and resized to the work size."""

    frames: np.ndarray  # (n, h, w, 3) float32 in [0, 1]
    times: np.ndarray  # (n,) normalised time in [0, 1]
    finite: np.ndarray  # (n,) bool: the source frame had no NaN/inf
    n_source: int


def _prepare_clip(frames: np.ndarray | str | os.PathLike, size: tuple[int, int], max_frames: int) -> _Clip:
    if isinstance(frames, str | os.PathLike):
        resized = [_resize(f, size) for f in _iter_video(frames)]  # resize while streaming
        finite_all = np.ones(len(resized), dtype=bool)
    else:
        frames = np.asarray(frames)
        if frames.ndim not in (3, 4):
            raise ValueError(f"expected frames (T, H, W, 3), got shape {frames.shape}")
        if frames.ndim == 3:  # (T, H, W) grayscale
            frames = frames[..., None]
        if np.issubdtype(frames.dtype, np.floating):
            finite_all = np.isfinite(frames).reshape(len(frames), -1).all(axis=1)
        else:
            finite_all = np.ones(len(frames), dtype=bool)
        resized = None
    n = len(resized) if resized is not None else len(frames)
    idx = _sample_indices(n, max_frames)
    source = resized if resized is not None else frames
    picked = np.stack([_resize(source[i], size) for i in idx]).astype(np.float32) / 255.0
    times = idx / (n - 1) if n > 1 else np.zeros(1)
    return _Clip(picked, times.astype(np.float64), finite_all[idx], n)


# --------------------------------------------------------------------------------------------
# Builtin scorer
# --------------------------------------------------------------------------------------------

SSIM_SATURATION = 0.95  # SSIM at or above this counts as a perfect match (codec/resize tolerance)
TAIL_FRACTION = 0.1  # frames with normalised time >= 1 - TAIL_FRACTION form the "last frames"
CHANGE_THRESHOLD = 0.1  # per-pixel max-channel |final - first| above this is "changed"
MIN_CHANGE_FRACTION = 5e-4  # below this fraction of changed pixels the task is "no change"
MIN_VIDEO_FRAMES = 2  # fewer frames show no motion: temporal scores would be void
FLICKER_FLOOR = 0.01  # fraction of changed pixels always allowed per step (codec/VAE flicker)
MOTION_SLACK = 1.5  # allowed multiple of the GT's fastest motion rate


def _calibrate(s: float) -> float:
    return float(np.clip(s / SSIM_SATURATION, 0.0, 1.0))


def _changed_fraction(frames: np.ndarray) -> np.ndarray:
    """Fraction of pixels whose max-channel change exceeds CHANGE_THRESHOLD, per consecutive pair."""
    if len(frames) < 2:
        return np.zeros(0)
    return (np.abs(np.diff(frames, axis=0)).max(axis=-1) > CHANGE_THRESHOLD).mean(axis=(1, 2))


def _masked_mean(maps: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return (maps * mask).sum(axis=(-2, -1)) / mask.sum()


def _grad_energy(frames: np.ndarray) -> np.ndarray:
    gray = frames.mean(axis=-1)
    gx = np.abs(np.diff(gray, axis=-1)).mean(axis=(-2, -1))
    gy = np.abs(np.diff(gray, axis=-2)).mean(axis=(-2, -1))
    return gx + gy


def _contrast(frames: np.ndarray) -> np.ndarray:
    return frames.mean(axis=-1).std(axis=(-2, -1))


def _ratio_score(x: np.ndarray, ref: float, eps: float = 1e-4) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64) + eps
    ref = float(ref) + eps
    return np.minimum(x / ref, ref / x)


@dataclass
class Reference:
    """Everything the stepscope-proxy scorer needs from one bench sample, at the work size."""

    sample_dir: Path
    size: tuple[int, int]  # work size (h, w), the GT size scaled to max_side
    gt_size: tuple[int, int]
    first: np.ndarray  # (h, w, 3) float32
    final: np.ndarray
    first_ref: _SsimRef
    final_ref: _SsimRef
    change_mask: np.ndarray  # (h, w) float32 in {0, 1}
    no_change: bool
    gt_times: np.ndarray  # (n_gt,) normalised times of the sampled GT frames
    gt_progress_sim: np.ndarray  # (n_gt,) masked SSIM of each sampled GT frame to the final frame
    base_sim: float  # masked SSIM(first_frame.png, final_frame.png)
    top_sim: float  # masked SSIM(GT video's last frame, final_frame.png)
    gt_rate: float  # fastest GT motion: max changed-pixel fraction per unit normalised time
    gt_grad: float
    gt_contrast: float

    def progress(self, sim_final: np.ndarray) -> np.ndarray:
        """Map masked similarity-to-final onto progress in [0, 1] (0 = first frame, 1 = GT end)."""
        span = self.top_sim - self.base_sim
        if self.no_change or span < 0.05:
            return np.clip(sim_final / max(self.top_sim, 1e-6), 0.0, 1.0)
        return np.clip((sim_final - self.base_sim) / span, 0.0, 1.0)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    kernel = np.ones(2 * radius + 1, dtype=np.float32)
    return (_filter_last2(mask.astype(np.float32), kernel) > 0).astype(np.float32)


@lru_cache(maxsize=16)
def _load_reference_cached(sample_dir: str, max_side: int, max_frames: int, stamp: tuple) -> Reference:
    sample = Path(sample_dir)
    first_full = _load_image(sample / "first_frame.png")
    final_full = _load_image(sample / "final_frame.png")
    gt_size = first_full.shape[:2]
    size = _work_size(*gt_size, max_side)
    first = _resize(first_full, size).astype(np.float32) / 255.0
    final = _resize(final_full, size).astype(np.float32) / 255.0
    changed = (np.abs(final - first).max(axis=-1) > CHANGE_THRESHOLD).astype(np.float32)
    no_change = changed.mean() < MIN_CHANGE_FRACTION
    if no_change:
        mask = np.ones(size, dtype=np.float32)
    else:
        mask = _dilate(changed, max(2, round(0.02 * max(size))))
    first_ref, final_ref = _ssim_ref(first), _ssim_ref(final)
    gt = _prepare_clip(sample / "ground_truth.mp4", size, max_frames)
    if len(gt.frames) < MIN_VIDEO_FRAMES:  # no motion to compare against: every score would be void
        raise ValueError(
            f"{sample / 'ground_truth.mp4'}: {len(gt.frames)} frame(s); a ground truth needs at least "
            f"{MIN_VIDEO_FRAMES}: re-download the sample"
        )
    gt_sim = _masked_mean(ssim_maps(gt.frames, final_ref), mask)
    base_sim = float(_masked_mean(ssim_maps(first[None], final_ref), mask)[0])
    diffs = _changed_fraction(gt.frames) if len(gt.frames) > 1 else np.zeros(1)
    dt = np.diff(gt.times) if len(gt.times) > 1 else np.ones(1)
    return Reference(
        sample_dir=sample,
        size=size,
        gt_size=gt_size,
        first=first,
        final=final,
        first_ref=first_ref,
        final_ref=final_ref,
        change_mask=mask,
        no_change=bool(no_change),
        gt_times=gt.times,
        gt_progress_sim=gt_sim,
        base_sim=base_sim,
        top_sim=float(gt_sim[-1]),
        gt_rate=float((diffs / dt).max()),
        gt_grad=float(_grad_energy(gt.frames).mean()),
        gt_contrast=float(_contrast(gt.frames).mean()),
    )


def load_reference(sample_dir: str | os.PathLike, *, max_side: int = 256, max_frames: int = 32) -> Reference:
    """Load (and cache) the reference data of one bench sample folder."""
    sample = Path(sample_dir).resolve()
    missing = [name for name in SAMPLE_FILES if not (sample / name).is_file()]
    if missing:
        raise FileNotFoundError(f"bench sample {sample} lacks {missing}")
    stamp = tuple((sample / name).stat().st_mtime_ns for name in SAMPLE_FILES)
    return _load_reference_cached(str(sample), int(max_side), int(max_frames), stamp)


def score_video(
    frames: np.ndarray | str | os.PathLike,
    sample_dir: str | os.PathLike,
    *,
    max_side: int = 256,
    max_frames: int = 32,
    reference: Reference | None = None,
) -> dict[str, float]:
    """Builtin score of one generated video against one VBVR-Bench sample folder.

    ``frames``: uint8 ``(T, H, W, 3)`` (float arrays in [0, 1] or [0, 255] are accepted; NaN
    frames are scored as broken) or a video path. Frames are resized to the GT size scaled so
    that its longer side is at most ``max_side`` and at most ``max_frames`` evenly spaced
    frames are used. Returns the five metrics in [0, 1] and ``total`` (their weighted sum with
    :data:`WEIGHTS`). Formulas: docs/scoring.md.
    """
    ref = reference or load_reference(sample_dir, max_side=max_side, max_frames=max_frames)
    clip = _prepare_clip(frames, ref.size, max_frames)
    x, times = clip.frames, clip.times
    tail = times >= 1.0 - TAIL_FRACTION
    tail[-1] = True

    # first-frame fidelity: calibrated SSIM of the first generated frame to first_frame.png,
    # over the whole image and over the region the task changes
    first_map = ssim_maps(x[:1], ref.first_ref)
    first_frame_fidelity = 0.5 * _calibrate(first_map.mean()) + 0.5 * _calibrate(
        _masked_mean(first_map, ref.change_mask)[0]
    )

    # final-frame match, and the similarity-to-final curve used by task progress
    fin_maps = ssim_maps(x, ref.final_ref)
    fin_global = fin_maps.mean(axis=(1, 2))
    fin_masked = _masked_mean(fin_maps, ref.change_mask)
    match = np.array(
        [0.5 * _calibrate(g) + 0.5 * _calibrate(m) for g, m in zip(fin_global, fin_masked, strict=True)]
    )
    final_frame_match = float(match[tail].max())

    # temporal smoothness: per-step changes beyond what the GT's own fastest motion allows
    if len(x) > 1:
        d = _changed_fraction(x)
        allowed = MOTION_SLACK * ref.gt_rate * np.diff(times) + FLICKER_FLOOR
        excess = np.maximum(0.0, d - allowed) / allowed
        temporal_smoothness = float(np.exp(-excess.max()))
    else:  # a single frame shows no process at all: it must not pass as perfectly smooth
        temporal_smoothness = 0.0

    # visual quality: gradient energy and contrast close to the GT video's, finite pixels
    q = np.sqrt(_ratio_score(_grad_energy(x), ref.gt_grad) * _ratio_score(_contrast(x), ref.gt_contrast))
    q = np.where(clip.finite, q, 0.0)
    visual_quality = float(q.mean())

    # task progress: how far toward the GT's final state the video gets, and how well its
    # progress curve follows the GT's
    p_gen = ref.progress(fin_masked)
    p_gt = ref.progress(ref.gt_progress_sim)
    reached = float(p_gen[tail].max())
    grid = np.linspace(0.0, 1.0, 33)
    agreement = 1.0 - float(
        np.abs(np.interp(grid, times, p_gen) - np.interp(grid, ref.gt_times, p_gt)).mean()
    )
    task_progress = 0.75 * reached + 0.25 * agreement

    scores = {
        "first_frame_fidelity": first_frame_fidelity,
        "final_frame_match": final_frame_match,
        "temporal_smoothness": temporal_smoothness,
        "visual_quality": visual_quality,
        "task_progress": task_progress,
    }
    if not clip.finite.all():  # broken frames also break the frame matches
        frac = float(clip.finite.mean())
        scores = {k: v * frac for k, v in scores.items()}
    scores = {k: float(np.clip(v, 0.0, 1.0)) for k, v in scores.items()}
    scores["total"] = float(sum(WEIGHTS[k] * scores[k] for k in WEIGHTS))
    return scores


# --------------------------------------------------------------------------------------------
# VBVR-EvalKit adapter
# --------------------------------------------------------------------------------------------

EVALKIT_MODULE = "vbvr_bench"  # the package of the VBVR-EvalKit repository (VBVRBench, evaluators)
EVALKIT_REPO = "https://github.com/Video-Reason/VBVR-EvalKit"
EVALKIT_COMMIT = "7a6d4dc5193dbdd47dbdbf2a21f040fc808a4b77"  # the commit whose vbvr_bench we follow
# Its scores move with these versions; the whole tested environment is envs/evalkit.txt.
EVALKIT_PINS = {"numpy": "1.26.4", "opencv-python": "4.10.0.84", "Pillow": "10.4.0"}
ON_ERROR = ("zero", "raise", "nan")  # "zero" = EvalKit's own convention


class EvalKitNotInstalled(ImportError):
    """The VBVR-EvalKit module cannot be imported."""


@runtime_checkable
class EvalKitPerVideo(Protocol):
    """Per-video entry point: the module (or a shim) exposes ``evaluate``.

    ``evaluate(video_path, sample_dir)`` scores one generated video against the bench sample
    folder ``sample_dir`` (first_frame.png, final_frame.png, ground_truth.mp4, prompt.txt) and
    returns the task-specific score in [0, 1], or a mapping ``metric -> value`` (a key
    ``score`` is renamed to the adapter's ``metric``).
    """

    def evaluate(self, video_path: str, sample_dir: str) -> float | Mapping[str, float]: ...


@runtime_checkable
class EvalKitBatch(Protocol):
    """Batch entry point: ``evaluate_videos(videos_dir, bench_root)`` scores every
    ``<videos_dir>/<split>/<task>/<index>.mp4`` and yields mappings with keys ``split``,
    ``task``, ``sample`` (or ``video_idx``) and ``score`` and/or further ``metric -> value``
    entries (or a ``dimensions`` mapping)."""

    def evaluate_videos(self, videos_dir: str, bench_root: str) -> Iterable[Mapping[str, Any]]: ...


@runtime_checkable
class EvalKitBench(Protocol):
    """The public repository's own API (package ``vbvr_bench``): ``VBVRBench(gt_base_path,
    output_path, device).evaluate(videos_path, name=..., **kwargs)`` returning a dict whose
    ``detailed`` list holds per-video results (``video_path``, ``task_name``, ``video_idx``,
    ``score``, ``dimensions``). ``task_specific_only=True`` selects the leaderboard mode."""

    VBVRBench: Any


def import_evalkit(module: str = EVALKIT_MODULE):
    """Import the EvalKit module or raise :class:`EvalKitNotInstalled` with instructions."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is not None and module.split(".")[0] != error.name.split(".")[0]:
            raise  # the module exists but one of its own imports is missing
        raise EvalKitNotInstalled(
            f"VBVR-EvalKit module {module!r} is not importable (it is not on PyPI). Install it in "
            f"its own environment with pinned versions -- its scores depend on them:\n"
            f"  git clone {EVALKIT_REPO} vbvr-evalkit && git -C vbvr-evalkit checkout {EVALKIT_COMMIT}\n"
            f"  python3.11 -m venv evalkit-env && evalkit-env/bin/pip install -r envs/evalkit.txt\n"
            f"  evalkit-env/bin/pip install --no-deps -e . (in this project)\n"
            f"then run `PYTHONPATH=vbvr-evalkit evalkit-env/bin/python -m stepscope.analysis.scoring evalkit ...`. "
            f"The repository's package is {EVALKIT_MODULE!r} (the default); any other module must "
            f"expose evaluate(video_path, sample_dir) or evaluate_videos(videos_dir, bench_root). "
            f"See docs/scoring.md."
        ) from error


def evaluator_registry(kit: Any) -> Mapping[str, Any] | None:
    """The module's task -> evaluator map (``TASK_EVALUATOR_MAP`` on the module or on its
    ``evaluators`` submodule, as in vbvr_bench), or None when it has none.

    vbvr_bench's ``VBVRBench.evaluate`` crashes (TypeError) on a task folder missing from this
    map; its ``run_evaluation.py`` skips such folders with a warning. The adapter does the latter.
    """
    registry = getattr(kit, "TASK_EVALUATOR_MAP", None)
    if registry is None and hasattr(kit, "__path__"):  # a package: look in <module>.evaluators
        name = f"{kit.__name__}.evaluators"
        try:
            registry = getattr(importlib.import_module(name), "TASK_EVALUATOR_MAP", None)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
    return registry


def check_evalkit_versions() -> dict[str, str | None]:
    """Versions of the libraries EvalKit's scores depend on; warns when they differ from the pins."""
    from importlib import metadata

    found: dict[str, str | None] = {}
    for dist, pinned in EVALKIT_PINS.items():
        candidates = [dist] + (
            ["opencv-python-headless", "opencv-contrib-python"] if "opencv" in dist else []
        )
        version = None
        for name in candidates:
            try:
                version = metadata.version(name)
                break
            except metadata.PackageNotFoundError:
                continue
        found[dist] = version
        if version != pinned:
            warnings.warn(
                f"VBVR-EvalKit scores depend on library versions: {dist} is {version}, pinned "
                f"{pinned}. Run it in its own pinned environment (docs/scoring.md).",
                stacklevel=3,
            )
    return found


def evalkit_video_path(
    videos_root: str | os.PathLike, model: str, split: str, task: str, sample: str
) -> Path:
    """Where EvalKit expects a generated video: ``<root>/<model>/<split>/<task>/<index>.mp4``."""
    return Path(videos_root) / model / split / task / f"{sample}.mp4"


_WORKFLOW_MODEL = re.compile(r"^(?P<variant>.+)_(?P<run>seed\d+|ens-.+)$")


def parse_model_dir(name: str, first_seed: str = "1") -> tuple[str, str]:
    """Model folder name -> (variant, seed).

    Accepted: ``<variant>@<seed>`` (``wan22@2``, ``wan22@ens-latent-k3-0-10``); the workflow's
    ``<variant>_seed<N>`` / ``<variant>_<ensemble>`` (rules/common.smk ``video_model_name``);
    and a bare ``<variant>``, which stands for ``first_seed`` (the workflow's first seed).
    """
    if "@" in name:
        variant, _, seed = name.partition("@")
        return variant, (seed or first_seed)
    match = _WORKFLOW_MODEL.match(name)
    if match:
        run = match["run"]
        return match["variant"], run[len("seed") :] if run.startswith("seed") else run
    return name, str(first_seed)


def _iter_layout(model_dir: Path) -> Iterator[tuple[str, str, str, Path]]:
    for video in sorted(model_dir.glob("*/*/*.mp4")):
        task_dir = video.parent
        yield task_dir.parent.name, task_dir.name, video.stem, video


def _result_metrics(result: Any, metric: str) -> dict[str, float]:
    if isinstance(result, Mapping):
        values: dict[str, float] = {}
        for key, value in result.items():
            if key == "dimensions" and isinstance(value, Mapping):
                values.update({str(k): _as_float(v) for k, v in value.items()})
            elif key == "score":
                values[metric] = _as_float(value)
            elif isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool):
                values[str(key)] = _as_float(value)
        return values
    return {metric: _as_float(result)}


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


_ID_KEYS = {"split", "task", "task_name", "sample", "video_idx", "index", "video_path", "file_split"}


def score_with_evalkit(
    videos_root: str | os.PathLike,
    bench_root: str | os.PathLike,
    out_table: str | os.PathLike | None = None,
    *,
    module: str = EVALKIT_MODULE,
    models: Sequence[str] | None = None,
    step: int = FINAL_STEP,
    metric: str = "task_specific",
    full_score: bool = False,
    mode: str = "auto",
    device: str = "cpu",
    on_error: str = "zero",
    check_versions: bool = True,
    first_seed: str = "1",
    model_map: Mapping[str, tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """Score generated videos with VBVR-EvalKit; return (and write) the tidy table.

    Layout: ``<videos_root>/<model>/<split>/<task>/<index>.mp4`` with ``index`` the bench
    sample folder name (``00000``); ``<bench_root>/<split>/<task>/<index>/`` holds the sample.
    ``model`` names map to (variant, seed) through ``model_map`` when given, else
    :func:`parse_model_dir` (``<variant>@<seed>``, the workflow's ``<variant>_seed<N>`` /
    ``<variant>_<ensemble>``, or a bare ``<variant>`` = ``first_seed``); ``models``
    restricts which model folders are scored.

    Entry points, tried in this order when ``mode="auto"``: ``VBVRBench`` (the repository's
    package ``vbvr_bench``), ``evaluate_videos`` (batch), ``evaluate`` (per video); see the
    Protocols above. The task-specific score is stored as metric ``metric``; further
    dimensions returned by the module are stored under their own names. ``full_score`` asks
    ``VBVRBench`` for its composite 5-dimension mode (stored as metric ``weighted``).

    EvalKit's conventions are kept: a video it cannot evaluate (unreadable, evaluator error)
    scores 0.0 and counts in every mean; the adapter adds a row ``evalkit_failed`` = 1 for it
    and warns with the errors (``on_error="raise"`` raises instead, ``"nan"`` stores NaN,
    which drops it from means). A task folder without an evaluator is skipped with a warning,
    and its videos get a row ``evalkit_skipped`` = 1 instead of scores.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    kit = import_evalkit(module)
    if check_versions:
        check_evalkit_versions()
    videos_root, bench_root = Path(videos_root), Path(bench_root)
    if not videos_root.is_dir():
        raise FileNotFoundError(f"videos_root {videos_root} is not a folder")
    entry = _pick_entry(kit, mode)
    registry = evaluator_registry(kit)
    model_dirs = sorted(p for p in videos_root.iterdir() if p.is_dir())
    if models is not None:
        wanted = set(models)
        model_dirs = [p for p in model_dirs if p.name in wanted]
    rows: list[dict] = []
    failed: list[str] = []
    skipped: dict[tuple[str, str], str] = {}
    for model_dir in model_dirs:
        if model_map is not None and model_dir.name in model_map:
            variant, seed = model_map[model_dir.name]
        else:
            variant, seed = parse_model_dir(model_dir.name, first_seed)
        videos = list(_iter_layout(model_dir))
        tasks = {task for _, task, _, _ in videos}
        no_evaluator = {task for task in tasks if registry is not None and task not in registry}
        results = {
            (split, task, sample): outcome
            for split, task, sample, outcome in _run_entry(
                entry, kit, model_dir, bench_root, sorted(tasks - no_evaluator), metric, full_score, device
            )
            if task not in no_evaluator
        }
        for split, task, sample, video in videos:
            ids = RunId(variant, split, task, sample, seed, step)
            outcome = results.get((split, task, sample))
            if outcome is None:
                reason = "no EvalKit evaluator" if task in no_evaluator else "EvalKit gave no result"
                skipped.setdefault((split, task), reason)
                rows.extend(score_rows(ids, {SKIPPED: 1.0}, EVALKIT))
                continue
            values, error = outcome
            if error is not None:
                if on_error == "raise":
                    raise RuntimeError(f"VBVR-EvalKit failed on {video}: {error}")
                values = {k: math.nan for k in values} if on_error == "nan" else values
                values = {**values, FAILED: 1.0}
                failed.append(f"{video}: {error}")
            rows.extend(score_rows(ids, values, EVALKIT))
    if skipped:
        warnings.warn(
            "VBVR-EvalKit skipped task folders (their videos have no score, the tables say so): "
            + "; ".join(f"{split}/{task} ({reason})" for (split, task), reason in sorted(skipped.items())),
            stacklevel=2,
        )
    if failed:
        scored = "NaN" if on_error == "nan" else "0.0, counted in the means as EvalKit does"
        warnings.warn(
            f"VBVR-EvalKit could not evaluate {len(failed)} video(s), scored {scored}: " + "; ".join(failed),
            stacklevel=2,
        )
    table = rows_to_table(rows)
    if out_table is not None:
        write_score_table(out_table, table)
    return table


def _pick_entry(kit: Any, mode: str) -> str:
    available = [
        name
        for name, proto in (("bench", EvalKitBench), ("batch", EvalKitBatch), ("video", EvalKitPerVideo))
        if isinstance(kit, proto)
    ]
    if mode != "auto":
        if mode not in ("bench", "batch", "video"):
            raise ValueError(f"mode must be auto, bench, batch or video, not {mode!r}")
        if mode not in available:
            raise TypeError(f"EvalKit module {kit.__name__!r} has no {mode!r} entry point")
        return mode
    if not available:
        raise TypeError(
            f"EvalKit module {kit.__name__!r} exposes none of VBVRBench, evaluate_videos(videos_dir, "
            f"bench_root), evaluate(video_path, sample_dir); write a small shim (docs/scoring.md)"
        )
    return available[0]


Outcome = tuple[dict[str, float], str | None]  # (metric -> value, EvalKit's error or None)


def _run_entry(
    entry: str,
    kit: Any,
    model_dir: Path,
    bench_root: Path,
    tasks: list[str],
    metric: str,
    full_score: bool,
    device: str,
) -> Iterator[tuple[str, str, str, Outcome]]:
    """Run one entry point on one model folder, only on ``tasks`` (those with an evaluator)."""
    if not tasks:
        return
    if entry == "video":
        for split, task, sample, video in _iter_layout(model_dir):
            sample_dir = bench_root / split / task / sample
            if task not in tasks or not sample_dir.is_dir():
                continue  # reported as skipped
            try:
                outcome = _result_metrics(kit.evaluate(str(video), str(sample_dir)), metric), None
            except Exception as error:  # EvalKit's convention: the video scores 0.0
                outcome = {metric: 0.0}, f"{type(error).__name__}: {error}"
            yield split, task, sample, outcome
        return
    if entry == "batch":
        results = kit.evaluate_videos(str(model_dir), str(bench_root))
    else:
        with tempfile.TemporaryDirectory(prefix="vbvr-evalkit-") as tmp:
            bench = kit.VBVRBench(gt_base_path=str(bench_root), output_path=tmp, device=device)
            kwargs = {} if full_score else {"task_specific_only": True}
            out = bench.evaluate(videos_path=str(model_dir), name="stepscope", task_list=tasks, **kwargs)
        results = out.get("detailed", [])
    score_name = "weighted" if entry == "bench" and full_score else metric
    for result in results:
        result = dict(result)
        split, task, sample = _result_ids(result, model_dir)
        values = _result_metrics({k: v for k, v in result.items() if k not in _ID_KEYS}, score_name)
        error = result.get("error")
        yield split, task, sample, (values, None if error is None else str(error))


def _result_ids(result: Mapping[str, Any], model_dir: Path) -> tuple[str, str, str]:
    if result.get("video_path"):
        video = Path(result["video_path"])
        try:
            split, task, name = video.relative_to(model_dir).parts
            return split, task, Path(name).stem
        except ValueError:
            pass
    split = result.get("file_split") or result.get("split")
    task = result.get("task") or result.get("task_name")
    sample = result.get("sample") or result.get("video_idx") or result.get("index")
    if split is None or task is None or sample is None:
        raise KeyError(f"EvalKit result lacks split/task/sample: {sorted(result)}")
    return str(split), str(task), str(sample)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stepscope.analysis.scoring", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("proxy", help="score one video with the stepscope-proxy scorer, print JSON")
    b.add_argument("video")
    b.add_argument("sample_dir")
    b.add_argument("--max-side", type=int, default=256)
    b.add_argument("--max-frames", type=int, default=32)
    e = sub.add_parser("evalkit", help="score a videos tree with VBVR-EvalKit into a Parquet table")
    e.add_argument("--videos-root", required=True)
    e.add_argument("--bench-root", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--module", default=EVALKIT_MODULE, help=f"EvalKit's package (default {EVALKIT_MODULE})")
    e.add_argument("--models", nargs="*")
    e.add_argument("--step", type=int, default=FINAL_STEP)
    e.add_argument("--full-score", action="store_true", help="composite mode (metric `weighted`)")
    e.add_argument("--mode", default="auto", choices=["auto", "bench", "batch", "video"])
    e.add_argument("--device", default="cpu")
    e.add_argument("--on-error", default="zero", choices=ON_ERROR,
                   help="a video EvalKit cannot evaluate: 0.0 as EvalKit does (default), raise, or NaN")  # fmt: skip
    e.add_argument("--first-seed", default="1", help="seed of a bare <variant> model folder")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in RENAMED_SCORERS:
        parser.error(f"{argv[0]!r} was renamed 'proxy' (the stepscope-proxy scorer, not VBVR's score)")
    args = parser.parse_args(argv)
    if args.command == "proxy":
        scores = score_video(args.video, args.sample_dir, max_side=args.max_side, max_frames=args.max_frames)
        print(json.dumps(scores, indent=2))
        return 0
    try:
        table = score_with_evalkit(
            args.videos_root,
            args.bench_root,
            args.out,
            module=args.module,
            models=args.models,
            step=args.step,
            full_score=args.full_score,
            mode=args.mode,
            device=args.device,
            on_error=args.on_error,
            first_seed=args.first_seed,
        )
    except EvalKitNotInstalled as error:
        print(error, file=sys.stderr)
        return 2
    print(f"wrote {len(table)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
