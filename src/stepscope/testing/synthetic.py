"""Synthetic run directories for tests, demos and benchmarks.

`write_synthetic_run` writes a complete run directory (see docs/records.md) through the writers
in `stepscope.records`, without any model. The reduced activation maps are computed from random
token matrices ``X`` (N x D, N = frames*height*width) with exactly the definitions of
docs/records.md, and the activations table is computed from those maps, so tests can check that
readers and figures reproduce the recorded numbers.

The tokens are not pure noise, so that figures look like something: a square "object" of
token cells (see `object_cells`) moves one cell to the right per latent frame, its tokens carry an
extra direction whose strength grows with the denoising step, norms grow with depth, and for
Wan2.2-like runs (``expert_switch=k``) the low-noise expert has a visibly different norm level.
`write_synthetic_first_frame` draws a first-frame image whose non-background pixels cover exactly
the object's token cells of latent frame 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stepscope import __version__
from stepscope.records import (
    ACTIVATIONS_NPZ,
    ACTIVATIONS_TABLE,
    META,
    SCHEDULE,
    STEPS,
    VIDEO,
    activation_row,
    map_key,
    video_encoding,
    write_activation_maps,
    write_activation_table,
    write_meta,
    write_schedule,
    write_steps,
    write_video,
)

BACKGROUND_RGB = (236, 236, 236)
OBJECT_RGB = (200, 40, 40)
TOPK = 6
SIGMA_SHIFT = 5.0


def object_cells(height: int, width: int, frame: int = 0) -> tuple[slice, slice]:
    """Token-grid rows and columns covered by the synthetic object in latent frame `frame`."""
    rows = slice(height // 4, height // 4 + max(1, height // 2))
    size = max(1, width // 2)
    start = (width // 4 + frame) % max(1, width - size + 1)
    return rows, slice(start, start + size)


def object_mask(frames: int, height: int, width: int) -> np.ndarray:
    """Boolean (frames, height, width) mask of the synthetic object's tokens."""
    mask = np.zeros((frames, height, width), dtype=bool)
    for f in range(frames):
        rows, cols = object_cells(height, width, f)
        mask[f, rows, cols] = True
    return mask


def reduce_tokens(x: np.ndarray, grid: tuple[int, int, int], k: int = TOPK) -> dict[str, np.ndarray]:
    """The reduced maps of docs/records.md for one block output ``x`` of shape (N, D)."""
    f, h, w = grid
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    if n != f * h * w:
        raise ValueError(f"{n} tokens do not fit the grid {grid}")
    norm = np.linalg.norm(x, axis=1).reshape(f, h, w)
    channel_var = x.var(axis=0)
    k = min(k, d)
    topk = np.argsort(-channel_var, kind="stable")[:k]
    topk_maps = x[:, topk].T.reshape(k, f, h, w)
    centred = x - x.mean(axis=0, keepdims=True)
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:3]
    # Sign convention: the largest-magnitude loading of each component is positive.
    signs = np.sign(comps[np.arange(comps.shape[0]), np.abs(comps).argmax(axis=1)])
    signs[signs == 0] = 1.0
    comps = comps * signs[:, None]
    proj = centred @ comps.T
    if proj.shape[1] < 3:  # fewer than 3 tokens/channels: pad with zeros
        proj = np.pad(proj, ((0, 0), (0, 3 - proj.shape[1])))
    var = sing**2
    explained = var[:3] / var.sum() if var.sum() > 0 else np.zeros(min(3, var.size))
    explained = np.pad(explained, (0, 3 - explained.size))
    return {
        "norm": norm.astype(np.float32),
        "frame_energy": norm.mean(axis=(1, 2)).astype(np.float32),
        "frame_l2": np.sqrt((norm.astype(np.float64) ** 2).sum(axis=(1, 2))).astype(np.float32),
        "channel_var": channel_var.astype(np.float32),
        "topk_channels": topk.astype(np.int64),
        "topk_maps": topk_maps.astype(np.float32),
        "pca": proj.reshape(f, h, w, 3).astype(np.float32),
        "pca_explained": explained.astype(np.float32),
    }


def synthetic_schedule(steps: int, expert_switch: int | None, recorded: Sequence[int]) -> list[dict]:
    """Flow-matching schedule with sigma shift 5 (as Wan uses), one row per step."""
    base = np.linspace(1.0, 0.0, steps + 1)[:-1]
    sigmas = SIGMA_SHIFT * base / (1.0 + (SIGMA_SHIFT - 1.0) * base)
    recorded = set(recorded)
    rows = []
    for step, sigma in enumerate(sigmas):
        if expert_switch is None:
            expert = "dit"
        else:
            expert = "low_noise" if step >= expert_switch else "high_noise"
        rows.append(
            {
                "step": step,
                "timestep": float(sigma * 1000.0),
                "sigma": float(sigma),
                "expert": expert,
                "recorded": step in recorded,
            }
        )
    return rows


