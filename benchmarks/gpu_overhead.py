"""GPU cost of recording: plain diffsynth sampling vs stepscope sampling with the default recording.

Wan2.2-A14B-shaped models with random weights (two 40-layer, dim-5120 experts, the real Wan VAE
architecture, a 1-layer text encoder of the real output width), bf16, on one GPU. For each
resolution, the same pipeline is sampled twice with the same seed and settings:
  plain:     pipe(...)                                   (diffsynth's own loop)
  stepscope: stepscope.sampling.loop.sample(..., record=...)  x0_hat every step, 5 layers reduced every
             step, both CFG passes captured and tagged
Per-step time = median interval between consecutive step starts (CUDA-synchronised). Also records
the bytes of the run's records (extrapolated to 50 steps from the measured per-step sizes), the
step-decoding throughput, the load time of one expert from safetensors, and (--seed-analysis) the
whole seed analysis of one sample over one plain sampling: the stepscope run above plus every step
decoded to a step video by the workflow's own `decode_run` (auto tiling, mp4s written), measured at
the run's step count and extrapolated to 50 steps from the per-step and fixed parts.

    python benchmarks/gpu_overhead.py --out benchmarks/results [--steps 5] [--resolutions 480x832,1024x1024]

Prints one JSON line per measurement and writes gpu_overhead.json and storage.json under --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from stepscope.sampling.capture import CaptureSpec  # noqa: E402
from stepscope.sampling.loop import RecordSpec, StepHook, sample  # noqa: E402

A14B = dict(
    has_image_input=False,
    patch_size=[1, 2, 2],
    in_dim=36,
    dim=5120,
    ffn_dim=13824,
    freq_dim=256,
    text_dim=4096,
    out_dim=16,
    num_heads=40,
    num_layers=40,
    eps=1e-06,
    require_clip_embedding=False,
)
LAYERS = (0, 10, 20, 30, 39)


DEVICE = "cuda"
SMOKE = dict(dim=48, ffn_dim=96, num_heads=2, text_dim=32)  # --smoke: the script's logic on a CPU


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def build_pipeline(tokenizer_dir: Path, layers: int, smoke: bool = False):
    """WanVideoPipeline with random A14B-shaped experts built directly on the GPU in bf16."""
    from diffsynth.models.wan_video_dit import WanModel
    from diffsynth.models.wan_video_text_encoder import HuggingfaceTokenizer, WanTextEncoder
    from diffsynth.models.wan_video_vae import WanVideoVAE
    from diffsynth.pipelines.wan_video import WanVideoPipeline

    from stepscope.models.tiny import write_word_tokenizer

    write_word_tokenizer(tokenizer_dir, 256)
    dims = {**A14B, "num_layers": layers, **(SMOKE if smoke else {})}
    text_dim = dims["text_dim"]
    torch.set_default_dtype(torch.bfloat16)
    torch.manual_seed(0)
    with torch.device(DEVICE):
        experts = [WanModel(**dims).eval().requires_grad_(False) for _ in range(2)]
        text = WanTextEncoder(
            vocab=256, dim=text_dim, dim_attn=text_dim, dim_ffn=2 * text_dim, num_heads=2, num_layers=1
        ).eval()
        vae = WanVideoVAE(z_dim=16).eval()
    torch.set_default_dtype(torch.float32)
    vae = vae.to(torch.bfloat16)
    for model in experts:  # default init makes bf16 activations blow up over 40 layers; keep them finite
        for parameter in model.parameters():
            parameter.data.mul_(0.5)
    pipe = WanVideoPipeline(device=DEVICE, torch_dtype=torch.bfloat16)
    pipe.dit, pipe.dit2 = experts
    pipe.text_encoder = text.requires_grad_(False)
    pipe.vae = vae.requires_grad_(False)
    pipe.tokenizer = HuggingfaceTokenizer(name=str(tokenizer_dir), seq_len=512, clean="whitespace")
    pipe.height_division_factor = pipe.width_division_factor = 16
    return pipe


def capture_sync_check() -> dict:
    """Does the capture hook's device work force a host sync? (Each one stalls the DiT's queue.)"""
    from stepscope.sampling.capture import reduce_on_device

    tokens = torch.randn(21 * 30 * 52, 5120, device="cuda", dtype=torch.bfloat16)
    reduce_on_device(tokens, (21, 30, 52))  # first call caches the start basis (one copy)
    torch.cuda.set_sync_debug_mode("error")
    try:
        reduce_on_device(tokens, (21, 30, 52))
        return {"capture_host_syncs": 0}
    except RuntimeError as error:
        return {"capture_host_sync": str(error)[:300]}
    finally:
        torch.cuda.set_sync_debug_mode(0)


class Clock:
    """Step-start timestamps (CUDA-synchronised)."""

    def __init__(self):
        self.stamps: list[float] = []

    def tick(self) -> None:
        sync()
        self.stamps.append(time.perf_counter())

    def per_step(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]


class ClockHook(StepHook):
    def __init__(self, clock: Clock):
        self.clock = clock

    def on_latents(self, step, sigma, latents):
        self.clock.tick()
        return None


def timed_progress(clock: Clock):
    def wrap(iterable):
        for item in iterable:
            clock.tick()
            yield item

    return wrap


def workflow_record(steps: int) -> RecordSpec:
    """What the workflow records by default (config/config.yaml's `record` section), for `steps` steps."""
    import yaml

    from stepscope.jobs.runs import record_spec

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())
    return record_spec(config["record"], steps, fps=16)


