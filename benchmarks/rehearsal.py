"""GPU dress rehearsal: the Snakemake workflow itself on real-shape weights in the real layout.

    python benchmarks/rehearsal.py --weights W --loras L --out OUT [--steps 2] [--gpu-gib 80]
    python benchmarks/rehearsal.py --tiny --out OUT          # the same flow on a CPU (tiny twin)

Writes a config (a generated VBVR-format bench at 1024x1024, 81 frames; the base model at 480x832
and the VBVR-LoRA variant at 1024x1024; all steps decoded; the analysis stage; one probe), runs
`snakemake` on it with the GPU capped at `--gpu-gib` (STEPSCOPE_GPU_MEMORY_GIB), then collects
per job what meta.json, decoded.json and Snakemake's benchmark files measured into
OUT/rehearsal.json (numbers as measured; nothing is edited by hand).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def rehearsal_config(out: Path, weights: str | None, loras: str | None, steps: int, tiny: bool) -> dict:
    size, frames = (64, 9) if tiny else (1024, 81)
    model = {"family": "wan2.2", "tiny": True} if tiny else {"family": "wan2.2", "local_path": weights}
    lora = (
        {"tiny_for": "wan22", "files": ["high_noise_lora.safetensors", "low_noise_lora.safetensors"]}
        if tiny
        else {"local_path": loras, "files": ["high_noise_lora.safetensors", "low_noise_lora.safetensors"]}
    )
    small = {"height": 32, "width": 64} if tiny else {"height": 480, "width": 832}
    large = {"height": 64, "width": 64} if tiny else {"height": 1024, "width": 1024}
    lora_items = [
        {"lora": "vbvr", "file": "high_noise_lora.safetensors", "target": "high_noise", "alpha": 1.0},
        {"lora": "vbvr", "file": "low_noise_lora.safetensors", "target": "low_noise", "alpha": 1.0},
    ]
    off = {"enabled": False}
    return {
        "results": str(out / "results"),
        "resources": str(out / "resources"),
        "bench": {
            "source": "demo",
            "sample_sheet": str(REPO / "config/demo_bench_tasks.tsv"),
            "splits": ["In-Domain_50"],
            "task_globs": ["D-1_*"],
            "samples_per_task": 1,
            "demo_size": size,
            "demo_frames": frames,
        },
        "models": {"wan22": model},
        "loras": {"vbvr": lora},
        "variants": {
            "r480-base": {"model": "wan22", "steps": steps, **small},
            "r1024-vbvr": {"model": "wan22", "steps": steps, "loras": lora_items, **large},
        },
        "run_variants": ["r480-base", "r1024-vbvr"],
        "seeds": [1],
        "batch": {"inputs": 1},
        "record": {"layers": [0, 3] if tiny else [0, 10, 20, 30, 39], "capture_steps": "all", "x0_steps": "all"},
        "decode": {"steps": "all"},
        "figures": {"layers": [0], "steps": "first,last"},
        "device": {"dtype": "fp32" if tiny else "bf16", "offload": "seed", "lora_mode": "hotload"},
        "probes": {
            "variants": ["r480-base"],
            "task_globs": ["D-1_*"],
            "samples": [0],
            "noise_step": off,
            "noise_frame": {"enabled": True, "frames": [1], "steps": "all"},
            "sensitivity": off,
            "token_swap": off,
        },
    }


def _tsv(path: Path) -> dict:
    with open(path) as handle:
        row = next(csv.DictReader(handle, delimiter="\t"))
    return {"s": float(row["s"]), "max_rss_mb": float(row["max_rss"]) if row["max_rss"] not in ("", "-") else None}


def collect(out: Path) -> dict:
    """What each job measured: meta.json / decoded.json per run, Snakemake's benchmark per job."""
    results = out / "results"
    runs = {}
    for meta_path in sorted((results / "runs").rglob("meta.json")):
        meta = json.loads(meta_path.read_text())
        timings, settings = meta["timings"], meta["settings"]
        variant = meta.get("variant")
        steps = int(settings["num_inference_steps"])
        entry = {
            "height": settings["height"],
            "width": settings["width"],
            "num_frames": settings["num_frames"],
            "steps": steps,
            "load_s": timings.get("load_s"),
            "s_per_step": timings["denoise_s"] / steps,
            "final_decode_s": timings["decode_s"],
            "peak_gpu_gib": timings.get("peak_gpu_gib"),
            "loras": meta.get("loras"),
        }
        decoded = results / "decoded" / meta_path.parent.relative_to(results / "runs") / "decoded.json"
        if decoded.exists():
            summary = json.loads(decoded.read_text())
            entry["decode_s_per_step_video"] = summary["decode_s"] / len(summary["steps"])
            entry["decode_peak_gpu_gib"] = summary.get("peak_gpu_gib")
            entry["decode_all_steps_over_sampling"] = summary["decode_s"] / timings["denoise_s"]
        runs[variant] = entry
    jobs = {
        str(path.relative_to(results / "benchmarks")): _tsv(path)
        for path in sorted((results / "benchmarks").rglob("*.tsv"))
    } if (results / "benchmarks").exists() else {}
    return {"runs": runs, "jobs": jobs}


