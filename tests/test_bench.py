from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stepscope.bench import (
    ERROR_COLUMNS,
    MANIFEST_COLUMNS,
    SAMPLE_FILES,
    SPLITS,
    generate_demo_bench,
    make_fake_bench_tree,
    read_task_sheet,
    sample_dir,
    scan_bench,
    validate_sample_files,
)
from stepscope.demo_tasks import DEMO_TASKS
from stepscope.records import read_video

REPO = Path(__file__).resolve().parents[1]
VBVR_MINI = Path(__file__).resolve().parents[1].parent / "shared" / "vbvr-mini"
TASK_SHEET = REPO / "config" / "vbvr_bench_tasks.tsv"
NUM_FRAMES = 9


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return generate_demo_bench(tmp_path_factory.mktemp("demo") / "bench", num_frames=NUM_FRAMES, seed=3)


def _pixels(path: str | Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float64)


def test_demo_bench_has_exact_vbvr_layout(demo):
    files = sorted(str(p.relative_to(demo)) for p in demo.rglob("*") if p.is_file())
    tasks = list(DEMO_TASKS)
    expected = sorted(
        f"{split}/{task}/{sample:05d}/{name}"
        for split, split_tasks in zip(SPLITS, (tasks[0:2], tasks[2:4]), strict=True)
        for task in split_tasks
        for sample in range(2)
        for name in SAMPLE_FILES
    )
    assert files == expected  # also: no temporary files left behind
    image = Image.open(demo / "In-Domain_50" / tasks[0] / "00000" / "first_frame.png")
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (64, 64))


def test_demo_bench_is_deterministic(demo, tmp_path):
    again = generate_demo_bench(tmp_path / "again", num_frames=NUM_FRAMES, seed=3)
    other = generate_demo_bench(tmp_path / "other", num_frames=NUM_FRAMES, seed=4)
    for path in demo.rglob("*"):
        if path.suffix in {".png", ".txt"}:
            assert (again / path.relative_to(demo)).read_bytes() == path.read_bytes(), path
    firsts = sorted(demo.rglob("first_frame.png"))
    assert any((other / p.relative_to(demo)).read_bytes() != p.read_bytes() for p in firsts)


def test_demo_samples_vary_and_videos_go_from_first_to_final(demo):
    folders = sorted(p.parent for p in demo.rglob("prompt.txt"))
    assert len({(f / "first_frame.png").read_bytes() for f in folders}) == len(folders)
    for folder in folders:
        first, final = _pixels(folder / "first_frame.png"), _pixels(folder / "final_frame.png")
        video = read_video(folder / "ground_truth.mp4").astype(np.float64)
        assert video.shape == (NUM_FRAMES, 64, 64, 3)
        assert np.abs(video[0] - first).mean() < 5
        assert np.abs(video[-1] - final).mean() < 5
        assert np.abs(video[0] - first).mean() < np.abs(video[0] - final).mean()
        assert np.abs(video[-1] - final).mean() < np.abs(video[-1] - first).mean()
        assert (folder / "prompt.txt").read_text().strip().endswith(".")


def test_generate_rejects_impossible_requests(tmp_path):
    with pytest.raises(ValueError, match="demo tasks"):
        generate_demo_bench(tmp_path, tasks_per_split=len(DEMO_TASKS))
    with pytest.raises(ValueError, match="even"):
        generate_demo_bench(tmp_path, size=63)


def test_scan_of_demo_bench(demo):
    manifest, errors = scan_bench(demo, splits=SPLITS)
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    assert list(errors.columns) == list(ERROR_COLUMNS) and errors.empty
    assert len(manifest) == 8
    assert manifest[["split", "task", "sample"]].equals(
        manifest[["split", "task", "sample"]].sort_values(["split", "task", "sample"], ignore_index=True)
    )
    assert set(manifest["gt_num_frames"]) == {NUM_FRAMES}
    assert set(manifest["gt_fps"]) == {16.0}
    assert set(manifest["width"]) == set(manifest["height"]) == {64}
    assert manifest["gt_num_frames"].dtype == np.int64
    row = manifest.iloc[0]
    assert Path(row["first_frame"]).is_absolute()
    assert row["prompt"] == Path(row["prompt_file"]).read_text().strip()
    assert Path(row["ground_truth"]) == sample_dir(demo, row["split"], row["task"], 0) / "ground_truth.mp4"

    one, _ = scan_bench(demo, splits=["Out-of-Domain_50"], task_globs=["D-3_*"], max_samples_per_task=1)
    assert list(one["task"]) == ["D-3_ball_to_wall_data-generator"] and list(one["sample"]) == ["00000"]
    with pytest.raises(ValueError, match="match no task"):
        scan_bench(demo, splits=SPLITS, task_globs=["Z-*"])
    with pytest.raises(FileNotFoundError, match="split folder"):
        scan_bench(demo, splits=["No-Such_50"])


