"""Batch jobs: one job per stage and batch, outputs per run (see stepscope.jobs.plan).

Each runner walks the batch's members in order, skips those whose outputs are up to date (same
fingerprint, same upstream run, same input files), does the rest with one model load, records a
member that fails (``error.json`` beside its outputs) and goes on with the others, and writes the
batch's receipt last. A job fails as a whole only for what no member can get past (the model does
not load, the receipt cannot be written), so Snakemake's retry then redoes only what is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stepscope import records
from stepscope.atomic import write_json
from stepscope.errors import StepScopeError
from stepscope.jobs.plan import DONE_STATUSES, Receipt, input_stamps, parse_batch_name
from stepscope.provenance import package_versions

ERROR_FILE = "error.json"
FIGURES_MARKER = "figures.json"
FAULT_ENV = "STEPSCOPE_FAULT_ONCE"


# ----- shared helpers --------------------------------------------------------------------------


def read_json(path: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_error(folder: str | Path, error: BaseException, fingerprint: str, stage: str) -> dict[str, Any]:
    """Record why a member failed, beside where its outputs would be."""
    details = {
        "stage": stage,
        "error": f"{type(error).__name__}: {error}",
        "traceback": traceback.format_exception(error)[-6:],
        "fingerprint": fingerprint,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(Path(folder) / ERROR_FILE, details)
    return details


def clear_error(folder: str | Path) -> None:
    (Path(folder) / ERROR_FILE).unlink(missing_ok=True)


def upstream_failure(folder: str | Path) -> dict[str, str]:
    """Why an earlier stage left a member without input: its error.json, if it wrote one."""
    details = read_json(Path(folder) / ERROR_FILE)
    if details is None:
        return {"failed_stage": "unknown", "error": f"{folder} holds no complete output"}
    return {"failed_stage": details.get("stage", "unknown"), "error": details["error"]}


def remove_stale(*paths: str | None) -> None:
    """Drop a member's earlier outputs once its input is gone: they no longer describe anything."""
    for path in paths:
        if path is None:
            continue
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.unlink(path)


def link_file(source: str | Path, target: str | Path) -> None:
    """Hard-link `source` to `target` (atomic replace; a copy across file systems)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def inject_fault_once() -> None:
    """Test hook: when STEPSCOPE_FAULT_ONCE names a file that does not exist yet, create it and fail
    the job, so that tests can watch the scheduler retry a job that fails once."""
    marker = os.environ.get(FAULT_ENV)
    if marker and not os.path.exists(marker):
        Path(marker).parent.mkdir(parents=True, exist_ok=True)
        Path(marker).write_text("fault injected once\n")
        raise RuntimeError(f"injected fault ({FAULT_ENV}={marker}); a retry of this job succeeds")


class Members:
    """Collects member outcomes for the receipt and prints one line per member to the log."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.rows: list[dict[str, Any]] = []

    def add(self, member: dict[str, Any], status: str, **extra: Any) -> None:
        row = {"key": member["key"], "fingerprint": member["fingerprint"], "status": status, **extra}
        if "inputs" in member:
            row["inputs"] = input_stamps(member["inputs"])
        self.rows.append(row)
        note = f" ({extra['error']})" if extra.get("error") else ""
        print(f"[{self.stage}] {member['key']}: {status}{note}", flush=True)

    def fail(
        self, member: dict[str, Any], folder: str | Path, error: BaseException, seconds: float = 0.0
    ) -> None:
        details = write_error(folder, error, member["fingerprint"], self.stage)
        self.add(member, "failed", failed_stage=self.stage, error=details["error"], seconds=seconds)

    @contextlib.contextmanager
    def attempt(self, member: dict[str, Any], folder: str | Path) -> Iterator[dict[str, Any]]:
        """Run one member's work: failures are recorded (error.json, receipt) and swallowed."""
        outcome: dict[str, Any] = {}
        started = time.perf_counter()
        try:
            yield outcome
        except Exception as error:  # one member's failure must not cost the others their results
            self.fail(member, folder, error, time.perf_counter() - started)
            _release_accelerator_memory()
            return
        clear_error(folder)
        self.add(member, "done", seconds=time.perf_counter() - started, **outcome)