def summarize(raw: dict, family: str = "wan2.2") -> dict:
    """The issue's machine-readable summary of one rehearsal report (families not run: false)."""
    runs = raw.get("runs", {})
    by_size = {run["height"]: run for run in runs.values()}
    big, small = by_size.get(1024), by_size.get(480)
    sampled = [job for name, job in raw.get("jobs", {}).items() if name.startswith("sample/")]
    summary = {
        "ran_workflow": bool(runs),
        "snakemake_exit": raw.get("snakemake_exit"),
        "peak_gpu_gib_1024": big and big["peak_gpu_gib"],
        "s_per_step_1024": big and big["s_per_step"],
        "s_per_step_480": small and small["s_per_step"],
        "load_s": min((run["load_s"] for run in runs.values() if run.get("load_s")), default=None),
        "host_rss_gib_sample_job": max((job["max_rss_mb"] / 1024 for job in sampled), default=None),
        "decode_s_per_step_video_1024": big and big.get("decode_s_per_step_video"),
        "gpu_gib_cap": raw.get("gpu_gib_cap"),
        "runs": sorted(runs),
    }
    families = {name: {"ran_workflow": False} for name in ("wan2.2", "wan2.1", "ltx2.3")}
    families[family] = summary
    return {
        "families": families,
        "decode_all_steps_over_sampling_480p": small and small.get("decode_all_steps_over_sampling"),
        "decode_all_steps_over_sampling_1024": big and big.get("decode_all_steps_over_sampling"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights")
    parser.add_argument("--loras")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--gpu-gib", type=float, default=80.0)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--timeout", type=float, default=None, help="stop snakemake after S s, then collect")
    parser.add_argument("--tiny", action="store_true", help="the tiny twin on a CPU (checks the flow)")
    parser.add_argument("--summarize", type=Path, help="only turn a rehearsal.json into the issue's summary at --out")
    args = parser.parse_args(argv)
    if args.summarize:
        summary = summarize(json.loads(args.summarize.read_text()))
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary, indent=2))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    config = args.out / "rehearsal.yaml"
    config.write_text(yaml.safe_dump(rehearsal_config(args.out, args.weights, args.loras, args.steps, args.tiny)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "STEPSCOPE_GPU_MEMORY_GIB": str(args.gpu_gib)}
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(REPO),
        "--configfile", str(config), "--cores", str(args.cores), "--resources", "gpu=1", "--keep-going",
        "--scheduler", "greedy",
    ]
    started = time.perf_counter()
    with open(args.out / "snakemake.log", "w") as log:
        try:
            code = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    report = {
        "command": " ".join(command),
        "snakemake_exit": code,
        "wall_s": time.perf_counter() - started,
        "gpu_gib_cap": args.gpu_gib,
        **collect(args.out),
    }
    (args.out / "rehearsal.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
