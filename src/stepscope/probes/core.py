"""The paper's probing experiments, as hooks on the lockstep loop plus the jobs the workflow runs.

Probes (docs/probes.md):

* ``noise_step``: at step s, replace the latent of every frame by seeded Gaussian noise
  (:class:`NoiseAtStep`); sweep s. The final videos are scored against the clean run.
* ``noise_frame``: replace one latent frame by seeded noise at every step (:class:`NoiseAtFrame`);
  sweep the frame.
* ``sensitivity``: inject noise at one step and measure how much the later states move:
  linear CKA dissimilarity (:func:`cka_dissimilarity`) between the perturbed and the clean
  trajectory's x0_hat latents (from the records) and full block outputs (on the device, while
  sampling); a curve over the injection step, with the Wan2.2 expert switch marked.
* ``token_swap``: at one step, layer and CFG pass, replace one run's block output by another
  run's (:class:`TokenSwap`); sweep the layer and see which clean run the final video follows.

A sweep runs in one `sample_lockstep` call: trajectory 0 is the clean run and trajectory k the
k-th condition, all from the same seed, so every condition shares one model load and one
prompt encoding. Each trajectory is written as an ordinary run directory (docs/records.md).
The perturbation is ``(1 - strength) * x + strength * noise``; at strength 0 the hooks do
nothing at all, so the run is bit-identical to the clean one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from stepscope.atomic import atomic_path, write_json, write_parquet
from stepscope.errors import StepScopeError
from stepscope.jobs.runs import loop_settings
from stepscope.models.registry import get_family
from stepscope.records import expert_switch_step
from stepscope.sampling.capture import check_hookable
from stepscope.sampling.loop import SampleResult, StepHook, round_shape, sample_lockstep, write_run
from stepscope.stepspec import resolve_steps

KINDS = ("noise_step", "noise_frame", "sensitivity", "token_swap")
SWAP_SOURCES = ("next_sample", "next_image", "prompt", "same")
PROBE_JSON = "probe.json"
HIDDEN_CKA = "hidden_cka.parquet"
CLEAN = "clean"
ALL_FRAMES = 0  # noise key of a whole-latent injection (frame f uses f + 1)


# --------------------------------------------------------------------------------------------
# Noise injection
# --------------------------------------------------------------------------------------------


def derived_seed(*parts: int) -> int:
    """A 63-bit seed derived from non-negative integers (order matters, no collisions in practice)."""
    state = np.random.SeedSequence([int(part) for part in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def seeded_noise(like: torch.Tensor, *key: int) -> torch.Tensor:
    """Standard Gaussian noise shaped like `like`, drawn on the CPU from a seed derived from `key`
    (so it is the same on every device), then moved to `like`'s device and dtype."""
    generator = torch.Generator(device="cpu").manual_seed(derived_seed(*key))
    noise = torch.randn(tuple(like.shape), generator=generator, dtype=torch.float32)
    return noise.to(device=like.device, dtype=like.dtype)


def video_part(state: Any) -> torch.Tensor:
    """The video latent (B, C, F, H, W) of a loop state (LTX states carry audio too)."""
    return state.video if hasattr(state, "video") else state


def with_video(state: Any, video: torch.Tensor) -> Any:
    return state._replace(video=video) if hasattr(state, "video") else video


def mix(x: torch.Tensor, noise: torch.Tensor, strength: float) -> torch.Tensor:
    """``(1 - strength) * x + strength * noise``; exactly `noise` at strength 1."""
    if strength >= 1.0:
        return noise
    return (1.0 - strength) * x + strength * noise


def check_strength(strength: float) -> float:
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise StepScopeError(f"noise strength must lie in [0, 1], got {strength}")
    return strength


class _PerTrajectory(StepHook):
    """Base for hooks that act on some of the K lockstep trajectories (None = all)."""

    def __init__(self, trajectories: Iterable[int] | None):
        self.trajectories = None if trajectories is None else tuple(int(k) for k in trajectories)

    def targets(self, count: int) -> list[int]:
        if self.trajectories is None:
            return list(range(count))
        beyond = [k for k in self.trajectories if k >= count]
        if beyond:
            raise StepScopeError(f"trajectories {beyond} do not exist: the loop runs {count}")
        return list(self.trajectories)


class NoiseAtStep(_PerTrajectory):
    """At the start of `step`, replace the whole video latent by ``mix(x, noise, strength)``."""

    def __init__(
        self, step: int, strength: float = 1.0, seed: int = 0, trajectories: Iterable[int] | None = None
    ):
        super().__init__(trajectories)
        self.step = int(step)
        self.strength = check_strength(strength)
        self.seed = int(seed)

    def on_latents(self, step, sigma, latents):
        if step != self.step or self.strength == 0.0:
            return None  # strength 0: not even a no-op arithmetic, so the run stays bit-identical
        out = list(latents)
        for k in self.targets(len(out)):
            video = video_part(out[k])
            noise = seeded_noise(video, self.seed, step, ALL_FRAMES)
            out[k] = with_video(out[k], mix(video, noise, self.strength))
        return out


class NoiseAtFrame(_PerTrajectory):
    """At every step in `steps` (None = all), replace latent frame `frame` by ``mix(x, noise, strength)``.

    Fresh noise each step, seeded by (seed, step, frame)."""

    def __init__(
        self,
        frame: int,
        strength: float = 1.0,
        seed: int = 0,
        steps: Iterable[int] | None = None,
        trajectories: Iterable[int] | None = None,
    ):
        super().__init__(trajectories)
        self.frame = int(frame)
        self.strength = check_strength(strength)
        self.seed = int(seed)
        self.steps = None if steps is None else frozenset(int(s) for s in steps)

    def on_latents(self, step, sigma, latents):
        if self.strength == 0.0 or (self.steps is not None and step not in self.steps):
            return None
        out = list(latents)
        for k in self.targets(len(out)):
            video = video_part(out[k])
            frames = video.shape[2]
            if not 0 <= self.frame < frames:
                raise StepScopeError(
                    f"latent frame {self.frame} does not exist: the latent has {frames} frames (0-{frames - 1})"
                )
            f = self.frame
            noise = seeded_noise(video[:, :, f : f + 1], self.seed, step, f + 1)
            changed = video.clone()
            changed[:, :, f : f + 1] = mix(video[:, :, f : f + 1], noise, self.strength)
            out[k] = with_video(out[k], changed)
        return out


