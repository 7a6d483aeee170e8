"""Bad input and faults (issue 17): run every case and print the matrix (case, expected, observed).

    PYTHONPATH=src HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/fault_matrix.py [SCRATCH]

Workflow cases run on a local two-sample bench (one task, tiny Wan2.2 twin, 4 steps), each on a
copy of one completed run; the others call the library directly. Takes ~15 min on 2 cores.
Writes benchmarks/results/fault_matrix.md.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_bench import _faststart_video  # noqa: E402
from test_faults import RUNS, TASK, break_inputs, failures, local_config, newest_receipt  # noqa: E402
from test_workflow import file_times, job_counts, snakemake  # noqa: E402

from stepscope.bench import generate_demo_bench, read_sample  # noqa: E402

ROWS: list[tuple[str, str, str]] = []


def row(case: str, expected: str, observed: str) -> None:
    ROWS.append((case, expected, observed))
    print(f"| {case} | {expected} | {observed} |", flush=True)


def outcome(work: Path, result) -> str:
    """rc, failed runs (task/sample: first words of the error) and the console's first causes."""
    failed = failures(work) if (work / "results/tables/failures.csv").exists() else pd.DataFrame()
    listed = "; ".join(f"{r.task[:4]}/{r.sample} {r.stage}: {r.error[:90]}" for r in failed.itertuples())
    console = "First causes" in result.stdout + result.stderr
    return f"rc={result.returncode}, {len(failed)} failed [{listed}], causes on console: {console}"


def attempt(call) -> str:
    try:
        return f"accepted: {call()}"
    except Exception as error:  # the observed outcome is what is reported
        return f"{type(error).__name__}: {str(error)[:400]}"