def run_resolution(
    pipe, height: int, width: int, frames: int, steps: int, out: Path, record_mode: str = "all-maps"
) -> dict:
    image = Image.fromarray((np.random.default_rng(0).random((height, width, 3)) * 255).astype(np.uint8))
    kwargs = dict(
        prompt="move the red square onto the green square",
        negative_prompt="blurry",
        seed=1,
        height=height,
        width=width,
        num_frames=frames,
        cfg_scale=5.0,
        num_inference_steps=steps,
    )
    plain_clock, ours_clock = Clock(), Clock()
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    pipe(input_image=image, switch_DiT_boundary=0.875, progress_bar_cmd=timed_progress(plain_clock), **kwargs)
    sync()
    plain_total = time.perf_counter() - started
    layers = tuple(layer for layer in LAYERS if layer < len(pipe.dit.blocks)) or (0,)  # --layers below 40
    if record_mode == "workflow":
        record = workflow_record(steps)
        record = dataclasses.replace(record, capture=dataclasses.replace(record.capture, layers=layers))
    else:  # both CFG passes, spatial maps (and the exact-PCA fallback where needed) at every step
        record = RecordSpec(capture=CaptureSpec(layers=layers, passes=("cond", "uncond")))
    started = time.perf_counter()
    run_dir = out / f"run_{height}x{width}"
    from stepscope.sampling.loop import sample_lockstep

    result = sample_lockstep(
        pipe,
        "wan2.2",
        image=image,
        seeds=[1],
        record=record,
        hook=ClockHook(ours_clock),
        switch_boundary=0.875,
        **{k: v for k, v in kwargs.items() if k != "seed"},
    )[0]
    sync()
    ours_total = time.perf_counter() - started
    write_records(run_dir, result)
    plain = statistics.median(plain_clock.per_step())
    ours = statistics.median(ours_clock.per_step())
    sizes = {p.name: p.stat().st_size for p in run_dir.iterdir()}
    storage = default_storage(result, run_dir, steps)
    return {
        "resolution": f"{height}x{width}",
        "frames": frames,
        "steps": steps,
        "record": record_mode,
        "map_steps": sorted(record.capture.map_steps) if record.capture.map_steps is not None else "all",
        "tokens": int(
            result.activation_rows[0]["frames"]
            * result.activation_rows[0]["height"]
            * result.activation_rows[0]["width"]
        ),
        "plain_step_s": plain,
        "stepscope_step_s": ours,
        "ratio": ours / plain,
        "plain_steps_s": plain_clock.per_step(),
        "stepscope_steps_s": ours_clock.per_step(),
        "plain_total_s": plain_total,
        "stepscope_total_s": ours_total,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else None,
        "record_bytes": sizes,
        "storage": storage,
        "run_dir": str(run_dir),
    }


DEFAULT_MAP_STEPS = 6  # record.map_steps default "0,10,20,30,40,49"


def default_storage(result, run_dir: Path, steps: int) -> dict:
    """Bytes of a 50-step run with the default records (cond pass, 5 layers every step, spatial
    maps at 6 steps, x0_hat every step), from the sizes of this real run's arrays."""
    from stepscope import records
    from stepscope.sampling.capture import SPATIAL_MAPS

    cond = {k: v for k, v in result.activation_maps.items() if ".cond." in k}
    small = {k: v for k, v in cond.items() if k.rsplit(".", 1)[1] not in SPATIAL_MAPS}
    spatial = {k: v for k, v in cond.items() if k.rsplit(".", 1)[1] in SPATIAL_MAPS}
    sizes = {}
    for name, maps in (("small", small), ("spatial", spatial)):
        path = run_dir / f"default_{name}.npz"
        records.write_activation_maps(path, maps)
        sizes[name] = path.stat().st_size / (steps * len(LAYERS))  # per layer-step
        path.unlink()
    x0_per_step = (run_dir / records.STEPS).stat().st_size / steps
    tables = sum(
        (run_dir / n).stat().st_size
        for n in (records.SCHEDULE, records.ACTIVATIONS_TABLE)
        if (run_dir / n).exists()
    )
    total = (
        50 * x0_per_step
        + 50 * len(LAYERS) * sizes["small"]
        + DEFAULT_MAP_STEPS * len(LAYERS) * sizes["spatial"]
    )
    total += 10 * tables  # the 50-step tables are ~10x this run's (5 steps, both passes)
    return {
        "x0_hat_bytes_per_step": x0_per_step,
        "norm_maps_bytes_per_layer_step": sizes["small"],
        "spatial_maps_bytes_per_layer_step": sizes["spatial"],
        "bytes_per_run_50_steps": total,
        "mb_per_run_50_steps": total / 1e6,
        "note": "video.mp4 not included (no H.264 writer on the device); a few MB at these sizes",
    }


