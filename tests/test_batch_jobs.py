"""Batch jobs on the tiny Wan2.2 twin: one model load per batch, per-run skipping, failures that
stay with their run, and the receipts the workflow reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import stepscope.jobs.runs
from stepscope.bench import generate_demo_bench
from stepscope.jobs import batches as batch_jobs
from stepscope.jobs.plan import Receipt

SETTINGS = {"steps": 4, "cfg_scale": 5.0, "height": 64, "width": 64, "max_frames": 5, "fps": 16}
RECORD = {"layers": [0, 3], "capture_steps": "all", "x0_steps": "all", "map_steps": "0,3", "passes": ["cond"]}
TASK = "D-1_move_to_target_data-generator"


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return generate_demo_bench(
        tmp_path_factory.mktemp("bench"), splits=["In"], tasks_per_split=1, samples_per_task=2, num_frames=9
    )


def sample_member(bench: Path, results: Path, sample: str, run: str, fingerprint: str, **settings) -> dict:
    folder = bench / "In" / TASK / sample
    key = f"In/{TASK}/{sample}/{run}"
    return {
        "key": key,
        "labels": dict(
            zip(("variant", "split", "task", "sample", "run"), ["v", *key.split("/")], strict=True)
        ),
        "fingerprint": fingerprint,
        "source": {"sample_dir": str(folder)},
        "settings": {**SETTINGS, **settings},
        "record": RECORD,
        "seeds": [int(run[len("seed") :])],
        "ensemble": None,
        "out_dir": str(results / "runs" / key),
        "video_link": str(results / "videos" / "v" / f"{key}.mp4"),
        "inputs": [str(folder / name) for name in ("first_frame.png", "prompt.txt", "ground_truth.mp4")],
    }


@pytest.fixture
def count_loads(monkeypatch):
    """Counts model loads while still loading the real tiny model."""
    loads = []
    real = stepscope.jobs.runs.load_job_pipeline

    def counted(*args, **kwargs):
        loads.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(stepscope.jobs.runs, "load_job_pipeline", counted)
    return loads


def run_samples(tiny_weights, members, receipt) -> Receipt:
    return batch_jobs.run_sample_batch(
        family="wan2.2",
        weights_dir=str(tiny_weights("wan2.2")),
        loras=[],
        device={"device": "cpu", "dtype": "fp32"},
        members=members,
        receipt=str(receipt),
        variant="v",
    )


def mtimes(folder: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


def statuses(receipt: Receipt) -> dict[str, str]:
    return {member["key"].split("/", 2)[2]: member["status"] for member in receipt.members}


@pytest.mark.slow
def test_sample_batch_loads_once_and_redoes_only_the_runs_that_need_it(
    tmp_path, bench, tiny_weights, count_loads
):
    results = tmp_path / "results"
    members = [
        sample_member(bench, results, "00000", "seed1", "f-a"),
        sample_member(bench, results, "00001", "seed1", "f-b"),
        sample_member(bench, results, "00001", "seed2", "f-c"),
    ]
    receipt = run_samples(tiny_weights, members, results / "batches/b0000.r0.json")
    assert statuses(receipt) == {"00000/seed1": "done", "00001/seed1": "done", "00001/seed2": "done"}
    assert len(count_loads) == 1  # three runs, one model load
    meta = json.loads((results / "runs" / members[0]["key"] / "meta.json").read_text())
    assert meta["fingerprint"] == "f-a" and len(meta["run_id"]) == 32 and meta["batch"] == "b0000.r0"
    assert (
        meta["timings"]["load_s"] == pytest.approx(receipt.extra["load_s"]) and meta["timings"]["total_s"] > 0
    )
    assert set(meta["input_stamps"]) == set(members[0]["inputs"])
    assert (
        Path(members[0]["video_link"]).stat().st_ino == Path(members[0]["out_dir"], "video.mp4").stat().st_ino
    )

    # Nothing changed: every run is skipped and the model is not even loaded.
    before = mtimes(results / "runs")
    receipt = run_samples(tiny_weights, members, results / "batches/b0000.r1.json")
    assert set(statuses(receipt).values()) == {"skipped"} and len(count_loads) == 1
    assert mtimes(results / "runs") == before
    assert not (results / "batches/b0000.r0.json").exists()  # superseded receipts are pruned

    # One run deleted, one run's settings changed: exactly those two are redone.
    untouched = mtimes(Path(members[0]["out_dir"]))
    for path in Path(members[1]["out_dir"]).iterdir():
        path.unlink()
    members[2] = sample_member(bench, results, "00001", "seed2", "f-c2", cfg_scale=3.0)
    receipt = run_samples(tiny_weights, members, results / "batches/b0000.r2.json")
    assert statuses(receipt) == {"00000/seed1": "skipped", "00001/seed1": "done", "00001/seed2": "done"}
    assert len(count_loads) == 2 and receipt.extra["sampled"] == 2
    assert mtimes(Path(members[0]["out_dir"])) == untouched
    redone = json.loads(Path(members[2]["out_dir"], "meta.json").read_text())
    assert redone["fingerprint"] == "f-c2" and redone["variant_settings"]["cfg_scale"] == 3.0


@pytest.mark.slow
def test_a_bad_input_fails_alone_and_is_redone_once_fixed(tmp_path, bench, tiny_weights):
    results = tmp_path / "results"
    broken = tmp_path / "broken-bench"
    import shutil

    shutil.copytree(bench, broken)
    image = broken / "In" / TASK / "00000" / "first_frame.png"
    good = image.read_bytes()
    image.write_bytes(b"not a png")
    members = [
        sample_member(broken, results, "00000", "seed1", "f-a"),
        sample_member(broken, results, "00001", "seed1", "f-b"),
    ]
    receipt = run_samples(tiny_weights, members, results / "batches/b0000.r0.json")
    assert statuses(receipt) == {"00000/seed1": "failed", "00001/seed1": "done"}
    failed = receipt.failed[0]
    assert failed["failed_stage"] == "sample" and str(image) in failed["error"]
    error = json.loads(Path(members[0]["out_dir"], "error.json").read_text())
    assert str(image) in error["error"] and not Path(members[0]["out_dir"], "meta.json").exists()
    assert not Path(members[0]["video_link"]).exists()

    image.write_bytes(good)
    receipt = run_samples(tiny_weights, members, results / "batches/b0000.r1.json")
    assert statuses(receipt) == {"00000/seed1": "done", "00001/seed1": "skipped"}
    assert not Path(members[0]["out_dir"], "error.json").exists()

    # Editing an input file (same fingerprint) makes its run stale.
    prompt = broken / "In" / TASK / "00001" / "prompt.txt"
    prompt.write_text("Move the object to the other side.\n")
    receipt = run_samples(tiny_weights, members, results / "batches/b0000.r2.json")
    assert statuses(receipt) == {"00000/seed1": "skipped", "00001/seed1": "done"}


def test_the_fault_hook_fails_a_job_exactly_once(tmp_path, monkeypatch):
    monkeypatch.setenv(batch_jobs.FAULT_ENV, str(tmp_path / "fault-marker"))
    with pytest.raises(RuntimeError, match="injected fault"):
        batch_jobs.run_sample_batch(
            family="wan2.2", weights_dir="unused", loras=[], device={}, members=[],
            receipt=str(tmp_path / "b0000.r0.json"), variant="v",
        )  # fmt: skip
    assert not (tmp_path / "b0000.r0.json").exists()
    receipt = batch_jobs.run_sample_batch(
        family="wan2.2", weights_dir="unused", loras=[], device={}, members=[],
        receipt=str(tmp_path / "b0000.r0.json"), variant="v",
    )  # fmt: skip
    assert receipt.members == [] and (tmp_path / "b0000.r0.json").exists()


@pytest.mark.slow
def test_decode_and_analysis_follow_their_runs(tmp_path, bench, tiny_weights):
    results = tmp_path / "results"
    ok = sample_member(bench, results, "00000", "seed1", "f-a")
    missing = sample_member(bench, results, "00001", "seed1", "f-b")
    run_samples(tiny_weights, [ok], results / "batches/sample.json")
    Path(missing["out_dir"]).mkdir(parents=True)
    batch_jobs.write_error(missing["out_dir"], ValueError("broken sample"), "f-b", "sample")

    def decode_members():
        return [
            {"key": m["key"], "labels": m["labels"], "fingerprint": "d-" + m["fingerprint"],
             "run_dir": m["out_dir"], "out_dir": str(results / "decoded" / m["key"])}
            for m in (ok, missing)
        ]  # fmt: skip

    def decode(name):
        return batch_jobs.run_decode_batch(
            family="wan2.2", weights_dir=str(tiny_weights("wan2.2")), device={"device": "cpu", "dtype": "fp32"},
            steps="0,3", sheet_frames=3, members=decode_members(), receipt=str(results / name), variant="v",
        )  # fmt: skip

    receipt = decode("decode0.json")
    assert statuses(receipt) == {"00000/seed1": "done", "00001/seed1": "upstream_failed"}
    assert receipt.failed[0]["failed_stage"] == "sample" and "broken sample" in receipt.failed[0]["error"]
    decoded = results / "decoded" / ok["key"]
    assert sorted(p.name for p in (decoded / "steps").iterdir()) == ["step_0000.mp4", "step_0003.mp4"]
    assert statuses(decode("decode1.json"))["00000/seed1"] == "skipped"
    # A resampled run (new run_id, same fingerprint) is decoded again.
    for path in Path(ok["out_dir"]).iterdir():
        path.unlink()
    run_samples(tiny_weights, [ok], results / "batches/sample2.json")
    assert statuses(decode("decode2.json"))["00000/seed1"] == "done"

    analysis_members = [
        {"key": m["key"], "labels": m["labels"], "fingerprint": "a-" + m["fingerprint"], "run_dir": m["out_dir"],
         "decoded_dir": str(results / "decoded" / m["key"]), "figure_dir": str(results / "figures" / m["key"]),
         "score_table": str(results / "scores" / f"{m['key']}.parquet"), "sample_dir": m["source"]["sample_dir"],
         "inputs": m["inputs"]}
        for m in (ok, missing)
    ]  # fmt: skip
    receipt = batch_jobs.run_analysis_batch(
        layers=None, steps="all", members=analysis_members, divergences=[], receipt=str(results / "analysis.json"),
        variant="v", report_figures=str(results / "report/figures"), report_sheets=str(results / "report/sheets"),
    )  # fmt: skip
    assert statuses(receipt) == {"00000/seed1": "done", "00001/seed1": "upstream_failed"}
    assert receipt.extra["score_tables"] == [analysis_members[0]["score_table"]]
    figures = sorted(p.name for p in Path(analysis_members[0]["figure_dir"]).glob("*.png"))
    linked = sorted(p.name for p in (results / "report/figures" / ok["key"]).glob("*.png"))
    assert figures and linked == figures
    assert (results / "report/sheets" / f"{ok['key']}.png").exists()
    assert not (results / "report/figures" / missing["key"]).exists()