def main(scratch: Path) -> None:
    base = scratch / "base"
    base.mkdir(parents=True)
    generate_demo_bench(base / "bench", splits=["In-Domain_50"], tasks_per_split=1, samples_per_task=2)
    started = time.perf_counter()
    snakemake("--configfile", str(local_config(base)), "--cores", "2", cwd=base)
    print(f"base run (2 healthy samples): {time.perf_counter() - started:.0f} s\n")
    print("| case | expected | observed |\n| --- | --- | --- |")

    def copy(name: str) -> Path:
        work = scratch / name
        shutil.copytree(base, work, symlinks=True)
        return work

    samples = lambda work: work / "bench/In-Domain_50" / TASK  # noqa: E731

    # 1. missing inputs at planning time
    work = copy("missing")
    prompt, text, config = break_inputs(work)
    control = file_times(work / RUNS / "00000")
    result = snakemake("--configfile", str(config), "--cores", "2", cwd=work, check=False)
    observed = outcome(work, result)
    named = failures(work)["error"]
    observed += (
        f"; every error names its sheet line and the fix: "
        f"{all('of bench.sample_sheet' in e and 'take the input out of the plan' in e for e in named)}"
    )
    untouched = file_times(work / RUNS / "00000") == control
    row(
        "prompt.txt deleted + sheet row of an absent task + samples_per_task 3 > 2 (batch.inputs 1)",
        "no MissingInputException; 5 failed runs naming file/sheet line/fix; control kept",
        f"MissingInputException: {'MissingInputException' in result.stderr}; {observed}; control untouched: {untouched}",
    )
    prompt.write_text(text)
    result = snakemake("--configfile", str(local_config(work)), "--cores", "2", cwd=work, check=False)
    redone = [m["status"] for b in ("b0000", "b0001") for m in newest_receipt(work, "sample", b)["members"]]
    row(
        "... then fixed (prompt back, plan = bench)",
        "rc 0, only the broken run sampled",
        f"rc={result.returncode}, statuses 00000/00001: {redone}, control untouched: "
        f"{file_times(work / RUNS / '00000') == control}",
    )
    custom = local_config(copy("custom"), custom=[{"name": "mine", "image": "gone.png", "prompt": "p"}])
    result = snakemake("-n", "--configfile", str(custom), cwd=custom.parent, check=False)
    row(
        "custom input whose image is missing (dry run)",
        "plans; the run fails alone in its job",
        f"rc={result.returncode}, MissingInputException: {'MissingInputException' in result.stderr}, "
        f"sample_batch planned: {job_counts(result.stdout).get('sample_batch')}",
    )

    # 2. broken inputs accepted silently
    folder = samples(base) / "00000"
    rng = np.random.default_rng(0)
    frames = np.stack(
        [np.clip(rng.integers(0, 40, (64, 64, 3)) + 2 * t, 0, 255).astype(np.uint8) for t in range(77)]
    )
    whole = _faststart_video(scratch / "whole.mp4", frames)
    middle = len(whole) // 3
    damaged = {
        "whole 77-frame GT (control)": whole,
        "GT truncated (index first, 45 % kept)": whole[: int(len(whole) * 0.45)],
        "GT with corrupt bytes in the middle": whole[:middle]
        + bytes(rng.integers(0, 256, middle, dtype=np.uint8))
        + whole[2 * middle :],
        "1-frame GT": _faststart_video(scratch / "one.mp4", frames[:1]),
    }
    for name, data in damaged.items():
        case = scratch / "gt-cases" / name.split(" ")[1]
        shutil.copytree(folder, case, dirs_exist_ok=True)
        (case / "ground_truth.mp4").write_bytes(data)
        expected = "read, 77 frames" if "control" in name else "refused, naming the file"
        row(name, expected, attempt(lambda case=case: f"{read_sample(case)['gt_num_frames']} frames"))
    from stepscope.models.loading import load_pipeline, make_tiny_weights

    weights = make_tiny_weights("wan2.2", scratch / "tiny")
    vae = weights / "Wan2.1_VAE.safetensors"
    vae.write_bytes(vae.read_bytes()[:100_000])
    row(
        "truncated weights file",
        "error names the file and the fix",
        attempt(lambda: load_pipeline("wan2.2", weights, device="cpu")).replace(str(scratch), "..."),
    )
    lora_config = yaml.safe_load(local_config(copy("lora")).read_text())
    lora_config["loras"]["tiny-vbvr-wan2.2"] = {
        "local_path": "mine",
        "files": ["high_noise_lora.safetensors", "low_noise_lora.safetensors"],
    }
    path = scratch / "lora" / "config.yaml"
    path.write_text(yaml.safe_dump(lora_config, sort_keys=False))
    result = snakemake("-n", "--configfile", str(path), cwd=path.parent, check=False)
    row(
        "local LoRA file missing (dry run)",
        "plans; the load fails naming the file",
        f"rc={result.returncode}, MissingInputException: {'MissingInputException' in result.stderr}",
    )

    # 3. failure reporting when every run fails
    work = copy("all-gt")
    video = samples(work) / "00000/ground_truth.mp4"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    (samples(work) / "00001/prompt.txt").unlink()
    result = snakemake("--configfile", str(local_config(work)), "--cores", "2", cwd=work, check=False)
    row(
        "every run fails (truncated GT + missing prompt)",
        "failures.csv + summary.md, no KeyError, causes on console",
        f"{outcome(work, result)}; KeyError: {'KeyError' in result.stdout + result.stderr}; "
        f"summary.md lists them: {'## Failed runs (2)' in (work / 'results/tables/summary.md').read_text()}",
    )
    work = copy("all-layer")
    config = local_config(work, **{"record.layers": [99]})
    result = snakemake("--configfile", str(config), "--cores", "2", cwd=work, check=False)
    row(
        "every run fails (record.layers [99], a layer the model lacks)",
        "failures.csv + summary.md, no KeyError",
        f"{outcome(work, result)}; KeyError: {'KeyError' in result.stdout + result.stderr}",
    )

    # 4. stale state
    work = copy("stale")
    config = str(local_config(work))
    (work / RUNS / "00000/seed1/steps.safetensors").unlink()
    row(
        "steps.safetensors deleted, meta.json kept (-n)",
        "sample_batch planned for that batch",
        f"{job_counts(snakemake('-n', '--configfile', config, cwd=work).stdout)}",
    )
    decoded = work / RUNS.replace("results/runs", "results/decoded") / "00001/seed1"
    next(decoded.glob("steps/step_*.mp4")).unlink()
    snakemake("--configfile", config, "--cores", "2", cwd=work)
    row(
        "... and a decoded step video deleted; run, then -n",
        "both redone once; then nothing to do",
        f"after the run: {job_counts(snakemake('-n', '--configfile', config, cwd=work).stdout) or 'nothing to do'}",
    )
    image = samples(work) / "00001/first_frame.png"
    good = image.read_bytes()
    image.write_bytes(b"not a png")
    target = "results/manifest_errors.parquet"
    snakemake(target, "--cores", "1", "--configfile", config, cwd=work)
    listed = list(pd.read_parquet(work / target)["path"])
    image.write_bytes(good)
    snakemake(target, "--cores", "1", "--configfile", config, cwd=work)
    row(
        "local bench: sample broken, manifest built, sample fixed, manifest asked for again",
        "rebuilt without the sample",
        f"errors before fix: {len(listed)}, after: {len(pd.read_parquet(work / target))}",
    )
    from stepscope.models.shared_folders import publish_once

    shared = scratch / "shared/tiny/model"
    made = [publish_once(shared, lambda f: make_tiny_weights("wan2.2", f), "stepscope_tiny.json")]
    inode = (shared / "Wan2.1_VAE.safetensors").stat().st_ino
    (shared / "stepscope_tiny.json").unlink()  # the second checkout's Snakemake removes its output
    made.append(publish_once(shared, lambda f: make_tiny_weights("wan2.2", f), "stepscope_tiny.json"))
    row(
        "second checkout asks for the same shared tiny weights",
        "kept (same inode), marker put back",
        f"made: {made}, same inode: {(shared / 'Wan2.1_VAE.safetensors').stat().st_ino == inode}, "
        f"marker: {(shared / 'stepscope_tiny.json').exists()}",
    )

    # 5. config
    cfg = scratch / "cfg"
    result = snakemake(
        "-n",
        "--config",
        "run_variants=[wan22-base]",
        f"results={cfg}/o",
        f"resources={cfg}/r",
        cwd=scratch,
        check=False,
    )
    row(
        "--config run_variants=[wan22-base] without --configfile",
        "default config kept, one variant planned",
        f"rc={result.returncode}, sample_batch={job_counts(result.stdout).get('sample_batch')}",
    )
    defaults = yaml.safe_load((REPO / "config/config.yaml").read_text())
    defaults["bench"] = {"samples_per_task": 1}
    defaults.update(results=f"{cfg}/o", resources=f"{cfg}/r")
    (scratch / "defaults.yaml").write_text(yaml.safe_dump(defaults))
    result = snakemake("-n", "--configfile", str(scratch / "defaults.yaml"), cwd=scratch, check=False)
    row("bench.revision omitted (schema default main)", "plans", f"rc={result.returncode}")
    unknown = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    unknown["colour"] = "blue"
    (scratch / "unknown.yaml").write_text(yaml.safe_dump(unknown))
    result = snakemake("-n", "--configfile", str(scratch / "unknown.yaml"), cwd=scratch, check=False)
    output = result.stdout + result.stderr
    message = next((line for line in output.splitlines() if "config error" in line), "")
    row(
        "unknown top-level key",
        "one message naming the key",
        f"rc={result.returncode}, {len(output.splitlines())} lines: {message[:160]}",
    )

    table = ["| case | expected | observed |", "| --- | --- | --- |"]
    table += [f"| {c} | {e} | {o.replace('|', '/')} |" for c, e, o in ROWS]
    out = REPO / "benchmarks/results/fault_matrix.md"
    out.write_text(
        "# Bad input and faults: the matrix (benchmarks/fault_matrix.py)\n\n" + "\n".join(table) + "\n"
    )
    print(f"\nwritten {out}")


if __name__ == "__main__":
    scratch = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="fault-matrix-"))
    main(scratch)
