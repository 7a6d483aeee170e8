"""The work behind the workflow's GPU rules, callable without Snakemake (imports torch and the models).

Workflow scripts only unpack `snakemake.*` and call these functions with plain values.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from stepscope import records
from stepscope.atomic import atomic_path, write_json
from stepscope.bench import read_sample
from stepscope.errors import StepScopeError
from stepscope.models.loading import LoraSpec, cap_gpu_memory, default_device, load_pipeline, resolve_dtype
from stepscope.models.registry import get_family
from stepscope.models.wan import load_image
from stepscope.models.weights_check import names_bad_weights
from stepscope.provenance import package_versions
from stepscope.run_names import EnsembleSpec
from stepscope.sampling.capture import CaptureSpec
from stepscope.sampling.ensemble import EnsembleHook
from stepscope.sampling.loop import RecordSpec, sample_lockstep, write_run
from stepscope.stepspec import parse_steps, resolve_steps


def record_spec(record: dict[str, Any], num_steps: int, fps: int) -> RecordSpec:
    """Build what to record from the config's `record` section (step specs checked against num_steps)."""
    capture_steps = parse_steps(record.get("capture_steps", "all"), num_steps)
    layers = tuple(int(layer) for layer in record.get("layers", ()))
    capture = None
    if layers and (capture_steps is None or capture_steps):
        capture = CaptureSpec(
            layers=layers,
            steps=capture_steps,
            passes=tuple(record.get("passes", ("cond",))),
            top_k=int(record.get("top_k", 6)),
            map_steps=parse_steps(record.get("map_steps", "all"), num_steps),
        )
    return RecordSpec(
        x0_steps=parse_steps(record.get("x0_steps", "all"), num_steps), capture=capture, fps=fps
    )


def loop_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """A variant's sampler settings as `sample_lockstep` keywords; None (or absent) keeps the
    family's default (the seed's), so the defaults live in one place per family."""
    optional = ("cfg_scale", "negative_prompt", "sigma_shift", "switch_boundary")
    return {
        **{key: settings.get(key) for key in optional},
        "tiled": bool(settings.get("tiled", True)),
        "rand_device": settings.get("rand_device", "cpu"),
    }


def resolve_input(source: dict[str, Any]) -> dict[str, Any]:
    """A bench sample folder (validated: fails naming the bad file) or a custom {image, prompt}."""
    if "sample_dir" in source:
        return read_sample(source["sample_dir"])
    image = Path(source["image"])
    prompt = source.get("prompt", "")
    load_image(image)
    with Image.open(image) as opened:
        width, height = opened.size
    return {"image": str(image), "prompt": prompt, "gt_num_frames": None, "width": width, "height": height}


def resolve_shape(settings: dict[str, Any], info: dict[str, Any]) -> tuple[int, int, int]:
    """Resolution and frame count for one input: config override, else the sample's own."""
    height = int(settings.get("height") or info["height"])
    width = int(settings.get("width") or info["width"])
    num_frames = settings.get("num_frames") or info.get("gt_num_frames")
    if not num_frames:
        raise StepScopeError("num_frames unknown: a custom input needs `num_frames` in its variant settings")
    if settings.get("max_frames"):
        num_frames = min(int(num_frames), int(settings["max_frames"]))
    return height, width, int(num_frames)


def load_job_pipeline(
    family: str,
    weights_dir: str,
    loras: list[dict[str, Any]],
    device: dict[str, Any],
    sources: dict[str, str] | None = None,
) -> Any:
    """The pipeline a GPU rule asked for: config-style LoRA dicts, device settings and the folders
    of the family's other repos. What each LoRA matched is in `pipe.stepscope_loras`."""
    cap_gpu_memory()
    lora_specs = [
        LoraSpec(Path(item["path"]), item.get("target", "dit"), float(item.get("alpha", 1.0)))
        for item in loras
    ]
    return load_pipeline(
        family,
        weights_dir,
        device=device.get("device"),
        dtype=device.get("dtype"),
        loras=lora_specs,
        offload=device.get("offload", "seed"),
        lora_mode=device.get("lora_mode", "hotload"),
        sources=sources,
    )


