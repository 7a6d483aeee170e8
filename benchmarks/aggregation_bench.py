"""Benchmark: seconds per run and peak memory of the CPU figure and scoring work.

Not a test. Writes one synthetic run at demo size (`stepscope.testing.synthetic.write_synthetic_run`)
and a synthetic bench sample (a moving object, `stepscope.bench.generate_demo_bench`, its first
sample), then times, `--repeats` times each and each in a fresh Python process (so peak memory
is per job, like a Snakemake rule):

  (a) figures: `stepscope.plots.figures.render_run_figures(run_dir, out)`       (one run's figures)
  (b) scoring: `stepscope.jobs.analysis.score_run_job(...)` on the final video (one run's scores)
  (c) batch: `stepscope.jobs.batches.run_analysis_batch(...)` over `--batch-runs` runs (what one
      `analysis_batch` job does: figures + scores of each run, one process, one set of imports)

`seconds_per_run` is the median time of the call itself; `process_seconds` adds the interpreter
start and imports (what a Snakemake job pays on top); `peak_rss_mb` is the child's getrusage
high-water mark. A "paper-size" run (token grid 21 x 30 x 52 of Wan at 480x832 with 81 frames,
50 steps, 5 layers; channel width reduced to --paper-dim to keep the synthetic writer within
~2 GB of RAM) is measured the same way, once per job kind by default.

    .venv/bin/python benchmarks/aggregation_bench.py
    .venv/bin/python benchmarks/aggregation_bench.py --repeats 1 --out /tmp/fig.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Demo: the CPU demo pipeline (64x64 video, 9 frames -> 3 latent frames of 4x4 tokens, 6 steps,
# tiny 4-layer Wan2.2-like experts of width 64). Paper: Wan2.2 at 480x832, 81 frames.
DEMO = dict(
    layers=[0, 1, 2, 3], steps=6, frames=3, height=4, width=4, dim=64, expert_switch=3, video_frames=9, video_size=64,
)  # fmt: skip
PAPER = dict(
    layers=[0, 10, 20, 30, 39], steps=50, frames=21, height=30, width=52, dim=256, latent_channels=16,
    expert_switch=21, video_frames=81, video_size=128,
)  # fmt: skip
LABELS = {
    "variant": "synthetic-wan2.2",
    "split": "In-Domain_50",
    "task": "demo",
    "sample": "00000",
    "run": "seed1",
}

# Child: run one job, print {"seconds", "maxrss_kb"} as the last stdout line.
CHILD = """
import json, resource, sys, time
kind, run_dir, sample_dir, out, labels = sys.argv[1:6]
t0 = time.perf_counter()
if kind == "figures":
    from stepscope.plots.figures import render_run_figures
    n = len(render_run_figures(run_dir, out))
elif kind == "batch":
    from stepscope.jobs.batches import run_analysis_batch
    members = json.loads(labels)
    run_analysis_batch(
        layers=None, steps="all", members=members, divergences=[], receipt=out + "/b0000.r0.json",
        variant=members[0]["labels"]["variant"], report_figures=out + "/report/figures",
        report_sheets=out + "/report/sheets",
    )
    n = len(members)
else:
    from stepscope.jobs.analysis import score_run_job
    score_run_job(run_dir=run_dir, decoded_summary=None, sample_dir=sample_dir, labels=json.loads(labels), out=out)
    n = 1
