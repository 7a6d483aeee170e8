"""stepscope-proxy scorer ordering, tidy table rows, and the VBVR-EvalKit adapter (with stand-ins)."""

from __future__ import annotations

import inspect
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from stepscope.analysis import evalkit, proxy_scorer, score_table, scoring
from stepscope.analysis.evalkit import EvalKitNotInstalled, score_with_evalkit
from stepscope.analysis.proxy_scorer import WEIGHTS, score_runs, score_video
from stepscope.analysis.score_table import SCORE_COLUMNS, RunId
from stepscope.records import read_video, write_video

VBVR_MINI = Path(__file__).resolve().parents[1].parent / "shared" / "vbvr-mini"
FAKE_EVALKIT = Path(__file__).resolve().parent / "fake_evalkit"


def _moving_square_frames(n: int = 24, size: int = 128) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    background = np.stack([180 + 40 * xx / size, 190 + 30 * yy / size, np.full_like(xx, 200.0)], axis=-1)
    background[96:104, 8:120] = (60, 60, 60)  # a static bar gives the scene some structure
    frames = []
    for t in range(n):
        frame = background.copy()
        x0 = int(round(8 + (size - 8 - 30) * t / (n - 1)))
        frame[30:58, x0 : x0 + 22] = (220, 30, 30)
        frames.append(frame)
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def synthetic_sample(tmp_path_factory) -> Path:
    sample = tmp_path_factory.mktemp("bench") / "In-Domain_50" / "T-1_moving_square_data-generator" / "00000"
    sample.mkdir(parents=True)
    frames = _moving_square_frames()
    Image.fromarray(frames[0]).save(sample / "first_frame.png")
    Image.fromarray(frames[-1]).save(sample / "final_frame.png")
    write_video(sample / "ground_truth.mp4", frames, fps=16)
    (sample / "prompt.txt").write_text("Move the red square to the right edge.\n")
    return sample


def _alternatives(sample: Path) -> dict[str, np.ndarray]:
    gt = read_video(sample / "ground_truth.mp4")
    if max(gt.shape[1:3]) > 256:  # the scorer works at <= 256 px anyway; shrink once here
        h, w = proxy_scorer._work_size(*gt.shape[1:3], 256)
        gt = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BILINEAR)) for f in gt])
    first = np.asarray(Image.open(sample / "first_frame.png").convert("RGB"))
    rng = np.random.default_rng(0)
    return {
        "gt": gt,
        "static": np.repeat(first[None], len(gt), axis=0),
        "reversed": gt[::-1].copy(),
        "noise": rng.integers(0, 256, size=(len(gt), 96, 96, 3), dtype=np.uint8),
    }


def _check_order(scores: dict[str, dict[str, float]]) -> None:
    for name, s in scores.items():
        assert set(s) == set(proxy_scorer.METRICS), name
        assert all(0.0 <= v <= 1.0 for v in s.values()), (name, s)
        assert s["total"] == pytest.approx(sum(WEIGHTS[k] * s[k] for k in WEIGHTS))
    totals = {name: s["total"] for name, s in scores.items()}
    assert totals["gt"] == max(totals.values()), totals
    assert totals["gt"] > 0.9, totals
    assert totals["static"] < totals["gt"] - 0.1, totals
    assert totals["reversed"] < totals["gt"] - 0.1, totals
    assert totals["noise"] == min(totals.values()), totals
    assert totals["noise"] < 0.3, totals


def test_builtin_ordering_synthetic(synthetic_sample):
    scores = {
        name: score_video(frames, synthetic_sample)
        for name, frames in _alternatives(synthetic_sample).items()
    }
    _check_order(scores)
    # the GT moves; a static video does not progress at all
    assert scores["gt"]["task_progress"] > 0.9
    assert scores["static"]["task_progress"] < 0.4
    assert scores["reversed"]["first_frame_fidelity"] < scores["gt"]["first_frame_fidelity"]