def sample_run(
    pipe: Any,
    family: str,
    *,
    info: dict[str, Any],
    settings: dict[str, Any],
    record: dict[str, Any],
    seeds: list[int],
    out_dir: str,
    ensemble: str | None = None,
    meta: dict[str, Any] | None = None,
    progress: Any = None,
) -> str:
    """Sample one run of one input with a loaded pipeline and write its records to `out_dir`.

    A plain run samples `seeds[0]`; an ensemble runs its K seeds (from `seeds[0]` on) in lockstep
    and writes trajectory 0 (see stepscope.sampling.ensemble). `info` is `resolve_input`'s result and
    `meta` is merged into meta.json (labels, provenance, timings); `progress`, a StepHook that only
    reads (e.g. prints each step), is passed to plain runs.
    """
    height, width, num_frames = resolve_shape(settings, info)
    steps = int(settings["steps"])
    spec = record_spec(record, steps, int(settings.get("fps", 16)))
    hook = progress
    if ensemble:
        ensemble_spec = EnsembleSpec.from_name(ensemble)
        seeds = ensemble_spec.seeds(seeds[0])
        hook = EnsembleHook(ensemble_spec)
    elif len(seeds) != 1:
        raise StepScopeError(f"a plain run samples one seed, not {seeds}")
    results = sample_lockstep(
        pipe,
        family,
        image=info["image"],
        prompt=info["prompt"],
        seeds=seeds,
        num_frames=num_frames,
        height=height,
        width=width,
        num_inference_steps=steps,
        **loop_settings(settings),
        record=spec,
        hook=hook,
    )
    result = results[0]  # an ensemble's output is trajectory 0
    run_meta = {
        "image": info["image"],
        "sample_dir": info.get("sample_dir"),
        "gt_num_frames": info.get("gt_num_frames"),
        "variant_settings": settings,
        "record": record,
        "device": str(pipe.device),
        "dtype": str(pipe.torch_dtype),
        **(meta or {}),
    }
    if ensemble:
        run_meta.update({"ensemble": ensemble, "seeds": seeds})
    write_run(out_dir, result, run_meta)
    return out_dir


@names_bad_weights  # a load failure names the broken file and the fix
def load_decoder(family: str, weights_dir: str, device: dict[str, Any] | None = None):
    """Only the VAE (decoding needs nothing else), through the same loader."""
    cap_gpu_memory()
    device = device or {}
    target = device.get("device") or default_device()
    dtype = resolve_dtype(device.get("dtype"), target)
    return get_family(family).load_decoder(Path(weights_dir), device=target, dtype=dtype)