def write_records(run_dir: Path, result) -> None:
    """The run's records as the sampling job writes them; parquet/video only where their writers are installed."""
    from stepscope import records

    run_dir.mkdir(parents=True, exist_ok=True)
    records.write_steps(
        run_dir / records.STEPS, result.x0_hats, result.final_latent, len(result.schedule) - 1
    )
    records.write_activation_maps(run_dir / records.ACTIVATIONS_NPZ, result.activation_maps)
    try:
        records.write_schedule(run_dir / records.SCHEDULE, result.schedule)
        records.write_activation_table(run_dir / records.ACTIVATIONS_TABLE, result.activation_rows)
    except ImportError as error:  # no pyarrow on the device: these tables are a few kB
        print(json.dumps({"skipped_parquet": str(error)}), flush=True)
    try:
        records.write_video(run_dir / records.VIDEO, result.frames, fps=16)
    except Exception as error:  # no imageio-ffmpeg on the device
        print(json.dumps({"skipped_video": str(error)[:200]}), flush=True)


def seed_analysis_cost(pipe, measured: dict, out: Path) -> dict:
    """Whole seed analysis (final video + a step video for every step + 5-layer token records every
    step) over one plain sampling of the same request. Fixed parts (text and image encoding, the final
    decode) are each run's total minus its steps; the 50-step ratio keeps them once."""
    from stepscope import records
    from stepscope.atomic import write_json
    from stepscope.jobs.runs import decode_run

    run_dir, steps = Path(measured["run_dir"]), measured["steps"]
    write_json(
        run_dir / records.META,
        {"settings": {"num_inference_steps": steps, "tiled": True}, "seed": 1, "fps": 16},
    )
    sync()
    started = time.perf_counter()
    decoded = decode_run(pipe, "wan2.2", run_dir=str(run_dir), steps="all", out_dir=str(out / "decoded"))
    sync()
    decode_s = time.perf_counter() - started
    tiling = json.loads((out / "decoded" / records.DECODED_SUMMARY).read_text())["tiling"]
    plain_step, ours_step, decode_step = (
        measured["plain_step_s"],
        measured["stepscope_step_s"],
        decode_s / len(decoded),
    )
    plain_fixed = measured["plain_total_s"] - steps * plain_step
    ours_fixed = measured["stepscope_total_s"] - steps * ours_step
    # steps that keep spatial maps (and may run the exact PCA) cost more: weigh them as a 50-step run has them
    ours_50 = ours_fixed + 50 * ours_step
    if measured["map_steps"] != "all":
        map_50 = len(workflow_record(50).capture.map_steps)
        intervals = measured["stepscope_steps_s"]  # interval i = step i's duration
        on_maps = [t for i, t in enumerate(intervals) if i in measured["map_steps"]]
        elsewhere = [t for i, t in enumerate(intervals) if i not in measured["map_steps"]]
        if on_maps and elsewhere:
            ours_50 = (
                ours_fixed + map_50 * statistics.mean(on_maps) + (50 - map_50) * statistics.median(elsewhere)
            )
    return {
        "resolution": measured["resolution"],
        "steps_measured": steps,
        "decode_all_steps_s": decode_s,
        "decode_s_per_step_video": decode_step,
        "decode_tiling": tiling,
        "seed_analysis_over_plain_measured": (measured["stepscope_total_s"] + decode_s)
        / measured["plain_total_s"],
        "seed_analysis_over_plain_50_steps": (ours_50 + 50 * decode_step) / (plain_fixed + 50 * plain_step),
        "decode_all_steps_over_sampling_50_steps": 50 * decode_step / ours_50,
    }