def test_corrupt_samples_go_to_errors_and_the_rest_stay(demo, tmp_path):
    bench = Path(shutil.copytree(demo, tmp_path / "bench"))
    task = list(DEMO_TASKS)[0]
    truncated = sample_dir(bench, "In-Domain_50", task, 0) / "first_frame.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    (sample_dir(bench, "In-Domain_50", task, 1) / "prompt.txt").unlink()
    blank = sample_dir(bench, "Out-of-Domain_50", list(DEMO_TASKS)[2], 1) / "prompt.txt"
    blank.write_text("  \n")
    video = sample_dir(bench, "Out-of-Domain_50", list(DEMO_TASKS)[3], 0) / "ground_truth.mp4"
    video.write_bytes(video.read_bytes()[:200])

    manifest, errors = scan_bench(bench, splits=SPLITS)
    assert len(manifest) == 4
    assert list(zip(errors["task"], errors["sample"], errors["path"], strict=True)) == [
        (task, "00000", str(truncated.absolute())),
        (task, "00001", str((truncated.parent.parent / "00001" / "prompt.txt").absolute())),
        (list(DEMO_TASKS)[2], "00001", str(blank.absolute())),
        (list(DEMO_TASKS)[3], "00000", str(video.absolute())),
    ]
    reasons = list(errors["reason"])
    assert reasons[0].startswith("unreadable") and reasons[1].startswith("missing") and "blank" in reasons[2]
    assert reasons[3].startswith("unreadable (ValueError: ffmpeg cannot decode") and "\n" not in reasons[3]
    assert all("re-download" in r for r in reasons)

    problems = validate_sample_files(truncated.parent)
    assert len(problems) == 1 and problems[0].startswith(f"{truncated}: unreadable")
    assert validate_sample_files(sample_dir(bench, "In-Domain_50", list(DEMO_TASKS)[1], 0)) == []
    assert "sample folder not found" in validate_sample_files(bench / "nowhere")[0]


def test_task_sheet_reads_the_100_tasks():
    sheet = read_task_sheet(TASK_SHEET)
    assert len(sheet) == 100
    assert sheet["split"].value_counts().to_dict() == {"In-Domain_50": 50, "Out-of-Domain_50": 50}
    assert sheet["task"].str.endswith("_data-generator").all()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("split\ttask\nIn-Domain_50\tA_data-generator\n", "missing column"),
        ("split,task,category\nIn-Domain_50,A,Perception\n", "tab-separated"),
        ("split\ttask\tcategory\nIn-Domain_50\tA\tPerception\nOut-of-Domain_50\tA\tX\n", "more than once"),
        ("split\ttask\tcategory\nIn-Domain_50\t \tPerception\n", r"blank .* line\(s\) \[2\]"),
        ("split\ttask\tcategory\n", "no tasks"),
        ("", "is empty"),
    ],
)
def test_task_sheet_errors_name_the_file(tmp_path, text, match):
    path = tmp_path / "tasks.tsv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        read_task_sheet(path)
    assert str(path) in str(info.value)


def test_task_sheet_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        read_task_sheet(tmp_path / "nope.tsv")


def test_fake_tree_has_every_task_and_is_not_scannable(tmp_path):
    sheet = read_task_sheet(TASK_SHEET)
    root = make_fake_bench_tree(tmp_path / "fake", TASK_SHEET)
    samples = sorted(p.parent for p in root.glob("*/*/*/prompt.txt"))
    assert len(samples) == 500
    assert {(p.parent.parent.name, p.parent.name) for p in samples} == set(
        sheet[["split", "task"]].itertuples(index=False, name=None)
    )
    assert all(sorted(f.name for f in p.iterdir()) == sorted(SAMPLE_FILES) for p in samples)
    one = sheet["task"].iloc[0]
    manifest, errors = scan_bench(root, splits=SPLITS, task_globs=[one])
    assert manifest.empty and len(errors) == 5
    assert set(errors["reason"].str.split(";").str[0]) == {"empty file"}


