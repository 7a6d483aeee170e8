"""Train the Wan2.2 twin: a small two-expert WanModel + Wan VAE that really solves the demo tasks.

The twin is built by `WanFamily.make_tiny_weights` (random weights, the loader's folder layout) and
loaded through `WanFamily.load_pipeline` (diffsynth's own `from_pretrained`), so training sees the
exact modules, scheduler and conditioning that sampling uses:

1. VAE: reconstruction of generated clips (L1 + MSE, pixels of objects weighted up) with a small
   penalty that keeps the *normalised* latents (what the DiT sees) near zero mean, unit variance.
2. DiT experts: diffsynth's `FlowMatchSFTLoss` with the Wan scheduler (shift 5, 1000 training
   timesteps); the high-noise expert trains on timestep ids [0, boundary) and the low-noise expert on
   [boundary, 1000), where `boundary` maps the pipeline's switch (t = 875) onto the training grid.
   The conditioning `y` is the pipeline's `WanVideoUnit_ImageEmbedderVAE` output (batched, checked
   equal by a test) and `context` comes from the pipeline's own prompt unit; 10% of samples get the
   negative prompt's context so that classifier-free guidance has an unconditional branch to use.

Every stage runs in pieces: `train` stops at a time limit and writes a checkpoint folder, and the
next call resumes from it (the data stream is a function of the step, so pieces add up to one run).
A finished DiT stage can be trained further by raising `dit_cycles`: each new cycle warms up again
and decays its own cosine over a step count planned like the first one (a warm restart).

One module (~570 lines) on purpose: data, the three stages, checkpoints and export share one
config and one resumable plan, and are read together when the training is reproduced.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stepscope.demo_tasks import EITHER_TASK, render_demo_clip
from stepscope.models.wan import WAN22, WAN_NEGATIVE_PROMPT, TinyWanDims

# The demo's four tasks and the two-answer task.
TRAIN_TASKS = (
    "D-1_move_to_target_data-generator",
    "D-2_fill_circle_data-generator",
    "D-3_ball_to_wall_data-generator",
    "D-4_bar_to_mark_data-generator",
    EITHER_TASK,
)
TRAINED_DIMS = TinyWanDims(
    dim=128, ffn_dim=256, num_heads=4, num_layers=6, text_dim=32, text_layers=2, vae_dim=12, vocab=256
)
EXPERTS = ("high_noise", "low_noise")
CKPT_FILES = {"vae": "vae.pt", "high_noise": "high_noise.pt", "low_noise": "low_noise.pt"}
STATE = "state.json"
# Experts in bf16 as real Wan checkpoints are; the small VAE in fp32 (its decoder is the picture).
STORAGE = {"high_noise": torch.bfloat16, "low_noise": torch.bfloat16, "vae": torch.float32}


@dataclass
class TrainConfig:
    """Everything that decides the trained weights (stored with the checkpoint and the weights)."""

    seed: int = 0
    samples_per_task: int = 2400
    size: int = 64
    num_frames: int = 9
    vae_steps: int = 3000
    vae_batch: int = 32
    vae_lr: float = 1e-3
    decoder_steps: int = 0  # then the decoder alone (encoder and latents fixed)
    decoder_temporal: float = 0.0  # weight of the frame-difference term there (VAE flicker; 0 = off)
    dit_steps: int = 12000  # per expert (per cycle)
    dit_cycles: int = 1  # warm restarts: each cycle warms up and decays its own cosine
    dit_batch: int = 128
    dit_lr: float = 4e-4
    dit_task_weights: str = ""  # "w1,...,w5" (TRAIN_TASKS order): DiT batches drawn by task; "" = uniform
    sigma_shift: float = 5.0
    switch_boundary: float = 0.875
    uncond_prob: float = 0.1
    latent_noise: float = 0.05
    plan_after: int = 50  # steps timed before a stage's step count is fitted to its seconds
    dims: dict[str, int] = field(default_factory=lambda: asdict(TRAINED_DIMS))

    @classmethod
    def smoke(cls) -> TrainConfig:
        """A few steps on a few samples: proves the whole path runs (CPU, seconds)."""
        return cls(
            samples_per_task=4,
            size=32,
            vae_steps=3,
            vae_batch=4,
            dit_steps=3,
            dit_batch=4,
            plan_after=2,
            dims=asdict(TinyWanDims(dim=48, ffn_dim=96, num_heads=2, num_layers=2, vae_dim=8)),
        )


# ----- data ------------------------------------------------------------------------------------------


def _clip(args: tuple[int, int, int, int, int]) -> tuple[str, np.ndarray]:
    seed, task_index, sample, size, num_frames = args
    # A 4-number seed: never the (seed, task, sample) stream of a demo or validation bench.
    rng = np.random.default_rng([7919, seed, task_index, sample])
    return render_demo_clip(TRAIN_TASKS[task_index], rng, size, num_frames)


def make_training_clips(config: TrainConfig, workers: int = 1) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(prompts, task ids, uint8 (N, T, H, W, 3) clips) drawn from the demo-bench renderers."""
    jobs = [
        (config.seed, task_index, sample, config.size, config.num_frames)
        for task_index in range(len(TRAIN_TASKS))
        for sample in range(config.samples_per_task)
    ]
    if workers > 1:
        with Pool(workers) as pool:
            clips = pool.map(_clip, jobs, chunksize=64)
    else:
        clips = [_clip(job) for job in jobs]
    prompts = [prompt for prompt, _ in clips]
    tasks = np.array([job[1] for job in jobs])
    return prompts, tasks, np.stack([frames for _, frames in clips])


