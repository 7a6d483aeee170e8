"""The seed's four tools as drop-in commands (`stepscope step-visualization`, ...).

OpenSenseNova/Demystifying_Video_Reasoning (commit a20a3a7) ships tools/step_visualization.py,
tools/token_visualization.py, tools/custom_step_visualization.py and
tools/custom_token_visualization.py. Each command here takes the same flags (names, meanings,
defaults) and writes the same file tree, but computes it with stepscope's own machinery: the
lockstep sampling loop with records (jobs.sample_run), the step decoder (jobs.decode_run) and
figures drawn from the records (stepscope.plots.seed_figures). The records of each sample stay beside
its outputs in a `.stepscope/` folder (docs/records.md), so scores, probes and reports can use
them. A sample whose outputs are current (same request, same input files) is skipped without
loading the model; a failing sample is reported and the others go on; the exit status is 1 when
any sample failed. docs/seed-parity.md maps every flag and output.

One module (~550 lines) on purpose: the four tools' flags, requests and output trees are read side by
side with the seed's scripts, which is how parity is reviewed.
"""

from __future__ import annotations

import argparse
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stepscope import records
from stepscope.atomic import write_json
from stepscope.bench import FIRST_FRAME, GROUND_TRUTH, PROMPT, SPLITS
from stepscope.errors import StepScopeError
from stepscope.jobs.plan import fingerprint, input_stamps
from stepscope.models.registry import FAMILY_NAMES, get_family
from stepscope.models.weight_layouts import LTX_GEMMA_DIR, LTX_REPACKAGE_DIR
from stepscope.sampling.hooks import StepHook

SEED_REPO = "OpenSenseNova/Demystifying_Video_Reasoning"
SEED_COMMIT = "a20a3a7"
RECORDS_DIR = ".stepscope"
DONE_FILE = "seed_outputs.json"
MODELS = FAMILY_NAMES
# The seed's ./models/<repo_id> folders (diffsynth's download folder) per --model.
SEED_WEIGHTS = {
    "wan2.2": "Wan-AI/Wan2.2-I2V-A14B",
    "wan2.1": "Wan-AI/Wan2.1-I2V-14B-720P",
    "ltx2.3": LTX_REPACKAGE_DIR,
}
SEED_SOURCES = {"ltx2.3": {"text_encoder": LTX_GEMMA_DIR}}
DEFAULT_LAYERS = [0, 10, 20, 30, 39]

# The negative prompt each seed tool uses when --negative_prompt is not given, where it is not the
# family's default (the seed's step tool's): its token tool passes Wan's prompt to LTX-2.3 too, and
# its custom tools shorten LTX-2.3's.
_LTX_CUSTOM_STEP_NEGATIVE = (
    "blurry, out of focus, overexposed, underexposed, low contrast, washed out colors, excessive noise, "
    "grainy texture, poor lighting, flickering, motion blur, distorted proportions, artifacts"
)
_LTX_CUSTOM_TOKEN_NEGATIVE = (
    "blurry, out of focus, overexposed, underexposed, low contrast, washed out colors, excessive noise, "
    "grainy texture, poor lighting"
)


def _wan_negative() -> str:
    from stepscope.models.wan import WAN_NEGATIVE_PROMPT

    return WAN_NEGATIVE_PROMPT


NEGATIVE_OVERRIDES: dict[tuple[str, str], Callable[[], str]] = {
    ("token-visualization", "ltx2.3"): _wan_negative,
    ("custom-step-visualization", "ltx2.3"): lambda: _LTX_CUSTOM_STEP_NEGATIVE,
    ("custom-token-visualization", "ltx2.3"): lambda: _LTX_CUSTOM_TOKEN_NEGATIVE,
}


@dataclass(frozen=True)
class SeedTool:
    """One seed tool: its script, whether it walks the bench, whether it draws token figures."""

    script: str
    bench: bool
    token: bool
    help: str


SEED_TOOLS = {
    "step-visualization": SeedTool(
        "tools/step_visualization.py", True, False, "the seed's step visualization over VBVR-Bench"
    ),
    "token-visualization": SeedTool(
        "tools/token_visualization.py", True, True, "the seed's token feature maps over VBVR-Bench"
    ),
    "custom-step-visualization": SeedTool(
        "tools/custom_step_visualization.py",
        False,
        False,
        "the seed's step visualization of one image + prompt",
    ),
    "custom-token-visualization": SeedTool(
        "tools/custom_token_visualization.py",
        False,
        True,
        "the seed's token feature maps of one image + prompt",
    ),
}