seconds = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "maxrss_kb": rss, "outputs": n}))
"""


def device() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {model} ({os.cpu_count()} cores visible, 1 used per job), {platform.system()} {platform.release()}"


def write_run(run_dir: Path, shape: dict) -> tuple[float, float]:
    """Write a synthetic run in a child; return (seconds, peak RSS MB of the writer)."""
    code = (
        "import sys, json, resource; from stepscope.testing.synthetic import write_synthetic_run; "
        "write_synthetic_run(sys.argv[1], **json.loads(sys.argv[2])); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, str(run_dir), json.dumps(shape)],
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - t0, int(proc.stdout.split()[-1]) / 1024


def batch_members(run_dir: Path, sample: Path, out: Path, runs: int) -> list[dict]:
    """`runs` analysis members, each a hard-linked copy of the synthetic run (its own outputs)."""
    members = []
    for index in range(runs):
        copy = out / "runs" / f"seed{index + 1}"
        if not copy.exists():
            shutil.copytree(run_dir, copy, copy_function=os.link)
        labels = {**LABELS, "run": f"seed{index + 1}"}
        key = "/".join(labels[k] for k in ("split", "task", "sample", "run"))
        members.append(
            {
                "key": key, "labels": labels, "fingerprint": "bench", "run_dir": str(copy), "decoded_dir": None,
                "figure_dir": str(out / "figures" / key), "score_table": str(out / "scores" / f"{key}.parquet"),
                "sample_dir": str(sample), "inputs": [],
            }
        )  # fmt: skip
    return members


def measure(kind: str, run_dir: Path, sample: Path, out: Path, repeats: int, batch_runs: int = 1) -> dict:
    seconds, process_seconds, rss, outputs = [], [], [], 0
    for i in range(repeats):
        target = out / f"{kind}{i}"
        target = target if kind in ("figures", "batch") else target.with_suffix(".parquet")
        extra = json.dumps(LABELS)
        if kind == "batch":
            target.mkdir()
            extra = json.dumps(batch_members(run_dir, sample, target, batch_runs))
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, kind, str(run_dir), str(sample), str(target), extra],
            capture_output=True, text=True, cwd=out,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"{kind} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        stats = json.loads(proc.stdout.strip().splitlines()[-1])
        per_run = stats["outputs"] if kind == "batch" else 1  # a batch reports seconds per run
        seconds.append(stats["seconds"] / per_run)
        process_seconds.append(wall / per_run)
        rss.append(stats["maxrss_kb"] / 1024)
        outputs = stats["outputs"]
        print(f"  {kind} {i + 1}: {stats['seconds']:.2f} s (process {wall:.2f} s), peak RSS {rss[-1]:.0f} MB")
    result = {
        "seconds_per_run": round(statistics.median(seconds), 3),
        "process_seconds": round(statistics.median(process_seconds), 3),
        "peak_rss_mb": round(max(rss), 1),
        "seconds_each": [round(s, 3) for s in seconds],
    }
    if kind == "batch":
        result["runs_per_job"] = outputs
    if kind == "figures":
        result["figures_per_run"] = outputs
        result["png_mb_per_run"] = round(
            sum(p.stat().st_size for p in (out / "figures0").rglob("*.png")) / 2**20, 2
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-runs", type=int, default=10, help="runs in the measured analysis batch")
    parser.add_argument("--paper-repeats", type=int, default=1)
    parser.add_argument(
        "--paper-dim", type=int, default=PAPER["dim"], help="channel width of the paper-size run"
    )
    parser.add_argument(
        "--paper",
        action="store_true",
        help="also time a paper-size run (the synthetic writer needs well over 10 minutes for it)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "figures.json")
    args = parser.parse_args()

    from stepscope.atomic import write_json
    from stepscope.bench import generate_demo_bench

    with tempfile.TemporaryDirectory(prefix="aggregation_bench.") as tmp_name:
        tmp = Path(tmp_name)
        bench = generate_demo_bench(tmp / "bench", tasks_per_split=1, samples_per_task=1)
        sample = next(p.parent for p in sorted(bench.rglob("prompt.txt")))
        LABELS["task"] = sample.parent.name
        LABELS["split"] = sample.parent.parent.name

        run_dir = tmp / "demo_run"
        write_s, _ = write_run(run_dir, DEMO)
        print(f"demo run written in {write_s:.1f} s")
        demo_out = tmp / "demo_out"
        demo_out.mkdir()
        figures = measure("figures", run_dir, sample, demo_out, args.repeats)
        scoring = measure("scoring", run_dir, sample, demo_out, args.repeats)
        batch = measure("batch", run_dir, sample, demo_out, 1, batch_runs=args.batch_runs)

        paper = None
        if args.paper:
            shape = {**PAPER, "dim": args.paper_dim}
            paper_dir = tmp / "paper_run"
            paper_write_s, writer_rss = write_run(paper_dir, shape)
            run_mb = sum(p.stat().st_size for p in paper_dir.rglob("*") if p.is_file()) / 2**20
            print(
                f"paper-size run written in {paper_write_s:.1f} s ({run_mb:.0f} MB, writer {writer_rss:.0f} MB)"
            )
            paper_out = tmp / "paper_out"
            paper_out.mkdir()
            paper = {
                "run_shape": shape,
                "note": "Wan2.2 480x832 x 81 frames token grid (21x30x52), 50 steps, 5 layers, x0_hat every step; "
                "channel width reduced from 5120 (the writer's float64 tokens x 5120 would need > 2 GB per array); "
                "video 128x128 instead of 480x832; scored against the 64x64 demo sample",
                "run_mb": round(run_mb, 1),
                "synthetic_write_s": round(paper_write_s, 1),
                "synthetic_writer_peak_rss_mb": round(writer_rss, 1),
                "figures": measure("figures", paper_dir, sample, paper_out, args.paper_repeats),
                "scoring": measure("scoring", paper_dir, sample, paper_out, args.paper_repeats),
            }

    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": device(),
        "command": " ".join(
            shlex.quote(a) for a in ["python", "benchmarks/aggregation_bench.py", *sys.argv[1:]]
        ),
        "preset": "demo",
        "run_shape": DEMO,
        "seconds_per_run": figures["seconds_per_run"],
        "peak_rss_mb": figures["peak_rss_mb"],
        "figures": figures,
        "scoring": scoring,
        "analysis_batch": batch,
        "synthetic_write_s": round(write_s, 2),
    }
    if paper is not None:
        result["paper_size"] = paper
    result["load_average_1m_after"] = round(os.getloadavg()[0], 2)  # > 1: other jobs shared the CPU
    write_json(args.out, result)
    print(
        f"demo figures: {figures['seconds_per_run']:.2f} s/run, {figures['peak_rss_mb']:.0f} MB; "
        f"scoring: {scoring['seconds_per_run']:.2f} s/run, {scoring['peak_rss_mb']:.0f} MB; "
        f"analysis batch of {batch['runs_per_job']}: {batch['process_seconds']:.2f} s/run with the process, "
        f"{batch['peak_rss_mb']:.0f} MB"
    )
    if paper is not None:
        pf, ps = paper["figures"], paper["scoring"]
        print(
            f"paper-size figures: {pf['seconds_per_run']:.2f} s/run, {pf['peak_rss_mb']:.0f} MB; "
            f"scoring: {ps['seconds_per_run']:.2f} s/run, {ps['peak_rss_mb']:.0f} MB"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
