"""The ``vbvr-evalkit`` scorer: an adapter around VBVR-EvalKit (:func:`score_with_evalkit`,
module ``vbvr_bench``), the reference. EvalKit is not on PyPI and must run in its own pinned
environment (envs/evalkit.txt: numpy 1.26.4, opencv-python 4.10.0.84, Pillow 10.4.0, ...), so
this module imports neither torch nor cv2 (``pip install --no-deps -e .`` plus pandas and
pyarrow there); run it as ``python -m stepscope.analysis.scoring evalkit ...``.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from stepscope.analysis.score_table import (
    FAILED,
    FINAL_STEP,
    SKIPPED,
    RunId,
    rows_to_table,
    score_rows,
    write_score_table,
)
from stepscope.run_names import RUN_PATTERN, seed_label

EVALKIT = "vbvr-evalkit"

EVALKIT_MODULE = "vbvr_bench"  # the package of the VBVR-EvalKit repository (VBVRBench, evaluators)
EVALKIT_REPO = "https://github.com/Video-Reason/VBVR-EvalKit"
EVALKIT_COMMIT = "7a6d4dc5193dbdd47dbdbf2a21f040fc808a4b77"  # the commit whose vbvr_bench we follow
# Its scores move with these versions; the whole tested environment is envs/evalkit.txt.
EVALKIT_PINS = {"numpy": "1.26.4", "opencv-python": "4.10.0.84", "Pillow": "10.4.0"}
ON_ERROR = ("zero", "raise", "nan")  # "zero" = EvalKit's own convention


class EvalKitNotInstalled(ImportError):
    """The VBVR-EvalKit module cannot be imported."""


@runtime_checkable
class EvalKitPerVideo(Protocol):
    """Per-video entry point: the module (or a shim) exposes ``evaluate``.

    ``evaluate(video_path, sample_dir)`` scores one generated video against the bench sample
    folder ``sample_dir`` (first_frame.png, final_frame.png, ground_truth.mp4, prompt.txt) and
    returns the task-specific score in [0, 1], or a mapping ``metric -> value`` (a key
    ``score`` is renamed to the adapter's ``metric``).
    """

    def evaluate(self, video_path: str, sample_dir: str) -> float | Mapping[str, float]: ...


@runtime_checkable
class EvalKitBatch(Protocol):
    """Batch entry point: ``evaluate_videos(videos_dir, bench_root)`` scores every
    ``<videos_dir>/<split>/<task>/<index>.mp4`` and yields mappings with keys ``split``,
    ``task``, ``sample`` (or ``video_idx``) and ``score`` and/or further ``metric -> value``
    entries (or a ``dimensions`` mapping)."""

    def evaluate_videos(self, videos_dir: str, bench_root: str) -> Iterable[Mapping[str, Any]]: ...


@runtime_checkable
class EvalKitBench(Protocol):
    """The public repository's own API (package ``vbvr_bench``): ``VBVRBench(gt_base_path,
    output_path, device).evaluate(videos_path, name=..., **kwargs)`` returning a dict whose
    ``detailed`` list holds per-video results (``video_path``, ``task_name``, ``video_idx``,
    ``score``, ``dimensions``). ``task_specific_only=True`` selects the leaderboard mode."""

    VBVRBench: Any


def import_evalkit(module: str = EVALKIT_MODULE):
    """Import the EvalKit module or raise :class:`EvalKitNotInstalled` with instructions."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is not None and module.split(".")[0] != error.name.split(".")[0]:
            raise  # the module exists but one of its own imports is missing
        raise EvalKitNotInstalled(
            f"VBVR-EvalKit module {module!r} is not importable (it is not on PyPI). Install it in "
            f"its own environment with pinned versions -- its scores depend on them:\n"
            f"  git clone {EVALKIT_REPO} vbvr-evalkit && git -C vbvr-evalkit checkout {EVALKIT_COMMIT}\n"
            f"  python3.11 -m venv evalkit-env && evalkit-env/bin/pip install -r envs/evalkit.txt\n"
            f"  evalkit-env/bin/pip install --no-deps -e . (in this project)\n"
            f"then run `PYTHONPATH=vbvr-evalkit evalkit-env/bin/python -m stepscope.analysis.scoring evalkit ...`. "
            f"The repository's package is {EVALKIT_MODULE!r} (the default); any other module must "
            f"expose evaluate(video_path, sample_dir) or evaluate_videos(videos_dir, bench_root). "
            f"See docs/scoring.md."
        ) from error


