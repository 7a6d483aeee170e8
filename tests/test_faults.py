"""Bad input and faults (issue 17): one broken sample never stops the others, every failure is
reported, nothing stale is taken as done, and config is read the way Snakemake users write it.

The workflow cases run on a local two-sample bench (one task) with the tiny Wan2.2 twin: one
sample is broken, the other is the healthy control.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO
from test_workflow import file_times, job_counts, small_config, snakemake

from stepscope.bench import generate_demo_bench

TASK = "D-1_move_to_target_data-generator"
RUNS = f"results/runs/demo-wan22/In-Domain_50/{TASK}"
SHEET_HEADER = "split\ttask\tcategory\n"


def local_config(folder: Path, sheet_rows: list[str] | None = None, **overrides) -> Path:
    """The small workflow on the local bench under `folder` (one batch per input)."""
    sheet = folder / "sheet.tsv"
    sheet.write_text(SHEET_HEADER + "".join(f"{row}\n" for row in sheet_rows or [f"In-Domain_50\t{TASK}\tx"]))
    settings = {
        "bench.source": "local",
        "bench.local_path": "bench",  # relative: a copy of the folder is a copy of the whole state
        "bench.sample_sheet": sheet.name,  # relative too
        "batch.inputs": 1,
        **overrides,
    }
    path = small_config(folder, **settings)
    path.write_text(path.read_text().replace(str(REPO / sheet.name), sheet.name))
    return path


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    """Two healthy samples, run once to completion; tests work on copies."""
    folder = tmp_path_factory.mktemp("local-run")
    generate_demo_bench(folder / "bench", splits=["In-Domain_50"], tasks_per_split=1, samples_per_task=2)
    snakemake("--configfile", str(local_config(folder)), "--cores", "2", cwd=folder)
    return folder


def copy_of(local_run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(local_run, target, symlinks=True)
    return target


def failures(work: Path) -> pd.DataFrame:
    return pd.read_csv(work / "results/tables/failures.csv", dtype=str, keep_default_na=False)


def newest_receipt(work: Path, stage: str, batch: str) -> dict:
    folder = work / "results/batches" / stage / "demo-wan22"
    receipts = folder.glob(f"{batch}.r*.json")
    return json.loads(max(receipts, key=lambda path: int(path.stem.split(".r")[1])).read_text())


# ----- 1. missing inputs: failed runs, never a planning error ------------------------------------


def break_inputs(work: Path) -> tuple[Path, str, Path]:
    """Delete sample 00001's prompt and plan one sample more than the bench has and a task folder
    it lacks; returns (the prompt, its text, the config)."""
    prompt = work / "bench/In-Domain_50" / TASK / "00001/prompt.txt"
    text = prompt.read_text()
    prompt.unlink()
    config = local_config(
        work,
        [f"In-Domain_50\t{TASK}\tx", "In-Domain_50\tD-9_absent_task\tx"],
        **{"bench.samples_per_task": 3, "bench.task_globs": ["D-*"]},
    )
    return prompt, text, config


@pytest.mark.slow
def test_missing_inputs_fail_their_runs_alone_and_the_fix_reruns_only_them(local_run, tmp_path):
    work = copy_of(local_run, tmp_path)
    prompt, text, broken = break_inputs(work)
    control = file_times(work / RUNS / "00000")
    result = snakemake("--configfile", str(broken), "--cores", "2", cwd=work, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "MissingInputException" not in output
    assert "Error in rule check_failures" in output and "First causes:" in output and "prompt.txt" in output
    failed = failures(work)
    assert sorted(zip(failed["task"], failed["sample"], failed["stage"], strict=True)) == [
        (TASK, "00001", "sample"),
        (TASK, "00002", "sample"),
        ("D-9_absent_task", "00000", "sample"),
        ("D-9_absent_task", "00001", "sample"),
        ("D-9_absent_task", "00002", "sample"),
    ]
    errors = dict(zip(failed["task"] + "/" + failed["sample"], failed["error"], strict=True))
    assert f"{prompt.relative_to(work)}: missing" in errors[f"{TASK}/00001"]
    assert (
        "sample folder not found" in errors[f"{TASK}/00002"]
        and "bench.samples_per_task=3" in errors[f"{TASK}/00002"]
    )
    assert "line 3 (In-Domain_50, D-9_absent_task)" in errors["D-9_absent_task/00000"]
    assert "bench.task_globs" in errors["D-9_absent_task/00000"]
    assert "## Failed runs (5)" in (work / "results/tables/summary.md").read_text()
    # The healthy control was neither lost nor redone.
    assert file_times(work / RUNS / "00000") == control

    # Fixed (file restored, plan back to what the bench has): only the broken run is sampled.
    prompt.write_text(text)
    fixed = local_config(work)
    snakemake("--configfile", str(fixed), "--cores", "2", cwd=work)
    assert (work / RUNS / "00001/seed1/meta.json").exists() and file_times(work / RUNS / "00000") == control
    assert [m["status"] for m in newest_receipt(work, "sample", "b0001")["members"]] == ["done"]
    assert [m["status"] for m in newest_receipt(work, "sample", "b0000")["members"]] == ["skipped"]
    assert failures(work).empty


# ----- 2 + 3. broken inputs refused; the report works when every run fails ----------------------


@pytest.mark.slow
def test_when_every_run_fails_the_tables_still_report_each_cause(local_run, tmp_path):
    work = copy_of(local_run, tmp_path)
    config = str(local_config(work))
    samples = work / "bench/In-Domain_50" / TASK
    video = samples / "00000/ground_truth.mp4"
    good = video.read_bytes()
    video.write_bytes(good[: len(good) // 2])  # truncated ground truth
    (samples / "00001/prompt.txt").unlink()
    result = snakemake("--configfile", config, "--cores", "2", cwd=work, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "KeyError" not in output
    assert "Error in rule check_failures" in output and "ground_truth.mp4" in output
    failed = failures(work)
    assert list(failed["sample"]) == ["00000", "00001"] and set(failed["stage"]) == {"sample"}
    assert "ground_truth.mp4: unreadable" in failed["error"][0]
    summary = (work / "results/tables/summary.md").read_text()
    assert "## Failed runs (2)" in summary and "00000/seed1: failed in sample" in summary
    assert pd.read_csv(work / "results/tables/summary.csv").empty  # nothing scored, nothing invented
    assert not (work / RUNS / "00000/seed1/meta.json").exists()


# ----- 4. stale state ----------------------------------------------------------------------------


@pytest.mark.slow
def test_deleted_records_and_fixed_samples_are_not_taken_as_done(local_run, tmp_path):
    work = copy_of(local_run, tmp_path)
    config = str(local_config(work))
    assert job_counts(snakemake("-n", "--configfile", config, cwd=work).stdout) == {}

    # A record deleted while meta.json stays: the run is not complete.
    (work / RUNS / "00000/seed1/steps.safetensors").unlink()
    counts = job_counts(snakemake("-n", "--configfile", config, cwd=work).stdout)
    assert counts.get("sample_batch") == 1
    # A decoded step video of the other run: every decoded file is a promised output too.
    decoded = work / RUNS.replace("results/runs", "results/decoded") / "00001/seed1"
    next(decoded.glob("steps/step_*.mp4")).unlink()
    counts = job_counts(snakemake("-n", "--configfile", config, cwd=work).stdout)
    assert counts.get("sample_batch") == 1 and counts.get("decode_batch") == 2
    untouched = file_times(work / RUNS / "00001")
    snakemake("--configfile", config, "--cores", "2", cwd=work)
    assert job_counts(snakemake("-n", "--configfile", config, cwd=work).stdout) == {}
    assert (work / RUNS / "00000/seed1/steps.safetensors").exists() and len(
        list(decoded.glob("steps/*.mp4"))
    ) == 2
    assert file_times(work / RUNS / "00001") == untouched  # its records were not sampled again

    # The manifest of a local bench follows its sample files: broken, then fixed.
    image = work / "bench/In-Domain_50" / TASK / "00001/first_frame.png"
    good = image.read_bytes()
    image.write_bytes(b"not a png")
    target = "results/manifest_errors.parquet"
    snakemake(target, "--cores", "1", "--configfile", config, cwd=work)
    assert list(pd.read_parquet(work / target)["path"]) == [str(image)]
    image.write_bytes(good)
    assert "manifest" in job_counts(snakemake("-n", target, "--configfile", config, cwd=work).stdout)
    snakemake(target, "--cores", "1", "--configfile", config, cwd=work)
    assert pd.read_parquet(work / target).empty


@pytest.mark.slow
def test_a_changed_reference_frame_redoes_that_inputs_scores_and_no_sampling(local_run, tmp_path):
    """final_frame.png is read by the scorer only (bench.SCORING_FILES): a new one redoes the
    analysis of its input's runs, and sampling and decoding stay as they are."""
    work = copy_of(local_run, tmp_path)
    config = str(local_config(work))
    final = work / "bench/In-Domain_50" / TASK / "00000/final_frame.png"
    final.write_bytes(final.read_bytes())  # the same picture, written again
    counts = job_counts(snakemake("-n", "--configfile", config, cwd=work).stdout)
    assert counts.get("analysis_batch") == 1 and not {"sample_batch", "decode_batch"} & set(counts)