def decode_run(
    pipe: Any,
    family: str,
    *,
    run_dir: str,
    steps: str | list[int],
    out_dir: str,
    sheet_frames: int = 8,
    tiled: str | bool = "auto",
    summary_extra: dict[str, Any] | None = None,
) -> list[int]:
    """Decode the chosen steps' x0_hat of one run with a loaded decoder: step videos
    (out_dir/steps/step_SSSS.mp4), a contact sheet (out_dir/contact_sheet.png) and
    out_dir/decoded.json, written last. `tiled`: see `decode_tiling`.
    """
    run = records.RunRecords(run_dir)
    settings = run.meta["settings"]
    num_steps = int(settings["num_inference_steps"])
    wanted = resolve_steps(steps, num_steps)
    missing = sorted(set(wanted) - set(run.recorded_steps))
    if missing:
        raise StepScopeError(
            f"{run_dir}: x0_hat of step(s) {missing} was not recorded; add them to record.x0_steps (reruns sampling) "
            "or decode only recorded steps"
        )
    adapter = get_family(family)
    decode_settings = {**settings, "seed": run.meta.get("seed")}
    use_tiles, why = bool(settings.get("tiled", True)), "as the run's final video"
    out = Path(out_dir)
    (out / records.DECODED_SUMMARY).unlink(missing_ok=True)
    videos = out / "steps"
    videos.mkdir(parents=True, exist_ok=True)
    for stale in videos.glob("step_*.mp4"):
        stale.unlink()
    fps = int(run.meta.get("fps", 16))
    rows = []
    on_cuda = str(pipe.device).startswith("cuda")
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(pipe.device)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as writer:  # mp4 encoding overlaps the next step's decode
        pending = None
        for index, step in enumerate(wanted):
            latent = run.x0_hat(step).unsqueeze(0).to(device=pipe.device, dtype=pipe.torch_dtype)
            if index == 0:  # one mode for the whole run, chosen from its latent's size
                use_tiles, why = decode_tiling(pipe, adapter, tuple(latent.shape[1:]), tiled, settings)
                decode_settings["tiled"] = use_tiles
            frames = adapter.decode_latent(pipe, latent, decode_settings)
            if pending is not None:
                pending.result()  # one video in writing at a time (host memory); a failed write fails the job
            pending = writer.submit(records.write_video, videos / f"step_{step:04d}.mp4", frames, fps=fps)
            picked = np.linspace(0, len(frames) - 1, min(sheet_frames, len(frames))).round().astype(int)
            rows.append((step, frames[picked]))
        if pending is not None:
            pending.result()
    decode_s = time.perf_counter() - started
    peak = {"peak_gpu_gib": torch.cuda.max_memory_allocated(pipe.device) / 2**30} if on_cuda else {}
    write_contact_sheet(out / records.CONTACT_SHEET, rows, run.meta)
    write_json(
        out / records.DECODED_SUMMARY,
        {
            "steps": wanted,
            "run_dir": str(run_dir),
            "run_id": run.meta.get("run_id"),
            "decode_s": decode_s,
            "step_videos_per_minute": 60 * len(wanted) / max(decode_s, 1e-9),
            "tiled": use_tiles,
            "tiling": why,
            **peak,
            "versions": package_versions(),
            **(summary_extra or {}),
        },
    )
    return wanted


def decode_tiling(pipe, adapter, latent_shape, setting: str | bool, settings: dict[str, Any]) -> tuple[bool, str]:
    """Whether to decode with VAE tiles, and why. `auto`: untiled on a GPU whose free memory holds
    the family's untiled decode (3x faster for Wan at 480p: 1.66 s vs 4.75 s per 81-frame video on
    an H200), else as the run's final video was decoded; True/False force it. The frames are
    diffsynth's decode in the chosen mode; decoded.json records it."""
    if setting in (True, False):
        return bool(setting), "decode.tiled"
    run_tiled = bool(settings.get("tiled", True))
    estimate = None
    if run_tiled and str(pipe.device).startswith("cuda"):
        estimate = getattr(adapter, "untiled_decode_gib", lambda shape: None)(latent_shape)
    if estimate is None:
        return run_tiled, "as the run's final video"
    free = torch.cuda.mem_get_info(pipe.device)[0] / 2**30
    if free >= 1.5 * estimate:
        return False, f"auto: {free:.0f} GiB free >= 1.5 x {estimate:.1f} GiB untiled"
    return True, f"auto: {free:.0f} GiB free < 1.5 x {estimate:.1f} GiB untiled"


def write_contact_sheet(target: Path, rows: list[tuple[int, np.ndarray]], meta: dict[str, Any]) -> None:
    """Rows = decoded steps (top = first), columns = evenly sampled frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(frames) for _, frames in rows)
    figure, axes = plt.subplots(
        n_rows, n_cols, figsize=(1.3 * n_cols + 0.8, 1.3 * n_rows + 0.6), squeeze=False
    )
    for row, (step, frames) in enumerate(rows):
        for col in range(n_cols):
            axis = axes[row][col]
            axis.set_xticks([])
            axis.set_yticks([])
            if col < len(frames):
                axis.imshow(frames[col])
            if col == 0:
                axis.set_ylabel(f"step {step}", fontsize=8)
            if row == 0:
                axis.set_title(f"frame {col + 1}/{n_cols}", fontsize=7)
    title = " / ".join(str(meta.get(key)) for key in ("variant", "task", "sample") if meta.get(key))
    figure.suptitle(f"x0-hat by step — {title} (seed {meta.get('seed', meta.get('seeds'))})", fontsize=9)
    figure.tight_layout()
    with atomic_path(target) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