def to_video_tensor(clips: np.ndarray, device: str) -> torch.Tensor:
    """uint8 (N, T, H, W, 3) -> float (N, 3, T, H, W) in [-1, 1], as `pipe.preprocess_video` scales."""
    video = torch.from_numpy(clips).to(device).permute(0, 4, 1, 2, 3).float()
    return video * (2.0 / 255.0) - 1.0


# ----- conditioning exactly as the pipeline builds it ------------------------------------------------


def i2v_condition(pipe, first_frames: torch.Tensor, num_frames: int) -> torch.Tensor:
    """`WanVideoUnit_ImageEmbedderVAE.process` for a batch of first frames (B, 3, H, W) in [-1, 1].

    Same mask, same zero-padded video through the VAE encoder, same concatenation (untiled: the
    pipeline's tile is larger than these frames).
    """
    batch, _, height, width = first_frames.shape
    msk = torch.ones(1, num_frames, height // 8, width // 8, device=first_frames.device)
    msk[:, 1:] = 0
    msk = torch.concat([torch.repeat_interleave(msk[:, 0:1], repeats=4, dim=1), msk[:, 1:]], dim=1)
    msk = msk.view(1, msk.shape[1] // 4, 4, height // 8, width // 8).transpose(1, 2)[0]
    zeros = torch.zeros(batch, 3, num_frames - 1, height, width, device=first_frames.device)
    vae_input = torch.concat([first_frames.unsqueeze(2), zeros], dim=2).to(pipe.torch_dtype)
    y = pipe.vae.model.encode(vae_input, pipe.vae.scale).to(pipe.torch_dtype)
    return torch.concat([msk.unsqueeze(0).expand(batch, -1, -1, -1, -1).to(y.dtype), y], dim=1)


def prompt_contexts(pipe, prompts: list[str]) -> dict[str, torch.Tensor]:
    """Each distinct prompt (and the negative prompt) through the pipeline's own prompt unit."""
    from diffsynth.pipelines.wan_video import WanVideoUnit_PromptEmbedder

    unit = WanVideoUnit_PromptEmbedder()
    with torch.no_grad():
        return {p: unit.encode_prompt(pipe, p) for p in sorted(set(prompts) | {WAN_NEGATIVE_PROMPT})}


# ----- checkpoints ---------------------------------------------------------------------------------


def _save(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _opt_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Optimizer state with Adam moments in bf16 (keeps each checkpoint file small)."""
    state = optimizer.state_dict()  # its per-parameter dicts are the live ones: copy, never mutate
    moments = ("exp_avg", "exp_avg_sq")
    state["state"] = {
        index: {key: value.to(torch.bfloat16) if key in moments else value for key, value in slot.items()}
        for index, slot in state["state"].items()
    }
    return state


def _load_opt(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    optimizer.load_state_dict(state)
    for slot in optimizer.state.values():
        for key in ("exp_avg", "exp_avg_sq"):
            if key in slot:
                slot[key] = slot[key].float()


def read_state(ckpt: Path) -> dict[str, Any]:
    path = Path(ckpt) / STATE
    empty = {"vae_step": 0, "dit_step": 0, "plan": {}, "log": []}
    return json.loads(path.read_text()) if path.exists() else empty


# ----- training --------------------------------------------------------------------------------------


def build_pipeline(config: TrainConfig, work: Path, device: str):
    """A freshly initialised twin written in the loader's layout and loaded through it."""
    weights = WAN22.make_tiny_weights(work / "init", TinyWanDims(**config.dims), seed=config.seed)
    pipe = WAN22.load_pipeline(weights, device=device, dtype=torch.float32)
    pipe.scheduler.set_timesteps(1000, training=True, shift=config.sigma_shift)
    return pipe, weights


def _vae_loss(
    pipe, video: torch.Tensor, latent_noise: float, decoder_only: bool = False, temporal: float = 0.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted reconstruction + latent normalisation; `temporal` > 0 adds a frame-difference term.

    The frame-difference term compares consecutive-frame changes of the reconstruction with the
    clip's own: a decoder that flickers (changes pixels the clip keeps still, e.g. at its chunk
    boundaries) pays for it even where each frame alone is close.
    """
    model, scale = pipe.vae.model, pipe.vae.scale
    with torch.set_grad_enabled(not decoder_only):
        mu = model.encode(video, scale)
    recon = model.decode(mu + latent_noise * torch.randn_like(mu), scale)
    background = video[:, :, :1, :1, :1]
    weight = 1.0 + 4.0 * ((video - background).abs().sum(1, keepdim=True) > 0.1).float()
    rec = (weight * ((recon - video).abs() + (recon - video) ** 2)).mean()
    dims = (0, 2, 3, 4)
    reg = (mu.mean(dims) ** 2).mean() + ((mu.var(dims) - 1.0) ** 2).mean()
    loss, parts = rec + 0.05 * reg, {"rec": float(rec.detach()), "reg": float(reg.detach())}
    if temporal > 0:
        change_error = (recon.diff(dim=2) - video.diff(dim=2)).abs()
        flicker = (weight[:, :, 1:] * change_error).mean()
        loss, parts["temporal"] = loss + temporal * flicker, float(flicker.detach())
    return loss, parts


def _dit_loss(pipe, expert, inputs: dict[str, Any], lo: float, hi: float) -> torch.Tensor:
    from diffsynth.diffusion.loss import FlowMatchSFTLoss

    pipe.dit = expert  # FlowMatchSFTLoss calls pipe.model_fn with pipe.dit
    return FlowMatchSFTLoss(pipe, **inputs, min_timestep_boundary=lo, max_timestep_boundary=hi)


def task_probabilities(config: TrainConfig, tasks: np.ndarray) -> torch.Tensor | None:
    """Per-clip draw probabilities from `dit_task_weights` (None: uniform, the original stream).

    A task's weight is split over its clips, so "1,3,1,1,1" draws D-2 clips three times as often
    as each other task's whatever the clip counts.
    """
    if not config.dit_task_weights:
        return None
    weights = [float(w) for w in config.dit_task_weights.split(",")]
    if len(weights) != len(TRAIN_TASKS) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(
            f"dit_task_weights={config.dit_task_weights!r}: give {len(TRAIN_TASKS)} weights >= 0 "
            f"(not all 0), comma-separated, in this order: {', '.join(TRAIN_TASKS)}"
        )
    task_ids = torch.as_tensor(tasks)
    counts = torch.bincount(task_ids, minlength=len(TRAIN_TASKS)).clamp(min=1)
    return (torch.tensor(weights) / counts)[task_ids]


def draw_batch(probabilities: torch.Tensor | None, n: int, batch: int, device: str) -> torch.Tensor:
    """Clip indices of one DiT batch (uses the global torch seed, set per step)."""
    if probabilities is None:
        return torch.randint(0, n, (batch,), device=device)
    return torch.multinomial(probabilities, batch, replacement=True).to(device)


def expert_ranges(config: TrainConfig) -> dict[str, tuple[float, float]]:
    """Fractions of the (descending) training timesteps each expert owns, from the switch boundary."""
    sigma = config.switch_boundary
    shift = config.sigma_shift
    unshifted = sigma / (shift - (shift - 1.0) * sigma)  # inverse of sigma' = s*u / (1 + (s-1)*u)
    split = 1.0 - unshifted
    return {"high_noise": (0.0, split), "low_noise": (split, 1.0)}


def train(
    config: TrainConfig,
    ckpt: Path,
    *,
    device: str,
    time_limit: float = float("inf"),
    stage_seconds: tuple[float | None, float | None] = (None, None),
    workers: int = 1,
    log=print,
) -> tuple[dict[str, Any], Any]:
    """Run (or resume) training until done or `time_limit` seconds; checkpoints go to `ckpt`.

    `stage_seconds` (VAE, DiT): when given, a stage's step count is fixed after its first steps
    from their measured speed (at most the config's count) and stored in the checkpoint's plan, so
    a resumed or repeated run uses the same counts. Returns (state, pipeline).
    """
    start = time.monotonic()

    def plan(state: dict[str, Any], key: str, seconds: float | None, base: int = 0) -> int:
        """The stage's last step (absolute); `base` is where the stage's current cycle started."""
        stage = key.split("_")[0] + "_step"
        if key not in state["plan"]:
            if seconds is None:
                return base + getattr(config, key)
            done = state[stage] - base
            if done == config.plan_after:
                per_step = (time.monotonic() - state.setdefault("_t0", time.monotonic())) / config.plan_after
                fit = max(config.plan_after, int(seconds / max(per_step, 1e-6)))
                state["plan"][key] = base + min(getattr(config, key), fit)
                log(f"plan: {key} = {state['plan'][key]} ({per_step * 1000:.1f} ms/step)")
            elif done == 0:
                state["_t0"] = time.monotonic()
            if key not in state["plan"]:
                return base + getattr(config, key)
        return state["plan"][key]

    ckpt = Path(ckpt)
    ckpt.mkdir(parents=True, exist_ok=True)
    state = read_state(ckpt)
    state.setdefault("plan", {})
    state["config"] = asdict(config)
    torch.manual_seed(config.seed)
    prompts, tasks, clips = make_training_clips(config, workers)  # before CUDA starts: workers fork
    probabilities = task_probabilities(config, tasks)
    log(f"data: {len(clips)} clips of {clips.shape[1:]} from {len(TRAIN_TASKS)} tasks")
    pipe, _ = build_pipeline(config, Path(tempfile.mkdtemp(prefix="twin-init-")), device)
    experts = {"high_noise": pipe.dit, "low_noise": pipe.dit2}
    modules = {"vae": pipe.vae.model, **experts}
    for name, file in CKPT_FILES.items():
        if (ckpt / file).exists():
            modules[name].load_state_dict(torch.load(ckpt / file, map_location=device)["model"])

    videos = to_video_tensor(clips, device)
    n = len(videos)

    def out_of_time() -> bool:
        return time.monotonic() - start > time_limit

    def checkpoint(names: list[str], optimizers: dict[str, torch.optim.Optimizer]) -> None:
        for name in names:
            payload = {"model": modules[name].state_dict()}
            if name != "vae":  # the VAE's moments would push its file past 16 MiB; it resumes with fresh ones
                payload["opt"] = _opt_state(optimizers[name])
            _save(ckpt / CKPT_FILES[name], payload)
        public = {key: value for key, value in state.items() if not key.startswith("_")}
        (ckpt / STATE).write_text(json.dumps(public, indent=1))

    # --- stage 1: VAE --------------------------------------------------------------------------
    vae = pipe.vae.model
    vae.train().requires_grad_(True)
    opt = {"vae": torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)}
    last_save = time.monotonic()
    while state["vae_step"] < plan(state, "vae_steps", stage_seconds[0]) and not out_of_time():
        step = state["vae_step"]
        generator = torch.Generator(device="cpu").manual_seed(config.seed * 1_000_003 + step)
        index = torch.randint(0, n, (config.vae_batch,), generator=generator)
        loss, parts = _vae_loss(pipe, videos[index.to(device)], config.latent_noise)
        opt["vae"].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt["vae"].step()
        state["vae_step"] = step + 1
        if step % 100 == 0 or state["vae_step"] == plan(state, "vae_steps", None):
            state["log"].append(
                {"stage": "vae", "step": step, **parts, "t": round(time.monotonic() - start, 1)}
            )
            log(json.dumps(state["log"][-1]))
        if time.monotonic() - last_save > 60:
            checkpoint(["vae"], opt)
            last_save = time.monotonic()
    checkpoint(["vae"], opt)
    vae.eval().requires_grad_(False)
    if state["vae_step"] < plan(state, "vae_steps", None):
        return state, pipe

    # --- stage 1b: decoder only (the encoder, hence the DiT's latent space, stays fixed) ----------
    state.setdefault("decoder_step", 0)
    if state["decoder_step"] < config.decoder_steps:
        decoder = [*vae.conv2.parameters(), *vae.decoder.parameters()]
        for parameter in decoder:
            parameter.requires_grad_(True)
        vae.train()
        opt["vae"] = torch.optim.AdamW(decoder, lr=config.vae_lr, weight_decay=0.0)
        while state["decoder_step"] < config.decoder_steps and not out_of_time():
            step = state["decoder_step"]
            generator = torch.Generator(device="cpu").manual_seed(config.seed * 1_000_003 + 3 + step)
            index = torch.randint(0, n, (config.vae_batch,), generator=generator)
            loss, parts = _vae_loss(
                pipe,
                videos[index.to(device)],
                config.latent_noise,
                decoder_only=True,
                temporal=config.decoder_temporal,
            )
            opt["vae"].zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decoder, 1.0)
            opt["vae"].step()
            state["decoder_step"] = step + 1
            if step % 100 == 0 or state["decoder_step"] == config.decoder_steps:
                state["log"].append(
                    {"stage": "decoder", "step": step, **parts, "t": round(time.monotonic() - start, 1)}
                )
                log(json.dumps(state["log"][-1]))
        vae.eval().requires_grad_(False)
        checkpoint(["vae"], opt)
        if state["decoder_step"] < config.decoder_steps:
            return state, pipe

    # --- stage 2: the two experts on their own noise ranges --------------------------------------
    with torch.no_grad():
        latents, ys = [], []
        for chunk in torch.split(torch.arange(n, device=device), 256):
            latents.append(vae.encode(videos[chunk], pipe.vae.scale))
            ys.append(i2v_condition(pipe, videos[chunk][:, :, 0], config.num_frames))
        latents, ys = torch.cat(latents), torch.cat(ys)
        contexts = prompt_contexts(pipe, prompts)
        order = sorted(contexts)
        context_bank = torch.cat([contexts[p] for p in order])
        prompt_index = torch.tensor([order.index(p) for p in prompts], device=device)
        negative_index = order.index(WAN_NEGATIVE_PROMPT)
    log(f"latents {tuple(latents.shape)} std {latents.std():.3f}; y {tuple(ys.shape)}")
    del videos
    ranges = expert_ranges(config)
    for expert in experts.values():
        expert.train().requires_grad_(True)
    opt = {
        name: torch.optim.AdamW(m.parameters(), lr=config.dit_lr, weight_decay=0.0)
        for name, m in experts.items()
    }
    for name in EXPERTS:
        if (ckpt / CKPT_FILES[name]).exists() and state["dit_step"] > 0:
            _load_opt(opt[name], torch.load(ckpt / CKPT_FILES[name], map_location=device)["opt"])

    def lr_factor(step: int, start: int) -> float:  # warm-up, then cosine to zero over the cycle
        total = state["plan"].get("dit_steps", start + config.dit_steps) - start
        step -= start
        return min(1.0, (step + 1) / 200) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))

    # Cycles [start, end] of the DiT stage (a checkpoint from before cycles existed had one).
    plan_dit = state["plan"]
    cycles = plan_dit.setdefault(
        "dit_cycles", [[0, plan_dit["dit_steps"]]] if "dit_steps" in plan_dit else []
    )
    last_save = time.monotonic()
    for cycle in range(config.dit_cycles):
        if cycle < len(cycles) - 1:
            continue  # finished: a later cycle has started
        if cycle == len(cycles):  # a warm restart from here, its step count planned afresh
            cycles.append([state["dit_step"], None])
            plan_dit.pop("dit_steps", None)
        begin = cycles[cycle][0]
        while state["dit_step"] < plan(state, "dit_steps", stage_seconds[1], begin) and not out_of_time():
            step = state["dit_step"]
            for o in opt.values():
                for group in o.param_groups:
                    group["lr"] = config.dit_lr * lr_factor(step, begin)
            torch.manual_seed(config.seed * 1_000_003 + 7 + step)
            record = {"stage": "dit", "step": step}
            for name in EXPERTS:
                index = draw_batch(probabilities, n, config.dit_batch, device)
                which = prompt_index[index]
                which = torch.where(
                    torch.rand(len(index), device=device) < config.uncond_prob, negative_index, which
                )
                inputs = {"input_latents": latents[index], "y": ys[index], "context": context_bank[which]}
                loss = _dit_loss(pipe, experts[name], inputs, *ranges[name])
                opt[name].zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(experts[name].parameters(), 1.0)
                opt[name].step()
                record[name] = float(loss.detach())
            state["dit_step"] = step + 1
            if step % 200 == 0 or step == begin or state["dit_step"] == plan(state, "dit_steps", None, begin):
                state["log"].append({**record, "t": round(time.monotonic() - start, 1)})
                log(json.dumps(state["log"][-1]))
            if time.monotonic() - last_save > 60:
                checkpoint(list(EXPERTS), opt)
                last_save = time.monotonic()
        if state["dit_step"] < plan(state, "dit_steps", None, begin):
            break  # out of time: the next piece resumes this cycle
        cycles[cycle][1] = state["dit_step"]
    pipe.dit = experts["high_noise"]
    checkpoint(list(EXPERTS), opt)
    for expert in experts.values():
        expert.eval().requires_grad_(False)
    return state, pipe


def export_weights(config: TrainConfig, ckpt: Path, out_dir: Path, note: str) -> Path:
    """Write the trained twin in the loader's folder layout (bf16 files + `stepscope_tiny.json`).

    The random twin of the same dims is written first (same files, manifest and text encoder) and
    the trained VAE and experts replace their files, so the folder loads exactly as a tiny twin does.
    """
    from stepscope.atomic import write_json
    from stepscope.models.tiny import TINY_MANIFEST, write_tiny_component
    from stepscope.models.weight_layouts import WAN_VAE

    out_dir = Path(out_dir)
    WAN22.make_tiny_weights(out_dir, TinyWanDims(**config.dims), seed=config.seed)
    manifest = json.loads((out_dir / TINY_MANIFEST).read_text())
    by_name = {entry["file"]: entry for entry in manifest["components"]}
    ckpt = Path(ckpt)
    files = {
        "high_noise": "high_noise_model/diffusion_pytorch_model.safetensors",
        "low_noise": "low_noise_model/diffusion_pytorch_model.safetensors",
        "vae": WAN_VAE.patterns[0],
    }
    for name, relative in files.items():
        state_dict = torch.load(ckpt / CKPT_FILES[name], map_location="cpu")["model"]
        entry = by_name[relative]
        model_class = _import(entry["model_class"])
        by_name[relative] = write_tiny_component(
            out_dir,
            relative,
            model_class,
            entry["extra_kwargs"],
            entry["model_name"],
            seed=0,
            converter=entry.get("state_dict_converter"),
            state_dict=state_dict,
            storage_dtype=STORAGE[name],
        )
    manifest["components"] = list(by_name.values())
    state = read_state(ckpt)
    manifest["trained"] = {
        "config": asdict(config),
        "vae_step": state["vae_step"],
        "dit_step": state["dit_step"],
        "plan": state["plan"],
        "command": note,
    }
    write_json(out_dir / TINY_MANIFEST, manifest)
    return out_dir


def _import(path: str) -> type:
    import importlib

    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@torch.no_grad()
def preview(
    pipe, config: TrainConfig, out_png: Path | None = None, per_task: int = 2, steps: int = 8
) -> dict:
    """Sample held-out clips with the pipeline's own `__call__`; mean |final - GT final| per task.

    A quick look during training (the validation benchmark does the real scoring).
    """
    from PIL import Image

    rows, errors = [], {}
    for task_index, task in enumerate(TRAIN_TASKS):
        for sample in range(per_task):
            rng = np.random.default_rng([104729, config.seed, task_index, sample])
            prompt, clip = render_demo_clip(task, rng, config.size, config.num_frames)
            frames = pipe(
                prompt=prompt,
                negative_prompt=WAN_NEGATIVE_PROMPT,
                input_image=Image.fromarray(clip[0]),
                seed=1,
                height=config.size,
                width=config.size,
                num_frames=config.num_frames,
                cfg_scale=5.0,
                num_inference_steps=steps,
                sigma_shift=config.sigma_shift,
                switch_DiT_boundary=config.switch_boundary,
                tiled=True,
                progress_bar_cmd=lambda x: x,
            )
            video = np.stack([np.asarray(f) for f in frames])
            errors.setdefault(task, []).append(float(np.abs(video[-1].astype(float) - clip[-1]).mean()))
            rows.append(np.concatenate([clip[0], clip[-1], video[len(video) // 2], video[-1]], axis=1))
    if out_png is not None:
        Image.fromarray(np.concatenate(rows, axis=0)).save(out_png)
    return {task: float(np.mean(v)) for task, v in errors.items()}