# ----- 5. config the way Snakemake users write it -----------------------------------------------


def test_config_on_the_command_line_overrides_single_keys_of_the_default_config(tmp_path):
    result = snakemake(
        "-n",
        "--config",
        "run_variants=[wan22-base]",
        f"results={tmp_path}/o",
        f"resources={tmp_path}/r",
        cwd=tmp_path,
    )
    counts = job_counts(result.stdout)
    assert counts["sample_batch"] == 100 and "download_lora" not in counts  # one variant, no LoRA


def test_an_unknown_top_level_key_is_one_message_naming_it(tmp_path):
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config["colour"] = "blue"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(path), cwd=tmp_path, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "'colour' was unexpected" in output
    assert len(output.splitlines()) < 15, output


def test_every_default_the_schema_states_is_applied(tmp_path):
    """jsonschema's default filling (snakemake.utils.validate) does not follow $ref: a default
    stated only inside $defs is never applied, so none may be stated there; and a hub bench with
    nothing but its defaults plans (the omitted bench.revision once crashed at parse time)."""
    schema = yaml.safe_load((REPO / "config/schema/config.schema.yaml").read_text())
    assert [name for name, spec in schema["$defs"].items() if "default" in spec] == []
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["bench"] = {"samples_per_task": 1}
    config.update(results=str(tmp_path / "o"), resources=str(tmp_path / "r"))
    path = tmp_path / "defaults.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(path), cwd=tmp_path)
    assert "hub/datasets/Video-Reason--VBVR-Bench-Data/main/.stepscope_source.json" in result.stdout


