"""The Snakemake workflow: plans, config validation, rerun triggers, killed jobs, real-format data."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, VBVR_MINI

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def snakemake(
    *args: str, cwd: Path = REPO, check: bool = True, timeout: int = 900
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*SNAKEMAKE, "--directory", str(cwd), "--snakefile", str(REPO / "Snakefile"), *args],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run."""
    counts = {}
    for line in output.splitlines():
        match = re.match(r"^([A-Za-z_]\w*)\s+(\d+)$", line.strip())
        if match and match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts


def write_config(folder: Path, base: str = "config/demo.yaml", **overrides) -> Path:
    config = yaml.safe_load((REPO / base).read_text())
    if base == "config/demo.yaml":
        # the workflow tests run the demo's main family; test_families runs the others
        config["run_variants"] = ["demo-wan22"]
    for key, value in overrides.items():
        node = config
        *parents, last = key.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[last] = value
    for key in ("results", "resources"):
        config[key] = str(folder / key)
    config["bench"]["sample_sheet"] = str(REPO / config["bench"]["sample_sheet"])
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_full_config_dry_run_plans_every_job_without_network(tmp_path):
    result = snakemake(
        "-n",
        "--configfile",
        str(REPO / "config/config.yaml"),
        "--config",
        f"resources={tmp_path}/r",
        f"results={tmp_path}/o",
        cwd=tmp_path,
    )
    counts = job_counts(result.stdout)
    batches = 2 * 100 * 5 // 5  # two variants x 100 tasks x 5 samples, 5 inputs (one seed each) a job
    assert counts["download_model"] == 1 and counts["download_lora"] == 1 and counts["download_bench"] == 1
    assert counts["sample_batch"] == batches and counts["decode_batch"] == batches
    assert counts["analysis_batch"] == batches and counts["tables"] == 1 and counts["check_failures"] == 1
    assert counts["group_figures"] == 2 * 100
    assert "batches/sample/wan22-vbvr/b0099.r0.json" in result.stdout


def test_dry_run_against_a_full_size_fake_bench_tree(tmp_path):
    from stepscope.bench import make_fake_bench_tree

    bench = make_fake_bench_tree(tmp_path / "bench", REPO / "config/vbvr_bench_tasks.tsv", samples_per_task=5)
    config = write_config(
        tmp_path, base="config/config.yaml", **{"bench.source": "local", "bench.local_path": str(bench)}
    )
    counts = job_counts(snakemake("-n", "--configfile", str(config), cwd=tmp_path).stdout)
    assert "download_bench" not in counts and counts["sample_batch"] == 200 and counts["manifest"] == 1


def test_custom_inputs_and_evalkit_are_planned(tmp_path):
    image = tmp_path / "mine.png"
    image.write_bytes(b"")
    config = write_config(
        tmp_path,
        custom=[{"name": "my-puzzle", "image": str(image), "prompt": "solve it", "num_frames": 9}],
        **{"scoring.scorers": ["stepscope-proxy", "vbvr-evalkit"]},
    )
    result = snakemake("-n", "--configfile", str(config), cwd=tmp_path)
    counts = job_counts(result.stdout)
    # 8 bench inputs in two batches of 4, then the custom input in a batch of its own.
    assert counts["sample_batch"] == 3 and counts["analysis_batch"] == 3 and counts["score_evalkit"] == 1
    batch = result.stdout.split("batches/sample/demo-wan22/b0002.r0.json")[0].rsplit(
        "rule sample_batch", 1
    )[1]
    assert str(image) in batch  # the custom image is what the third batch reads