def test_builtin_handles_other_resolution_and_length(synthetic_sample):
    gt = read_video(synthetic_sample / "ground_truth.mp4")
    # a model would output another size and frame count: upsample in time, shrink in space
    idx = np.rint(np.linspace(0, len(gt) - 1, 41)).astype(int)
    small = np.stack([np.asarray(Image.fromarray(gt[i]).resize((80, 64))) for i in idx])
    s = score_video(small, synthetic_sample)
    assert s["total"] > 0.85, s
    # float input in [0, 1] is accepted and gives the same score as uint8
    assert score_video(gt.astype(np.float32) / 255.0, synthetic_sample)["total"] == pytest.approx(
        score_video(gt, synthetic_sample)["total"], abs=1e-3
    )


def test_builtin_penalises_jumps_and_broken_frames(synthetic_sample):
    gt = read_video(synthetic_sample / "ground_truth.mp4")
    cut = np.concatenate([np.repeat(gt[:1], 12, axis=0), np.repeat(gt[-1:], 12, axis=0)])
    s_gt, s_cut = score_video(gt, synthetic_sample), score_video(cut, synthetic_sample)
    assert s_cut["temporal_smoothness"] < 0.6 * s_gt["temporal_smoothness"], (s_cut, s_gt)
    broken = gt.astype(np.float32)
    broken[5:] = np.nan
    s_broken = score_video(broken, synthetic_sample)
    assert s_broken["total"] < 0.5 * s_gt["total"]
    assert s_broken["visual_quality"] < 0.3


def test_builtin_is_deterministic_and_accepts_paths(synthetic_sample):
    path = synthetic_sample / "ground_truth.mp4"
    a = score_video(path, synthetic_sample)
    b = score_video(read_video(path), synthetic_sample)
    assert a == b


def test_ssim_identity_and_range():
    rng = np.random.default_rng(1)
    img = rng.random((40, 50, 3)).astype(np.float32)
    assert proxy_scorer.ssim(img, img) == pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= proxy_scorer.ssim(img, rng.random((40, 50, 3)).astype(np.float32)) < 0.2


def test_missing_sample_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="lacks"):
        score_video(np.zeros((3, 8, 8, 3), np.uint8), tmp_path)


@pytest.mark.skipif(not VBVR_MINI.is_dir(), reason=f"vbvr-mini samples not found at {VBVR_MINI}")
@pytest.mark.parametrize("split", ["In-Domain_50", "Out-of-Domain_50"])
def test_builtin_ordering_vbvr_mini(split):
    tasks = sorted(p for p in (VBVR_MINI / split).iterdir() if p.is_dir())
    if not tasks:
        pytest.skip(f"no tasks under {VBVR_MINI / split}")
    for task in tasks:
        sample = task / "00000"
        scores = {name: score_video(frames, sample) for name, frames in _alternatives(sample).items()}
        _check_order(scores)


def test_score_runs_table(synthetic_sample):
    gt = read_video(synthetic_sample / "ground_truth.mp4")
    items = [
        (RunId("wan22", "In-Domain_50", "T-1", "00000", "1", -1), gt, synthetic_sample),
        ({"variant": "wan22", "split": "In-Domain_50", "task": "T-1", "sample": "00000", "seed": 2, "step": 7},
         synthetic_sample / "ground_truth.mp4", synthetic_sample),
        (RunId("wan22", "In-Domain_50", "T-1", "00000", "ens-latent-k3-0-10"), gt[::-1], synthetic_sample),
    ]  # fmt: skip
    table = score_runs(items)
    assert list(table.columns) == list(SCORE_COLUMNS)
    assert len(table) == 3 * len(proxy_scorer.METRICS)
    assert table["seed"].tolist().count("2") == len(proxy_scorer.METRICS)
    assert set(table["seed"]) == {"1", "2", "ens-latent-k3-0-10"}
    assert table["step"].dtype == np.int64 and set(table["step"]) == {-1, 7}
    assert set(table["scorer"]) == {"stepscope-proxy"}
    totals = table[table["metric"] == "total"].set_index("seed")["value"]
    assert totals["1"] == pytest.approx(totals["2"])
    assert totals["ens-latent-k3-0-10"] < totals["1"]