# ----- command line ----------------------------------------------------------------------------


def add_seed_arguments(parser: argparse.ArgumentParser, tool: SeedTool) -> None:
    """The seed tool's flags (same names, types, defaults), then stepscope's own few."""
    parser.add_argument("--model", type=str, required=True, choices=list(MODELS))
    if not tool.bench:
        parser.add_argument("--image", type=str, required=True, help="Path to input image")
        parser.add_argument("--prompt", type=str, required=True, help="Text prompt for generation")
        parser.add_argument("--output_dir", type=str, required=True)
        parser.add_argument("--num_frames", type=int, default=81)
    lora = parser.add_argument_group("LoRA (optional)")
    lora.add_argument("--lora_path", type=str, default=None, help="LoRA path (wan2.1 / ltx2.3)")
    lora.add_argument("--high_noise_lora_path", type=str, default=None, help="High-noise DiT LoRA (wan2.2)")
    lora.add_argument("--low_noise_lora_path", type=str, default=None, help="Low-noise DiT LoRA (wan2.2)")
    lora.add_argument("--lora_alpha", type=float, default=1.0)
    if tool.bench:
        parser.add_argument(
            "--eval_root", type=str, default="./data/VBVR-Bench", help="Root of VBVR-Bench data"
        )
        parser.add_argument("--output_root", type=str, required=True)
        parser.add_argument("--max_samples", type=int, default=None)
    if tool.token:
        parser.add_argument("--layers", type=int, nargs="+", default=list(DEFAULT_LAYERS))
        parser.add_argument("--viz_steps", type=str, default="all", help="'all' or ranges like '0-19,45-49'")
    else:
        parser.add_argument("--vis_steps", type=str, default="all", help="'all' or ranges like '0-19,45-49'")
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fps", type=int, default=16)
    parser.add_argument("--negative_prompt", type=str, default=None)
    if tool.token:
        parser.add_argument("--save_step_videos", action="store_true")
    else:
        parser.add_argument("--save_noise_schedule", action="store_true")
    ours = parser.add_argument_group("stepscope (not in the seed tool)")
    ours.add_argument(
        "--weights",
        type=str,
        default=None,
        help="weights folder (default: the seed's ./models/<repo id>, or $DIFFSYNTH_MODEL_BASE_PATH/<repo id>)",
    )
    ours.add_argument(
        "--text_encoder",
        type=str,
        default=None,
        help="ltx2.3: the Gemma-3 folder (default: the seed's ./models/google/...)",
    )
    ours.add_argument("--device", type=str, default=None, help="default: cuda if available, else cpu")
    ours.add_argument("--dtype", type=str, default=None, choices=["bf16", "fp16", "fp32"])
    ours.add_argument("--offload", type=str, default="seed", choices=["seed", "none", "cpu"])


def add_seed_commands(commands) -> None:
    for name, tool in SEED_TOOLS.items():
        sub = commands.add_parser(
            name,
            help=f"{tool.help} (drop-in for the seed's {tool.script})",
            description=f"Drop-in for the seed's {tool.script} ({SEED_REPO}@{SEED_COMMIT}): its flags, "
            "its output tree, computed by stepscope; records in .stepscope/ beside the outputs "
            "(docs/seed-parity.md).",
        )
        add_seed_arguments(sub, tool)


# ----- what to run ------------------------------------------------------------------------------


def model_folders(args: argparse.Namespace) -> tuple[str, dict[str, str] | None]:
    """The weights folder and the family's other repos: --weights / --text_encoder, else the seed's
    ./models/<repo_id> folders (diffsynth's DIFFSYNTH_MODEL_BASE_PATH when set)."""
    base = Path(os.environ.get("DIFFSYNTH_MODEL_BASE_PATH", "./models"))
    weights = args.weights or str(base / SEED_WEIGHTS[args.model])
    sources = None
    if args.model in SEED_SOURCES:
        default = {name: str(base / repo) for name, repo in SEED_SOURCES[args.model].items()}
        if args.weights and not args.text_encoder:
            default = {}  # inside --weights, as the loader looks by default
        if args.text_encoder:
            default = {"text_encoder": args.text_encoder}
        sources = default or None
    return weights, sources


