"""VBVR-Bench samples: a tiny generated demo bench, the task sheet, and a scan that builds the manifest.

A bench tree is ``<root>/<split>/<task>/<sample>/{first_frame.png, final_frame.png, ground_truth.mp4,
prompt.txt}``. Everything downstream (sampling jobs, scoring) reads samples through the manifest that
`scan_bench` returns, so broken samples are found once, up front, with a message that names the file.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterable, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from stepscope.atomic import atomic_path, write_text
from stepscope.demo_tasks import DEMO_TASKS, render_demo_clip
from stepscope.records import write_video

FIRST_FRAME = "first_frame.png"
FINAL_FRAME = "final_frame.png"
GROUND_TRUTH = "ground_truth.mp4"
PROMPT = "prompt.txt"
SAMPLE_FILES = (FIRST_FRAME, FINAL_FRAME, GROUND_TRUTH, PROMPT)
# What each stage's outputs depend on: the plan stamps these files, so that changing one redoes the
# stage. Sampling takes the image, the prompt and the frame count (it only checks final_frame.png);
# the scorer compares with the first and final frames and the ground truth.
SAMPLING_FILES = (FIRST_FRAME, PROMPT, GROUND_TRUTH)
SCORING_FILES = (FIRST_FRAME, FINAL_FRAME, GROUND_TRUTH)
SPLITS = ("In-Domain_50", "Out-of-Domain_50")
GT_FPS = 16
MIN_GT_FRAMES = 2  # a shorter ground truth shows no motion to score against
FRAME_SLACK = 1.5  # decoded vs promised frames (duration is given to 10 ms; one frame of rounding)

SHEET_COLUMNS = ("split", "task", "category")
MANIFEST_COLUMNS = (
    "split",
    "task",
    "sample",
    "first_frame",
    "final_frame",
    "ground_truth",
    "prompt_file",
    "prompt",
    "gt_num_frames",
    "gt_fps",
    "width",
    "height",
)
ERROR_COLUMNS = ("split", "task", "sample", "path", "reason")

_REFETCH = "re-download the sample from Video-Reason/VBVR-Bench-Data (or regenerate the demo bench)"

# --------------------------------------------------------------------------------------------------
# Demo bench: the tasks of stepscope.demo_tasks written in the VBVR layout.
# --------------------------------------------------------------------------------------------------


def _save_png(target: Path, frame: np.ndarray) -> None:
    with atomic_path(target) as tmp:
        Image.fromarray(frame).save(tmp, format="PNG")


def generate_demo_bench(
    root: str | os.PathLike,
    *,
    splits: Iterable[str] = SPLITS,
    tasks_per_split: int = 2,
    samples_per_task: int = 2,
    size: int = 64,
    num_frames: int = 13,
    seed: int = 0,
    tasks: Sequence[str] | None = None,
) -> Path:
    """Write a small bench in the exact VBVR layout, so the pipeline and its tests run without real data.

    Each sample draws from its own random stream, derived from (seed, task, sample), so reruns give
    byte-identical PNGs and prompts. The ground-truth video eases from the first frame (t=0) to the
    solved final frame (t=1) at 16 fps. `tasks` (default: the next `tasks_per_split` demo tasks per
    split) gives every split the same named tasks, for held-out validation benches.
    """
    splits = [splits] if isinstance(splits, str) else list(splits)
    unknown = sorted(set(tasks or ()) - set(DEMO_TASKS))
    if unknown:
        raise ValueError(f"unknown demo task(s) {unknown}; known: {list(DEMO_TASKS)}")
    if tasks is None and len(splits) * tasks_per_split > len(DEMO_TASKS):
        raise ValueError(
            f"{len(splits)} splits x {tasks_per_split} tasks need more than the {len(DEMO_TASKS)} demo tasks"
        )
    if size < 16 or size % 2:
        raise ValueError(f"size={size}: use an even size >= 16 (H.264 with yuv420p needs even sides)")
    if num_frames < 2:
        raise ValueError(f"num_frames={num_frames}: a ground-truth video needs at least 2 frames")
    root = Path(root)
    names = list(DEMO_TASKS)
    for split_index, split in enumerate(splits):
        split_tasks = tasks or names[split_index * tasks_per_split : (split_index + 1) * tasks_per_split]
        for task in split_tasks:
            for sample in range(samples_per_task):
                rng = np.random.default_rng([seed, names.index(task), sample])
                prompt, frames = render_demo_clip(task, rng, size, num_frames)
                out = sample_dir(root, split, task, sample)
                _save_png(out / FIRST_FRAME, frames[0])
                _save_png(out / FINAL_FRAME, frames[-1])
                write_video(out / GROUND_TRUTH, frames, fps=GT_FPS)
                write_text(out / PROMPT, prompt + "\n")
    return root


# --------------------------------------------------------------------------------------------------
# Task sheet
# --------------------------------------------------------------------------------------------------


def read_task_sheet(path: str | os.PathLike) -> pd.DataFrame:
    """Read the tab-separated task list (split, task, category) and fail early on a malformed sheet.

    The sheet decides which jobs the workflow plans, so a duplicated or blank task would silently
    double or drop work; every error names the file and the offending lines.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task sheet {path} not found (copy shared/reference/vbvr_bench_tasks.tsv)")
    try:
        sheet = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError(
            f"task sheet {path} is empty; expected a header 'split<TAB>task<TAB>category'"
        ) from None
    missing = [c for c in SHEET_COLUMNS if c not in sheet.columns]
    if missing:
        raise ValueError(
            f"task sheet {path}: missing column(s) {missing} (found {list(sheet.columns)}); "
            "expected a tab-separated header 'split<TAB>task<TAB>category'"
        )
    if sheet.empty:
        raise ValueError(f"task sheet {path} has a header but no tasks")
    for column in SHEET_COLUMNS:
        sheet[column] = sheet[column].str.strip()
    blank = sheet.index[(sheet[list(SHEET_COLUMNS)] == "").any(axis=1)]
    if len(blank):
        raise ValueError(f"task sheet {path}: blank split/task/category on line(s) {[i + 2 for i in blank]}")
    duplicated = sheet[sheet["task"].duplicated(keep=False)]
    if len(duplicated):
        lines = {task: [i + 2 for i in rows.index] for task, rows in duplicated.groupby("task")}
        raise ValueError(f"task sheet {path}: task(s) listed more than once (task: lines): {lines}")
    return sheet