def test_score_table_roundtrip(tmp_path):
    rows = score_table.score_rows(
        RunId("v", "s", "t", "00001", "3", 4), {"total": 0.5, "task_progress": 0.25}, proxy_scorer.PROXY
    )
    target = tmp_path / "scores.parquet"
    score_table.write_score_table(target, score_table.rows_to_table(rows))
    back = score_table.read_score_table(target)
    assert back.to_dict("records")[0] == {
        "variant": "v", "split": "s", "task": "t", "sample": "00001", "seed": "3", "step": 4,
        "scorer": "stepscope-proxy", "metric": "total", "value": 0.5,
    }  # fmt: skip
    merged = score_table.merge_score_tables([target, target], tmp_path / "merged.parquet")
    assert len(merged) == 4 and (tmp_path / "merged.parquet").is_file()
    assert list(score_table.empty_score_table().columns) == list(SCORE_COLUMNS)
    # tables written before the rename read back under the new name
    score_table.write_score_table(target, score_table.rows_to_table(rows).assign(scorer="builtin"))
    assert set(score_table.read_score_table(target)["scorer"]) == {"stepscope-proxy"}


# ---------------------------------------------------------------------------------------------
# VBVR-EvalKit adapter
# ---------------------------------------------------------------------------------------------

LEVELS = {"00000": 64, "00001": 128, "00002": 192}
TASK_A, TASK_B = "G-1_task_a_data-generator", "O-2_task_b_data-generator"  # named like VBVR tasks


@pytest.fixture
def evalkit_tree(tmp_path, monkeypatch):
    """Generated videos in EvalKit's layout (constant grey levels) plus matching sample folders."""
    monkeypatch.syspath_prepend(str(FAKE_EVALKIT))
    videos, bench = tmp_path / "videos", tmp_path / "bench"
    layout = {
        "In-Domain_50": {TASK_A: ["00000", "00001"]},
        "Out-of-Domain_50": {TASK_B: ["00002"]},
    }
    for model in ("wan22", "wan22@ens-latent-k3-0-10"):
        for split, tasks in layout.items():
            for task, samples in tasks.items():
                for sample in samples:
                    level = LEVELS[sample] + (20 if "@" in model else 0)
                    frames = np.full((5, 16, 16, 3), level, np.uint8)
                    write_video(
                        evalkit.evalkit_video_path(videos, model, split, task, sample), frames, fps=16
                    )
                    (bench / split / task / sample).mkdir(parents=True, exist_ok=True)
    yield videos, bench
    for name in list(sys.modules):
        if name.startswith(("fake_evalkit", "fake_vbvr_bench")):
            del sys.modules[name]


def _expected(variant_seed_level: int) -> float:
    return variant_seed_level / 255.0


@pytest.mark.parametrize("module", ["fake_evalkit_video", "fake_evalkit_batch", "fake_vbvr_bench"])
def test_evalkit_adapter(evalkit_tree, tmp_path, module):
    videos, bench = evalkit_tree
    out = tmp_path / "evalkit.parquet"
    table = score_with_evalkit(videos, bench, out, module=module, check_versions=False)
    assert out.is_file()
    assert list(table.columns) == list(SCORE_COLUMNS)
    assert set(table["scorer"]) == {"vbvr-evalkit"}
    assert set(table["step"]) == {-1}
    task = table[table["metric"] == "task_specific"]
    assert len(task) == 6
    assert set(task["variant"]) == {"wan22"}
    assert set(task["seed"]) == {"1", "ens-latent-k3-0-10"}
    for row in task.itertuples():
        level = LEVELS[row.sample] + (20 if row.seed != "1" else 0)
        assert row.value == pytest.approx(_expected(level), abs=0.02), row
        assert (row.split, row.task) in {("In-Domain_50", TASK_A), ("Out-of-Domain_50", TASK_B)}
    assert pd.read_parquet(out).shape == table.shape


def test_evalkit_bench_full_score(evalkit_tree):
    videos, bench = evalkit_tree
    table = score_with_evalkit(videos, bench, module="fake_vbvr_bench", full_score=True, models=["wan22"],
                               check_versions=False)  # fmt: skip
    assert set(table["metric"]) == {
        "weighted", "first_frame_consistency", "final_frame_accuracy", "temporal_smoothness",
        "visual_quality", "task_specific",
    }  # fmt: skip
    assert set(table["seed"]) == {"1"}