def lora_list(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The LoRAs the seed tool loads for this model (the others it ignores, and so do we, saying so)."""
    alpha = float(args.lora_alpha)
    if args.model == "wan2.2":
        chosen = [
            {"path": args.high_noise_lora_path, "target": "high_noise", "alpha": alpha},
            {"path": args.low_noise_lora_path, "target": "low_noise", "alpha": alpha},
        ]
        ignored = ("--lora_path", args.lora_path)
    else:
        chosen = [{"path": args.lora_path, "target": "dit", "alpha": alpha}]
        ignored = (
            "--high_noise_lora_path/--low_noise_lora_path",
            args.high_noise_lora_path or args.low_noise_lora_path,
        )
    if ignored[1]:
        print(f"Note: {ignored[0]} is not used by {args.model} (the seed tool ignores it too)", flush=True)
    return [item for item in chosen if item["path"]]


def negative_prompt(command: str, args: argparse.Namespace) -> str | None:
    """--negative_prompt, else the seed tool's default (None: the family's default)."""
    if args.negative_prompt:
        return args.negative_prompt
    override = NEGATIVE_OVERRIDES.get((command, args.model))
    return override() if override else None


@dataclass
class Job:
    """One input of a seed command: where its seed outputs go and where its records go."""

    name: str
    source: dict[str, Any]
    out: dict[str, Path]  # video, steps (folder), schedule, figures (folder), records (folder)
    inputs: list[str]


def bench_jobs(tool: SeedTool, args: argparse.Namespace) -> list[Job]:
    """The samples the seed tool would visit: both splits, sorted tasks, sorted samples[:max_samples]."""
    jobs = []
    for split in SPLITS:
        split_path = Path(args.eval_root) / split
        if not split_path.is_dir():
            print(f"Split directory {split_path} does not exist, skipping", flush=True)
            continue
        for task in sorted(d.name for d in split_path.iterdir() if d.is_dir()):
            task_path = split_path / task
            samples = sorted(d.name for d in task_path.iterdir() if d.is_dir())
            if args.max_samples:
                samples = samples[: args.max_samples]
            task_out = Path(args.output_root) / split / task
            for sample in samples:
                sample_path = task_path / sample
                if tool.token:
                    folder = task_out / sample
                    out = {
                        "video": folder / "generated.mp4",
                        "step_videos": folder / "step_videos",
                        "figures": folder,
                        "records": folder / RECORDS_DIR,
                    }
                else:
                    out = {
                        "video": task_out / f"{sample}.mp4",
                        "steps": task_out / f"{sample}_steps",
                        "schedule": task_out / f"{sample}_noise_schedule.json",
                        "records": task_out / RECORDS_DIR / sample,
                    }
                jobs.append(
                    Job(
                        name=f"{split}/{task}/{sample}",
                        source={"sample_dir": str(sample_path)},
                        out=out,
                        inputs=[str(sample_path / name) for name in (FIRST_FRAME, GROUND_TRUTH, PROMPT)],
                    )
                )
    return jobs


def custom_job(tool: SeedTool, args: argparse.Namespace) -> Job:
    folder = Path(args.output_dir)
    if tool.token:
        out = {"video": folder / "generated.mp4", "step_videos": folder / "step_videos", "figures": folder}
    else:
        out = {
            "video": folder / "generated.mp4",
            "steps": folder / "steps",
            "schedule": folder / "noise_schedule.json",
        }
    out["records"] = folder / RECORDS_DIR
    return Job(
        name=str(folder),
        source={"image": args.image, "prompt": args.prompt},
        out=out,
        inputs=[args.image],
    )


class StepProgress(StepHook):
    """Prints one line per denoising step of the sample being run."""

    def __init__(self, name: str, total: int) -> None:
        self.name, self.total, self.started = name, total, time.perf_counter()

    def on_latents(self, step: int, sigma: float, latents: list[Any]) -> None:
        print(
            f"    {self.name}: step {step + 1}/{self.total} (sigma {sigma:.4f}, {time.perf_counter() - self.started:.1f} s)",
            flush=True,
        )
        return None


def steps_of(spec: str, num_steps: int) -> list[int]:
    """The steps a seed step spec selects; like the seed, steps past the schedule select nothing."""
    from stepscope.stepspec import is_relative, parse_steps

    parsed = parse_steps(spec, num_steps if is_relative(spec) else None)
    return list(range(num_steps)) if parsed is None else sorted(s for s in parsed if s < num_steps)


def write_noise_schedule(run_dir: Path, target: Path) -> None:
    """The seed's <sample>_noise_schedule.json: step, timestep (4 decimals), sigma (6 decimals) of
    every step, from the schedule the run really used (the seed re-sets the scheduler with shift 5.0,
    the Wan default, so the values agree)."""
    schedule = records.RunRecords(run_dir).schedule
    rows = [
        {
            "step": int(row.step),
            "timestep": round(float(row.timestep), 4),
            "sigma": round(float(row.sigma), 6),
        }
        for row in schedule.itertuples()
    ]
    write_json(target, rows)


@dataclass
class Request:
    """What one seed command asks of every input: model, sampling settings, what to record and show."""

    command: str
    tool: SeedTool
    args: argparse.Namespace
    weights: str
    sources: dict[str, str] | None
    loras: list[dict[str, Any]]
    settings: dict[str, Any]
    layers: list[int]  # token tools: the layers to capture (the DiT's missing ones are dropped)
    shown_steps: list[int]  # --vis_steps / --viz_steps
    decoded_steps: list[int]  # steps whose x0-hat becomes a step video

    @classmethod
    def from_args(cls, command: str, args: argparse.Namespace) -> Request:
        tool = SEED_TOOLS[command]
        weights, sources = model_folders(args)
        steps = int(args.num_inference_steps)
        shown = steps_of(args.viz_steps if tool.token else args.vis_steps, steps)
        if tool.token:
            decoded = steps_of("all", steps) if args.save_step_videos else []
        else:
            decoded = shown
        settings = {
            "steps": steps,
            "fps": int(args.fps),
            "negative_prompt": negative_prompt(command, args),
            "num_frames": None if tool.bench else int(args.num_frames),
        }
        layers = sorted(set(args.layers)) if tool.token else []
        return cls(command, tool, args, weights, sources, lora_list(args), settings, layers, shown, decoded)

    @property
    def fingerprint(self) -> str:
        return fingerprint(
            {
                "family": self.args.model,
                "weights": self.weights,
                "sources": self.sources,
                "loras": self.loras,
                "settings": self.settings,
                "seed": int(self.args.seed),
                "layers": self.layers,
                "shown_steps": self.shown_steps,
                "decoded_steps": self.decoded_steps,
            }
        )

    def load_pipeline(self):
        from stepscope.jobs.runs import load_job_pipeline

        device = {"device": self.args.device, "dtype": self.args.dtype, "offload": self.args.offload}
        return load_job_pipeline(self.args.model, self.weights, self.loras, device, self.sources)


def outputs_current(job: Job, fingerprint_: str, stamps: dict[str, list[int]]) -> bool:
    from stepscope.jobs.batch_common import read_json

    done = read_json(job.out["records"] / DONE_FILE)
    return bool(
        done
        and done.get("fingerprint") == fingerprint_
        and done.get("input_stamps") == stamps
        and all(Path(path).exists() for path in done.get("outputs", []))
    )


def run_tool(command: str, args: argparse.Namespace) -> int:
    """Run a seed tool's work with stepscope's machinery; 0 when every input succeeded, else 1."""
    from stepscope.jobs.batch_common import LazyLoader, _release_accelerator_memory

    request = Request.from_args(command, args)
    jobs = bench_jobs(request.tool, args) if request.tool.bench else [custom_job(request.tool, args)]
    if not request.tool.bench:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    print("=" * 60)
    print(f"stepscope {command} (drop-in for the seed's {request.tool.script})")
    print(f"  model:   {args.model}  weights: {request.weights}  sources: {request.sources}")
    print(f"  inputs:  {len(jobs)}  steps: {request.settings['steps']}  shown: {request.shown_steps}")
    if request.layers:
        print(f"  layers:  {request.layers}")
    print("=" * 60, flush=True)

    loader = LazyLoader(request.load_pipeline)
    failures: list[tuple[str, str]] = []
    for index, job in enumerate(jobs, 1):
        stamps = input_stamps(job.inputs)
        fingerprint_ = fingerprint([request.fingerprint, job.source])  # a custom prompt is part of it
        if outputs_current(job, fingerprint_, stamps):
            print(f"[{index}/{len(jobs)}] {job.name}: up to date, skipped", flush=True)
            continue
        print(f"[{index}/{len(jobs)}] {job.name}", flush=True)
        started = time.perf_counter()
        try:
            (job.out["records"] / DONE_FILE).unlink(missing_ok=True)
            outputs = run_job(request, job, loader, fingerprint_, stamps)
            write_json(
                job.out["records"] / DONE_FILE,
                {
                    "fingerprint": fingerprint_,
                    "input_stamps": stamps,
                    "outputs": [str(path) for path in outputs],
                    "command": command,
                    "seed_tool": f"{SEED_REPO}@{SEED_COMMIT}:{request.tool.script}",
                    "seconds": time.perf_counter() - started,
                },
            )
            print(f"    Saved: {job.out['video']} ({time.perf_counter() - started:.1f} s)", flush=True)
        except Exception as error:  # one input's failure must not cost the others their results
            failures.append((job.name, f"{type(error).__name__}: {error}"))
            print(f"  Error on {job.name}: {error}", flush=True)
            traceback.print_exc()
            _release_accelerator_memory()
    if failures:
        print(f"\n{len(failures)} of {len(jobs)} inputs failed:", flush=True)
        for name, error in failures:
            print(f"  {name}: {error}", flush=True)
        return 1
    print("\nAll done!", flush=True)
    return 0


def usable_layers(pipe, family: str, layers: list[int]) -> list[int]:
    """The seed hooks only the layers its DiT has (`lid < len(blocks)`) and skips the others."""
    adapter = get_family(family)
    count = min(len(getattr(dit, adapter.block_list_name)) for dit in adapter.dit_modules(pipe).values())
    kept = [layer for layer in layers if layer < count]
    if kept != layers:
        skipped = sorted(set(layers) - set(kept))
        print(
            f"    layers {skipped} skipped: the DiT has {count} blocks (the seed skips them too)", flush=True
        )
    return kept


def run_job(
    request: Request, job: Job, loader, fingerprint_: str, stamps: dict[str, list[int]]
) -> list[Path]:
    """One input: sample (unless its records are current), decode the wanted steps (unless current),
    then link the videos and draw the figures under the seed's names; returns the seed outputs."""
    from stepscope.jobs.batch_common import link_file, read_json
    from stepscope.jobs.runs import decode_run, resolve_input, sample_run
    from stepscope.models.loading import loaded_model_meta
    from stepscope.plots.seed_figures import render_seed_feature_maps

    args, tool = request.args, request.tool
    run_dir, decoded_dir = job.out["records"] / "run", job.out["records"] / "decoded"
    meta = read_json(run_dir / records.META)
    current = (
        meta
        and records.is_complete(run_dir)
        and meta.get("fingerprint") == fingerprint_
        and meta.get("input_stamps") == stamps
    )
    if not current:
        info = resolve_input(job.source)  # a bad input fails before the model loads
        pipe = loader.get()
        record = {
            "layers": usable_layers(pipe, args.model, request.layers),
            "capture_steps": "all",
            "map_steps": request.shown_steps,
            "x0_steps": request.decoded_steps,
            "passes": ["cond"],
            "top_k": 6,
        }
        sample_run(
            pipe,
            args.model,
            info=info,
            settings=request.settings,
            record=record,
            seeds=[int(args.seed)],
            out_dir=str(run_dir),
            progress=StepProgress(job.name, request.settings["steps"]),
            meta={
                "variant": f"seed-{args.model}",
                "run_id": os.urandom(8).hex(),
                "fingerprint": fingerprint_,
                "input_stamps": stamps,
                **loaded_model_meta(pipe, None, loader.load_s),
                "seed_tool": tool.script,
            },
        )
    link_file(run_dir / records.VIDEO, job.out["video"])
    outputs = [job.out["video"]]
    if request.decoded_steps:
        run_id = read_json(run_dir / records.META).get("run_id")
        summary = read_json(decoded_dir / records.DECODED_SUMMARY)
        if not (
            summary and summary.get("run_id") == run_id and summary.get("steps") == request.decoded_steps
        ):
            decode_run(
                loader.get(),
                args.model,
                run_dir=str(run_dir),
                steps=request.decoded_steps,
                out_dir=str(decoded_dir),
                tiled=True,  # the seed decodes its step videos with VAE tiles
            )
        folder, digits = (job.out["step_videos"], 4) if tool.token else (job.out["steps"], 3)
        for step in request.decoded_steps:
            target = folder / f"step_{step:0{digits}d}.mp4"
            link_file(decoded_dir / "steps" / f"step_{step:04d}.mp4", target)
            outputs.append(target)
    if not tool.token and args.save_noise_schedule and args.model != "ltx2.3":  # the seed skips LTX
        write_noise_schedule(run_dir, job.out["schedule"])
        outputs.append(job.out["schedule"])
    if tool.token:
        captured = records.RunRecords(run_dir).layers if request.layers else []
        layers = [layer for layer in args.layers if layer in captured]  # the seed's order
        outputs += render_seed_feature_maps(
            run_dir, job.out["figures"], layers=layers, viz_steps=request.shown_steps
        )
    return outputs


def run_seed_command(args: argparse.Namespace) -> int:
    if args.command not in SEED_TOOLS:
        raise StepScopeError(f"not a seed command: {args.command}")
    return run_tool(args.command, args)