def decode_throughput(pipe, run_dir: Path, count: int = 2) -> dict:
    from stepscope.models.adapter import Prepared
    from stepscope.models.registry import get_family
    from stepscope.records import RunRecords

    run = RunRecords(run_dir)
    adapter = get_family("wan2.2")
    prepared = Prepared(
        {}, {}, {}, call_kwargs={"tiled": True, "tile_size": (30, 52), "tile_stride": (15, 26)}
    )
    steps = run.recorded_steps[:count]
    sync()
    started = time.perf_counter()
    for step in steps:
        adapter.decode(pipe, prepared, run.x0_hat(step).unsqueeze(0).to(DEVICE, torch.bfloat16))
    sync()
    seconds = (time.perf_counter() - started) / len(steps)
    return {"decode_s_per_step_video": seconds, "step_videos_per_minute": 60 / seconds}


def load_time(pipe, folder: Path) -> dict:
    """Save one expert as safetensors and load it back through diffsynth's loader (page cache warm)."""
    from diffsynth.core import ModelConfig
    from diffsynth.pipelines.wan_video import WanVideoPipeline
    from safetensors.torch import save_file

    path = folder / "high_noise_model" / "diffusion_pytorch_model.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in pipe.dit.state_dict().items()}, str(path))
    size = path.stat().st_size
    pipe.dit = pipe.dit2 = None  # make room for the loaded copy
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    sync()
    started = time.perf_counter()
    loaded = WanVideoPipeline.from_pretrained(
        torch_dtype=torch.bfloat16,
        device=DEVICE,
        model_configs=[ModelConfig(path=str(path))],
        tokenizer_config=None,
    )
    sync()
    seconds = time.perf_counter() - started
    del loaded
    path.unlink()
    return {"expert_load_s_warm_cache": seconds, "expert_bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--layers", type=int, default=40)
    parser.add_argument("--resolutions", default="480x832,1024x1024")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument(
        "--record",
        choices=("all-maps", "workflow"),
        default="all-maps",
        help="all-maps: both passes, spatial maps every step; workflow: config/config.yaml's record section",
    )
    parser.add_argument(
        "--seed-analysis",
        action="store_true",
        help="also the whole seed analysis per sample over plain sampling",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny widths on the CPU: checks the script, measures nothing"
    )
    args = parser.parse_args()
    global DEVICE
    DEVICE = "cpu" if args.smoke else "cuda"
    device_name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (smoke)"
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="stepscope-bench-"))
    started = time.perf_counter()
    pipe = build_pipeline(work / "tokenizer", args.layers, args.smoke)
    print(json.dumps({"build_s": time.perf_counter() - started, "device": device_name}), flush=True)
    if DEVICE == "cuda":
        print(json.dumps(capture_sync_check()), flush=True)
    # Warm-up (kernels, allocator) at the smallest shape.
    warm_height, warm_width = (64, 64) if args.smoke else (480, 832)
    sample(
        pipe,
        "wan2.2",
        image=Image.new("RGB", (warm_width, warm_height)),
        prompt="warm up",
        seed=0,
        num_frames=5,
        height=warm_height,
        width=warm_width,
        num_inference_steps=2,
        cfg_scale=5.0,
    )
    results = []
    for resolution in args.resolutions.split(","):
        height, width = (int(v) for v in resolution.split("x"))
        measured = run_resolution(pipe, height, width, args.frames, args.steps, work, args.record)
        print(json.dumps({k: v for k, v in measured.items() if not k.endswith("steps_s")}), flush=True)
        results.append(measured)
    extra = decode_throughput(pipe, Path(results[0]["run_dir"]))
    print(json.dumps(extra), flush=True)
    if args.seed_analysis:
        extra["seed_analysis"] = [seed_analysis_cost(pipe, r, work / r["resolution"]) for r in results]
        print(json.dumps(extra["seed_analysis"]), flush=True)
    if not args.skip_load:
        extra.update(load_time(pipe, work))
        print(json.dumps(extra), flush=True)
    common = {
        "date": datetime.date.today().isoformat(),
        "device": device_name,
        "command": "python " + " ".join(sys.argv),
        "torch": torch.__version__,
    }
    (args.out / "gpu_overhead.json").write_text(
        json.dumps(
            {
                **common,
                "ratio": max(r["ratio"] for r in results),
                "by_resolution": {
                    r["resolution"]: {k: v for k, v in r.items() if k not in ("record_bytes", "run_dir")}
                    for r in results
                },
                **extra,
            },
            indent=2,
        )
    )
    (args.out / "storage.json").write_text(
        json.dumps(
            {
                **common,
                "by_resolution": {
                    r["resolution"]: {
                        "measured_steps": r["steps"],
                        "measured_record_bytes": r["record_bytes"],
                        **r["storage"],
                    }
                    for r in results
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