def test_evalkit_errors(evalkit_tree, tmp_path):
    videos, bench = evalkit_tree
    with pytest.raises(EvalKitNotInstalled, match="not on PyPI") as info:
        score_with_evalkit(videos, bench, module="no_such_evalkit_module_xyz")
    message = str(info.value)
    assert "git clone" in message and "envs/evalkit.txt" in message and "docs/scoring.md" in message
    assert isinstance(info.value, ImportError)
    with pytest.raises(TypeError, match="none of"):
        score_with_evalkit(videos, bench, module="fake_evalkit_empty", check_versions=False)
    # a crashing evaluator: 0.0 as EvalKit scores it (and recorded), raise or NaN on request
    broken = videos / "wan22" / "In-Domain_50" / "G-9_broken_task_data-generator"
    write_video(broken / "00000.mp4", np.zeros((3, 16, 16, 3), np.uint8), fps=16)
    (bench / "In-Domain_50" / "G-9_broken_task_data-generator" / "00000").mkdir(parents=True)
    with pytest.warns(UserWarning, match=r"could not evaluate 1 video\(s\).*evaluator crashed"):
        table = score_with_evalkit(videos, bench, module="fake_evalkit_video", check_versions=False)
    rows = table[table["task"] == "G-9_broken_task_data-generator"].set_index("metric")["value"]
    assert rows.to_dict() == {"task_specific": 0.0, score_table.FAILED: 1.0}
    with pytest.raises(RuntimeError, match="crashed"):
        score_with_evalkit(videos, bench, module="fake_evalkit_video", on_error="raise", check_versions=False)
    with pytest.warns(UserWarning, match="scored NaN"):
        table = score_with_evalkit(
            videos, bench, module="fake_evalkit_video", on_error="nan", check_versions=False
        )
    scores = table[(table["task"] == "G-9_broken_task_data-generator") & (table["metric"] == "task_specific")]
    assert scores["value"].isna().all()
    with pytest.raises(ValueError, match="on_error"):
        score_with_evalkit(videos, bench, module="fake_evalkit_video", on_error="skip", check_versions=False)


def test_evalkit_default_module_is_vbvr_bench(tmp_path, capsys):
    """One default, the repository's package: in the function, the CLI and the workflow schema."""
    assert evalkit.EVALKIT_MODULE == "vbvr_bench"
    assert inspect.signature(score_with_evalkit).parameters["module"].default == "vbvr_bench"
    assert inspect.signature(evalkit.import_evalkit).parameters["module"].default == "vbvr_bench"
    schema = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "config/schema/config.schema.yaml").read_text()
    )
    assert schema["properties"]["scoring"]["properties"]["evalkit_module"]["default"] == "vbvr_bench"
    # the CLI without --module looks for vbvr_bench (not installed in the test environment)
    rc = scoring.main(["evalkit", "--videos-root", str(tmp_path), "--bench-root", str(tmp_path),
                       "--out", str(tmp_path / "x.parquet")])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "'vbvr_bench' is not importable" in err and evalkit.EVALKIT_COMMIT in err


