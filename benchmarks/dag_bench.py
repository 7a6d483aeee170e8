"""Benchmark: dry-run time and peak memory of the full plan at VBVR-Bench scale.

Not a test. Generates a full-size placeholder bench tree (every task of
config/vbvr_bench_tasks.tsv x 5 samples, `stepscope.bench.make_fake_bench_tree`) in a temporary
folder, writes a config derived from config/config.yaml (bench.source: local on that tree;
3 variants: wan22-base, wan22-vbvr, wan21-base; seeds [1, 2, 3]; 2 ensembles; results and
resources in the temporary folder), then times

    python -m snakemake -n --quiet rules --snakefile <repo>/Snakefile --directory <tmp> --configfile <cfg>

`--repeats` times. Wall seconds (median) and peak RSS (getrusage RUSAGE_CHILDREN high-water mark
of the snakemake process, measured in a wrapper child per repeat) go to
benchmarks/results/dag.json together with the number of planned jobs (parsed from the job-stats
table). Goal: <= 20 s on 2 cores.

    .venv/bin/python benchmarks/dag_bench.py
    .venv/bin/python benchmarks/dag_bench.py --repeats 1 --profile /tmp/dag.prof   # + cProfile
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
GOAL_SECONDS = 20.0
VARIANTS = ["wan22-base", "wan22-vbvr", "wan21-base"]
SEEDS = [1, 2, 3]
ENSEMBLES = [
    {"strategy": "latent", "k": 3, "start": 0, "end": 10},
    {"strategy": "x0", "k": 3, "start": 0, "end": 20},
]

# Runs one command and prints its wall seconds and the peak RSS of its process tree's largest
# member (RUSAGE_CHILDREN ru_maxrss, KiB on Linux) as JSON on the last line of stderr.
WRAPPER = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.perf_counter() - t0
sys.stdout.write(proc.stdout)
sys.stderr.write(proc.stderr)
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
sys.stderr.write("\\n" + json.dumps({"seconds": seconds, "maxrss_kb": rss, "rc": proc.returncode}) + "\\n")
"""


def device() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()}-core CPU, {model}"


def write_config(tmp: Path, bench_root: Path) -> Path:
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["results"] = str(tmp / "results")
    config["resources"] = str(tmp / "resources")
    config["bench"].update(
        source="local",
        local_path=str(bench_root),
        sample_sheet=str(ROOT / config["bench"]["sample_sheet"]),
        samples_per_task=5,
    )
    wan21 = {k: v for k, v in config["variants"]["wan22-base"].items() if k != "switch_boundary"}
    config["variants"]["wan21-base"] = {**wan21, "model": "wan2.1-i2v-14b-720p"}
    config["run_variants"] = VARIANTS
    config["seeds"] = SEEDS
    config["ensembles"] = ENSEMBLES
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run (the 'total' row included)."""
    counts = {}
    for line in output.splitlines():
        match = re.match(r"^([A-Za-z_]\w*)\s+(\d+)$", line.strip())
        if match:
            counts[match.group(1)] = int(match.group(2))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples-per-task", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dag.json")
    parser.add_argument("--profile", type=Path, help="also run one dry run under cProfile, writing this file")
    args = parser.parse_args()

    from stepscope.atomic import write_json
    from stepscope.bench import make_fake_bench_tree

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="dag_bench.") as tmp_name:
        tmp = Path(tmp_name)
        bench_root = make_fake_bench_tree(
            tmp / "bench", ROOT / "config" / "vbvr_bench_tasks.tsv", samples_per_task=args.samples_per_task
        )
        config = write_config(tmp, bench_root)
        snakemake = [
            "-m", "snakemake", "-n", "--quiet", "rules",
            "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp), "--configfile", str(config),
        ]  # fmt: skip
        seconds, rss_mb, counts = [], [], {}
        for i in range(args.repeats):
            proc = subprocess.run(
                [sys.executable, "-c", WRAPPER, sys.executable, *snakemake],
                cwd=ROOT, env=env, capture_output=True, text=True,
            )  # fmt: skip
            stats = json.loads(proc.stderr.strip().splitlines()[-1])
            if stats["rc"] != 0:
                sys.exit(f"dry run failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
            counts = job_counts(proc.stdout)
            seconds.append(stats["seconds"])
            rss_mb.append(stats["maxrss_kb"] / 1024)
            print(
                f"repeat {i + 1}: {stats['seconds']:.2f} s, peak RSS {rss_mb[-1]:.0f} MB, {counts.get('total')} jobs"
            )
        if args.profile:
            profile = [sys.executable, "-m", "cProfile", "-o", str(args.profile), "-m", *snakemake[1:]]
            subprocess.run(profile, cwd=ROOT, env=env, capture_output=True, check=True)
            print(f"profile written to {args.profile}")

    median = statistics.median(seconds)
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": device(),
        "command": "python -m snakemake -n --quiet rules --snakefile Snakefile --directory <tmp> --configfile <cfg>"
        f" ({len(VARIANTS)} variants x {len(SEEDS)} seeds, {len(ENSEMBLES)} ensembles, "
        f"100 tasks x {args.samples_per_task} samples; "
        + " ".join(shlex.quote(a) for a in ["python", "benchmarks/dag_bench.py", *sys.argv[1:]])
        + ")",
        "jobs": counts.get("total"),
        "jobs_by_rule": {k: v for k, v in counts.items() if k != "total"},
        "seconds": round(median, 2),
        "seconds_all": [round(s, 2) for s in seconds],
        "peak_rss_mb": round(max(rss_mb), 1),
        "goal_seconds": GOAL_SECONDS,
        "meets_goal": median <= GOAL_SECONDS,
        "load_average_1m_after": round(os.getloadavg()[0], 2),
    }
    write_json(args.out, result)
    print(
        f"{result['jobs']} jobs planned: {median:.2f} s median (goal {GOAL_SECONDS:.0f} s, "
        f"{'met' if result['meets_goal'] else 'MISSED'}), peak RSS {result['peak_rss_mb']:.0f} MB"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