def evaluator_registry(kit: Any) -> Mapping[str, Any] | None:
    """The module's task -> evaluator map (``TASK_EVALUATOR_MAP`` on the module or on its
    ``evaluators`` submodule, as in vbvr_bench), or None when it has none.

    vbvr_bench's ``VBVRBench.evaluate`` crashes (TypeError) on a task folder missing from this
    map; its ``run_evaluation.py`` skips such folders with a warning. The adapter does the latter.
    """
    registry = getattr(kit, "TASK_EVALUATOR_MAP", None)
    if registry is None and hasattr(kit, "__path__"):  # a package: look in <module>.evaluators
        name = f"{kit.__name__}.evaluators"
        try:
            registry = getattr(importlib.import_module(name), "TASK_EVALUATOR_MAP", None)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
    return registry


def check_evalkit_versions() -> dict[str, str | None]:
    """Versions of the libraries EvalKit's scores depend on; warns when they differ from the pins."""
    from importlib import metadata

    found: dict[str, str | None] = {}
    for dist, pinned in EVALKIT_PINS.items():
        candidates = [dist] + (
            ["opencv-python-headless", "opencv-contrib-python"] if "opencv" in dist else []
        )
        version = None
        for name in candidates:
            try:
                version = metadata.version(name)
                break
            except metadata.PackageNotFoundError:
                continue
        found[dist] = version
        if version != pinned:
            warnings.warn(
                f"VBVR-EvalKit scores depend on library versions: {dist} is {version}, pinned "
                f"{pinned}. Run it in its own pinned environment (docs/scoring.md).",
                stacklevel=3,
            )
    return found


def evalkit_video_path(
    videos_root: str | os.PathLike, model: str, split: str, task: str, sample: str
) -> Path:
    """Where EvalKit expects a generated video: ``<root>/<model>/<split>/<task>/<index>.mp4``."""
    return Path(videos_root) / model / split / task / f"{sample}.mp4"


_WORKFLOW_MODEL = re.compile(rf"^(?P<variant>.+)_(?P<run>{RUN_PATTERN})$")


def parse_model_dir(name: str, first_seed: str = "1") -> tuple[str, str]:
    """Model folder name -> (variant, seed).

    Accepted: ``<variant>@<seed>`` (``wan22@2``, ``wan22@ens-latent-k3-0-10``); the workflow's
    ``<variant>_seed<N>`` / ``<variant>_<ensemble>`` (``WorkflowPlan.video_model_name``);
    and a bare ``<variant>``, which stands for ``first_seed`` (the workflow's first seed).
    """
    if "@" in name:
        variant, _, seed = name.partition("@")
        return variant, (seed or first_seed)
    match = _WORKFLOW_MODEL.match(name)
    if match:
        run = match["run"]
        return match["variant"], seed_label(run)
    return name, str(first_seed)


def _iter_layout(model_dir: Path) -> Iterator[tuple[str, str, str, Path]]:
    for video in sorted(model_dir.glob("*/*/*.mp4")):
        task_dir = video.parent
        yield task_dir.parent.name, task_dir.name, video.stem, video


def _result_metrics(result: Any, metric: str) -> dict[str, float]:
    if isinstance(result, Mapping):
        values: dict[str, float] = {}
        for key, value in result.items():
            if key == "dimensions" and isinstance(value, Mapping):
                values.update({str(k): _as_float(v) for k, v in value.items()})
            elif key == "score":
                values[metric] = _as_float(value)
            elif isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool):
                values[str(key)] = _as_float(value)
        return values
    return {metric: _as_float(result)}


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


_ID_KEYS = {"split", "task", "task_name", "sample", "video_idx", "index", "video_path", "file_split"}