def _write_unreadable(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an mp4 file")


@pytest.mark.parametrize("module", ["fake_vbvr_bench", "fake_evalkit_video"])
def test_evalkit_failed_video_scores_zero_and_counts(evalkit_tree, module):
    """EvalKit's convention: an unreadable video scores 0.0 and counts in the means; which
    videos failed is recorded (status rows + warning)."""
    videos, bench = evalkit_tree
    bad = evalkit.evalkit_video_path(videos, "wan22", "In-Domain_50", TASK_A, "00003")
    _write_unreadable(bad)
    (bench / "In-Domain_50" / TASK_A / "00003").mkdir(parents=True)
    with pytest.warns(UserWarning, match="could not evaluate 1 video") as caught:
        table = score_with_evalkit(videos, bench, module=module, models=["wan22"], check_versions=False)
    assert str(bad) in "".join(str(w.message) for w in caught)
    task = table[(table["task"] == TASK_A) & (table["metric"] == "task_specific")].set_index("sample")[
        "value"
    ]
    assert task["00003"] == 0.0
    # the task mean is the mean over all four videos, the failed one included (EvalKit's mean)
    expected = (_expected(LEVELS["00000"]) + _expected(LEVELS["00001"]) + 0.0) / 3
    assert task[["00000", "00001", "00003"]].mean() == pytest.approx(expected, abs=0.01)
    failed = table[table["metric"] == score_table.FAILED]
    assert failed[["task", "sample"]].values.tolist() == [[TASK_A, "00003"]]
    assert (failed["value"] == 1.0).all()


def test_evalkit_task_without_evaluator_is_skipped(evalkit_tree):
    """A task folder EvalKit has no evaluator for (custom input) crashes vbvr_bench's own
    VBVRBench.evaluate with TypeError; the adapter skips it with a warning, also with
    on_error="nan", and marks its videos as skipped."""
    import fake_vbvr_bench

    videos, bench = evalkit_tree
    custom = evalkit.evalkit_video_path(videos, "wan22", "In-Domain_50", "my_custom_input", "00000")
    write_video(custom, np.full((5, 16, 16, 3), 50, np.uint8), fps=16)
    other_split = evalkit.evalkit_video_path(videos, "wan22", "custom", "my_custom_input", "00000")
    write_video(other_split, np.full((5, 16, 16, 3), 50, np.uint8), fps=16)
    raw = fake_vbvr_bench.VBVRBench(gt_base_path=str(bench), output_path=str(bench.parent / "raw"))
    with pytest.raises(TypeError):  # the stand-in crashes as the real package does
        raw.evaluate(videos_path=str(videos / "wan22"), task_specific_only=True)
    for on_error in ("zero", "nan"):
        with pytest.warns(
            UserWarning, match=r"skipped task folders.*In-Domain_50/my_custom_input \(no EvalKit evaluator\)"
        ):
            table = score_with_evalkit(videos, bench, module="fake_vbvr_bench", models=["wan22"],
                                       on_error=on_error, check_versions=False)  # fmt: skip
        skipped = table[table["metric"] == score_table.SKIPPED]
        assert sorted(zip(skipped["split"], skipped["task"], strict=True)) == [
            ("In-Domain_50", "my_custom_input"),
            ("custom", "my_custom_input"),
        ]
        scored = table[table["metric"] == "task_specific"]
        assert len(scored) == 3 and set(scored["task"]) == {TASK_A, TASK_B}
        assert scored["value"].notna().all()


def test_parse_model_dir():
    assert evalkit.parse_model_dir("wan22") == ("wan22", "1")
    assert evalkit.parse_model_dir("wan22", first_seed="7") == ("wan22", "7")
    assert evalkit.parse_model_dir("wan22@3") == ("wan22", "3")
    assert evalkit.parse_model_dir("vbvr_wan22@ens-latent-k3-0-10") == ("vbvr_wan22", "ens-latent-k3-0-10")
    # the workflow's layout (rules/common.smk video_model_name)
    assert evalkit.parse_model_dir("vbvr_wan22_seed2") == ("vbvr_wan22", "2")
    assert evalkit.parse_model_dir("wan22_ens-x0-k3-0-10-rescale") == ("wan22", "ens-x0-k3-0-10-rescale")


def test_evalkit_model_map(evalkit_tree):
    videos, bench = evalkit_tree
    table = score_with_evalkit(
        videos,
        bench,
        module="fake_evalkit_video",
        check_versions=False,
        model_map={"wan22": ("base", "5")},
    )
    assert set(zip(table["variant"], table["seed"], strict=True)) == {
        ("base", "5"),
        ("wan22", "ens-latent-k3-0-10"),
    }


def test_evalkit_version_warning(monkeypatch):
    from importlib import metadata

    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "2.0.0" if name == "numpy" else real(name))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = evalkit.check_evalkit_versions()
    assert found["numpy"] == "2.0.0"
    assert any("numpy is 2.0.0, pinned 1.26.4" in str(w.message) for w in caught)


def test_old_builtin_name_fails_clearly(capsys):
    with pytest.raises(ValueError, match="renamed 'stepscope-proxy'"):
        scoring.check_scorer_names(["builtin", "vbvr-evalkit"])
    scoring.check_scorer_names([proxy_scorer.PROXY, evalkit.EVALKIT])
    with pytest.raises(SystemExit):
        scoring.main(["builtin", "video.mp4", "sample"])
    assert "renamed 'proxy'" in capsys.readouterr().err