def _video(frames: int, size: int, height: int, width: int, latent_frames: int) -> np.ndarray:
    video = np.empty((frames, size, size, 3), dtype=np.uint8)
    video[:] = BACKGROUND_RGB
    for t in range(frames):
        latent_f = 0 if t == 0 else min(latent_frames - 1, (t - 1) // 4 + 1)
        rows, cols = object_cells(height, width, latent_f)
        y0, y1 = rows.start * size // height, rows.stop * size // height
        x0, x1 = cols.start * size // width, cols.stop * size // width
        video[t, y0:y1, x0:x1] = OBJECT_RGB
    return video


def write_synthetic_first_frame(path: str | Path, *, height: int = 4, width: int = 4, size: int = 64) -> Path:
    """PNG first frame: background colour everywhere except the object's token cells (frame 0).

    The image is ``size`` x ``size`` pixels; with ``size`` a multiple of the grid the foreground
    mask of `stepscope.plots.masks.foreground_mask` equals ``object_mask(...)[0]`` exactly.
    """
    import imageio.v2 as imageio

    from stepscope.atomic import atomic_path

    image = _video(1, size, height, width, 1)[0]
    path = Path(path)
    with atomic_path(path) as tmp:
        imageio.imwrite(tmp, image, format="png")
    return path


def write_synthetic_run(
    run_dir: str | Path,
    *,
    layers: Sequence[int] = (0, 2),
    steps: int = 8,
    recorded_steps: Sequence[int] | None = None,
    frames: int = 3,
    height: int = 4,
    width: int = 4,
    dim: int = 16,
    latent_channels: int = 4,
    expert_switch: int | None = None,
    seed: int = 0,
    video_frames: int = 9,
    video_size: int = 32,
    variant: str | None = None,
    split: str = "In-Domain_50",
    task: str = "G-3_stable_sort_data-generator",
    sample: str = "00000",
    fps: int = 16,
) -> Path:
    """Write a complete synthetic run directory and return its path.

    Activations are captured for every layer in `layers` at every step (cond pass only);
    x0_hat is stored for `recorded_steps` (default: every step). ``expert_switch=k`` makes a
    Wan2.2-like run (steps >= k by the ``low_noise`` expert, earlier ones ``high_noise``);
    ``None`` makes a single-DiT (Wan2.1-like) run with expert ``dit``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if expert_switch is not None and not 0 < expert_switch < steps:
        raise ValueError(f"expert_switch must lie in 1..{steps - 1}, got {expert_switch}")
    recorded = list(range(steps)) if recorded_steps is None else sorted(set(recorded_steps))
    if any(not 0 <= s < steps for s in recorded):
        raise ValueError(f"recorded_steps must lie in 0..{steps - 1}")
    layers = [int(layer) for layer in layers]
    rng = np.random.default_rng(seed)
    family = "wan2.1" if expert_switch is None else "wan2.2"
    variant = variant or f"synthetic-{family}"

    schedule = synthetic_schedule(steps, expert_switch, recorded)

    # Final video and latents.
    write_video(run_dir / VIDEO, _video(video_frames, video_size, height, width, frames), fps=fps)
    import torch

    latent_shape = (latent_channels, frames, 2 * height, 2 * width)
    final = rng.standard_normal(latent_shape).astype(np.float32)
    x0_hats = {}
    for step in recorded:
        blend = 1.0 - step / max(1, steps - 1)
        noisy = final + blend * rng.standard_normal(latent_shape).astype(np.float32)
        x0_hats[step] = torch.from_numpy(noisy)
    write_steps(run_dir / STEPS, x0_hats, torch.from_numpy(final), steps - 1)
    write_schedule(run_dir / SCHEDULE, schedule)

    # Activations: random tokens with a moving object whose signal grows over the steps.
    n = frames * height * width
    obj = object_mask(frames, height, width).reshape(n)
    maps: dict[str, np.ndarray] = {}
    rows = []
    for layer_pos, layer in enumerate(layers):
        depth = 1.0 + 0.5 * layer_pos
        bg_dir = rng.standard_normal(dim)
        obj_dir = rng.standard_normal(dim)
        for step in range(steps):
            progress = step / max(1, steps - 1)
            expert = schedule[step]["expert"]
            level = depth * (1.25 if expert == "low_noise" else 1.0)
            x = rng.standard_normal((n, dim)) * (1.0 - 0.6 * progress)
            x += 0.3 * bg_dir
            x[obj] += (0.2 + 1.5 * progress) * obj_dir
            x *= level
            reduced = reduce_tokens(x, (frames, height, width))
            for name, value in reduced.items():
                maps[map_key(layer, step, "cond", name)] = value
            rows.append(activation_row(reduced, step=step, layer=layer, pass_="cond", expert=expert))
    write_activation_maps(run_dir / ACTIVATIONS_NPZ, maps)
    write_activation_table(run_dir / ACTIVATIONS_TABLE, rows)

    if expert_switch is None:
        boundary = None
    else:  # a boundary (sigma) between the last high-noise step and the first low-noise step
        boundary = (schedule[expert_switch - 1]["sigma"] + schedule[expert_switch]["sigma"]) / 2
    settings = {
        "num_frames_requested": video_frames,
        "num_frames": video_frames,
        "height": video_size,
        "width": video_size,
        "steps": steps,
        "cfg_scale": 5.0,
        "sigma_shift": SIGMA_SHIFT,
        "switch_boundary": boundary,
        "negative_prompt": "",
        "fps": fps,
        "capture_layers": layers,
        "capture_steps": list(range(steps)),
        "capture_passes": ["cond"],
        "record_steps": recorded,
    }
    meta = {
        "family": family,
        "variant": variant,
        "seed": int(seed),
        "prompt": "synthetic prompt: move the red square to the right",
        "image": None,
        "sample": {"split": split, "task": task, "sample": sample},
        "settings": settings,
        "fps": fps,
        "rounding": {},
        "versions": {"stepscope": __version__},
        "video_encoding": video_encoding(fps),
        "weights": {},
        "loras": [],
        "timings": {},
        "device": "synthetic",
        "dtype": "float32",
        "synthetic": True,
    }
    write_meta(run_dir / META, meta)  # last: marks the run complete
    return run_dir