def _release_accelerator_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def write_receipt(path: str, stage: str, variant: str, members: Members, **extra: Any) -> Receipt:
    receipt = Receipt(
        stage=stage,
        variant=variant,
        batch=Path(path).stem,
        members=members.rows,
        extra={"versions": package_versions(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra},
    )
    write_json(path, receipt.to_json())
    prune_older_generations(path)
    failed = receipt.failed
    print(
        f"[{stage}] batch {receipt.batch}: {len(receipt.members) - len(failed)} of "
        f"{len(receipt.members)} members done"
        + (f"; failed: {[m['key'] for m in failed]}" if failed else ""),
        flush=True,
    )
    return receipt


def prune_older_generations(path: str | Path) -> None:
    """Remove the earlier generations beside a batch output (``bNNNN.rG.json`` or a ``bNNNN.rG``
    folder): they describe outputs that have since been redone."""
    path = Path(path)
    suffix = path.suffix if path.suffix == ".json" else ""
    try:
        index, generation = parse_batch_name(path.name[: len(path.name) - len(suffix)])
    except ValueError:
        return  # not named like a batch output: nothing to prune
    for older in path.parent.glob(f"b{index:04d}.r*{suffix}"):
        try:
            older_generation = parse_batch_name(older.name[: len(older.name) - len(suffix)])[1]
        except ValueError:
            continue
        if older_generation < generation:
            remove_stale(str(older))


def input_error(
    error: BaseException, member: dict[str, Any], bench_plan: dict[str, Any] | None
) -> BaseException:
    """A bad input's error, with where the plan took the input from and how to take it out."""
    if bench_plan is None:
        return error
    labels = member["labels"]
    if "sample_dir" not in member["source"]:
        where = f"config `custom` entry {labels['task']!r}: fix its image, or remove the entry"
    else:
        from stepscope.bench import read_task_sheet

        sheet = read_task_sheet(bench_plan["sample_sheet"])
        rows = sheet.index[(sheet["split"] == labels["split"]) & (sheet["task"] == labels["task"])]
        line = f"line {rows[0] + 2}" if len(rows) else "a line"
        where = (
            f"planned by {line} ({labels['split']}, {labels['task']}) of bench.sample_sheet "
            f"{bench_plan['sample_sheet']}, sample {labels['sample']} of bench.samples_per_task="
            f"{bench_plan['samples_per_task']}: fix the files named, or take the input out of the plan "
            "(drop that line, exclude the task with bench.task_globs, or lower bench.samples_per_task)"
        )
    cause = str(error) if isinstance(error, StepScopeError) else f"{type(error).__name__}: {error}"
    return StepScopeError(f"{cause} [input {where}]")


class LazyLoader:
    """Loads the model on first use, so a batch with nothing to do never loads it."""

    def __init__(self, load: Callable[[], Any]) -> None:
        self._load = load
        self.value: Any = None
        self.load_s = 0.0

    def get(self) -> Any:
        if self.value is None:
            started = time.perf_counter()
            self.value = self._load()  # a failure here fails the job: no member can get past it
            self.load_s = time.perf_counter() - started
            print(f"model loaded in {self.load_s:.1f} s", flush=True)
        return self.value


# ----- sampling --------------------------------------------------------------------------------


def sample_member_up_to_date(member: dict[str, Any]) -> bool:
    meta = read_json(Path(member["out_dir"]) / records.META)
    return bool(
        meta
        and records.is_complete(member["out_dir"])
        and meta.get("fingerprint") == member["fingerprint"]
        and meta.get("input_stamps") == input_stamps(member["inputs"])
    )


def run_sample_batch(
    *,
    family: str,
    weights_dir: str,
    loras: list[dict[str, Any]],
    device: dict[str, Any],
    members: list[dict[str, Any]],
    receipt: str,
    variant: str,
    sources: dict[str, str] | None = None,
    bench_plan: dict[str, Any] | None = None,
) -> Receipt:
    """Sample every member of a batch that is not up to date, with one model load.

    A member: key, labels, fingerprint, source, settings, record, seeds, ensemble, out_dir,
    video_link (the scorer layout path) and inputs (files whose change makes it stale).
    `bench_plan` (sample_sheet, samples_per_task) lets a bad input's error say where the plan
    took it from; it is batch-wide, so editing the sheet elsewhere never reruns a batch.
    """
    from stepscope.jobs.runs import load_job_pipeline, resolve_input, sample_run
    from stepscope.provenance import weights_identity

    inject_fault_once()
    loader = LazyLoader(lambda: load_job_pipeline(family, weights_dir, loras, device, sources))
    outcomes = Members("sample")
    identity = None
    for member in members:
        out_dir = member["out_dir"]
        if sample_member_up_to_date(member):
            link_file(Path(out_dir) / records.VIDEO, member["video_link"])
            outcomes.add(member, "skipped")
            continue
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / records.META).unlink(missing_ok=True)  # stale records never look complete
        Path(member["video_link"]).unlink(missing_ok=True)
        try:
            info = resolve_input(member["source"])  # a bad input fails before the model loads
        except Exception as error:
            outcomes.fail(member, out_dir, input_error(error, member, bench_plan))
            continue
        pipe = loader.get()  # a model that does not load fails the job (retried)
        identity = identity or weights_identity(weights_dir, sources)
        with outcomes.attempt(member, out_dir) as outcome:
            started = time.perf_counter()
            sample_run(
                pipe,
                family,
                info=info,
                settings=member["settings"],
                record=member["record"],
                seeds=member["seeds"],
                ensemble=member["ensemble"],
                out_dir=out_dir,
                meta={
                    **member["labels"],
                    "run_id": uuid.uuid4().hex,
                    "fingerprint": member["fingerprint"],
                    "input_stamps": input_stamps(member["inputs"]),
                    "batch": Path(receipt).stem,
                    "weights": identity,
                    "loras": pipe.stepscope_loras,
                    # the model is loaded once per batch job: load_s is that one load
                    "timings": {"load_s": loader.load_s},
                },
            )
            link_file(Path(out_dir) / records.VIDEO, member["video_link"])
            outcome["sample_s"] = time.perf_counter() - started
    sampled = [row for row in outcomes.rows if row["status"] == "done"]
    return write_receipt(
        receipt,
        "sample",
        variant,
        outcomes,
        load_s=loader.load_s,
        sample_s=sum(row.get("sample_s", 0.0) for row in sampled),
        sampled=len(sampled),
    )


