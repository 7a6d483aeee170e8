"""The GPU batch jobs: sampling and step decoding of one batch's runs, one model load each
(shared parts: stepscope.jobs.batch_common).

Imports the model code (torch, diffsynth); the CPU jobs (stepscope.jobs.analysis_batch and the
others) never import this module.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from stepscope import records
from stepscope.bench import read_task_sheet
from stepscope.errors import StepScopeError
from stepscope.jobs.batch_common import (
    LazyLoader,
    Members,
    decoded_files,
    inject_fault_once,
    link_file,
    read_json,
    remove_stale,
    upstream_failure,
    write_receipt,
)
from stepscope.jobs.members import DecodeMember, SampleMember, as_members
from stepscope.jobs.plan import Receipt, input_stamps
from stepscope.jobs.runs import decode_run, load_decoder, load_job_pipeline, resolve_input, sample_run
from stepscope.models.loading import loaded_model_meta
from stepscope.provenance import weights_identity


def input_error(
    error: BaseException, member: SampleMember, bench_plan: dict[str, Any] | None
) -> BaseException:
    """A bad input's error, with where the plan took the input from and how to take it out."""
    if bench_plan is None:
        return error
    labels = member.labels
    if "sample_dir" not in member.source:
        where = f"config `custom` entry {labels['task']!r}: fix its image, or remove the entry"
    else:
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


# ----- sampling --------------------------------------------------------------------------------


def sample_member_up_to_date(member: SampleMember) -> bool:
    meta = read_json(Path(member.out_dir) / records.META)
    return bool(
        meta
        and records.is_complete(member.out_dir)
        and meta.get("fingerprint") == member.fingerprint
        and meta.get("input_stamps") == input_stamps(member.inputs)
    )


def run_sample_batch(
    *,
    family: str,
    weights_dir: str,
    loras: list[dict[str, Any]],
    device: dict[str, Any],
    members: list[SampleMember] | list[dict[str, Any]],
    receipt: str,
    variant: str,
    sources: dict[str, str] | None = None,
    bench_plan: dict[str, Any] | None = None,
) -> Receipt:
    """Sample every member of a batch that is not up to date, with one model load.

    `bench_plan` (sample_sheet, samples_per_task) lets a bad input's error say where the plan
    took it from; it is batch-wide, so editing the sheet elsewhere never reruns a batch.
    """
    members = as_members(SampleMember, members)
    inject_fault_once()
    loader = LazyLoader(lambda: load_job_pipeline(family, weights_dir, loras, device, sources))
    outcomes = Members("sample")
    identity = None
    for member in members:
        out_dir = member.out_dir
        if sample_member_up_to_date(member):
            link_file(Path(out_dir) / records.VIDEO, member.video_link)
            outcomes.add(member, "skipped")
            continue
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / records.META).unlink(missing_ok=True)  # stale records never look complete
        Path(member.video_link).unlink(missing_ok=True)
        try:
            info = resolve_input(member.source)  # a bad input fails before the model loads
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
                settings=member.settings,
                record=member.record,
                seeds=member.seeds,
                ensemble=member.ensemble,
                out_dir=out_dir,
                meta={
                    **member.labels,
                    "run_id": uuid.uuid4().hex,
                    "fingerprint": member.fingerprint,
                    "input_stamps": input_stamps(member.inputs),
                    "batch": Path(receipt).stem,
                    # the model is loaded once per batch job: load_s is that one load
                    **loaded_model_meta(pipe, identity, loader.load_s),
                },
            )
            link_file(Path(out_dir) / records.VIDEO, member.video_link)
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
    members: list[DecodeMember] | list[dict[str, Any]],
    tiled: str | bool,
    receipt: str,
    variant: str,
) -> Receipt:
    """Decode the chosen steps of every member whose decoding is not up to date (one VAE load)."""
    members = as_members(DecodeMember, members)
    inject_fault_once()
    loader = LazyLoader(lambda: load_decoder(family, weights_dir, device))
    outcomes = Members("decode")
    for member in members:
        run_meta = read_json(Path(member.run_dir) / records.META)
        if run_meta is None:
            remove_stale(member.out_dir)
            outcomes.add(member, "upstream_failed", **upstream_failure(member.run_dir))
            continue
        summary = read_json(Path(member.out_dir) / records.DECODED_SUMMARY)
        if (
            summary
            and summary.get("fingerprint") == member.fingerprint
            and summary.get("run_id") == run_meta.get("run_id")
            and all(path.exists() for path in decoded_files(member.out_dir, summary))
        ):
            outcomes.add(member, "skipped")
            continue
        decoder = loader.get()
        with outcomes.attempt(member, member.out_dir) as outcome:
            started = time.perf_counter()
            decode_run(
                decoder,
                family,
                run_dir=member.run_dir,
                steps=steps,
                out_dir=member.out_dir,
                sheet_frames=sheet_frames,
                tiled=tiled,
                summary_extra={
                    "fingerprint": member.fingerprint,
                    "decode_id": uuid.uuid4().hex,
                    "load_s": loader.load_s,
                },
            )
            outcome["decode_s"] = time.perf_counter() - started
    return write_receipt(receipt, "decode", variant, outcomes, load_s=loader.load_s)