# --------------------------------------------------------------------------------------------------
# Sample validation and the scan
# --------------------------------------------------------------------------------------------------


def sample_dir(bench_root: str | os.PathLike, split: str, task: str, sample: str | int) -> Path:
    """Folder of one sample; an integer sample index is written the VBVR way (5 digits, e.g. 00003)."""
    name = f"{sample:05d}" if isinstance(sample, int) else sample
    return Path(bench_root) / split / task / name


def sample_files(folder: str | os.PathLike, names: Sequence[str] = SAMPLE_FILES) -> list[str]:
    """The paths of a sample's files (`names`: e.g. SAMPLING_FILES), as the plan stamps them."""
    return [f"{folder}/{name}" for name in names]


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.load()  # decodes the pixels, so a truncated PNG fails here and not in a GPU job
        return image.size


def _video_facts(path: Path) -> tuple[int, float]:
    """(decoded frames, fps), once the video proves whole: it decodes without errors, into as many
    frames as its container's duration and frame rate promise, and into at least two (a shorter
    ground truth has no motion: its temporal scores would be perfect and void)."""
    import subprocess

    import imageio_ffmpeg  # here, not at the top: training on a GPU machine imports this module without it

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "level+info"]
    command += ["-i", str(path), "-map", "0:v:0", "-f", "null", "-"]
    result = subprocess.run(command, capture_output=True, text=True, errors="replace")
    log = result.stderr.replace("\r", "\n").splitlines()
    errors = [line for line in log if re.search(r"\[(error|fatal|panic)\] ", line)]
    frames = [int(m.group(1)) for line in log if (m := re.search(r"frame=\s*(\d+)", line))]
    duration = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", result.stderr)
    fps = re.search(r"Stream #0.*Video:.*?, (\d+(?:\.\d+)?) (?:fps|tbr)", result.stderr)
    if result.returncode != 0 or not frames:
        cause = (errors or log or ["no output"])[-1]
        raise ValueError(f"ffmpeg cannot decode it ({cause.strip()})")
    if errors:
        raise ValueError(f"corrupt: decoding errors after {frames[-1]} frame(s), first: {errors[0].strip()}")
    num_frames = frames[-1]
    if num_frames < MIN_GT_FRAMES:
        raise ValueError(f"{num_frames} frame(s); a ground truth needs at least {MIN_GT_FRAMES}")
    if fps is None:
        raise ValueError("no frame rate in the container")
    rate = float(fps.group(1))
    if duration is not None:
        hours, minutes, seconds = duration.groups()
        promised = (int(hours) * 3600 + int(minutes) * 60 + float(seconds)) * rate
        if abs(num_frames - promised) > FRAME_SLACK:
            raise ValueError(
                f"truncated or corrupt: the container promises {promised:.0f} frames "
                f"({duration.group(0)} at {rate:g} fps) but {num_frames} decode"
            )
    return num_frames, rate