# ----- decoding --------------------------------------------------------------------------------


def run_decode_batch(
    *,
    family: str,
    weights_dir: str,
    device: dict[str, Any],
    steps: str | list[int],
    sheet_frames: int,
    members: list[dict[str, Any]],
    tiled: str | bool = "auto",
    receipt: str,
    variant: str,
) -> Receipt:
    """Decode the chosen steps of every member whose decoding is not up to date (one VAE load).

    A member: key, labels, fingerprint, run_dir, out_dir.
    """
    from stepscope.jobs.runs import decode_run, load_decoder

    inject_fault_once()
    loader = LazyLoader(lambda: load_decoder(family, weights_dir, device))
    outcomes = Members("decode")
    for member in members:
        run_meta = read_json(Path(member["run_dir"]) / records.META)
        if run_meta is None:
            remove_stale(member["out_dir"])
            outcomes.add(member, "upstream_failed", **upstream_failure(member["run_dir"]))
            continue
        summary = read_json(Path(member["out_dir"]) / records.DECODED_SUMMARY)
        if (
            summary
            and summary.get("fingerprint") == member["fingerprint"]
            and summary.get("run_id") == run_meta.get("run_id")
            and all(path.exists() for path in decoded_files(member["out_dir"], summary))
        ):
            outcomes.add(member, "skipped")
            continue
        decoder = loader.get()
        with outcomes.attempt(member, member["out_dir"]) as outcome:
            started = time.perf_counter()
            decode_run(
                decoder,
                family,
                run_dir=member["run_dir"],
                steps=steps,
                out_dir=member["out_dir"],
                sheet_frames=sheet_frames,
                tiled=tiled,
                summary_extra={
                    "fingerprint": member["fingerprint"],
                    "decode_id": uuid.uuid4().hex,
                    "load_s": loader.load_s,
                },
            )
            outcome["decode_s"] = time.perf_counter() - started
    return write_receipt(receipt, "decode", variant, outcomes, load_s=loader.load_s)


def decoded_files(out_dir: str | Path, summary: dict[str, Any]) -> list[Path]:
    """The files a decoding summary stands for (a deleted one makes the decoding stale)."""
    out = Path(out_dir)
    return [out / "steps" / f"step_{int(step):04d}.mp4" for step in summary.get("steps", [])] + [
        out / records.CONTACT_SHEET
    ]


# ----- figures and scores ----------------------------------------------------------------------


def figure_steps(spec: str, run: records.RunRecords) -> list[int] | None:
    """The captured steps `figures.steps` selects: `all` is every captured step; a spec that matches
    none gives None, the figures' default choice (first, middle, last, Wan2.2's switch step)."""
    from stepscope.stepspec import parse_steps

    wanted = parse_steps(spec, len(run.schedule))  # one schedule row per denoising step
    captured = run.captured_steps
    return captured if wanted is None else [step for step in captured if step in wanted] or None


def analysis_member_up_to_date(member: dict[str, Any], upstream: dict[str, Any]) -> bool:
    marker = read_json(Path(member["figure_dir"]) / FIGURES_MARKER)
    return bool(
        marker
        and marker.get("fingerprint") == member["fingerprint"]
        and marker.get("upstream") == upstream
        and (member["score_table"] is None or os.path.exists(member["score_table"]))
    )


