"""Our own denoising loop over a diffsynth pipeline's units, model_fn and scheduler.

`pipe(...)` exposes no per-step state, so the loop below re-runs the body of the pipeline's
``__call__`` (through the family adapter) and, at each step, records the clean-video
estimate ``x0_hat = x_t - sigma * v`` and reduced hidden states. K seeds are advanced in
lockstep (K states, one forward each per step) so that a `StepHook` can read and replace
all K latents or velocities at every step: the ensemble and probe experiments build on it.
With one seed and no hook, the final frames equal `pipe(...)`'s exactly.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from stepscope import records
from stepscope.errors import StepScopeError
from stepscope.models.adapter import FamilyAdapter
from stepscope.models.registry import get_family
from stepscope.models.wan import load_image
from stepscope.provenance import package_versions
from stepscope.sampling.blocks import forward_hooks
from stepscope.sampling.capture import CaptureSpec, Recorder
from stepscope.sampling.context import StepContext
from stepscope.sampling.hooks import StepHook  # noqa: F401  (part of this module's interface)


@dataclass(frozen=True)
class RecordSpec:
    """What to keep: x0_hat at `x0_steps` (None = every step) and hidden states per `capture`."""

    x0_steps: frozenset[int] | None = None
    capture: CaptureSpec | None = field(default_factory=CaptureSpec)
    fps: int = 16

    def wants_x0(self, step: int) -> bool:
        return self.x0_steps is None or step in self.x0_steps


@dataclass
class SampleResult:
    seed: int
    frames: np.ndarray | None
    final_latent: torch.Tensor
    x0_hats: dict[int, torch.Tensor]
    schedule: list[dict[str, Any]]
    activation_maps: dict[str, np.ndarray]
    activation_rows: list[dict[str, Any]]
    settings: dict[str, Any]
    timings: dict[str, float]
    # Families that generate sound (LTX-2.3): the waveform (channels, samples) and its sample rate.
    audio: tuple[np.ndarray, int] | None = None


def round_shape(
    pipe, family: FamilyAdapter, height: int, width: int, num_frames: int
) -> tuple[int, int, int, dict]:
    """Round as diffsynth does (its own check), and say what changed so it can be recorded."""
    new_height, new_width, new_frames = pipe.check_resize_height_width(height, width, num_frames, verbose=0)
    rounding = {}
    if new_frames != num_frames:
        rounding["num_frames"] = {
            "requested": num_frames,
            "used": new_frames,
            "rule": f"rounded up to {family.frame_multiple}n+1 as diffsynth does",
        }
    for name, old, new in (("height", height, new_height), ("width", width, new_width)):
        if old != new:
            rounding[name] = {
                "requested": old,
                "used": new,
                "rule": f"rounded up to a multiple of {pipe.height_division_factor}",
            }
    return new_height, new_width, new_frames, rounding


def _as_image(image: str | Path | Image.Image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    return load_image(image)


def sample_lockstep(
    pipe,
    family: str | FamilyAdapter,
    *,
    image: str | Path | Image.Image,
    prompt: str,
    seeds: Sequence[int],
    num_frames: int,
    height: int,
    width: int,
    num_inference_steps: int,
    cfg_scale: float | None = None,
    negative_prompt: str | None = None,
    sigma_shift: float | None = None,
    switch_boundary: float | None = None,
    tiled: bool = True,
    rand_device: str = "cpu",
    record: RecordSpec | None = None,
    hook: StepHook | None = None,
    decode: bool = True,
    extra: dict[str, Any] | None = None,
    context: StepContext | None = None,
) -> list[SampleResult]:
    """Run K seeds in lockstep; returns one result per seed (in the order of `seeds`).

    Settings left None take the family's defaults (the seed's: `adapter.defaults`). `context` is
    where the loop publishes its state for block hooks registered by the caller (probes).
    """
    adapter = get_family(family) if isinstance(family, str) else family
    if not prompt or not prompt.strip():
        raise StepScopeError(
            "the prompt is empty: give a non-empty prompt (prompt.txt of the sample, or --prompt)"
        )
    if not seeds:
        raise StepScopeError("no seed given")
    if num_inference_steps < 1:
        raise StepScopeError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    started = time.perf_counter()
    on_cuda = str(pipe.device).startswith("cuda")
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(pipe.device)
    height, width, num_frames, rounding = round_shape(pipe, adapter, height, width, num_frames)
    request = {
        "prompt": prompt,
        "image": _as_image(image),
        "seed": int(seeds[0]),
        "num_frames": num_frames,
        "height": height,
        "width": width,
        "num_inference_steps": num_inference_steps,
        "tiled": tiled,
        "rand_device": rand_device,
        **(extra or {}),
    }
    optional = {
        "cfg_scale": cfg_scale,
        "sigma_shift": sigma_shift,
        "switch_boundary": switch_boundary,
        "negative_prompt": negative_prompt,
    }
    request.update({key: value for key, value in optional.items() if value is not None})
    call_kwargs = adapter.call_kwargs(request)
    record = record or RecordSpec(x0_steps=frozenset(), capture=None)
    context = context if context is not None else StepContext()
    recorder = None
    block_hooks = []
    if record.capture is not None:
        adapter.check_capture_safe(pipe, call_kwargs)
        recorder = Recorder(record.capture, context)
        dits = adapter.dit_modules(pipe)
        block_hooks = recorder.hooks(
            dits, adapter.block_list_name, {name: adapter.patch_embedding(dit) for name, dit in dits.items()}
        )

    with forward_hooks(block_hooks), torch.no_grad():
        prepared = adapter.prepare(pipe, call_kwargs)
        units_done = time.perf_counter()
        latents = [adapter.seed_latents(pipe, prepared, int(seed)) for seed in seeds]
        x0_hats: list[dict[int, torch.Tensor]] = [{} for _ in seeds]
        schedule = []
        for step in range(len(pipe.scheduler.timesteps)):
            sigma = float(pipe.scheduler.sigmas[step])
            expert = adapter.expert_for_step(pipe, prepared, step)
            context.step, context.expert = step, expert
            if hook is not None:
                latents = hook.on_latents(step, sigma, latents) or latents
            velocities = []
            for index, state in enumerate(latents):
                context.trajectory = index
                if hasattr(adapter, "token_grid"):  # else the patch embedding's hook tells it
                    context.grid = adapter.token_grid(pipe, prepared, state)
                velocities.append(adapter.velocity(pipe, prepared, expert, state, step, context.set_pass))
                context.pass_ = None
            if recorder is not None:
                recorder.flush()
            if hook is not None:
                velocities = hook.on_velocity(step, sigma, latents, velocities) or velocities
            wants_x0 = record.wants_x0(step)
            for index, (state, velocity) in enumerate(zip(latents, velocities, strict=True)):
                if wants_x0:
                    x0 = adapter.scheduler_step(pipe, prepared, velocity, step, state, to_final=True)
                    x0_hats[index][step] = adapter.video_latent(x0)[0].detach().to("cpu", torch.float16)
                latents[index] = adapter.scheduler_step(pipe, prepared, velocity, step, state, to_final=False)
            schedule.append(
                {
                    "step": step,
                    "timestep": float(pipe.scheduler.timesteps[step]),
                    "sigma": sigma,
                    "expert": expert,
                    "recorded": wants_x0,
                }
            )
        denoise_done = time.perf_counter()
        frames = [adapter.decode(pipe, prepared, state) if decode else None for state in latents]
        audio = [_decode_audio(adapter, pipe, prepared, state) if decode else None for state in latents]
        decode_done = time.perf_counter()

    settings = {
        "family": adapter.name,
        "prompt": prompt,
        "negative_prompt": call_kwargs.get("negative_prompt"),
        "num_frames": num_frames,
        "height": height,
        "width": width,
        "num_inference_steps": num_inference_steps,
        "cfg_scale": call_kwargs["cfg_scale"],
        "sigma_shift": call_kwargs.get("sigma_shift"),
        "rand_device": rand_device,
        "tiled": tiled,
        "fps": record.fps,
        "rounding": rounding,
        "record_x0_steps": None if record.x0_steps is None else sorted(record.x0_steps),
        "capture": None
        if record.capture is None
        else {
            "layers": list(record.capture.layers),
            "steps": None if record.capture.steps is None else sorted(record.capture.steps),
            "passes": list(record.capture.passes),
            "top_k": record.capture.top_k,
        },
    }
    if "switch_DiT_boundary" in call_kwargs:
        settings["switch_boundary"] = call_kwargs["switch_DiT_boundary"]
    settings.update(
        {key: value for key, value in (extra or {}).items() if isinstance(value, (int, float, str, bool))}
    )
    timings = {
        "units_s": units_done - started,
        "denoise_s": denoise_done - units_done,
        "decode_s": decode_done - denoise_done,
        "total_s": decode_done - started,
    }
    if on_cuda:  # what this run needed on the GPU (the model's resident weights included)
        timings["peak_gpu_gib"] = torch.cuda.max_memory_allocated(pipe.device) / 2**30
    results = []
    for index, seed in enumerate(seeds):
        results.append(
            SampleResult(
                seed=int(seed),
                frames=frames[index],
                final_latent=adapter.video_latent(latents[index])[0].detach().to("cpu", torch.float32),
                x0_hats=x0_hats[index],
                schedule=schedule,
                activation_maps=recorder.maps.get(index, {}) if recorder else {},
                activation_rows=recorder.rows.get(index, []) if recorder else [],
                settings=settings,
                timings=timings,
                audio=audio[index],
            )
        )
    return results


def _decode_audio(adapter, pipe, prepared, state) -> tuple[np.ndarray, int] | None:
    """The generated sound of families that make it (LTX-2.3), as the seed saves it with the video."""
    if not hasattr(adapter, "decode_audio"):
        return None
    waveform, sample_rate = adapter.decode_audio(pipe, prepared, state)
    waveform = waveform.detach().float().cpu().numpy()
    return (waveform[0] if waveform.ndim == 3 else waveform), sample_rate


def sample(
    pipe,
    family: str | FamilyAdapter,
    *,
    seed: int = 1,
    out_dir: str | Path | None = None,
    meta: dict[str, Any] | None = None,
    **kwargs,
) -> SampleResult:
    """One seed; with `out_dir`, also write the run's records (docs/records.md)."""
    result = sample_lockstep(pipe, family, seeds=[seed], **kwargs)[0]
    if out_dir is not None:
        write_run(out_dir, result, meta or {})
    return result


