"""Benchmark: rank agreement between the stepscope-proxy scorer and a scorer given as a module.

Not a test. From every sample of a VBVR-format bench (``<bench>/<split>/<task>/<index>/`` with
first_frame.png, final_frame.png, ground_truth.mp4) it makes four candidate videos, written
the way the pipeline writes videos (stepscope.records.write_video: H.264, imageio quality 5):

* ``gt_copy``     -- the ground-truth frames re-encoded;
* ``first_held``  -- first_frame.png held for the GT's length (the model did nothing);
* ``jump``        -- first frame for the first half, final frame for the second (no motion);
* ``resampled``   -- the GT resampled to 81 frames, longer side 640 px (another model's shape).

Each candidate is scored by the proxy (metric ``total``) and by the module through
``stepscope.analysis.evalkit.score_with_evalkit`` in task-specific mode (``task_specific``) and in
composite mode (``weighted``). Printed and written: Spearman rank correlation over all
(sample, candidate) pairs, the mean within-sample Spearman, how often both scorers rank the
same candidate first, the mean |proxy total - composite|, and each candidate's mean score.

    # real VBVR-EvalKit: run with the EvalKit environment's python (envs/evalkit.txt)
    PYTHONPATH=src:/opt/vbvr-evalkit python benchmarks/scorer_agreement.py \\
        --bench ../shared/vbvr-mini --module vbvr_bench --name evalkit
    # the stand-in of the tests (checks the script, says nothing about the proxy's quality)
    .venv/bin/python benchmarks/scorer_agreement.py --bench ../shared/vbvr-mini \\
        --module fake_vbvr_bench --module-path tests/fake_evalkit --name fake-evalkit
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from stepscope import records  # noqa: E402
from stepscope.analysis import evalkit, proxy_scorer  # noqa: E402

CANDIDATES = ("gt_copy", "first_held", "jump", "resampled")
MODES = {"task_specific": False, "weighted": True}  # reference metric -> full_score


def _image(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _resize(frames: np.ndarray, longer: int) -> np.ndarray:
    h, w = frames.shape[1:3]
    scale = longer / max(h, w)
    size = (max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR)) for f in frames])


def candidates(sample: Path) -> dict[str, np.ndarray]:
    """The four candidate videos of one bench sample (uint8 T x H x W x 3)."""
    gt = records.read_video(sample / "ground_truth.mp4")
    first, final = _image(sample / "first_frame.png"), _image(sample / "final_frame.png")
    n = len(gt)
    index = np.rint(np.linspace(0, n - 1, 81)).astype(int)
    return {
        "gt_copy": gt,
        "first_held": np.repeat(first[None], n, axis=0),
        "jump": np.concatenate(
            [np.repeat(first[None], n // 2, axis=0), np.repeat(final[None], n - n // 2, axis=0)]
        ),
        "resampled": _resize(gt[index], 640),
    }


def bench_samples(bench: Path, limit: int | None) -> list[Path]:
    samples = sorted(p.parent for p in bench.glob("*/*/*/ground_truth.mp4"))
    return samples[:limit] if limit else samples


def spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman's rho (average ranks for ties); NaN when either side is constant."""
    ra, rb = a.rank(), b.rank()
    if ra.nunique() < 2 or rb.nunique() < 2:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def agreement(table: pd.DataFrame, reference: str) -> dict:
    """Agreement of the proxy's total with one reference metric over (sample, candidate)."""
    df = table.dropna(subset=["proxy_total", reference])
    within = [spearman(g["proxy_total"], g[reference]) for _, g in df.groupby("sample_id")]
    top = [
        g.loc[g["proxy_total"].idxmax(), "candidate"] == g.loc[g[reference].idxmax(), "candidate"]
        for _, g in df.groupby("sample_id")
    ]
    return {
        "n_videos": int(len(df)),
        "spearman_all": spearman(df["proxy_total"], df[reference]),
        "spearman_within_sample_mean": float(np.nanmean(within)) if within else float("nan"),
        "same_top_candidate": float(np.mean(top)) if top else float("nan"),
        "mean_abs_diff": float((df["proxy_total"] - df[reference]).abs().mean()),
        "max_abs_diff": float((df["proxy_total"] - df[reference]).abs().max()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True, help="VBVR-format bench root")
    parser.add_argument("--module", default=evalkit.EVALKIT_MODULE, help="reference scorer module")
    parser.add_argument("--module-path", action="append", default=[], help="added to sys.path")
    parser.add_argument("--name", default=None, help="results/scorer_agreement_<name>.json")
    parser.add_argument("--limit", type=int, default=None, help="at most this many samples")
    parser.add_argument("--work", type=Path, default=None, help="keep the candidate videos here")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    for path in args.module_path:
        sys.path.insert(0, str(Path(path).resolve()))
    bench = args.bench.resolve()
    samples = bench_samples(bench, args.limit)
    if not samples:
        parser.error(f"no <split>/<task>/<index>/ground_truth.mp4 under {bench}")
    work = args.work or Path(tempfile.mkdtemp(prefix="scorer-agreement-"))
    started = time.perf_counter()
    rows = []
    for sample in samples:
        split, task, index = sample.relative_to(bench).parts
        for name, frames in candidates(sample).items():
            video = evalkit.evalkit_video_path(work / "videos", name, split, task, index)
            video.parent.mkdir(parents=True, exist_ok=True)
            records.write_video(video, frames, fps=16)
            scores = proxy_scorer.score_video(video, sample)
            rows.append({"split": split, "task": task, "sample": index, "candidate": name,
                         "proxy_total": scores["total"]})  # fmt: skip
    proxy_s = time.perf_counter() - started
    table = pd.DataFrame(rows)
    reference_s = {}
    for metric, full_score in MODES.items():
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)  # the adapter's version, failure, skip notes
            ref = evalkit.score_with_evalkit(work / "videos", bench, module=args.module, full_score=full_score,
                                             model_map={c: (c, "1") for c in CANDIDATES})  # fmt: skip
        for warning in caught:
            print(f"warning ({metric}): {warning.message}", file=sys.stderr)
        reference_s[metric] = time.perf_counter() - t0
        ref = ref[ref["metric"] == metric].rename(columns={"variant": "candidate", "value": metric})
        table = table.merge(ref[["split", "task", "sample", "candidate", metric]], how="left")
    table["sample_id"] = table["split"] + "/" + table["task"] + "/" + table["sample"]
    result = {
        "date": dt.date.today().isoformat(),
        "bench": str(bench),
        "reference_module": args.module,
        "host": platform.node(),
        "versions": {"numpy": np.__version__, "pandas": pd.__version__},
        "video_encoding": records.video_encoding(16),
        "n_samples": len(samples),
        "candidates": list(CANDIDATES),
        "agreement": {metric: agreement(table, metric) for metric in MODES},
        "mean_by_candidate": table.groupby("candidate")[["proxy_total", *MODES]]
        .mean()
        .round(4)
        .to_dict("index"),
        "seconds": {"write_and_proxy": round(proxy_s, 1), **{k: round(v, 1) for k, v in reference_s.items()}},
    }
    print(json.dumps(result, indent=2))
    name = args.name or args.module
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"scorer_agreement_{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    table.drop(columns="sample_id").to_csv(args.out / f"scorer_agreement_{name}.csv", index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