class HookChain(StepHook):
    """Several hooks in order; each sees the states the previous one returned."""

    def __init__(self, hooks: Iterable[StepHook]):
        self.hooks = list(hooks)

    def on_latents(self, step, sigma, latents):
        changed = None
        for hook in self.hooks:
            result = hook.on_latents(step, sigma, latents if changed is None else changed)
            changed = result if result is not None else changed
        return changed

    def on_velocity(self, step, sigma, latents, velocities):
        changed = None
        for hook in self.hooks:
            result = hook.on_velocity(step, sigma, latents, velocities if changed is None else changed)
            changed = result if result is not None else changed
        return changed


# --------------------------------------------------------------------------------------------
# Linear CKA
# --------------------------------------------------------------------------------------------


def _as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def linear_cka(x: Any, y: Any) -> float:
    """Linear CKA (Kornblith et al. 2019) of two representations of the same n items.

    ``x``: (n, p), ``y``: (n, q) (tensors or arrays; the columns are centred here).
    ``CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``, computed in feature space when
    n exceeds the widths (a D x D product instead of an n x n Gram matrix) and in Gram space
    otherwise; float64 on the CPU, float32 on accelerators. Invariant to orthogonal transforms
    and isotropic scaling of either side. Returns NaN when a side has no variance.
    """
    x, y = _as_tensor(x), _as_tensor(y)
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise StepScopeError(
            f"CKA needs (n, p) and (n, q) with the same n, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    dtype = torch.float64 if x.device.type == "cpu" else torch.float32
    x = x.to(dtype)
    y = y.to(device=x.device, dtype=dtype)
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    n, p, q = x.shape[0], x.shape[1], y.shape[1]
    if n > max(p, q):
        cross = torch.linalg.matrix_norm(y.T @ x) ** 2
        norm_x = torch.linalg.matrix_norm(x.T @ x)
        norm_y = torch.linalg.matrix_norm(y.T @ y)
    else:
        gram_x, gram_y = x @ x.T, y @ y.T
        cross = (gram_x * gram_y).sum()
        norm_x, norm_y = torch.linalg.matrix_norm(gram_x), torch.linalg.matrix_norm(gram_y)
    denominator = float(norm_x) * float(norm_y)
    if denominator == 0.0 or not math.isfinite(denominator):
        return math.nan
    return float(cross) / denominator


def cka_dissimilarity(x: Any, y: Any) -> float:
    """``1 - linear CKA``, in [0, 1]: 0 = same representation (up to rotation and scale), 1 = unrelated.

    Identical inputs give exactly 0 (not 1 - CKA rounded)."""
    x, y = _as_tensor(x), _as_tensor(y)
    if x.shape == y.shape and x.device == y.device and torch.equal(x, y):
        return 0.0
    cka = linear_cka(x, y)
    return cka if math.isnan(cka) else min(1.0, max(0.0, 1.0 - cka))


def latent_tokens(latent: Any) -> torch.Tensor:
    """A video latent (C, F, H, W) (or (1, C, F, H, W)) as (F*H*W positions, C channels) for CKA."""
    latent = _as_tensor(latent)
    if latent.dim() == 5:
        latent = latent[0]
    if latent.dim() != 4:
        raise StepScopeError(f"expected a (C, F, H, W) latent, got shape {tuple(latent.shape)}")
    return latent.reshape(latent.shape[0], -1).T


# --------------------------------------------------------------------------------------------
# Block hooks that know which trajectory and CFG pass are running
# --------------------------------------------------------------------------------------------


class TrackingAdapter:
    """A family adapter that also tells block hooks which lockstep trajectory, step and CFG pass run.

    Pass it to `sample_lockstep` in place of the family: every attribute is the adapter's; only
    `velocity` is wrapped, to count trajectories within a step and to follow the adapter's own
    ``on_pass`` calls (so the pass names are the ones the recorder uses).
    """

    def __init__(self, adapter):
        self._adapter = adapter
        self.step = -1
        self.trajectory = -1
        self.pass_: str | None = None

    def __getattr__(self, name):
        if name == "_adapter":
            raise AttributeError(name)
        return getattr(self._adapter, name)

    def velocity(self, pipe, prepared, expert, latents, step, on_pass):
        if step != self.step:
            self.step, self.trajectory = step, 0
        else:
            self.trajectory += 1

        def tracked(name: str) -> None:
            self.pass_ = name
            on_pass(name)

        try:
            return self._adapter.velocity(pipe, prepared, expert, latents, step, tracked)
        finally:
            self.pass_ = None


def block_tokens(output: Any) -> torch.Tensor:
    """The (N, D) video tokens of a block output (Wan: a (1, N, D) tensor; LTX: (video, audio) args)."""
    hidden = output[0] if isinstance(output, tuple) else output
    hidden = getattr(hidden, "x", hidden)
    return hidden[0] if hidden.dim() == 3 else hidden


def replace_block_tokens(output: Any, tokens: torch.Tensor) -> Any:
    """The block output with its video tokens replaced (same structure, device and dtype)."""
    if isinstance(output, tuple):
        return (replace_block_tokens(output[0], tokens), *output[1:])
    if hasattr(output, "x") and dataclasses.is_dataclass(output):
        return dataclasses.replace(output, x=replace_block_tokens(output.x, tokens))
    if tokens.numel() != output.numel():
        raise StepScopeError(
            f"cannot swap tokens: the source block output has {tuple(tokens.shape)} but the target has "
            f"{tuple(output.shape)}; source and target must share resolution and frame count"
        )
    return tokens.reshape(output.shape).to(device=output.device, dtype=output.dtype)


def dit_blocks(pipe, adapter) -> dict[str, Any]:
    """{expert: block list} of every DiT, refusing compiled models (hooks would not fire)."""
    blocks = {}
    for expert, dit in adapter.dit_modules(pipe).items():
        check_hookable(dit, adapter.block_list_name)
        blocks[expert] = getattr(dit, adapter.block_list_name)
    return blocks


def num_blocks(pipe, adapter) -> int:
    return min(len(blocks) for blocks in dit_blocks(pipe, adapter).values())


def attach_block_hooks(
    pipe, adapter, layers: Iterable[int], make_hook: Callable[[int, str], Callable]
) -> list[Any]:
    """Register `make_hook(layer, expert)` as a forward hook on every listed block of every DiT."""
    handles = []
    for expert, blocks in dit_blocks(pipe, adapter).items():
        for layer in layers:
            if not 0 <= layer < len(blocks):
                for handle in handles:
                    handle.remove()
                raise StepScopeError(
                    f"layer {layer} does not exist: the {expert} DiT has {len(blocks)} blocks (0-{len(blocks) - 1})"
                )
            handles.append(blocks[layer].register_forward_hook(make_hook(layer, expert)))
    return handles


class HiddenSensitivity:
    """Linear CKA dissimilarity of full block outputs, perturbed trajectory vs clean, computed on the
    device while sampling (a 14B model's block output is far too large to store per step).

    Trajectory 0 is the clean run; trajectory k (k >= 1) was perturbed at ``injection_steps[k - 1]``.
    At every step from its injection on, each perturbed trajectory's output of each layer (in the
    listed CFG passes) is compared with the clean one of the same step, which runs first.
    """

    def __init__(self, tracker: TrackingAdapter, injection_steps: Sequence[int], passes=("cond",)):
        self.tracker = tracker
        self.injection_steps = list(injection_steps)
        self.passes = tuple(passes)
        self.clean: dict[tuple[int, str], tuple[int, torch.Tensor]] = {}
        self.rows: list[dict[str, Any]] = []

    def hook(self, layer: int, expert: str):
        def fn(module, inputs, output):
            t = self.tracker
            if t.pass_ not in self.passes:
                return None
            tokens = block_tokens(output).detach()
            if t.trajectory == 0:
                self.clean[(layer, t.pass_)] = (t.step, tokens.clone())
                return None
            injected = self.injection_steps[t.trajectory - 1]
            if t.step < injected:
                return None
            clean_step, clean = self.clean[(layer, t.pass_)]
            if clean_step != t.step:
                raise StepScopeError("the clean trajectory must run first in every step")
            self.rows.append(
                {
                    "injection_step": injected,
                    "step": t.step,
                    "layer": layer,
                    "pass": t.pass_,
                    "expert": expert,
                    "dissimilarity": cka_dissimilarity(clean, tokens),
                }
            )
            return None

        return fn

    def table(self) -> pd.DataFrame:
        columns = ["injection_step", "step", "layer", "pass", "expert", "dissimilarity"]
        return pd.DataFrame(self.rows, columns=columns)


class TokenCapture:
    """Keeps the block outputs of one run at `step` (listed layers and passes), on `store` (host by default)."""

    def __init__(self, tracker: TrackingAdapter, step: int, passes=("cond",), store: str = "cpu"):
        self.tracker = tracker
        self.step = int(step)
        self.passes = tuple(passes)
        self.store = store
        self.tokens: dict[tuple[int, str], torch.Tensor] = {}

    def hook(self, layer: int, expert: str):
        def fn(module, inputs, output):
            t = self.tracker
            if t.step == self.step and t.pass_ in self.passes and t.trajectory == 0:
                self.tokens[(layer, t.pass_)] = block_tokens(output).detach().to(self.store, copy=True)
            return None

        return fn


class TokenSwap:
    """At `step`, trajectory k replaces the output of block ``layer_of[k]`` (None = no swap) in the
    listed passes by the captured source tokens; the rest of the model runs on unchanged."""

    def __init__(
        self,
        tracker: TrackingAdapter,
        step: int,
        layer_of: Sequence[int | None],
        captured: dict[tuple[int, str], torch.Tensor],
        passes=("cond",),
    ):
        self.tracker = tracker
        self.step = int(step)
        self.layer_of = list(layer_of)
        self.captured = captured
        self.passes = tuple(passes)
        self.swaps = 0

    def hook(self, layer: int, expert: str):
        def fn(module, inputs, output):
            t = self.tracker
            if t.step != self.step or t.pass_ not in self.passes or self.layer_of[t.trajectory] != layer:
                return None
            source = self.captured.get((layer, t.pass_))
            if source is None:
                raise StepScopeError(f"no source tokens captured for layer {layer}, pass {t.pass_}")
            self.swaps += 1
            return replace_block_tokens(output, source)

        return fn


# --------------------------------------------------------------------------------------------
# Jobs (the GPU rule)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Setup:
    pipe: Any
    adapter: Any
    family: str
    settings: dict[str, Any]
    record: Any
    height: int
    width: int
    num_frames: int
    steps: int
    load_s: float
    base_meta: dict[str, Any]


def _setup(
    family: str,
    weights_dir: str,
    loras: list[dict[str, Any]],
    settings: dict[str, Any],
    record: dict[str, Any],
    info: dict[str, Any],
    device: dict[str, Any],
    x0_every_step: bool = False,
    sources: dict[str, str] | None = None,
) -> _Setup:
    from stepscope.jobs.runs import load_job_pipeline, record_spec, resolve_shape
    from stepscope.provenance import weights_identity

    steps = int(settings["steps"])
    spec = record_spec(record, steps, int(settings.get("fps", 16)))
    if x0_every_step:
        spec = dataclasses.replace(spec, x0_steps=None)
    started = time.perf_counter()
    pipe = load_job_pipeline(family, weights_dir, loras, device, sources)
    load_s = time.perf_counter() - started
    adapter = get_family(family)
    height, width, num_frames = resolve_shape(settings, info)
    identity = weights_identity(weights_dir, sources)
    base_meta = {
        "variant_settings": settings,
        "record": record,
        "weights": identity,
        "loras": pipe.stepscope_loras,
        "device": str(pipe.device),
        "dtype": str(pipe.torch_dtype),
        "timings": {"load_s": load_s},
    }
    return _Setup(pipe, adapter, family, settings, spec, height, width, num_frames, steps, load_s, base_meta)


def _run(
    setup: _Setup, info: dict[str, Any], seeds: list[int], hook: StepHook | None = None, family=None
) -> list[SampleResult]:
    return sample_lockstep(
        setup.pipe,
        family or setup.adapter,
        image=info["image"],
        prompt=info["prompt"],
        seeds=seeds,
        num_frames=setup.num_frames,
        height=setup.height,
        width=setup.width,
        num_inference_steps=setup.steps,
        **loop_settings(setup.settings),
        record=setup.record,
        hook=hook,
    )


def _write(
    setup: _Setup,
    result: SampleResult,
    out_dir: Path,
    info: dict[str, Any],
    labels: dict[str, Any],
    condition: dict[str, Any],
    kind: str,
) -> None:
    meta = {
        **setup.base_meta,
        **labels,
        "run": condition["name"],
        "image": info["image"],
        "sample_dir": info.get("sample_dir"),
        "gt_num_frames": info.get("gt_num_frames"),
        "probe": {"kind": kind, **condition},
    }
    write_run(out_dir / condition["name"], result, meta)


def latent_frame_count(pipe, adapter, setup: _Setup) -> int:
    _, _, frames, _ = round_shape(pipe, adapter, setup.height, setup.width, setup.num_frames)
    return (frames - 1) // adapter.frame_multiple + 1


def _switch_step(result: SampleResult) -> int | None:
    return expert_switch_step(result.schedule)


def resolve_layers(layers: str | Sequence[int] | None, count: int) -> list[int]:
    if layers is None or layers == "all":
        return list(range(count))
    chosen = sorted({int(layer) for layer in layers})
    beyond = [layer for layer in chosen if not 0 <= layer < count]
    if beyond:
        raise StepScopeError(f"layers {beyond} do not exist: the DiT has {count} blocks (0-{count - 1})")
    return chosen


def resolve_frames(frames: str | Sequence[int], count: int) -> list[int]:
    if frames == "all":
        return list(range(count))
    chosen = sorted({int(frame) for frame in frames})
    beyond = [frame for frame in chosen if not 0 <= frame < count]
    if beyond:
        raise StepScopeError(
            f"latent frames {beyond} do not exist: this run's latent has {count} frames (0-{count - 1})"
        )
    return chosen


def swap_source_info(target: dict[str, Any], swap_source: dict[str, Any]) -> dict[str, Any]:
    """The source run's inputs for a token swap (see SWAP_SOURCES)."""
    from stepscope.bench import read_sample

    kind = swap_source.get("kind", "next_sample")
    if kind not in SWAP_SOURCES:
        raise StepScopeError(f"unknown swap source {kind!r}: choose one of {', '.join(SWAP_SOURCES)}")
    if kind == "same":
        return dict(target)
    if kind == "prompt":
        prompt = swap_source.get("prompt")
        if not prompt or not str(prompt).strip():
            raise StepScopeError(
                "token_swap.source is 'prompt' but token_swap.prompt is empty: give the prompt"
            )
        return {**target, "prompt": str(prompt)}
    other = read_sample(swap_source["sample_dir"])
    if kind == "next_image":
        return {**target, "image": other["image"], "source_sample_dir": other["sample_dir"]}
    return {
        **target,
        "image": other["image"],
        "prompt": other["prompt"],
        "source_sample_dir": other["sample_dir"],
    }


def probe_job(
    *,
    kind: str,
    family: str,
    weights_dir: str,
    loras: list[dict[str, Any]],
    source: dict[str, Any],
    settings: dict[str, Any],
    record: dict[str, Any],
    seed: int,
    spec: dict[str, Any],
    out_dir: str,
    device: dict[str, Any] | None = None,
    labels: dict[str, Any] | None = None,
    swap_source: dict[str, Any] | None = None,
    sources: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run one probe's whole sweep on one input with one model load; write a run directory per
    condition (``clean`` / ``target`` / ``source`` first) and ``probe.json`` last."""
    from stepscope.jobs.runs import resolve_input
    from stepscope.provenance import package_versions

    if kind not in KINDS:
        raise StepScopeError(f"unknown probe {kind!r}: choose one of {', '.join(KINDS)}")
    started = time.perf_counter()
    labels = dict(labels or {})
    info = resolve_input(source)
    setup = _setup(
        family,
        weights_dir,
        loras,
        settings,
        record,
        info,
        device or {},
        x0_every_step=kind == "sensitivity",
        sources=sources,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / PROBE_JSON).unlink(missing_ok=True)
    summary: dict[str, Any] = {
        "kind": kind,
        "spec": spec,
        "labels": labels,
        "seed": int(seed),
        "sample_dir": info.get("sample_dir"),
        "num_steps": setup.steps,
        "family": family,
    }
    runner = {
        "noise_step": _noise_step,
        "noise_frame": _noise_frame,
        "sensitivity": _sensitivity,
        "token_swap": _token_swap,
    }[kind]
    summary.update(runner(setup, info, int(seed), spec, out, labels, swap_source))
    summary["versions"] = package_versions()
    summary["timings"] = {"load_s": setup.load_s, "total_s": time.perf_counter() - started}
    write_json(out / PROBE_JSON, summary)
    return summary


def _noise_step(setup, info, seed, spec, out, labels, swap_source):
    steps = resolve_steps(spec.get("steps", "all"), setup.steps)
    strength = check_strength(spec.get("strength", 1.0))
    noise_seed = int(spec.get("noise_seed", 0))
    hook = HookChain(
        NoiseAtStep(step, strength, noise_seed, trajectories=[k + 1]) for k, step in enumerate(steps)
    )
    results = _run(setup, info, [seed] * (1 + len(steps)), hook)
    conditions = [{"name": CLEAN}] + [
        {"name": f"step{step:04d}", "step": step, "strength": strength, "noise_seed": noise_seed}
        for step in steps
    ]
    for result, condition in zip(results, conditions, strict=True):
        _write(setup, result, out, info, labels, condition, "noise_step")
    return {"conditions": conditions, "switch_step": _switch_step(results[0])}


def _noise_frame(setup, info, seed, spec, out, labels, swap_source):
    count = latent_frame_count(setup.pipe, setup.adapter, setup)
    frames = resolve_frames(spec.get("frames", "all"), count)
    steps = resolve_steps(spec.get("steps", "all"), setup.steps)
    strength = check_strength(spec.get("strength", 1.0))
    noise_seed = int(spec.get("noise_seed", 0))
    hook = HookChain(
        NoiseAtFrame(frame, strength, noise_seed, steps=steps, trajectories=[k + 1])
        for k, frame in enumerate(frames)
    )
    results = _run(setup, info, [seed] * (1 + len(frames)), hook)
    conditions = [{"name": CLEAN}] + [
        {"name": f"frame{frame:04d}", "frame": frame, "strength": strength, "noise_seed": noise_seed}
        for frame in frames
    ]
    for result, condition in zip(results, conditions, strict=True):
        _write(setup, result, out, info, labels, condition, "noise_frame")
    return {"conditions": conditions, "switch_step": _switch_step(results[0]), "latent_frames": count}


def _sensitivity(setup, info, seed, spec, out, labels, swap_source):
    steps = resolve_steps(spec.get("steps", "all"), setup.steps)
    strength = check_strength(spec.get("strength", 1.0))
    noise_seed = int(spec.get("noise_seed", 0))
    layers = spec.get("layers")
    if layers is None:
        layers = list((setup.base_meta["record"] or {}).get("layers", []))
    layers = resolve_layers(layers, num_blocks(setup.pipe, setup.adapter)) if layers else []
    passes = tuple(spec.get("passes", ("cond",)))
    tracker = TrackingAdapter(setup.adapter)
    hidden = HiddenSensitivity(tracker, steps, passes)
    handles = attach_block_hooks(setup.pipe, setup.adapter, layers, hidden.hook)
    try:
        hook = HookChain(
            NoiseAtStep(step, strength, noise_seed, trajectories=[k + 1]) for k, step in enumerate(steps)
        )
        results = _run(setup, info, [seed] * (1 + len(steps)), hook, family=tracker)
    finally:
        for handle in handles:
            handle.remove()
    conditions = [{"name": CLEAN}] + [
        {"name": f"step{step:04d}", "step": step, "strength": strength, "noise_seed": noise_seed}
        for step in steps
    ]
    for result, condition in zip(results, conditions, strict=True):
        _write(setup, result, out, info, labels, condition, "sensitivity")
    write_parquet(out / HIDDEN_CKA, hidden.table())
    return {"conditions": conditions, "switch_step": _switch_step(results[0]), "layers": layers}


def _token_swap(setup, info, seed, spec, out, labels, swap_source):
    step = int(spec.get("step", 0))
    if not 0 <= step < setup.steps:
        raise StepScopeError(f"token_swap.step {step} does not exist: there are {setup.steps} steps")
    layers = resolve_layers(spec.get("layers", "all"), num_blocks(setup.pipe, setup.adapter))
    passes = tuple(spec.get("passes", ("cond",)))
    swap_source = dict(swap_source or {"kind": spec.get("source", "same")})
    swap_source.setdefault("prompt", spec.get("prompt"))
    source_info = swap_source_info(info, swap_source)
    store = "cpu" if str(setup.pipe.device).startswith("cuda") else str(setup.pipe.device)

    source_tracker = TrackingAdapter(setup.adapter)
    capture = TokenCapture(source_tracker, step, passes, store=store)
    handles = attach_block_hooks(setup.pipe, setup.adapter, layers, capture.hook)
    try:
        source_result = _run(setup, source_info, [seed], family=source_tracker)[0]
    finally:
        for handle in handles:
            handle.remove()
    source_condition = {
        "name": "source",
        "source": swap_source["kind"],
        "prompt": source_info["prompt"],
        "image": source_info["image"],
    }
    source_labels = dict(labels)
    if source_info.get("source_sample_dir"):
        source_labels["sample"] = Path(source_info["source_sample_dir"]).name
    _write(setup, source_result, out, source_info, source_labels, source_condition, "token_swap")
    del source_result

    tracker = TrackingAdapter(setup.adapter)
    swap = TokenSwap(tracker, step, [None, *layers], capture.tokens, passes)
    handles = attach_block_hooks(setup.pipe, setup.adapter, layers, swap.hook)
    try:
        results = _run(setup, info, [seed] * (1 + len(layers)), family=tracker)
    finally:
        for handle in handles:
            handle.remove()
    expected = len(layers) * len(passes)
    if swap.swaps != expected:
        raise StepScopeError(
            f"{swap.swaps} block outputs were swapped, expected {expected} (one per layer and pass): "
            "a pass did not run (cfg_scale 1 has no uncond pass)"
        )
    conditions = [{"name": "target"}] + [
        {"name": f"layer{layer:02d}", "layer": layer, "step": step, "passes": list(passes)}
        for layer in layers
    ]
    for result, condition in zip(results, conditions, strict=True):
        _write(setup, result, out, info, labels, condition, "token_swap")
    return {
        "conditions": conditions,
        "switch_step": _switch_step(results[0]),
        "step": step,
        "layers": layers,
        "passes": list(passes),
        "source": {key: value for key, value in source_condition.items() if key != "name"},
        "source_sample_dir": source_info.get("source_sample_dir"),
    }


# --------------------------------------------------------------------------------------------
# Aggregation (the CPU rule): tables and figures
# --------------------------------------------------------------------------------------------

LABELS = ("variant", "split", "task", "sample")


def read_probe(probe_dir: str | Path) -> dict[str, Any]:
    path = Path(probe_dir) / PROBE_JSON
    if not path.is_file():
        raise StepScopeError(f"{probe_dir} has no {PROBE_JSON}: the probe job did not finish; rerun it")
    return json.loads(path.read_text())


def _labels(probe: dict[str, Any]) -> dict[str, str]:
    return {key: str(probe["labels"].get(key, "")) for key in LABELS}


def noise_table(probe_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """Builtin scores of every condition's final video: one row per condition and metric.

    Columns: variant, split, task, sample, probe, condition, perturbed, step, frame, strength,
    switch_step, metric, value (step / frame: the injection step or noised latent frame, NA for
    the clean run).
    """
    from stepscope.analysis.proxy_scorer import score_video

    rows = []
    for probe_dir in probe_dirs:
        probe = read_probe(probe_dir)
        if not probe.get("sample_dir"):
            raise StepScopeError(
                f"{probe_dir}: the probe ran on a custom input, which has no ground truth to score"
            )
        for condition in probe["conditions"]:
            scores = score_video(Path(probe_dir) / condition["name"] / "video.mp4", probe["sample_dir"])
            for metric, value in scores.items():
                rows.append(
                    {
                        **_labels(probe),
                        "probe": probe["kind"],
                        "condition": condition["name"],
                        "perturbed": condition["name"] != CLEAN,
                        "step": condition.get("step"),
                        "frame": condition.get("frame"),
                        "strength": condition.get("strength", 0.0),
                        "switch_step": probe.get("switch_step"),
                        "metric": metric,
                        "value": float(value),
                    }
                )
    table = pd.DataFrame(rows)
    for column in ("step", "frame", "switch_step"):
        table[column] = pd.array(table[column], dtype="Int64")
    return table


def noise_summary(table: pd.DataFrame, position: str, metric: str) -> pd.DataFrame:
    """Per variant and swept position: mean/std/n of `metric`, the clean mean and the drop from it."""
    df = table[table["metric"] == metric]
    clean = df[~df["perturbed"]].groupby("variant")["value"].mean().rename("clean_mean")
    perturbed = df[df["perturbed"]]
    summary = (
        perturbed.groupby(["variant", position])["value"]
        .agg(mean="mean", std="std", n="count")
        .reset_index()
        .join(clean, on="variant")
    )
    summary["drop"] = summary["clean_mean"] - summary["mean"]
    summary.insert(2, "metric", metric)
    return summary


def sensitivity_table(probe_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """CKA dissimilarity of each perturbed trajectory vs the clean one at every step from the
    injection on: x0_hat latents (representation ``x0``, from the records) and the full block
    outputs measured while sampling (``L<layer>``, from hidden_cka.parquet)."""
    from stepscope.records import RunRecords

    rows = []
    for probe_dir in probe_dirs:
        probe = read_probe(probe_dir)
        base = {**_labels(probe), "switch_step": probe.get("switch_step")}
        clean = RunRecords(Path(probe_dir) / CLEAN)
        experts = dict(zip(clean.schedule["step"], clean.schedule["expert"], strict=True))
        clean_steps = set(clean.recorded_steps)
        for condition in probe["conditions"][1:]:
            run = RunRecords(Path(probe_dir) / condition["name"])
            injected = int(condition["step"])
            for step in sorted(clean_steps & set(run.recorded_steps)):
                if step < injected:
                    continue
                rows.append(
                    {
                        **base,
                        "injection_step": injected,
                        "step": step,
                        "representation": "x0",
                        "expert": experts.get(step),
                        "dissimilarity": cka_dissimilarity(
                            latent_tokens(clean.x0_hat(step)), latent_tokens(run.x0_hat(step))
                        ),
                    }
                )
        hidden_path = Path(probe_dir) / HIDDEN_CKA
        if hidden_path.is_file():
            hidden = pd.read_parquet(hidden_path)
            if "pass" in hidden:
                hidden = hidden[hidden["pass"] == "cond"]
            for row in hidden.itertuples(index=False):
                rows.append(
                    {
                        **base,
                        "injection_step": int(row.injection_step),
                        "step": int(row.step),
                        "representation": f"L{int(row.layer):02d}",
                        "expert": row.expert,
                        "dissimilarity": float(row.dissimilarity),
                    }
                )
    columns = [*LABELS, "switch_step", "injection_step", "step", "representation", "expert", "dissimilarity"]
    table = pd.DataFrame(rows, columns=columns)
    table["switch_step"] = pd.array(table["switch_step"], dtype="Int64")
    return table


def sensitivity_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per variant, representation and injection step: mean dissimilarity over the steps from the
    injection on (``mean_after``) and at the last step (``final``); plus the curve's peak step and
    the expert switch, so the two can be told apart."""
    if table.empty:
        return pd.DataFrame(
            columns=[
                "variant",
                "representation",
                "injection_step",
                "mean_after",
                "final",
                "n",
                "peak_step",
                "switch_step",
                "peak_is_switch",
            ]
        )
    last = table.groupby("variant")["step"].transform("max")
    final = (
        table[table["step"] == last]
        .groupby(["variant", "representation", "injection_step"])["dissimilarity"]
        .mean()
        .rename("final")
    )
    summary = (
        table.groupby(["variant", "representation", "injection_step"])["dissimilarity"]
        .agg(mean_after="mean", n="count")
        .join(final)
        .reset_index()
    )
    peaks = summary.loc[
        summary.groupby(["variant", "representation"])["mean_after"].idxmax(),
        ["variant", "representation", "injection_step"],
    ].rename(columns={"injection_step": "peak_step"})
    switches = table.groupby("variant")["switch_step"].first()
    summary = summary.merge(peaks, on=["variant", "representation"]).join(switches, on="variant")
    summary["peak_is_switch"] = summary["peak_step"] == summary["switch_step"]
    return summary[
        [
            "variant",
            "representation",
            "injection_step",
            "mean_after",
            "final",
            "n",
            "peak_step",
            "switch_step",
            "peak_is_switch",
        ]
    ]


def _relative(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> float:
    norm = float(scale.double().norm())
    return float((a.double() - b.double()).norm()) / norm if norm else 0.0


def swap_table(probe_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """Which clean run each swapped run's outcome follows.

    ``latent_to_target`` / ``latent_to_source``: ||z - z_target|| / ||z_target|| and
    ||z - z_source|| / ||z_target|| of the final latents; ``frames_to_*``: mean absolute
    difference of the decoded videos (in [0, 1]); ``source_fraction`` = d_target / (d_target +
    d_source) on the latents (0: the target's outcome, 1: the source's; 0 when nothing changed);
    ``follows``: the nearer clean run (``target`` on a tie).
    """
    from stepscope.records import RunRecords

    rows = []
    for probe_dir in probe_dirs:
        probe = read_probe(probe_dir)
        target = RunRecords(Path(probe_dir) / "target")
        source = RunRecords(Path(probe_dir) / "source")
        z_target, z_source = target.final_latent(), source.final_latent()
        f_target, f_source = target.frames().astype(np.float64), source.frames().astype(np.float64)
        for condition in probe["conditions"][1:]:
            run = RunRecords(Path(probe_dir) / condition["name"])
            z = run.final_latent()
            frames = run.frames().astype(np.float64)
            d_target = _relative(z, z_target, z_target)
            d_source = _relative(z, z_source, z_target)
            total = d_target + d_source
            rows.append(
                {
                    **_labels(probe),
                    "source": probe["source"]["source"],
                    "swap_step": int(probe["step"]),
                    "switch_step": probe.get("switch_step"),
                    "layer": int(condition["layer"]),
                    "latent_to_target": d_target,
                    "latent_to_source": d_source,
                    "frames_to_target": float(np.abs(frames - f_target).mean() / 255.0),
                    "frames_to_source": float(np.abs(frames - f_source).mean() / 255.0),
                    "source_fraction": d_target / total if total else 0.0,
                    "changed": bool(not torch.equal(z, z_target)),
                    "follows": "source" if d_source < d_target else "target",
                }
            )
    table = pd.DataFrame(rows)
    if not table.empty:
        table["switch_step"] = pd.array(table["switch_step"], dtype="Int64")
    return table


def swap_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per variant and layer: mean source fraction, the share of samples following the source, the
    majority outcome, and ``flip`` = the majority outcome differs from the previous swept layer's."""
    rows = []
    for variant, group in table.groupby("variant", sort=True):
        previous = None
        for layer, at_layer in group.groupby("layer", sort=True):
            share = float((at_layer["follows"] == "source").mean())
            follows = "source" if share > 0.5 else "target"
            rows.append(
                {
                    "variant": variant,
                    "layer": int(layer),
                    "source_fraction": float(at_layer["source_fraction"].mean()),
                    "follows_source_share": share,
                    "follows": follows,
                    "changed_share": float(at_layer["changed"].mean()),
                    "flip": previous is not None and follows != previous,
                    "n": len(at_layer),
                }
            )
            previous = follows
    return pd.DataFrame(
        rows,
        columns=[
            "variant",
            "layer",
            "source_fraction",
            "follows_source_share",
            "follows",
            "changed_share",
            "flip",
            "n",
        ],
    )


# ----- figures ------------------------------------------------------------------------------


def _switch_of(table: pd.DataFrame) -> int | None:
    if "switch_step" not in table:
        return None
    values = table["switch_step"].dropna()
    return int(values.iloc[0]) if len(values) else None


def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_noise(table: pd.DataFrame, target: str | Path, *, position: str, metric: str, title: str) -> Path:
    """Score vs the swept position (mean +- std over samples) against the clean runs' mean."""
    from stepscope.plots.style import DEFAULT_PNG, mark_switch, panel_figure, save

    df = table[table["metric"] == metric]
    perturbed = df[df["perturbed"]].groupby(position)["value"].agg(["mean", "std"]).reset_index()
    clean = df.loc[~df["perturbed"], "value"]
    fig, axes = panel_figure(size=(5.0, 3.5))
    ax = axes[0, 0]
    x = perturbed[position].astype(float).to_numpy()
    y, sd = perturbed["mean"].to_numpy(), perturbed["std"].fillna(0).to_numpy()
    ax.plot(x, y, "o-", color="tab:blue", lw=1.5, label=f"noise at {position}")
    ax.fill_between(x, y - sd, y + sd, color="tab:blue", alpha=0.2, lw=0)
    if len(clean):
        ax.axhline(
            float(clean.mean()), color="0.3", ls=":", lw=1.2, label=f"unperturbed ({clean.mean():.3f})"
        )
    if position == "step":
        mark_switch(ax, _switch_of(df))
    ax.set_xlabel("injection step" if position == "step" else "noised latent frame")
    ax.set_ylabel(f"{metric} (stepscope-proxy, not VBVR's score)")
    ax.set_ylim(0.0, 1.0)  # proxy scores lie in [0, 1]
    _integer_ticks(ax)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return save(fig, target, compress_level=DEFAULT_PNG)["path"]


def plot_sensitivity(table: pd.DataFrame, summary: pd.DataFrame, target: str | Path, *, title: str) -> Path:
    """Mean later-step CKA dissimilarity vs injection step, one line per representation, with the
    expert switch (dashed) and each curve's peak (marker) so the two can be told apart."""
    from stepscope.plots.style import DEFAULT_PNG, mark_switch, panel_figure, save

    fig, axes = panel_figure(size=(5.5, 3.8))
    ax = axes[0, 0]
    for representation, group in summary.groupby("representation", sort=True):
        group = group.sort_values("injection_step")
        style = dict(lw=2.0, color="black") if representation == "x0" else dict(lw=1.2, alpha=0.8)
        (line,) = ax.plot(
            group["injection_step"], group["mean_after"], "o-", ms=3, label=representation, **style
        )
        peak = group.loc[group["mean_after"].idxmax()]
        ax.plot([peak["injection_step"]], [peak["mean_after"]], "*", ms=11, color=line.get_color())
    mark_switch(ax, _switch_of(table))
    _integer_ticks(ax)
    ax.set_xlabel("injection step")
    ax.set_ylabel("1 - linear CKA (mean over later steps)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title, fontsize=9)
    return save(fig, target, compress_level=DEFAULT_PNG)["path"]


def plot_sensitivity_heatmap(table: pd.DataFrame, target: str | Path, *, title: str) -> Path:
    """x0_hat dissimilarity for every (injection step, later step) pair."""
    from stepscope.plots.style import DEFAULT_PNG, mark_switch, panel_figure, save, switch_legend

    df = table[table["representation"] == "x0"]
    grid = df.groupby(["injection_step", "step"])["dissimilarity"].mean().unstack("step")
    fig, axes = panel_figure(size=(5.0, 4.0))
    ax = axes[0, 0]
    image = ax.imshow(
        grid.to_numpy(dtype=float),
        aspect="auto",
        origin="lower",
        vmin=0.0,
        vmax=1.0,
        cmap="magma",
        extent=(grid.columns.min() - 0.5, grid.columns.max() + 0.5, -0.5, len(grid.index) - 0.5),
    )
    ax.set_yticks(range(len(grid.index)), [str(s) for s in grid.index], fontsize=7)
    switch = _switch_of(df)
    if switch is not None:
        mark_switch(ax, switch, cmap="magma")
        switch_legend(fig, ax)
    ax.set_xlabel("step")
    ax.set_ylabel("injection step")
    fig.colorbar(image, ax=ax, label="1 - linear CKA of x0-hat")
    ax.set_title(title, fontsize=9)
    return save(fig, target, compress_level=DEFAULT_PNG)["path"]


def plot_swap(table: pd.DataFrame, summary: pd.DataFrame, target: str | Path, *, title: str) -> Path:
    """Where the outcome goes when one layer's tokens are swapped: 0 = the target's, 1 = the source's."""
    from stepscope.plots.style import DEFAULT_PNG, panel_figure, save

    fig, axes = panel_figure(size=(5.5, 3.8))
    ax = axes[0, 0]
    agg = table.groupby("layer").agg(
        latent=("source_fraction", "mean"),
        latent_sd=("source_fraction", "std"),
        frames_t=("frames_to_target", "mean"),
        frames_s=("frames_to_source", "mean"),
    )
    x = agg.index.to_numpy()
    ax.plot(x, agg["latent"], "o-", color="tab:purple", lw=1.8, label="final latent")
    ax.fill_between(
        x,
        agg["latent"] - agg["latent_sd"].fillna(0),
        agg["latent"] + agg["latent_sd"].fillna(0),
        color="tab:purple",
        alpha=0.2,
        lw=0,
    )
    total = (agg["frames_t"] + agg["frames_s"]).replace(0, np.nan)
    ax.plot(
        x,
        (agg["frames_t"] / total).fillna(0),
        "s--",
        color="tab:orange",
        lw=1.2,
        ms=3,
        label="decoded frames",
    )
    ax.axhline(0.5, color="0.5", ls=":", lw=1)
    for index, row in enumerate(summary[summary["flip"]].itertuples()):
        ax.axvline(
            row.layer - 0.5, color="tab:red", ls="--", lw=1, label="outcome flips" if index == 0 else None
        )
    ax.set_ylim(-0.02, 1.02)
    _integer_ticks(ax)
    ax.set_xlabel("swapped layer")
    ax.set_ylabel("source fraction  d_t / (d_t + d_s)")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return save(fig, target, compress_level=DEFAULT_PNG)["path"]


def _write_csv(target: str | Path, frame: pd.DataFrame) -> None:
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)


def probe_table_job(
    *, kind: str, probe_dirs: Sequence[str], metric: str, out_table: str, out_summary: str, figure_dir: str
) -> list[Path]:
    """Tables (Parquet, tidy; CSV summary) and figures of one probe over all its probe directories."""
    if kind not in KINDS:
        raise StepScopeError(f"unknown probe {kind!r}: choose one of {', '.join(KINDS)}")
    figures_root = Path(figure_dir)
    figures_root.mkdir(parents=True, exist_ok=True)
    figures = []
    if kind in ("noise_step", "noise_frame"):
        position = "step" if kind == "noise_step" else "frame"
        table = noise_table(probe_dirs)
        summary = noise_summary(table, position, metric)
        for variant, group in table.groupby("variant", sort=True):
            figures.append(
                plot_noise(
                    group,
                    figures_root / f"{variant}.score_vs_{position}.png",
                    position=position,
                    metric=metric,
                    title=f"{variant}: noise at {position} ({group['sample'].nunique()} sample(s))",
                )
            )
    elif kind == "sensitivity":
        table = sensitivity_table(probe_dirs)
        summary = sensitivity_summary(table)
        for variant, group in table.groupby("variant", sort=True):
            part = summary[summary["variant"] == variant]
            figures.append(
                plot_sensitivity(
                    group,
                    part,
                    figures_root / f"{variant}.sensitivity.png",
                    title=f"{variant}: step sensitivity",
                )
            )
            figures.append(
                plot_sensitivity_heatmap(
                    group,
                    figures_root / f"{variant}.sensitivity_heatmap.png",
                    title=f"{variant}: x0-hat change after an injection",
                )
            )
    else:
        table = swap_table(probe_dirs)
        summary = swap_summary(table)
        for variant, group in table.groupby("variant", sort=True):
            part = summary[summary["variant"] == variant]
            step = int(group["swap_step"].iloc[0])
            switch = _switch_of(group)
            expert = "" if switch is None else f", {'low' if step >= switch else 'high'}-noise expert"
            figures.append(
                plot_swap(
                    group,
                    part,
                    figures_root / f"{variant}.token_swap.png",
                    title=f"{variant}: token swap at step {step}{expert}\nsource: {group['source'].iloc[0]}",
                )
            )
    write_parquet(out_table, table)
    _write_csv(out_summary, summary)
    return figures
