"""The workflow on a real SLURM cluster: `snakemake --profile profiles/slurm`.

scripts/test.sh starts a single-node cluster (scripts/slurm_cluster.sh: slurmctld, slurmd, munge,
two fake GPUs), runs the demo through it into results/demo-slurm (log: results/demo-slurm.log),
and sets STEPSCOPE_SLURM_DIR; these tests check that run and the failure handling on the cluster.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import REPO
from test_workflow import ENV, SNAKEMAKE, job_counts, small_config

from stepscope.testing.compare import differences

SLURM_DIR = os.environ.get("STEPSCOPE_SLURM_DIR")
SLURM_OPTIONS = os.environ.get("STEPSCOPE_SLURM_OPTIONS", "").split()
GPU_RULES = {"sample_batch", "decode_batch", "probe"}
LOCAL_RULES = {"all", "check_failures"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not SLURM_DIR, reason="no SLURM cluster: scripts/test.sh starts one (scripts/slurm_cluster.sh)"
    ),
]


def submissions(log: str) -> dict[str, list[str]]:
    """Rule name -> SLURM job ids it was submitted as, from a Snakemake log."""
    rule_of = {
        jobid: rule
        for rule, jobid in re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    jobid: (\d+)", log, re.M)
    }
    submitted: dict[str, list[str]] = {}
    for jobid, slurm_id in re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log):
        submitted.setdefault(rule_of[jobid], []).append(slurm_id)
    return submitted


def finished_jobs() -> dict[str, str]:
    """SLURM job id -> final state, from the cluster's job completion log."""
    states = {}
    for line in Path(SLURM_DIR, "jobcomp.log").read_text().splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        states[fields["JobId"]] = fields["JobState"]
    return states


def asked_for_a_gpu(slurm_id: str) -> bool:
    shown = subprocess.run(["scontrol", "show", "job", slurm_id], capture_output=True, text=True, check=True)
    return "gpu:1" in shown.stdout


def test_the_demo_went_through_sbatch_and_equals_the_local_run():
    log = (REPO / "results/demo-slurm.log").read_text()
    counts = job_counts(log)
    submitted = submissions(log)
    local = set(re.findall(r"^localrule (\w+):", log, re.M))
    assert local == LOCAL_RULES  # everything else was submitted
    assert {rule: len(ids) for rule, ids in submitted.items()} == {
        rule: count for rule, count in counts.items() if rule not in LOCAL_RULES
    }
    states = finished_jobs()
    for rule, ids in submitted.items():
        for slurm_id in ids:
            assert states[slurm_id] == "COMPLETED", (rule, slurm_id)
            assert asked_for_a_gpu(slurm_id) == (rule in GPU_RULES), (rule, slurm_id)
    assert list(differences(REPO / "results/demo", REPO / "results/demo-slurm")) == []


def test_on_slurm_a_job_failing_once_is_retried_and_a_bad_sample_fails_alone(tmp_path):
    config = str(small_config(tmp_path))

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*SNAKEMAKE, "--directory", str(tmp_path), "--snakefile", str(REPO / "Snakefile"),
             "--configfile", config, "--profile", str(REPO / "profiles/slurm"), *SLURM_OPTIONS, *args],
            cwd=REPO, env={**ENV, **env}, capture_output=True, text=True, timeout=1500,
        )  # fmt: skip

    made = run("--until", "demo_bench")
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    image = (
        tmp_path / "resources/demo-bench/In-Domain_50/D-1_move_to_target_data-generator/00001/first_frame.png"
    )
    image.write_bytes(b"not a png")
    result = run(STEPSCOPE_FAULT_ONCE=str(tmp_path / "fault-once"))
    log = result.stdout + result.stderr
    assert result.returncode != 0  # the bad sample's run failed ...
    assert "Error in rule check_failures" in log and "00001/seed1" in log
    failures = (tmp_path / "results/tables/failures.csv").read_text().splitlines()
    assert len(failures) == 2 and "00001,seed1,sample" in failures[1]
    # ... alone: the other run has its records, decoded steps, figures and scores.
    run_0 = "demo-wan22/In-Domain_50/D-1_move_to_target_data-generator/00000/seed1"
    for path in (f"runs/{run_0}/meta.json", f"decoded/{run_0}/decoded.json", f"scores/runs/{run_0}.parquet"):
        assert (tmp_path / "results" / path).exists(), path
    # The sampling job failed once (the injected fault), was resubmitted and completed.
    attempts = submissions(log)["sample_batch"]
    states = finished_jobs()
    assert [states[slurm_id] for slurm_id in attempts] == ["FAILED", "COMPLETED"]
    assert "Trying to restart job" in log