def write_run(out_dir: str | Path, result: SampleResult, meta: dict[str, Any]) -> Path:
    """Write all records of one run; meta.json goes last so a partial run never looks complete."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / records.META).unlink(missing_ok=True)
    started = time.perf_counter()
    if result.frames is not None:
        records.write_video(out_dir / records.VIDEO, result.frames, fps=result.settings["fps"])
        if result.audio is not None:
            records.add_audio(out_dir / records.VIDEO, *result.audio)
    records.write_steps(
        out_dir / records.STEPS, result.x0_hats, result.final_latent, len(result.schedule) - 1
    )
    records.write_schedule(out_dir / records.SCHEDULE, result.schedule)
    records.write_activation_maps(out_dir / records.ACTIVATIONS_NPZ, result.activation_maps)
    records.write_activation_table(out_dir / records.ACTIVATIONS_TABLE, result.activation_rows)
    full_meta = {
        "seed": result.seed,
        "settings": result.settings,
        "family": result.settings["family"],
        "fps": result.settings["fps"],
        "versions": package_versions(),
        # final video's encoding: scores depend on it (docs/scoring.md)
        "video_encoding": records.video_encoding(
            result.settings["fps"], audio_rate=result.audio[1] if result.audio is not None else None
        )
        if result.frames is not None
        else None,
        **meta,
        "timings": {**meta.get("timings", {}), **result.timings, "write_s": time.perf_counter() - started},
    }
    records.write_meta(out_dir / records.META, full_meta)
    return out_dir
