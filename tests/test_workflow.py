"""The Snakemake workflow: plans, config validation, rerun triggers, killed jobs, real-format data."""

from __future__ import annotations

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
    runs = 2 * 100 * 5  # two variants x 100 tasks x 5 samples x 1 seed
    assert counts["download_model"] == 1 and counts["download_lora"] == 1 and counts["download_bench"] == 1
    assert (
        counts["sample"] == runs and counts["decode_steps"] == runs and counts["final_video_layout"] == runs
    )
    assert counts["score_run"] == runs and counts["run_figures"] == runs and counts["tables"] == 1
    assert counts["group_figures"] == 2 * 100 and "divergence" not in counts  # one seed: nothing to compare


def test_dry_run_against_a_full_size_fake_bench_tree(tmp_path):
    from stepscope.bench import make_fake_bench_tree

    bench = make_fake_bench_tree(tmp_path / "bench", REPO / "config/vbvr_bench_tasks.tsv", samples_per_task=5)
    config = write_config(
        tmp_path, base="config/config.yaml", **{"bench.source": "local", "bench.local_path": str(bench)}
    )
    counts = job_counts(snakemake("-n", "--configfile", str(config), cwd=tmp_path).stdout)
    assert "download_bench" not in counts and counts["sample"] == 1000 and counts["manifest"] == 1


def test_custom_inputs_and_evalkit_are_planned(tmp_path):
    image = tmp_path / "mine.png"
    image.write_bytes(b"")
    config = write_config(
        tmp_path,
        custom=[{"name": "my-puzzle", "image": str(image), "prompt": "solve it", "num_frames": 9}],
        **{"scoring.scorers": ["builtin", "vbvr-evalkit"]},
    )
    result = snakemake("-n", "--configfile", str(config), cwd=tmp_path)
    counts = job_counts(result.stdout)
    assert "runs/demo-wan22-vbvr/custom/my-puzzle/00000/seed1/meta.json" in result.stdout
    assert counts["sample"] == 24 + 3 and counts["score_evalkit"] == 1
    assert counts["score_run"] == 24  # custom inputs have no ground truth to score against


def test_downloads_refuse_to_run_offline(tmp_path, monkeypatch):
    from stepscope.families.base import StepScopeError
    from stepscope.hub import download_snapshot

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


@pytest.mark.parametrize("family", ["wan2.2", "wan2.1", "ltx2.3"])
def test_download_patterns_cover_every_file_the_loader_reads(tiny_weights, family):
    """What the download rule fetches (allow patterns) includes every file the loader resolves."""
    import fnmatch

    from stepscope.families import get_family
    from stepscope.families.base import resolve_layout
    from stepscope.hub import allow_patterns

    folder = tiny_weights(family)
    patterns = allow_patterns(family)
    resolved = resolve_layout(family, folder, get_family(family).layout)
    for component, paths in resolved.items():
        for path in paths:
            files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
            for file in files:
                relative = str(file.relative_to(folder))
                assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), (component, relative)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"models": {"tiny-wan2.2": {"family": "wan9", "tiny": True}}}, "wan9"),
        ({"colour": "blue"}, "colour"),
        ({"seeds": "one"}, "seeds"),
        ({"decode": {"steps": "3-x"}}, "decode"),
        ({"decode": {"steps": "0,99"}}, "decode.steps"),
        ({"run_variants": ["nope"]}, "run_variants"),
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


def small_config(tmp_path: Path, **overrides) -> Path:
    settings = {
        "bench.splits": ["In-Domain_50"],
        "bench.task_globs": ["D-1_*"],
        "bench.samples_per_task": 1,
        "seeds": [1],
        "ensembles": [],
        "variants.demo-wan22-vbvr.steps": 4,
        "record.layers": [0, 3],
        "record.map_steps": "0,3",
        "decode.steps": "0,3",
        "figures.steps": "0,3",
    }
    settings.update(overrides)
    return write_config(tmp_path, **settings)


@pytest.mark.slow
def test_rerun_triggers_and_killed_jobs(tmp_path):
    config = small_config(tmp_path)
    snakemake("--configfile", str(config), "--cores", "2", cwd=tmp_path)
    run_dir = next((tmp_path / "results/runs").rglob("meta.json")).parent
    assert (run_dir / "steps.safetensors").exists()
    assert job_counts(snakemake("-n", "--configfile", str(config), cwd=tmp_path).stdout) == {}

    # A figure-only option reruns CPU rules only.
    figures_only = small_config(tmp_path, **{"figures.steps": "3"})
    counts = job_counts(snakemake("-n", "--configfile", str(figures_only), cwd=tmp_path).stdout)
    assert counts and not {"sample", "decode_steps", "tiny_weights", "demo_bench"} & set(counts)

    # Changing the decoded steps reruns decoding (and what reads it), never sampling.
    decode_change = small_config(tmp_path, **{"decode.steps": "1,2"})
    counts = job_counts(snakemake("-n", "--configfile", str(decode_change), cwd=tmp_path).stdout)
    assert counts.get("decode_steps") == 1 and "sample" not in counts

    # Deleted figures are regenerated from the stored records alone.
    config = small_config(tmp_path)  # back to the settings of the completed run
    shutil.rmtree(tmp_path / "results/figures/runs")
    counts = job_counts(snakemake("-n", "--configfile", str(config), cwd=tmp_path).stdout)
    assert set(counts) == {"run_figures", "all"}
    metas = {
        path: path.stat().st_mtime_ns for path in (tmp_path / "results/runs").rglob("*") if path.is_file()
    }
    snakemake("--configfile", str(config), "--cores", "2", cwd=tmp_path)
    assert any((tmp_path / "results/figures/runs").rglob("norm_vs_step.png"))
    assert metas == {
        path: path.stat().st_mtime_ns for path in (tmp_path / "results/runs").rglob("*") if path.is_file()
    }

    # A sampling job killed midway leaves nothing complete-looking; the rerun redoes it only.
    more = small_config(tmp_path, seeds=[1, 2])  # adds one run; the bench and the seed-1 run stay
    process = subprocess.Popen(
        [
            *SNAKEMAKE,
            "--directory",
            str(tmp_path),
            "--snakefile",
            str(REPO / "Snakefile"),
            "--configfile",
            str(more),
            "--cores",
            "1",
            "--until",
            "sample",
        ],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    log = next(iter([]), None)
    deadline = time.time() + 120
    while time.time() < deadline:
        logs = list((tmp_path / "results/logs/sample").rglob("00000/seed2.log"))
        if logs and "VAE" in logs[0].read_text(errors="ignore"):
            log = logs[0]
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert log is not None, "the seed-2 sampling job never started"
    killed = run_dir.parent / "seed2"
    assert not (killed / "meta.json").exists()
    counts = job_counts(snakemake("-n", "--configfile", str(more), "--rerun-incomplete", cwd=tmp_path).stdout)
    assert counts.get("sample") == 1
    assert "tiny_weights" not in counts and "demo_bench" not in counts


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
            "variants.demo-wan22-vbvr.steps": 2,
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
        "sample",
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
