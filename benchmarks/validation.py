"""Validation of the trained Wan2.2 twin: does stepscope see real signal where there is some?

    PYTHONPATH=src python benchmarks/validation.py [--samples 4] [--work /tmp/validation]

On a held-out generated bench (the demo generator's own seed stream; training used another) it
runs the workflow's own job functions (`jobs.sample_run`, `jobs.decode_run`,
`analysis_jobs.score_run_job`, `probes.job.probe_job`, ensembles through `sample_run`) with the demo
variant's settings, and writes benchmarks/results/validation.json:

* scores per task (builtin scorer, metric `total`) for the trained twin, the random twin and the
  static-first-frame baseline, with a bootstrap 95% interval for the trained twin;
* step-score curves (decoded x0_hat of every step) and emergence steps (`chain_of_steps`);
* candidate mass per step on the two-answer task (`stepscope.analysis.validation`);
* probes: noise at a step vs at a latent frame, CKA sensitivity peak vs the expert switch;
* the multi-seed latent ensemble's gain over its first seed alone, with an interval.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from stepscope.analysis.chain_of_steps import emergence_step  # noqa: E402
from stepscope.analysis.proxy_scorer import score_video  # noqa: E402
from stepscope.analysis.score_table import read_score_table  # noqa: E402
from stepscope.analysis.validation import bootstrap_ci, candidate_mass, commitment, static_first_video  # noqa: E402
from stepscope.atomic import write_json  # noqa: E402
from stepscope.bench import FIRST_FRAME, generate_demo_bench, sample_dir  # noqa: E402
from stepscope.demo_tasks import EITHER_TASK  # noqa: E402
from stepscope.jobs.analysis import score_run_job  # noqa: E402
from stepscope.jobs.runs import decode_run, load_decoder, load_job_pipeline, resolve_input, sample_run  # noqa: E402
from stepscope.models.loading import limit_cpu_threads, make_tiny_weights  # noqa: E402
from stepscope.probes.job import probe_job  # noqa: E402
from stepscope.probes.latent_tables import sensitivity_table  # noqa: E402
from stepscope.probes.tables import noise_summary, noise_table, sensitivity_summary  # noqa: E402
from stepscope.records import RunRecords, expert_switch_step, read_video  # noqa: E402
from stepscope.training.twin import TRAIN_TASKS  # noqa: E402

TRAINED = REPO / "weights" / "wan2.2-twin"
OUT = REPO / "benchmarks" / "results" / "validation.json"
# The demo variant's settings (config/demo.yaml), without its stand-in LoRAs.
SETTINGS = {
    "steps": 8,
    "cfg_scale": 5.0,
    "sigma_shift": 5.0,
    "switch_boundary": 0.875,
    "height": 64,
    "width": 64,
    "max_frames": 9,
}
RECORD = {"layers": [0, 2, 3], "capture_steps": "all", "x0_steps": "all", "passes": ["cond"]}
DEVICE = {"device": "cpu", "dtype": "fp32"}
SPLIT = "In-Domain_50"
ENSEMBLE = "ens-latent-k2-0-3"
METRIC = "total"
PROBE_TASKS = TRAIN_TASKS[::2]  # move-to-target, ball-to-wall, two-answer (2 CPU cores: keep it minutes)


def run_model(name, weights, bench, samples, work, decode, ensemble=False):
    """Sample (and decode, score) every sample with one model; returns the score rows."""
    pipe = load_job_pipeline("wan2.2", str(weights), [], DEVICE)
    decoder = load_decoder("wan2.2", str(weights), DEVICE) if decode else None
    tables = []
    for task in TRAIN_TASKS:
        for sample in range(samples):
            folder = sample_dir(bench, SPLIT, task, sample)
            info = resolve_input({"sample_dir": str(folder)})
            kinds = [("plain", None, 1)] + ([("ensemble", ENSEMBLE, 1)] if ensemble else [])
            for kind, ens, seed in kinds:
                run = work / name / kind / task / f"{sample:05d}"
                if (run / "scores.parquet").exists():  # a rerun after a failure keeps finished runs
                    tables.append(read_score_table(run / "scores.parquet"))
                    continue
                sample_run(
                    pipe,
                    "wan2.2",
                    info=info,
                    settings=SETTINGS,
                    record=RECORD,
                    seeds=[seed],
                    out_dir=str(run),
                    ensemble=ens,
                )
                summary = None
                if decode and kind == "plain":
                    decode_run(decoder, "wan2.2", run_dir=str(run), steps="all", out_dir=str(run / "decoded"))
                    summary = str(run / "decoded" / "decoded.json")
                labels = {
                    "variant": f"{name}-{kind}",
                    "split": SPLIT,
                    "task": task,
                    "sample": f"{sample:05d}",
                    "run": "seed1",
                }
                score_run_job(
                    run_dir=str(run),
                    decoded_summary=summary,
                    sample_dir=str(folder),
                    labels=labels,
                    out=str(run / "scores.parquet"),
                )
                tables.append(read_score_table(run / "scores.parquet"))
    return pd.concat(tables, ignore_index=True)


def final_scores(table, variant, metric=METRIC):
    rows = table[(table["variant"] == variant) & (table["step"] == -1) & (table["metric"] == metric)]
    return rows.groupby("task")["value"].apply(list).to_dict()


def static_scores(bench, samples):
    """task -> one dict of every builtin metric per sample, for the video that holds the first frame."""
    return {
        task: [
            score_video(
                static_first_video(read_video(sample_dir(bench, SPLIT, task, s) / "ground_truth.mp4")[0], 9),
                sample_dir(bench, SPLIT, task, s),
            )
            for s in range(samples)
        ]
        for task in TRAIN_TASKS
    }


def curves_and_emergence(table, metric):
    """Mean step-score curve per task and each run's emergence step (sustained, 95% of its final)."""
    rows = table[(table["variant"] == "trained-plain") & (table["metric"] == metric)]
    curves, emergence = {}, {}
    for task, task_rows in rows.groupby("task"):
        steps = task_rows[task_rows["step"] >= 0]
        curves[task] = steps.groupby("step")["value"].mean().round(4).tolist()
        emergence[task] = []
        for sample, run_rows in steps.groupby("sample"):
            final = task_rows[(task_rows["sample"] == sample) & (task_rows["step"] == -1)]["value"].iloc[0]
            emergence[task].append(
                emergence_step(run_rows["step"].tolist(), run_rows["value"].tolist(), final, sustained=True)
            )
    return {"by_task": curves, "emergence_step": emergence}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4, help="held-out samples per task")
    parser.add_argument("--work", type=Path, default=Path("/tmp/stepscope-validation"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    limit_cpu_threads(args.threads)
    started = time.perf_counter()
    work = args.work
    bench = generate_demo_bench(
        work / "bench",
        splits=[SPLIT],
        tasks=list(TRAIN_TASKS),
        samples_per_task=args.samples,
        size=64,
        num_frames=13,
    )
    random_twin = make_tiny_weights("wan2.2", work / "random-twin")

    trained = run_model("trained", TRAINED, bench, args.samples, work, decode=True, ensemble=True)
    random = run_model("random", random_twin, bench, args.samples, work, decode=False)
    scores = {
        "trained": final_scores(trained, "trained-plain"),
        "random": final_scores(random, "random-plain"),
    }
    static = static_scores(bench, args.samples)
    scores["static_first"] = {task: [row[METRIC] for row in rows] for task, rows in static.items()}
    result = {
        "metric": f"builtin/{METRIC}",
        "samples_per_task": args.samples,
        "settings": SETTINGS,
        "weights": str(TRAINED.relative_to(REPO)),
        "overall": {k: float(np.mean([v for vals in s.values() for v in vals])) for k, s in scores.items()},
        "tasks": {
            task: {
                **{k: float(np.mean(scores[k][task])) for k in scores},
                "ci95": bootstrap_ci(scores["trained"][task]),
                "margin_over_static": float(
                    np.mean(scores["trained"][task]) - np.mean(scores["static_first"][task])
                ),
                "margin_ci95": bootstrap_ci(
                    np.subtract(scores["trained"][task], scores["static_first"][task]).tolist()
                ),
            }
            for task in TRAIN_TASKS
        },
    }
    result["overall"]["ci95_trained"] = bootstrap_ci([v for vals in scores["trained"].values() for v in vals])

    # Every builtin metric per task (the headline is `total`; the others say where scores come from).
    metrics = sorted(trained["metric"].unique())
    result["metrics_by_task"] = {
        task: {
            metric: {
                "trained": float(np.mean(final_scores(trained, "trained-plain", metric)[task])),
                "random": float(np.mean(final_scores(random, "random-plain", metric)[task])),
                "static_first": float(np.mean([row[metric] for row in static[task]])),
            }
            for metric in metrics
        }
        for task in TRAIN_TASKS
    }

    # Step-score curves and emergence steps (the decoded x0_hat video of every step).
    run0 = work / "trained" / "plain" / TRAIN_TASKS[0] / "00000"
    result["step_curves"] = {
        "switch_step": expert_switch_step(RunRecords(run0).schedule),
        **{
            metric: curves_and_emergence(trained, metric)
            for metric in (METRIC, "final_frame_match", "task_progress")
        },
    }

    # Candidate mass on the two-answer task: per step, on the finally chosen target and the other.
    masses = []
    for sample in range(args.samples):
        folder = sample_dir(bench, SPLIT, EITHER_TASK, sample)
        first = np.asarray(Image.open(folder / FIRST_FRAME).convert("RGB"))
        steps_dir = work / "trained" / "plain" / EITHER_TASK / f"{sample:05d}" / "decoded" / "steps"
        per_step = [
            candidate_mass(read_video(path)[-1], first) for path in sorted(steps_dir.glob("step_*.mp4"))
        ]
        masses.append(commitment(per_step))
    result["candidate_mass"] = {
        "task": EITHER_TASK,
        "definition": "mean object intensity (distance from the background colour, 0..1, target green "
        "excluded) inside each target box in the last frame of the decoded x0_hat video, per step; "
        "'chosen' = the target with more mass at the last step",
        "chosen_mean": np.mean([m["chosen"] for m in masses], axis=0).round(4).tolist(),
        "other_mean": np.mean([m["other"] for m in masses], axis=0).round(4).tolist(),
        "per_sample": masses,
    }

    # Probes on one sample of three tasks: noise at a step vs at a latent frame; CKA sensitivity.
    probe_dirs = {"noise_step": [], "noise_frame": [], "sensitivity": []}
    specs = {
        "noise_step": {"steps": "all", "strength": 1.0},
        "noise_frame": {"frames": "all", "steps": "all", "strength": 1.0},
        "sensitivity": {"steps": "all", "strength": 0.5, "layers": None},
    }
    for task in PROBE_TASKS:
        folder = sample_dir(bench, SPLIT, task, 0)
        for kind, spec in specs.items():
            out = work / "probes" / kind / task
            probe_dirs[kind].append(str(out))
            if (out / "probe.json").exists():
                continue
            probe_job(
                kind=kind,
                family="wan2.2",
                weights_dir=str(TRAINED),
                loras=[],
                source={"sample_dir": str(folder)},
                settings=SETTINGS,
                record=RECORD,
                seed=1,
                spec=spec,
                out_dir=str(out),
                device=DEVICE,
                labels={"variant": "trained", "split": SPLIT, "task": task, "sample": "00000"},
            )
    by_step = noise_summary(noise_table(probe_dirs["noise_step"]), "step", METRIC)
    by_frame = noise_summary(noise_table(probe_dirs["noise_frame"]), "frame", METRIC)
    sens = sensitivity_summary(sensitivity_table(probe_dirs["sensitivity"]))
    result["probes"] = {
        "noise_step": {
            "drop_by_step": by_step.set_index("step")["drop"].round(4).to_dict(),
            "mean_drop": float(by_step["drop"].mean()),
        },
        "noise_frame": {
            "drop_by_frame": by_frame.set_index("frame")["drop"].round(4).to_dict(),
            "mean_drop": float(by_frame["drop"].mean()),
        },
        "step_hurts_more_than_frame": bool(by_step["drop"].mean() > by_frame["drop"].mean()),
        "sensitivity": {
            rep: {
                "by_injection_step": rows.set_index("injection_step")["mean_after"].round(4).to_dict(),
                "peak_step": int(rows["peak_step"].iloc[0]),
                "switch_step": int(rows["switch_step"].iloc[0]),
                "peak_is_switch": bool(rows["peak_is_switch"].iloc[0]),
            }
            for rep, rows in sens.groupby("representation")
        },
    }
    result["probes"]["noise_step"]["drop_by_step"] = {
        str(k): v for k, v in result["probes"]["noise_step"]["drop_by_step"].items()
    }
    result["probes"]["noise_frame"]["drop_by_frame"] = {
        str(k): v for k, v in result["probes"]["noise_frame"]["drop_by_frame"].items()
    }

    # Ensemble gain: the latent ensemble (seeds 1, 2 merged over steps 0-3) vs seed 1 alone, paired.
    ens = trained[(trained["step"] == -1) & (trained["metric"] == METRIC)]
    paired = ens.pivot_table(index=["task", "sample"], columns="variant", values="value")
    gain = (paired["trained-ensemble"] - paired["trained-plain"]).tolist()
    result["ensemble"] = {
        "ensemble": ENSEMBLE,
        "gain_mean": float(np.mean(gain)),
        "ci95": bootstrap_ci(gain),
        "n": len(gain),
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_json(OUT, result)
    print(json.dumps({k: result[k] for k in ("overall", "tasks")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