def run_analysis_batch(
    *,
    layers: list[int] | None,
    steps: str,
    members: list[dict[str, Any]],
    divergences: list[dict[str, Any]],
    receipt: str,
    variant: str,
    report_figures: str,
    report_sheets: str,
    max_frames: int | None = 8,
) -> Receipt:
    """Figures and stepscope-proxy scores of every member not up to date; cross-seed divergence per input;
    the report folders (hard links to every member's figures and contact sheet).

    A member: key, labels, fingerprint, run_dir, decoded_dir (None without decoding), figure_dir,
    score_table (None for custom inputs), sample_dir, inputs. A divergence: labels, keys (the
    member keys of the input's seed runs) and out.
    """
    from stepscope.jobs.analysis import divergence_job, score_run_job
    from stepscope.plots.figures import render_run_figures
    from stepscope.records import RunRecords

    inject_fault_once()
    outcomes = Members("analysis")
    redone: set[str] = set()
    for member in members:
        run_meta = read_json(Path(member["run_dir"]) / records.META)
        summary = None
        if member["decoded_dir"] is not None:
            summary = read_json(Path(member["decoded_dir"]) / records.DECODED_SUMMARY)
        if run_meta is None or (member["decoded_dir"] is not None and summary is None):
            folder = member["run_dir"] if run_meta is None else member["decoded_dir"]
            remove_stale(member["figure_dir"], member["score_table"])
            outcomes.add(member, "upstream_failed", **upstream_failure(folder))
            continue
        upstream = {
            "run_id": run_meta.get("run_id"),
            "decode_id": summary.get("decode_id") if summary else None,
            "inputs": input_stamps(member["inputs"]),
        }
        if analysis_member_up_to_date(member, upstream):
            outcomes.add(member, "skipped")
            continue
        figure_dir = Path(member["figure_dir"])
        with outcomes.attempt(member, figure_dir):
            figure_dir.mkdir(parents=True, exist_ok=True)
            (figure_dir / FIGURES_MARKER).unlink(missing_ok=True)
            for stale in figure_dir.glob("*.png"):
                stale.unlink()
            run = RunRecords(member["run_dir"])
            chosen = figure_steps(steps, run)
            figures = render_run_figures(
                member["run_dir"], figure_dir, layers=layers, steps=chosen, max_frames=max_frames
            )
            if member["score_table"] is not None:
                score_run_job(
                    run_dir=member["run_dir"],
                    decoded_summary=str(Path(member["decoded_dir"]) / records.DECODED_SUMMARY)
                    if summary
                    else None,
                    sample_dir=member["sample_dir"],
                    labels=member["labels"],
                    out=member["score_table"],
                )
            write_json(
                figure_dir / FIGURES_MARKER,
                {
                    "fingerprint": member["fingerprint"],
                    "upstream": upstream,
                    "figures": sorted(Path(path).name for path in figures),
                    "versions": package_versions(),
                },
            )
            redone.add(member["key"])
    done = {row["key"] for row in outcomes.rows if row["status"] in DONE_STATUSES}
    written_divergences = []
    for item in divergences:
        if not set(item["keys"]) <= done:
            continue  # a seed run of this input failed: nothing to compare
        if redone & set(item["keys"]) or not os.path.exists(item["out"]):
            divergence_job(run_dirs=item["run_dirs"], labels=item["labels"], out=item["out"])
        written_divergences.append(item["out"])
    _fill_report(members, done, report_figures, report_sheets, records.CONTACT_SHEET)
    prune_older_generations(report_figures)
    prune_older_generations(report_sheets)
    return write_receipt(
        receipt,
        "analysis",
        variant,
        outcomes,
        score_tables=[m["score_table"] for m in members if m["key"] in done and m["score_table"]],
        divergence_tables=written_divergences,
        run_dirs=[m["run_dir"] for m in members if m["key"] in done],
    )


def _fill_report(
    members: list[dict[str, Any]], done: set[str], figures_root: str, sheets_root: str, sheet_name: str
) -> None:
    """Hard-link every done member's figures and contact sheet into the report folders."""
    for root in (figures_root, sheets_root):
        shutil.rmtree(root, ignore_errors=True)
        Path(root).mkdir(parents=True, exist_ok=True)
    for member in members:
        if member["key"] not in done:
            continue
        for figure in sorted(Path(member["figure_dir"]).glob("*.png")):
            link_file(figure, Path(figures_root) / member["key"] / figure.name)
        if member["decoded_dir"] is not None:
            sheet = Path(member["decoded_dir"]) / sheet_name
            if sheet.exists():
                link_file(sheet, Path(sheets_root) / f"{member['key']}.png")