def _prompt_text(path: Path) -> str:
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError("the prompt is blank")
    return text


_READERS: dict[str, Callable[[Path], Any]] = {
    FIRST_FRAME: _image_size,
    FINAL_FRAME: _image_size,
    GROUND_TRUTH: _video_facts,
    PROMPT: _prompt_text,
}


def _inspect_sample(folder: Path) -> tuple[list[tuple[Path, str]], dict[str, Any]]:
    """Read every file of a sample once; return (problems as (path, reason), facts by file name)."""
    if not folder.is_dir():
        return [(folder, f"sample folder not found; {_REFETCH}")], {}
    problems: list[tuple[Path, str]] = []
    facts: dict[str, Any] = {}
    for name, read in _READERS.items():
        path = folder / name
        if not path.is_file():
            problems.append((path, f"missing; {_REFETCH}"))
        elif path.stat().st_size == 0:
            problems.append((path, f"empty file; {_REFETCH}"))
        else:
            try:
                facts[name] = read(path)
            except Exception as exc:  # any decoding failure means the same thing: this file is unusable
                detail = (str(exc).strip().splitlines() or [""])[-1]  # ffmpeg puts the cause last
                problems.append((path, f"unreadable ({type(exc).__name__}: {detail}); {_REFETCH}"))
    first, final = facts.get(FIRST_FRAME), facts.get(FINAL_FRAME)
    if first and final and first != final:
        problems.append(
            (
                folder / FINAL_FRAME,
                f"size {final[0]}x{final[1]} differs from {FIRST_FRAME} ({first[0]}x{first[1]})",
            )
        )
    return problems, facts


def validate_sample_files(sample_dir: str | os.PathLike) -> list[str]:
    """Problems with one sample as 'path: reason; fix' lines (empty when usable), for failing fast."""
    problems, _ = _inspect_sample(Path(sample_dir))
    return [f"{path}: {reason}" for path, reason in problems]