def test_schema_scorer_enum_equals_the_registry():
    """config ``scoring.scorers`` accepts exactly the registered scorers; each has its CLI subcommand."""
    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/schema/config.schema.yaml").read_text())
    enum = schema["properties"]["scoring"]["properties"]["scorers"]["items"]["enum"]
    assert sorted(enum) == sorted(scoring.SCORERS)
    assert sorted(s.cli for s in scoring.SCORERS.values()) == ["evalkit", "proxy"]
    with pytest.raises(ValueError, match="unknown scorer 'nope'"):
        scoring.check_scorer_names(["nope"])
    # only a scorer that scores the videos tree in its own rule has a table of its own
    assert scoring.scorer_tables([proxy_scorer.PROXY]) == []
    assert scoring.scorer_tables(enum) == ["scores/evalkit.parquet"]


def test_proxy_cli_prints_the_scores_of_score_video(synthetic_sample, tmp_path, capsys):
    """The registry's CLI dispatch reaches the proxy scorer (same numbers as the function)."""
    video = tmp_path / "video.mp4"
    write_video(video, _moving_square_frames(n=8, size=64), fps=8)
    assert scoring.main(["proxy", str(video), str(synthetic_sample)]) == 0
    assert json.loads(capsys.readouterr().out) == score_video(video, synthetic_sample)


def test_score_labels_name_scorer_and_mode():
    assert "not VBVR's score" in scoring.score_label(proxy_scorer.PROXY, "total")
    assert scoring.score_label(evalkit.EVALKIT, "task_specific").startswith("task_specific [VBVR-EvalKit")
    assert "composite mode" in scoring.score_label(evalkit.EVALKIT, "weighted")


def test_evalkit_cli_missing_module(tmp_path, capsys):
    rc = scoring.main(["evalkit", "--videos-root", str(tmp_path), "--bench-root", str(tmp_path),
                       "--out", str(tmp_path / "x.parquet"), "--module", "no_such_evalkit_module_xyz"])  # fmt: skip
    assert rc == 2
    assert "not on PyPI" in capsys.readouterr().err


def test_final_video_encoding_recorded_in_meta(tmp_path):
    """meta.json says how video.mp4 was encoded (scores depend on it), and it is what the file
    holds: x264 writes its settings (crf) into the stream."""
    import re

    import torch

    from stepscope import records
    from stepscope.sampling.loop import SampleResult, write_run

    frames = _moving_square_frames(n=9, size=64)
    result = SampleResult(
        seed=1,
        frames=frames,
        final_latent=torch.zeros(4, 3, 4, 4),
        x0_hats={},
        schedule=[{"step": 0, "expert": "main"}],
        activation_maps={},
        activation_rows=[],
        settings={"family": "wan2.1", "fps": 12},
        timings={},
    )
    run = write_run(tmp_path / "run", result, {})
    encoding = records.RunRecords(run).meta["video_encoding"]
    assert encoding["codec"] == "libx264" and encoding["container"] == "mp4" and encoding["fps"] == 12
    assert encoding["writer"] == "imageio-ffmpeg" and encoding["imageio_ffmpeg"] and encoding["ffmpeg"]
    stream = (run / records.VIDEO).read_bytes()
    assert b"x264" in stream
    crf = re.search(rb"crf=(\d+(?:\.\d+)?)", stream)
    assert crf is not None and float(crf.group(1)) == encoding["crf"]
    assert encoding["pix_fmt"] == "yuv420p"


# ---------------------------------------------------------------------------------------------
# VBVR-EvalKit's pinned environment (envs/evalkit.txt)
# ---------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
EVALKIT_ENV = ROOT / "envs" / "evalkit.txt"
# (package, its versions the rule applies to, what they need, where the rule comes from)
RUNTIME_CONSTRAINTS = [
    (
        "pyarrow",
        ">=26",
        "numpy>=2",
        "import of pyarrow 26.0.1 with numpy 1.26.4 fails; its metadata says nothing",
    ),
    ("pandas", ">=2.2,<2.3", "numpy>=1.23.2", "pandas 2.2 Requires-Dist on Python 3.11"),
    ("opencv-python", ">=4.10,<4.11", "numpy>=1.23.5", "opencv-python 4.10 Requires-Dist on Python 3.11"),
    ("imageio", ">=2.37", "pillow>=8.3.2", "imageio Requires-Dist"),
    ("numpy", "<2", "python<3.13", "numpy 1.26 ships no wheels for Python 3.13"),
    ("pyarrow", ">=21", "python>=3.10", "pyarrow Requires-Python"),
]


