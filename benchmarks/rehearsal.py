"""GPU dress rehearsal: the Snakemake workflow itself on real-shape weights in the real layout.

    python benchmarks/rehearsal.py --weights W --loras L --out OUT [--steps 2] [--gpu-gib 80]
    python benchmarks/rehearsal.py --tiny --out OUT          # the same flow on a CPU (tiny twin)
    python benchmarks/rehearsal.py --summarize RAW... --out benchmarks/results/rehearsal.json

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
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


# Per family: the LoRA files and their targets (diffsynth's key format, as the VBVR repos ship).
LORA_TARGETS = {
    "wan2.2": {"high_noise_lora.safetensors": "high_noise", "low_noise_lora.safetensors": "low_noise"},
    "wan2.1": {"lora.safetensors": "dit"},
    "ltx2.3": {"lora.safetensors": "dit"},
}
VARIANTS = ("r480-base", "r1024-vbvr")


def rehearsal_config(
    out: Path,
    weights: str | None,
    loras: str | None,
    steps: int,
    tiny: bool,
    family: str = "wan2.2",
    variants: tuple[str, ...] = VARIANTS,
    probe: bool = True,
) -> dict:
    size, frames = (64, 9) if tiny else (1024, 81)
    model = {"family": family, "tiny": True} if tiny else {"family": family, "local_path": weights}
    files = list(LORA_TARGETS[family])
    lora = {"tiny_for": "model", "files": files} if tiny else {"local_path": loras, "files": files}
    # tiny: LTX's VAE needs >= 2 latent pixels (32 px each) per side
    small = (
        ({"height": 64, "width": 96} if family == "ltx2.3" else {"height": 32, "width": 64})
        if tiny
        else {"height": 480, "width": 832}
    )
    large = {"height": 64, "width": 64} if tiny else {"height": 1024, "width": 1024}
    lora_items = [
        {"lora": "vbvr", "file": file, "target": target, "alpha": 1.0}
        for file, target in LORA_TARGETS[family].items()
    ]
    off = {"enabled": False}
    all_variants = {
        "r480-base": {"model": "model", "steps": steps, **small},
        "r1024-vbvr": {"model": "model", "steps": steps, "loras": lora_items, **large},
    }
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
        "models": {"model": model},
        "loras": {"vbvr": lora},
        "variants": all_variants,
        "run_variants": list(variants),
        "seeds": [1],
        "batch": {"inputs": 1},
        "record": {
            "layers": [0, 3] if tiny else [0, 10, 20, 30, 39],
            "capture_steps": "all",
            "x0_steps": "all",
        },
        "decode": {"steps": "all"},
        "figures": {"layers": [0], "steps": "first,last"},
        "device": {"dtype": "fp32" if tiny else "bf16", "offload": "seed", "lora_mode": "hotload"},
        "probes": {
            "variants": [variants[0]],
            "task_globs": ["D-1_*"],
            "samples": [0],
            "noise_step": off,
            "noise_frame": {"enabled": probe, "frames": [1], "steps": "all"},
            "sensitivity": off,
            "token_swap": off,
        },
    }


def _tsv(path: Path) -> dict:
    with open(path) as handle:
        row = next(csv.DictReader(handle, delimiter="\t"))
    return {
        "s": float(row["s"]),
        "max_rss_mb": float(row["max_rss"]) if row["max_rss"] not in ("", "-") else None,
    }


LOADED = re.compile(r"model loaded in ([0-9.]+) s")


def job_loads(out: Path, cold_start: bool) -> list[dict]:
    """Each GPU job's model load, in the order Snakemake started the jobs (their `log:` lines in
    OUT/snakemake.log; GPU jobs run one at a time): the job log's "model loaded in" line, else (a
    probe job) its runs' meta.json. Read from OUT/results/logs, so a copied-back folder works too.
    The first is cold when the page cache was dropped before the workflow (`cold_start`), later
    ones find the files in the page cache (warm); a job stopped after loading still counts."""
    logs, loads = out / "results" / "logs", []
    started = [
        line.split("log: ", 1)[1].strip()
        for line in (out / "snakemake.log").read_text().splitlines()
        if line.strip().startswith("log: ") and "/results/logs/" in line
    ]
    for name in dict.fromkeys(started):  # a job's log line appears once, but stay safe
        relative = Path(name.split("/results/logs/", 1)[1])
        log = logs / relative
        found = LOADED.search(log.read_text(errors="replace")) if log.is_file() else None
        load = float(found.group(1)) if found else None
        if load is None:
            meta = next(iter(sorted((out / "results" / relative.with_suffix("")).rglob("meta.json"))), None)
            load = meta and json.loads(meta.read_text()).get("timings", {}).get("load_s")
        if load is not None:
            loads.append({"job": str(relative.with_suffix("")), "load_s": load})
    for index, load in enumerate(loads):
        load["cache"] = "cold" if index == 0 and cold_start else "warm"
    return loads


def collect(out: Path, cold_start: bool = False) -> dict:
    """What each job measured: meta.json / decoded.json per run, Snakemake's benchmark per job, and
    each GPU job's model load in the order the jobs ran (the first is cold when the page cache was
    dropped before the workflow started: `cold_start`)."""
    results = out / "results"
    runs = {}
    metas = sorted((results / "runs").rglob("meta.json")) + sorted(
        (results / "probes").rglob("clean/meta.json")
    )
    for meta_path in metas:
        meta = json.loads(meta_path.read_text())
        timings, settings = meta["timings"], meta["settings"]
        # a probe's unperturbed run is a plain recorded run of the variant: its s/step counts too
        variant = f"probe:{meta.get('variant')}" if meta.get("probe") else meta.get("variant")
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
        decoded = (
            results / "decoded" / meta_path.parent.relative_to(results).relative_to("runs") / "decoded.json"
            if meta_path.is_relative_to(results / "runs")
            else None
        )
        if decoded and decoded.exists():
            summary = json.loads(decoded.read_text())
            entry["decode_s_per_step_video"] = summary["decode_s"] / len(summary["steps"])
            entry["decode_peak_gpu_gib"] = summary.get("peak_gpu_gib")
            entry["decode_all_steps_over_sampling"] = summary["decode_s"] / timings["denoise_s"]
        runs[variant] = entry
    loads = job_loads(out, cold_start)
    jobs = (
        {
            str(path.relative_to(results / "benchmarks")): _tsv(path)
            for path in sorted((results / "benchmarks").rglob("*.tsv"))
        }
        if (results / "benchmarks").exists()
        else {}
    )
    return {"runs": runs, "jobs": jobs, "loads": loads}


def family_summary(raws: list[dict]) -> dict:
    """One family's numbers from its rehearsal reports (a later report's run replaces an earlier one
    of the same variant). Loads in the order the jobs wrote them: the first after dropping the page
    cache is cold, later ones find the files in the page cache (warm)."""
    runs, jobs, exits = {}, {}, []
    for raw in raws:
        runs.update(raw.get("runs", {}))
        jobs.update(raw.get("jobs", {}))
        exits.append(raw.get("snakemake_exit"))
    # a variant's own run, else a probe's unperturbed run of it
    big, small = (runs.get(name) or runs.get(f"probe:{name}") for name in ("r1024-vbvr", "r480-base"))
    sampled = [job for name, job in jobs.items() if name.startswith(("sample/", "probe"))]
    loads = [
        load for raw in raws for load in raw.get("loads", []) if load["job"].startswith(("sample/", "probe"))
    ]
    return {
        "ran_workflow": bool(runs),
        "snakemake_exit": exits,
        "peak_gpu_gib_1024": big and big["peak_gpu_gib"],
        "peak_gpu_gib_480": small and small["peak_gpu_gib"],
        "s_per_step_1024": big and big["s_per_step"],
        "s_per_step_480": small and small["s_per_step"],
        "load_s": min((run["load_s"] for run in runs.values() if run.get("load_s")), default=None),
        "load_s_cold": next((load["load_s"] for load in loads if load["cache"] == "cold"), None),
        "load_s_warm": min((load["load_s"] for load in loads if load["cache"] == "warm"), default=None),
        "host_rss_gib_sample_job": max(
            (job["max_rss_mb"] / 1024 for job in sampled if job["max_rss_mb"]), default=None
        ),
        "decode_s_per_step_video_480": small and small.get("decode_s_per_step_video"),
        "decode_s_per_step_video_1024": big and big.get("decode_s_per_step_video"),
        "decode_all_steps_over_sampling_480p": small and small.get("decode_all_steps_over_sampling"),
        "decode_all_steps_over_sampling_1024": big and big.get("decode_all_steps_over_sampling"),
        "analysis_s": max(
            (job["s"] for name, job in jobs.items() if name.startswith("analysis/")), default=None
        ),
        "gpu_gib_cap": next((raw.get("gpu_gib_cap") for raw in raws), None),
        "runs": sorted(runs),
    }


def seed_analysis_summary(overhead: dict) -> dict:
    """The whole-seed-analysis numbers of a `gpu_overhead.py --record workflow --seed-analysis` report
    (A14B shapes, our loop and the workflow's decode_run in one process, not a Snakemake run)."""
    run = overhead["seed_analysis"][0]
    measured = overhead["by_resolution"][run["resolution"]]
    return {
        "source": overhead["command"],
        "device": overhead["device"],
        "date": overhead["date"],
        "resolution": run["resolution"],
        "steps_measured": run["steps_measured"],
        "plain_s_per_step": measured["plain_step_s"],
        "recorded_s_per_step": measured["stepscope_step_s"],
        "recording_overhead": measured["ratio"],
        "decode_s_per_step_video": run["decode_s_per_step_video"],
        "decode_tiling": run["decode_tiling"],
        "decode_all_steps_over_sampling_50_steps": run["decode_all_steps_over_sampling_50_steps"],
        "seed_analysis_over_plain_measured": run["seed_analysis_over_plain_measured"],
        "seed_analysis_over_plain_50_steps": run["seed_analysis_over_plain_50_steps"],
    }


def summarize(raws: list[dict], overhead: dict | None = None) -> dict:
    """The issue's machine-readable summary of the rehearsal reports, given oldest first (families
    not run: false). The top-level decode ratios are the latest report's that measured one; where no
    workflow run measured the 480p one, the seed-analysis benchmark's (`overhead`, named in `sources`)."""
    families = {name: {"ran_workflow": False} for name in ("wan2.2", "wan2.1", "ltx2.3")}
    for family in families:
        mine = [raw for raw in raws if raw.get("family", "wan2.2") == family]
        if mine:
            families[family] = family_summary(mine)
    # the issue's decode goals are the Wan VAE's (LTX-2.3's own ratios are in its family entry)
    each = [family_summary([raw]) for raw in raws if raw.get("family", "wan2.2").startswith("wan")]

    def latest(key):
        return next((entry[key] for entry in reversed(each) if entry.get(key) is not None), None)

    summary = {
        "families": families,
        "decode_all_steps_over_sampling_480p": latest("decode_all_steps_over_sampling_480p"),
        "decode_all_steps_over_sampling_1024": latest("decode_all_steps_over_sampling_1024"),
        "sources": {
            "decode_all_steps_over_sampling_1024": "workflow: the latest Wan run (decode_batch job / sample_batch denoising)"
        },
    }
    if overhead is not None:
        seed = seed_analysis_summary(overhead)
        summary["seed_analysis"] = seed
        if summary["decode_all_steps_over_sampling_480p"] is None:
            summary["decode_all_steps_over_sampling_480p"] = seed["decode_all_steps_over_sampling_50_steps"]
            summary["sources"]["decode_all_steps_over_sampling_480p"] = seed["source"]
    return summary


def drop_page_cache() -> bool:
    """Write back and drop the page cache (needs root), so that the first job's load reads the disk."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as error:
        print(f"page cache not dropped ({error}): the first load is not a cold one", file=sys.stderr)
        return False
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="wan2.2", choices=sorted(LORA_TARGETS))
    parser.add_argument("--weights")
    parser.add_argument("--loras")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--no-probe", action="store_true", help="leave the noise_frame probe job out")
    parser.add_argument("--gpu-gib", type=float, default=80.0)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--timeout", type=float, default=None, help="stop snakemake after S s, then collect")
    parser.add_argument("--tiny", action="store_true", help="the tiny twin on a CPU (checks the flow)")
    parser.add_argument(
        "--drop-caches", action="store_true", help="drop the page cache first (root): a cold first load"
    )
    parser.add_argument(
        "--summarize",
        type=Path,
        nargs="+",
        help="only turn rehearsal reports (raw JSON) into the issue's summary at --out",
    )
    parser.add_argument(
        "--overhead",
        type=Path,
        help="with --summarize: a gpu_overhead.py --seed-analysis report (the whole seed analysis)",
    )
    parser.add_argument(
        "--relog",
        type=Path,
        help="only redo a raw report's (--out) loads from a copied-back folder's job logs",
    )
    args = parser.parse_args(argv)
    if args.relog:
        raw = json.loads(args.out.read_text())
        # logs without a load line (a probe job's: read from its runs, gone here) keep the collected loads
        raw["loads"] = job_loads(args.relog, bool(raw.get("page_cache_dropped"))) or raw.get("loads", [])
        args.out.write_text(json.dumps(raw, indent=2))
        print(json.dumps(raw["loads"], indent=2))
        return 0
    if args.summarize:
        overhead = json.loads(args.overhead.read_text()) if args.overhead else None
        summary = summarize([json.loads(path.read_text()) for path in args.summarize], overhead)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary, indent=2))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    config = args.out / "rehearsal.yaml"
    config.write_text(
        yaml.safe_dump(
            rehearsal_config(
                args.out,
                args.weights,
                args.loras,
                args.steps,
                args.tiny,
                args.family,
                tuple(args.variants),
                not args.no_probe,
            )
        )
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "STEPSCOPE_GPU_MEMORY_GIB": str(args.gpu_gib)}
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(REPO),
        "--configfile",
        str(config),
        "--cores",
        str(args.cores),
        "--resources",
        "gpu=1",
        "--keep-going",
        "--scheduler",
        "greedy",
    ]
    cold = drop_page_cache() if args.drop_caches else False
    started = time.perf_counter()
    with open(args.out / "snakemake.log", "w") as log:
        try:
            code = subprocess.run(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout
            ).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    report = {
        "family": args.family,
        "command": " ".join(command),
        "snakemake_exit": code,
        "wall_s": time.perf_counter() - started,
        "gpu_gib_cap": args.gpu_gib,
        "page_cache_dropped": cold,
        **collect(args.out, cold),
    }
    (args.out / "rehearsal.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