def score_with_evalkit(
    videos_root: str | os.PathLike,
    bench_root: str | os.PathLike,
    out_table: str | os.PathLike | None = None,
    *,
    module: str = EVALKIT_MODULE,
    models: Sequence[str] | None = None,
    step: int = FINAL_STEP,
    metric: str = "task_specific",
    full_score: bool = False,
    mode: str = "auto",
    device: str = "cpu",
    on_error: str = "zero",
    check_versions: bool = True,
    first_seed: str = "1",
    model_map: Mapping[str, tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """Score generated videos with VBVR-EvalKit; return (and write) the tidy table.

    Layout: ``<videos_root>/<model>/<split>/<task>/<index>.mp4`` with ``index`` the bench
    sample folder name (``00000``); ``<bench_root>/<split>/<task>/<index>/`` holds the sample.
    ``model`` names map to (variant, seed) through ``model_map`` when given, else
    :func:`parse_model_dir` (``<variant>@<seed>``, the workflow's ``<variant>_seed<N>`` /
    ``<variant>_<ensemble>``, or a bare ``<variant>`` = ``first_seed``); ``models``
    restricts which model folders are scored.

    Entry points, tried in this order when ``mode="auto"``: ``VBVRBench`` (the repository's
    package ``vbvr_bench``), ``evaluate_videos`` (batch), ``evaluate`` (per video); see the
    Protocols above. The task-specific score is stored as metric ``metric``; further
    dimensions returned by the module are stored under their own names. ``full_score`` asks
    ``VBVRBench`` for its composite 5-dimension mode (stored as metric ``weighted``).

    EvalKit's conventions are kept: a video it cannot evaluate (unreadable, evaluator error)
    scores 0.0 and counts in every mean; the adapter adds a row ``evalkit_failed`` = 1 for it
    and warns with the errors (``on_error="raise"`` raises instead, ``"nan"`` stores NaN,
    which drops it from means). A task folder without an evaluator is skipped with a warning,
    and its videos get a row ``evalkit_skipped`` = 1 instead of scores.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    kit = import_evalkit(module)
    if check_versions:
        check_evalkit_versions()
    videos_root, bench_root = Path(videos_root), Path(bench_root)
    if not videos_root.is_dir():
        raise FileNotFoundError(f"videos_root {videos_root} is not a folder")
    entry = _pick_entry(kit, mode)
    registry = evaluator_registry(kit)
    model_dirs = sorted(p for p in videos_root.iterdir() if p.is_dir())
    if models is not None:
        wanted = set(models)
        model_dirs = [p for p in model_dirs if p.name in wanted]
    rows: list[dict] = []
    failed: list[str] = []
    skipped: dict[tuple[str, str], str] = {}
    for model_dir in model_dirs:
        if model_map is not None and model_dir.name in model_map:
            variant, seed = model_map[model_dir.name]
        else:
            variant, seed = parse_model_dir(model_dir.name, first_seed)
        videos = list(_iter_layout(model_dir))
        tasks = {task for _, task, _, _ in videos}
        no_evaluator = {task for task in tasks if registry is not None and task not in registry}
        results = {
            (split, task, sample): outcome
            for split, task, sample, outcome in _run_entry(
                entry, kit, model_dir, bench_root, sorted(tasks - no_evaluator), metric, full_score, device
            )
            if task not in no_evaluator
        }
        for split, task, sample, video in videos:
            ids = RunId(variant, split, task, sample, seed, step)
            outcome = results.get((split, task, sample))
            if outcome is None:
                reason = "no EvalKit evaluator" if task in no_evaluator else "EvalKit gave no result"
                skipped.setdefault((split, task), reason)
                rows.extend(score_rows(ids, {SKIPPED: 1.0}, EVALKIT))
                continue
            values, error = outcome
            if error is not None:
                if on_error == "raise":
                    raise RuntimeError(f"VBVR-EvalKit failed on {video}: {error}")
                values = {k: math.nan for k in values} if on_error == "nan" else values
                values = {**values, FAILED: 1.0}
                failed.append(f"{video}: {error}")
            rows.extend(score_rows(ids, values, EVALKIT))
    if skipped:
        warnings.warn(
            "VBVR-EvalKit skipped task folders (their videos have no score, the tables say so): "
            + "; ".join(f"{split}/{task} ({reason})" for (split, task), reason in sorted(skipped.items())),
            stacklevel=2,
        )
    if failed:
        scored = "NaN" if on_error == "nan" else "0.0, counted in the means as EvalKit does"
        warnings.warn(
            f"VBVR-EvalKit could not evaluate {len(failed)} video(s), scored {scored}: " + "; ".join(failed),
            stacklevel=2,
        )
    table = rows_to_table(rows)
    if out_table is not None:
        write_score_table(out_table, table)
    return table


def _pick_entry(kit: Any, mode: str) -> str:
    available = [
        name
        for name, proto in (("bench", EvalKitBench), ("batch", EvalKitBatch), ("video", EvalKitPerVideo))
        if isinstance(kit, proto)
    ]
    if mode != "auto":
        if mode not in ("bench", "batch", "video"):
            raise ValueError(f"mode must be auto, bench, batch or video, not {mode!r}")
        if mode not in available:
            raise TypeError(f"EvalKit module {kit.__name__!r} has no {mode!r} entry point")
        return mode
    if not available:
        raise TypeError(
            f"EvalKit module {kit.__name__!r} exposes none of VBVRBench, evaluate_videos(videos_dir, "
            f"bench_root), evaluate(video_path, sample_dir); write a small shim (docs/scoring.md)"
        )
    return available[0]


Outcome = tuple[dict[str, float], str | None]  # (metric -> value, EvalKit's error or None)


def _run_entry(
    entry: str,
    kit: Any,
    model_dir: Path,
    bench_root: Path,
    tasks: list[str],
    metric: str,
    full_score: bool,
    device: str,
) -> Iterator[tuple[str, str, str, Outcome]]:
    """Run one entry point on one model folder, only on ``tasks`` (those with an evaluator)."""
    if not tasks:
        return
    if entry == "video":
        for split, task, sample, video in _iter_layout(model_dir):
            sample_dir = bench_root / split / task / sample
            if task not in tasks or not sample_dir.is_dir():
                continue  # reported as skipped
            try:
                outcome = _result_metrics(kit.evaluate(str(video), str(sample_dir)), metric), None
            except Exception as error:  # EvalKit's convention: the video scores 0.0
                outcome = {metric: 0.0}, f"{type(error).__name__}: {error}"
            yield split, task, sample, outcome
        return
    if entry == "batch":
        results = kit.evaluate_videos(str(model_dir), str(bench_root))
    else:
        with tempfile.TemporaryDirectory(prefix="vbvr-evalkit-") as tmp:
            bench = kit.VBVRBench(gt_base_path=str(bench_root), output_path=tmp, device=device)
            kwargs = {} if full_score else {"task_specific_only": True}
            out = bench.evaluate(videos_path=str(model_dir), name="stepscope", task_list=tasks, **kwargs)
        results = out.get("detailed", [])
    score_name = "weighted" if entry == "bench" and full_score else metric
    for result in results:
        result = dict(result)
        split, task, sample = _result_ids(result, model_dir)
        values = _result_metrics({k: v for k, v in result.items() if k not in _ID_KEYS}, score_name)
        error = result.get("error")
        yield split, task, sample, (values, None if error is None else str(error))


def _result_ids(result: Mapping[str, Any], model_dir: Path) -> tuple[str, str, str]:
    if result.get("video_path"):
        video = Path(result["video_path"])
        try:
            split, task, name = video.relative_to(model_dir).parts
            return split, task, Path(name).stem
        except ValueError:
            pass
    split = result.get("file_split") or result.get("split")
    task = result.get("task") or result.get("task_name")
    sample = result.get("sample") or result.get("video_idx") or result.get("index")
    if split is None or task is None or sample is None:
        raise KeyError(f"EvalKit result lacks split/task/sample: {sorted(result)}")
    return str(split), str(task), str(sample)



# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos-root", required=True)
    parser.add_argument("--bench-root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--module", default=EVALKIT_MODULE, help=f"EvalKit's package (default {EVALKIT_MODULE})")
    parser.add_argument("--models", nargs="*")
    parser.add_argument("--step", type=int, default=FINAL_STEP)
    parser.add_argument("--full-score", action="store_true", help="composite mode (metric `weighted`)")
    parser.add_argument("--mode", default="auto", choices=["auto", "bench", "batch", "video"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--on-error", default="zero", choices=ON_ERROR,
                        help="a video EvalKit cannot evaluate: 0.0 as EvalKit does (default), raise, or NaN")  # fmt: skip
    parser.add_argument("--first-seed", default="1", help="seed of a bare <variant> model folder")


def run_cli(args: argparse.Namespace) -> int:
    """Score a videos tree into a Parquet table; exit 2 when EvalKit is not installed."""
    try:
        table = score_with_evalkit(
            args.videos_root,
            args.bench_root,
            args.out,
            module=args.module,
            models=args.models,
            step=args.step,
            full_score=args.full_score,
            mode=args.mode,
            device=args.device,
            on_error=args.on_error,
            first_seed=args.first_seed,
        )
    except EvalKitNotInstalled as error:
        print(error, file=sys.stderr)
        return 2
    print(f"wrote {len(table)} rows to {args.out}")
    return 0