def recipe_pins(text: str) -> dict[str, str]:
    """``name -> version`` of a requirements text, ``python`` from its ``# python: X.Y`` line;
    every requirement must be an exact pin (a floating one is how pyarrow 26 got in)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (raw.strip() for raw in text.splitlines()):
        if line.startswith("# python:"):
            pins["python"] = line.split(":", 1)[1].strip()
        if not line or line.startswith("#"):
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{line!r}: pin it exactly (name==version)"
        pins[canonicalize_name(req.name)] = specs[0].version
    return pins


def recipe_conflicts(pins: dict[str, str]) -> list[str]:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    conflicts = []
    for package, applies, needs, source in RUNTIME_CONSTRAINTS:
        if package not in pins or pins[package] not in SpecifierSet(applies):
            continue
        need = Requirement(needs)
        have = pins.get(need.name)
        if have is None or have not in need.specifier:
            conflicts.append(f"{package}=={pins[package]} needs {needs}, recipe has {have} ({source})")
    return conflicts


def test_evalkit_recipe_pins_are_consistent():
    pins = recipe_pins(EVALKIT_ENV.read_text())
    assert recipe_conflicts(pins) == []
    # the versions the adapter checks at run time are the recipe's
    assert {k.lower(): v for k, v in evalkit.EVALKIT_PINS.items()} == {
        k: pins[k] for k in ("numpy", "opencv-python", "pillow")
    }
    assert {"pandas", "pyarrow", "imageio", "imageio-ffmpeg", "python"} <= set(pins)
    docs = (ROOT / "docs" / "scoring.md").read_text()
    assert "envs/evalkit.txt" in docs and evalkit.EVALKIT_COMMIT in docs
    # the checks do fail: the recipe the issue found (pyarrow floating to 26) is refused
    assert recipe_conflicts({**pins, "pyarrow": "26.0.1"}) != []
    with pytest.raises(AssertionError, match="pin it exactly"):
        recipe_pins("numpy==1.26.4\npyarrow\n")


@pytest.mark.skipif(
    not os.environ.get("STEPSCOPE_EVALKIT_PYTHON"),
    reason="set STEPSCOPE_EVALKIT_PYTHON to the python of an environment built from envs/evalkit.txt",
)
def test_evalkit_environment_imports_together(tmp_path):
    """In an environment built from the recipe: the pinned versions are installed, import
    together, write Parquet, and the adapter scores a videos tree there (with the stand-in)."""
    import subprocess

    python = os.environ["STEPSCOPE_EVALKIT_PYTHON"]
    pins = recipe_pins(EVALKIT_ENV.read_text())
    pins.pop("python")
    probe = "\n".join(
        [
            "import json, importlib.metadata as m, numpy, cv2, PIL, pandas, pyarrow, imageio",
            "pandas.DataFrame({'a': [1.0]}).to_parquet('probe.parquet')",
            f"print(json.dumps({{n: m.version(n) for n in {sorted(pins)!r}}}))",
        ]
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{FAKE_EVALKIT}"}
    out = subprocess.run([python, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    found = {k.lower(): v for k, v in json.loads(out.stdout).items()}
    assert found == pins
    videos, bench = tmp_path / "videos", tmp_path / "bench"
    write_video(evalkit.evalkit_video_path(videos, "wan22", "In-Domain_50", TASK_A, "00000"),
                np.full((5, 16, 16, 3), 128, np.uint8), fps=16)  # fmt: skip
    (bench / "In-Domain_50" / TASK_A / "00000").mkdir(parents=True)
    cli = [python, "-m", "stepscope.analysis.scoring", "evalkit", "--videos-root", str(videos), "--bench-root",
           str(bench), "--out", str(tmp_path / "s.parquet"), "--module", "fake_vbvr_bench"]  # fmt: skip
    out = subprocess.run(cli, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "pinned" not in out.stderr  # no version warning inside the pinned environment
    table = pd.read_parquet(tmp_path / "s.parquet")
    assert table["value"].tolist() == pytest.approx([128 / 255], abs=0.02)