def test_a_shared_weights_folder_is_written_once_and_never_under_a_reader(tmp_path):
    """Two checkouts sharing resources/: the second keeps what the first completed (same inodes,
    so a process loading them is not disturbed) and only puts back the marker Snakemake deleted."""
    from stepscope.models.shared_folders import publish_once

    calls = []

    def make(folder):
        calls.append(folder)
        (folder / "sub").mkdir(parents=True)
        (folder / "sub/weights.bin").write_bytes(b"w" * 100)
        (folder / "marker.json").write_text("{}")

    target = tmp_path / "tiny/model"
    assert publish_once(target, make, "marker.json") is True
    inode = (target / "sub/weights.bin").stat().st_ino
    (target / "marker.json").unlink()  # what the second checkout's Snakemake does before its job
    assert publish_once(target, make, "marker.json") is False
    assert len(calls) == 1 and (target / "marker.json").read_text() == "{}"
    assert (target / "sub/weights.bin").stat().st_ino == inode
    assert not list(tmp_path.glob("tiny/.model.tmp-*"))
    (target / "sub/weights.bin").write_bytes(b"cut")  # damaged: made again
    assert publish_once(target, make, "marker.json") is True and len(calls) == 2


# ----- 2. weights that do not load name the file and the fix ------------------------------------


def test_a_truncated_weights_file_is_named_with_the_fix(tiny_weights, tmp_path):
    from stepscope.errors import StepScopeError
    from stepscope.jobs.runs import load_decoder
    from stepscope.models.loading import LoraSpec, load_pipeline

    folder = Path(shutil.copytree(tiny_weights("wan2.2"), tmp_path / "tiny"))
    vae = folder / "Wan2.1_VAE.safetensors"
    data = vae.read_bytes()
    vae.write_bytes(data[: len(data) // 3])
    for load in (
        lambda: load_pipeline("wan2.2", folder, device="cpu"),
        lambda: load_decoder("wan2.2", str(folder), {"device": "cpu"}),
    ):
        with pytest.raises(StepScopeError) as caught:
            load()
        message = str(caught.value)
        assert f"{vae}: truncated" in message and "SafetensorError" in message
        assert f"delete {folder / 'stepscope_tiny.json'} and rerun" in message

    vae.write_bytes(data)  # whole again; now a LoRA file with a cut header
    lora = tmp_path / "lora.safetensors"
    lora.write_bytes(b"\xff\xff\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(StepScopeError, match=f"{lora}: incomplete"):
        load_pipeline("wan2.2", folder, device="cpu", loras=[LoraSpec(lora, "high_noise")])


# ----- 3. the report when every run failed (no scores at all) ---------------------------------------


def test_tables_and_the_failure_check_work_when_every_run_failed(tmp_path):
    from stepscope.errors import StepScopeError
    from stepscope.jobs.analysis import tables_job
    from stepscope.jobs.failures import check_failures
    from stepscope.jobs.plan import Receipt

    keys = [f"In-Domain_50/{TASK}/{sample:05d}/seed1" for sample in range(5)]
    members = [
        {
            "key": key,
            "fingerprint": "f",
            "status": "upstream_failed",
            "failed_stage": "sample",
            "error": f"cause {i}",
        }
        for i, key in enumerate(keys)
    ]
    receipt = tmp_path / "b0000.r0.json"
    receipt.write_text(json.dumps(Receipt("analysis", "v", "b0000.r0", members).to_json()))
    out = tmp_path / "tables"
    tables_job(
        receipts=[str(receipt)],
        metric="total",
        out_scores=str(out / "scores.parquet"),
        out_dir=str(out),
        figure_dir=str(out / "figures"),
    )
    failed = pd.read_csv(out / "failures.csv", dtype=str)
    assert list(failed["error"]) == [f"cause {i}" for i in range(5)] and set(failed["stage"]) == {"sample"}
    assert "## Failed runs (5)" in (out / "summary.md").read_text()
    assert pd.read_csv(out / "summary.csv").empty and pd.read_csv(out / "ablation.csv").empty
    with pytest.raises(StepScopeError) as caught:
        check_failures(str(out / "failures.csv"))
    message = str(caught.value)
    assert "5 run(s) failed" in message and "cause 0" in message and "cause 2" in message
    assert "cause 3" not in message and "(and 2 more)" in message and "\n" not in message