def _subfolders(folder: Path) -> list[Path]:
    """Sub-folders by name, hidden ones skipped."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def sample_folders(
    root: str | os.PathLike,
    splits: Iterable[str],
    task_globs: Iterable[str],
    max_samples_per_task: int | None,
) -> list[Path]:
    """The sample folders `scan_bench` reads (absent splits are skipped here; the scan refuses them)."""
    task_globs = list(task_globs)
    folders = []
    for split in splits:
        split_dir = Path(root) / split
        if not split_dir.is_dir():
            continue
        for task_dir in _subfolders(split_dir):
            if any(fnmatchcase(task_dir.name, g) for g in task_globs):
                folders += _subfolders(task_dir)[:max_samples_per_task]
    return folders


def scan_bench(
    root: str | os.PathLike,
    *,
    splits: Iterable[str],
    task_globs: Iterable[str] = ("*",),
    max_samples_per_task: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build (manifest, errors) for the samples under `root`, decoding each file once.

    A broken sample goes to `errors` (one row per problem) and the scan goes on, so one bad download
    does not stop a 500-sample run. A missing split folder or a task glob that matches no task folder
    raises instead: those are configuration mistakes, not bad samples. Hidden folders are skipped and
    `max_samples_per_task` keeps the first sample folders by name.
    """
    splits = [splits] if isinstance(splits, str) else list(splits)
    task_globs = [task_globs] if isinstance(task_globs, str) else list(task_globs)
    if max_samples_per_task is not None and max_samples_per_task < 1:
        raise ValueError(f"max_samples_per_task={max_samples_per_task}: use None or a positive number")
    root = Path(root).absolute()
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for split in splits:
        if not (root / split).is_dir():
            raise FileNotFoundError(
                f"split folder {root / split} not found; check the bench root and the splits"
            )
    used_globs = {
        g for split in splits for task_dir in _subfolders(root / split) for g in task_globs
        if fnmatchcase(task_dir.name, g)
    }  # fmt: skip
    for folder in sample_folders(root, splits, task_globs, max_samples_per_task):
        key = {"split": folder.parent.parent.name, "task": folder.parent.name, "sample": folder.name}
        problems, facts = _inspect_sample(folder)
        if problems:
            errors.extend({**key, "path": str(path), "reason": reason} for path, reason in problems)
            continue
        num_frames, fps = facts[GROUND_TRUTH]
        width, height = facts[FIRST_FRAME]
        rows.append(
            {
                **key,
                "first_frame": str(folder / FIRST_FRAME),
                "final_frame": str(folder / FINAL_FRAME),
                "ground_truth": str(folder / GROUND_TRUTH),
                "prompt_file": str(folder / PROMPT),
                "prompt": facts[PROMPT],
                "gt_num_frames": num_frames,
                "gt_fps": fps,
                "width": width,
                "height": height,
            }
        )
    unused = [g for g in task_globs if g not in used_globs]
    if unused:
        raise ValueError(f"task glob(s) {unused} match no task folder in {root} under splits {splits}")
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).astype(
        {"gt_num_frames": "int64", "gt_fps": "float64", "width": "int64", "height": "int64"}
    )
    error_frame = pd.DataFrame(errors, columns=list(ERROR_COLUMNS))
    order = ["split", "task", "sample"]
    return (
        manifest.sort_values(order, ignore_index=True),
        error_frame.sort_values(order, ignore_index=True, kind="stable"),
    )


# --------------------------------------------------------------------------------------------------
# Placeholder tree for dry runs
# --------------------------------------------------------------------------------------------------


def make_fake_bench_tree(
    root: str | os.PathLike, task_sheet: str | os.PathLike | pd.DataFrame, samples_per_task: int = 5
) -> Path:
    """Create the full-size folder tree with placeholder files, for planning (dry-run) tests only.

    The PNGs are 1x1 and ground_truth.mp4 is empty, so `scan_bench` reports every sample of this tree
    as an error: use it to check which jobs the workflow plans, never to run or scan samples.
    """
    sheet = task_sheet if isinstance(task_sheet, pd.DataFrame) else read_task_sheet(task_sheet)
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    placeholders = {FIRST_FRAME: buffer.getvalue(), FINAL_FRAME: buffer.getvalue(), GROUND_TRUTH: b""}
    for split, task in sheet[["split", "task"]].itertuples(index=False):
        for sample in range(samples_per_task):
            folder = sample_dir(root, split, task, sample)
            for name, data in placeholders.items():
                with atomic_path(folder / name) as tmp:
                    tmp.write_bytes(data)
            write_text(folder / PROMPT, f"Placeholder prompt for {task} sample {sample:05d}.\n")
    return Path(root)


def read_sample(sample_folder: str | os.PathLike) -> dict[str, Any]:
    """What a sampling job needs from one sample, or a StepScopeError naming every bad file and the fix."""
    from stepscope.errors import StepScopeError

    folder = Path(sample_folder)
    problems, facts = _inspect_sample(folder)
    if problems:
        raise StepScopeError("bad sample: " + " | ".join(f"{path}: {reason}" for path, reason in problems))
    width, height = facts[FIRST_FRAME]
    num_frames, fps = facts[GROUND_TRUTH]
    return {
        "sample_dir": str(folder),
        "image": str(folder / FIRST_FRAME),
        "prompt": facts[PROMPT],
        "gt_num_frames": int(num_frames),
        "gt_fps": float(fps),
        "width": int(width),
        "height": int(height),
    }