def test_fake_tree_accepts_a_dataframe(tmp_path):
    sheet = pd.DataFrame({"split": ["In-Domain_50"], "task": ["X-1_t_data-generator"], "category": ["P"]})
    root = make_fake_bench_tree(tmp_path, sheet, samples_per_task=2)
    assert sorted(p.name for p in (root / "In-Domain_50" / "X-1_t_data-generator").iterdir()) == [
        "00000",
        "00001",
    ]


@pytest.mark.skipif(not VBVR_MINI.is_dir(), reason=f"real-format samples not found at {VBVR_MINI}")
def test_scan_of_vbvr_mini():
    manifest, errors = scan_bench(VBVR_MINI, splits=SPLITS)
    assert errors.empty, errors.to_string()
    assert len(manifest) == 20
    assert manifest.groupby("split")["task"].nunique().to_dict() == {"In-Domain_50": 2, "Out-of-Domain_50": 2}
    assert set(manifest["width"]) == set(manifest["height"]) == {1024}
    assert manifest["gt_num_frames"].between(22, 79).all()
    assert not ((manifest["gt_num_frames"] - 1) % 4 == 0).all()
    assert set(manifest["gt_fps"]) == {16.0}
    assert (manifest["prompt"].str.len() > 0).all()


def _faststart_video(path: Path, frames: np.ndarray) -> bytes:
    """An H.264 mp4 with its index first (as streamed files are): cut short, it still opens."""
    import imageio.v2 as imageio

    writer = imageio.get_writer(
        path,
        fps=16,
        codec="libx264",
        macro_block_size=1,
        format="FFMPEG",
        output_params=["-movflags", "+faststart"],
    )
    for frame in frames:
        writer.append_data(frame)
    writer.close()
    return path.read_bytes()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("truncated", "corrupt"),  # opens, decodes 30-odd of 77 frames
        ("corrupt_middle", "corrupt"),  # bytes overwritten in the middle
        ("one_frame", "1 frame(s); a ground truth needs at least 2"),
    ],
)
def test_a_ground_truth_that_does_not_decode_whole_is_refused(demo, tmp_path, damage, reason):
    """What the container promises (duration x fps), what decodes, and decoding errors must agree;
    a partial or 1-frame ground truth is refused before any run is sampled or scored on it."""
    from stepscope.bench import read_sample
    from stepscope.errors import StepScopeError

    bench = Path(shutil.copytree(demo, tmp_path / "bench"))
    task = list(DEMO_TASKS)[0]
    folder = sample_dir(bench, "In-Domain_50", task, 0)
    video = folder / "ground_truth.mp4"
    rng = np.random.default_rng(0)
    frames = np.stack(
        [np.clip(rng.integers(0, 40, (64, 64, 3)) + 2 * t, 0, 255).astype(np.uint8) for t in range(77)]
    )
    data = _faststart_video(tmp_path / "whole.mp4", frames)
    assert read_sample(_with_gt(tmp_path / "whole", folder, data))["gt_num_frames"] == 77  # the control
    if damage == "truncated":
        video.write_bytes(data[: int(len(data) * 0.45)])
    elif damage == "corrupt_middle":
        middle = len(data) // 3
        video.write_bytes(
            data[:middle]
            + rng.integers(0, 256, len(data) // 3, dtype=np.uint8).tobytes()
            + data[2 * middle :]
        )
    else:
        _faststart_video(video, frames[:1])
    with pytest.raises(StepScopeError, match=str(video)) as caught:
        read_sample(folder)
    assert reason in str(caught.value) and "re-download" in str(caught.value)
    manifest, errors = scan_bench(bench, splits=["In-Domain_50"], task_globs=[task])
    assert list(errors["path"]) == [str(video.absolute())] and list(manifest["sample"]) == ["00001"]


def _with_gt(target: Path, folder: Path, data: bytes) -> Path:
    shutil.copytree(folder, target)
    (target / "ground_truth.mp4").write_bytes(data)
    return target


def test_sample_folders_are_what_the_scan_reads(demo):
    from stepscope.bench import sample_folders

    folders = sample_folders(demo, SPLITS, ["D-1_*", "D-3_*"], 1)
    manifest, _ = scan_bench(demo, splits=SPLITS, task_globs=["D-1_*", "D-3_*"], max_samples_per_task=1)
    assert [(f.parent.parent.name, f.parent.name, f.name) for f in folders] == list(
        manifest[["split", "task", "sample"]].itertuples(index=False, name=None)
    )
    assert sample_folders(demo, ["No-Such-Split"], ["*"], None) == []
