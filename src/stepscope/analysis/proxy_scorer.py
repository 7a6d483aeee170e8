"""The ``stepscope-proxy`` scorer: a deterministic NumPy + Pillow approximation of VBVR-Bench's
weighted mode (:func:`score_video`), for machines without EvalKit and for the cheap per-step
curves. It is *not* VBVR's score: its rank agreement with EvalKit is only moderate
(docs/scoring.md). Imports neither torch nor cv2.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stepscope.analysis.score_table import RunId, rows_to_table, score_rows

PROXY = "stepscope-proxy"  # was called "builtin" (renamed: it is not VBVR's score)
WEIGHTS: dict[str, float] = {
    "first_frame_fidelity": 0.15,
    "final_frame_match": 0.35,
    "temporal_smoothness": 0.15,
    "visual_quality": 0.10,
    "task_progress": 0.25,
}
METRICS = (*WEIGHTS, "total")

SAMPLE_FILES = ("first_frame.png", "final_frame.png", "ground_truth.mp4")

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
# The proxy scorer
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
# Many videos, and the command line
# --------------------------------------------------------------------------------------------


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



def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video")
    parser.add_argument("sample_dir")
    parser.add_argument("--max-side", type=int, default=256)
    parser.add_argument("--max-frames", type=int, default=32)


def run_cli(args: argparse.Namespace) -> int:
    """Score one video, print the metrics as JSON."""
    scores = score_video(args.video, args.sample_dir, max_side=args.max_side, max_frames=args.max_frames)
    print(json.dumps(scores, indent=2))
    return 0
