"""Benchmark: time and memory of `render_run_figures` on one synthetic run.

Not a test. Writes one synthetic run (in a child process, so that torch, used only to write
steps.safetensors, does not count towards this process's memory), renders the per-run figure
set `--repeats` times and reports seconds per run (median) and peak memory:
``peak_rss_mb`` (getrusage high-water mark of this process, which never imports torch) and
``tracemalloc_peak_mb`` (Python allocations during one extra render under tracemalloc).

    .venv/bin/python benchmarks/figures_bench.py                   # demo size, writes JSON
    .venv/bin/python benchmarks/figures_bench.py --preset paper480 --out /tmp/figures480.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Synthetic run shapes. "demo": the CPU demo pipeline (64x64 video, 9 frames -> 3 latent frames
# of 4x4 tokens, 6 steps, tiny 4-layer Wan2.2-like experts of width 64). "paper480": token grid
# of Wan at 480x832 with 81 frames (21 x 30 x 52), 50 steps, 5 layers, switch at step 21; the
# channel count is reduced (the real 5120 only lengthens channel_var).
PRESETS = {
    "demo": dict(
        layers=(0, 1, 2, 3), steps=6, frames=3, height=4, width=4, dim=64, expert_switch=3, video_frames=9,
        video_size=64,
    ),
    "paper480": dict(
        layers=(0, 10, 20, 30, 39), steps=50, recorded_steps=[0, 49], frames=21, height=30, width=52, dim=64,
        expert_switch=21, video_frames=81, video_size=64,
    ),
}  # fmt: skip


def device() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {model} ({os.cpu_count()} cores visible, 1 used), {platform.system()} {platform.release()}"


def write_run(run_dir: Path, preset: str) -> None:
    code = (
        "import sys, json; from stepscope.testing.synthetic import write_synthetic_run; "
        "write_synthetic_run(sys.argv[1], **json.loads(sys.argv[2]))"
    )
    subprocess.run([sys.executable, "-c", code, str(run_dir), json.dumps(PRESETS[preset])], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "figures.json")
    args = parser.parse_args()

    from stepscope.atomic import write_json
    from stepscope.plots.figures import render_run_figures

    with tempfile.TemporaryDirectory(prefix="figures_bench.") as tmp:
        run_dir = Path(tmp) / "run"
        t0 = time.perf_counter()
        write_run(run_dir, args.preset)
        write_s = time.perf_counter() - t0

        seconds = []
        paths = []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            paths = render_run_figures(run_dir, Path(tmp) / f"figures{i}")
            seconds.append(time.perf_counter() - t0)
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

        tracemalloc.start()
        render_run_figures(run_dir, Path(tmp) / "figures_traced")
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        png_bytes = sum(p.stat().st_size for p in paths)

    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": device(),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "seconds_per_run": round(statistics.median(seconds), 3),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "tracemalloc_peak_mb": round(traced_peak / 2**20, 2),
        "seconds_each": [round(s, 3) for s in seconds],
        "preset": args.preset,
        "run_shape": {k: v for k, v in PRESETS[args.preset].items() if k != "recorded_steps"},
        "figures_per_run": len(paths),
        "png_mb_per_run": round(png_bytes / 2**20, 2),
        "synthetic_write_s": round(write_s, 2),
        "load_average_1m_after": round(os.getloadavg()[0], 2),  # > 1 means other jobs shared the CPU
    }
    write_json(args.out, result)
    print(
        f"{args.preset}: {result['seconds_per_run']:.2f} s per run ({len(paths)} figures), "
        f"peak RSS {result['peak_rss_mb']:.0f} MB, tracemalloc peak {result['tracemalloc_peak_mb']:.1f} MB"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