def test_old_builtin_scorer_name_fails_with_the_new_one(tmp_path):
    config = write_config(tmp_path, **{"scoring.scorers": ["builtin"]})
    result = snakemake("-n", "--configfile", str(config), cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "'builtin' was renamed 'stepscope-proxy'" in result.stdout + result.stderr


def test_downloads_refuse_to_run_offline(tmp_path, monkeypatch):
    from stepscope.models.adapter import StepScopeError
    from stepscope.models.hub import download_snapshot

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(StepScopeError, match="HF_HUB_OFFLINE"):
        download_snapshot(
            repo_id="Wan-AI/Wan2.2-I2V-A14B",
            revision="main",
            repo_type="model",
            allow_patterns=["*.json"],
            marker=tmp_path / "m/.stepscope_source.json",
        )
    assert not (tmp_path / "m/.stepscope_source.json").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"models": {"tiny-wan2.2": {"family": "wan9", "tiny": True}}}, "wan9"),
        ({"colour": "blue"}, "colour"),
        ({"seeds": "one"}, "seeds"),
        ({"decode": {"steps": "3-x"}}, "decode"),
        ({"decode": {"steps": "0,99"}}, "decode.steps"),
        ({"run_variants": ["nope"]}, "run_variants"),
        ({"batch": {"inputs": 0}}, "inputs"),
    ],
)
def test_bad_config_fails_at_parse_time_naming_the_key(tmp_path, override, message):
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict) and key != "models":
            config[key].update(value)
        else:
            config[key] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(path), cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def small_config(folder: Path, **overrides) -> Path:
    """Two inputs of one task, one seed, one batch; results and resources relative to `folder`, so
    a copy of the folder is a copy of the whole workflow state."""
    settings = {
        "bench.splits": ["In-Domain_50"],
        "bench.task_globs": ["D-1_*"],
        "bench.samples_per_task": 2,
        "batch.inputs": 2,
        "seeds": [1],
        "ensembles": [],
        "variants.demo-wan22.steps": 4,
        "record.layers": [0, 3],
        "record.map_steps": "0,3",
        "decode.steps": "0,3",
        "figures.steps": "0,3",
        "figures.layers": [3],
    }
    settings.update(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    path = write_config(folder, **settings)
    config = yaml.safe_load(path.read_text())
    config["results"], config["resources"] = "results", "resources"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """The small workflow, run once to completion; tests work on copies (`copy_run`)."""
    folder = tmp_path_factory.mktemp("small-run")
    snakemake("--configfile", str(small_config(folder)), "--cores", "2", cwd=folder)
    return folder


def copy_run(small_run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(small_run, target, symlinks=True)
    small_config(target)  # the same settings, written for the copy
    return target


def file_times(folder: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


RUN_0 = "results/runs/demo-wan22/In-Domain_50/D-1_move_to_target_data-generator/00000/seed1"
RUN_1 = "results/runs/demo-wan22/In-Domain_50/D-1_move_to_target_data-generator/00001/seed1"


def receipt_statuses(folder: Path, stage: str) -> dict[str, str]:
    """sample/run -> status in the newest receipt of the (only) batch of a stage."""
    receipts = (folder / "results/batches" / stage / "demo-wan22").glob("b0000.r*.json")
    newest = max(receipts, key=lambda path: int(path.stem.split(".r")[1]))
    members = json.loads(newest.read_text())["members"]
    return {"/".join(member["key"].split("/")[2:]): member["status"] for member in members}


@pytest.mark.slow
def test_config_changes_rerun_only_the_stages_they_touch(small_run, tmp_path):
    work = copy_run(small_run, tmp_path)
    config = work / "config.yaml"
    assert (work / RUN_0 / "steps.safetensors").exists() and (work / RUN_1 / "meta.json").exists()
    assert job_counts(snakemake("-n", "--configfile", str(config), cwd=work).stdout) == {}

    # A figure-only option reruns the figure jobs (and what reads them), never sampling or decoding.
    figures_only = small_config(tmp_path / "figures", **{"figures.steps": "3"})
    counts = job_counts(snakemake("-n", "--configfile", str(figures_only), cwd=work).stdout)
    assert counts.get("analysis_batch") == 1 and not {"sample_batch", "decode_batch", "tiny_weights"} & set(
        counts
    )

    # Changing the decoded steps reruns decoding (and what reads it), never sampling.
    decode_change = small_config(tmp_path / "decode", **{"decode.steps": "1,2"})
    counts = job_counts(snakemake("-n", "--configfile", str(decode_change), cwd=work).stdout)
    assert counts.get("decode_batch") == 1 and "sample_batch" not in counts

    # A sampling setting reruns sampling.
    cfg_change = small_config(tmp_path / "cfg", **{"variants.demo-wan22.cfg_scale": 3.0})
    counts = job_counts(snakemake("-n", "--configfile", str(cfg_change), cwd=work).stdout)
    assert counts.get("sample_batch") == 1


@pytest.mark.slow
def test_deleted_outputs_are_redone_alone(small_run, tmp_path):
    work = copy_run(small_run, tmp_path)
    config = str(work / "config.yaml")

    # Deleted figures are regenerated from the stored records alone.
    shutil.rmtree(work / "results/figures/runs")
    counts = job_counts(snakemake("-n", "--configfile", config, cwd=work).stdout)
    assert set(counts) == {"analysis_batch", "tables", "check_failures", "all"}
    records = file_times(work / "results/runs")
    snakemake("--configfile", config, "--cores", "2", cwd=work)
    assert any((work / "results/figures/runs").rglob("norm_vs_step.png"))
    assert file_times(work / "results/runs") == records
    report = work / "results/report/figures/demo-wan22"
    assert sorted(path.name for path in report.iterdir()) == ["b0000.r1"]  # the superseded one is gone
    assert any((report / "b0000.r1").rglob("norm_vs_step.png"))

    # One deleted run is sampled again; its batch mate is not touched.
    untouched = file_times(work / RUN_0)
    shutil.rmtree(work / RUN_1)
    counts = job_counts(snakemake("-n", "--configfile", config, cwd=work).stdout)
    assert counts.get("sample_batch") == 1
    snakemake("--configfile", config, "--cores", "2", cwd=work)
    assert (work / RUN_1 / "meta.json").exists() and file_times(work / RUN_0) == untouched
    assert receipt_statuses(work, "sample") == {"00000/seed1": "skipped", "00001/seed1": "done"}


@pytest.mark.slow
def test_a_killed_batch_keeps_its_finished_runs_and_the_rerun_does_the_rest(small_run, tmp_path):
    work = copy_run(small_run, tmp_path)
    more = small_config(tmp_path / "more", seeds=[1, 2])  # adds a seed-2 run to both inputs
    first_new = work / RUN_0.replace("seed1", "seed2")
    process = subprocess.Popen(
        [
            *SNAKEMAKE,
            "--directory",
            str(work),
            "--snakefile",
            str(REPO / "Snakefile"),
            "--configfile",
            str(more),
            "--cores",
            "1",
            "--until",
            "sample_batch",
        ],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not (first_new / "meta.json").exists():
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert (first_new / "meta.json").exists(), "the batch never finished its first new run"
    second_new = work / RUN_1.replace("seed1", "seed2")
    assert not (second_new / "meta.json").exists(), "the batch finished before it was killed"
    kept = file_times(first_new)

    counts = job_counts(snakemake("-n", "--configfile", str(more), cwd=work).stdout)
    assert counts.get("sample_batch") == 1 and "tiny_weights" not in counts and "demo_bench" not in counts
    snakemake("--configfile", str(more), "--unlock", cwd=work)  # the killed run left its lock
    snakemake(
        "--configfile", str(more), "--cores", "2", "--until", "sample_batch", "--rerun-incomplete", cwd=work
    )
    assert receipt_statuses(work, "sample") == {
        "00000/seed1": "skipped",
        "00000/seed2": "skipped",  # finished before the kill: not sampled again
        "00001/seed1": "skipped",
        "00001/seed2": "done",
    }
    assert file_times(first_new) == kept


@pytest.mark.slow
def test_a_bad_sample_fails_alone_and_the_summary_names_it(small_run, tmp_path):
    work = copy_run(small_run, tmp_path)
    config = str(work / "config.yaml")
    image = work / "resources/demo-bench/In-Domain_50/D-1_move_to_target_data-generator/00001/first_frame.png"
    good = image.read_bytes()
    image.write_bytes(b"not a png")
    result = snakemake("--configfile", config, "--cores", "2", cwd=work, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Error in rule check_failures" in output and "00001/seed1" in output
    failures = (work / "results/tables/failures.csv").read_text().splitlines()
    assert len(failures) == 2 and "00001,seed1,sample" in failures[1]
    assert str(image.relative_to(work)) in failures[1]  # the error names the bad file
    summary = (work / "results/tables/summary.md").read_text()
    assert "## Failed runs (1)" in summary and "00001/seed1: failed in sample" in summary
    # The other run completed every stage.
    assert (work / RUN_0 / "meta.json").exists() and not (work / RUN_1 / "meta.json").exists()
    scores = work / "results/scores/runs/demo-wan22/In-Domain_50/D-1_move_to_target_data-generator"
    assert (scores / "00000/seed1.parquet").exists() and not (scores / "00001/seed1.parquet").exists()

    # Fixed, it is the only run sampled again.
    image.write_bytes(good)
    untouched = file_times(work / RUN_0)
    snakemake("--configfile", config, "--cores", "2", cwd=work)
    assert (work / RUN_1 / "meta.json").exists() and file_times(work / RUN_0) == untouched
    assert (
        work / "results/tables/failures.csv"
    ).read_text().strip() == "variant,split,task,sample,run,stage,error"


@pytest.mark.slow
def test_a_job_that_fails_once_is_retried_and_succeeds(small_run, tmp_path):
    work = copy_run(small_run, tmp_path)
    shutil.rmtree(work / RUN_1)
    marker = tmp_path / "fault-once"
    result = subprocess.run(
        [*SNAKEMAKE, "--directory", str(work), "--snakefile", str(REPO / "Snakefile"),
         "--configfile", str(work / "config.yaml"), "--cores", "2", "--retries", "1"],
        cwd=REPO, env={**ENV, "STEPSCOPE_FAULT_ONCE": str(marker)}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert marker.exists() and "injected fault" in output and "Trying to restart job" in output
    assert (work / RUN_1 / "meta.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(
    not VBVR_MINI.is_dir(),
    reason="../shared/vbvr-mini is not present (it is only beside the project checkout)",
)
def test_pipeline_runs_on_real_format_vbvr_samples(tmp_path):
    bench = tmp_path / "vbvr-mini"
    shutil.copytree(VBVR_MINI, bench)
    sheet = tmp_path / "sheet.tsv"
    rows = ["split\ttask\tcategory"] + [
        f"{split.name}\t{task.name}\tunknown"
        for split in sorted(bench.iterdir())
        if split.is_dir()
        for task in sorted(split.iterdir())
    ]
    sheet.write_text("\n".join(rows) + "\n")
    config = small_config(
        tmp_path,
        **{
            "bench.source": "local",
            "bench.local_path": str(bench),
            "bench.sample_sheet": str(sheet),
            "bench.splits": ["In-Domain_50", "Out-of-Domain_50"],
            "bench.task_globs": ["*"],
            "bench.samples_per_task": 5,
            "batch.inputs": 10,
            "variants.demo-wan22.steps": 2,
            "record.layers": [0],
            "record.map_steps": "1",
            "decode.steps": "1",
            "figures.steps": "1",
        },
    )
    config.write_text(config.read_text().replace(str(REPO / str(sheet)), str(sheet)))
    snakemake(
        "--configfile",
        str(config),
        "--cores",
        "2",
        "--until",
        "sample_batch",
        "manifest",
        cwd=tmp_path,
        timeout=1200,
    )
    metas = sorted((tmp_path / "results/runs").rglob("meta.json"))
    assert len(metas) == 20
    import json

    for meta_path in metas[:3]:
        meta = json.loads(meta_path.read_text())
        rounding = meta["settings"]["rounding"]
        assert meta["gt_num_frames"] >= 22
        assert meta["settings"]["num_frames"] == 9  # capped by max_frames
        assert meta["settings"]["height"] == 64 and "height" not in rounding
