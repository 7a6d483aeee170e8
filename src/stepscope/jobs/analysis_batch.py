"""The CPU batch job: figures, stepscope-proxy scores and cross-seed divergence of one batch's runs.

No model and no torch: it reads the records the GPU jobs wrote (stepscope.jobs.batches).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from stepscope import records
from stepscope.atomic import write_json
from stepscope.jobs.analysis import divergence_job, score_run_job
from stepscope.jobs.batch_common import (
    FIGURES_MARKER,
    Members,
    inject_fault_once,
    link_file,
    prune_older_generations,
    read_json,
    remove_stale,
    upstream_failure,
    write_receipt,
)
from stepscope.jobs.members import AnalysisMember, DivergenceItem, as_members
from stepscope.jobs.plan import DONE_STATUSES, Receipt, input_stamps
from stepscope.plots.figures import render_run_figures
from stepscope.provenance import package_versions
from stepscope.stepspec import parse_steps


def figure_steps(spec: str, run: records.RunRecords) -> list[int] | None:
    """The captured steps `figures.steps` selects: `all` is every captured step; a spec that matches
    none gives None, the figures' default choice (first, middle, last, Wan2.2's switch step)."""
    wanted = parse_steps(spec, len(run.schedule))  # one schedule row per denoising step
    captured = run.captured_steps
    return captured if wanted is None else [step for step in captured if step in wanted] or None


def analysis_member_up_to_date(member: AnalysisMember, upstream: dict[str, Any]) -> bool:
    marker = read_json(Path(member.figure_dir) / FIGURES_MARKER)
    return bool(
        marker
        and marker.get("fingerprint") == member.fingerprint
        and marker.get("upstream") == upstream
        and (member.score_table is None or os.path.exists(member.score_table))
    )


def run_analysis_batch(
    *,
    layers: list[int] | None,
    steps: str,
    members: list[AnalysisMember] | list[dict[str, Any]],
    divergences: list[DivergenceItem] | list[dict[str, Any]],
    receipt: str,
    variant: str,
    report_figures: str,
    report_sheets: str,
    max_frames: int | None,
) -> Receipt:
    """Figures and stepscope-proxy scores of every member not up to date; cross-seed divergence per input;
    the report folders (hard links to every member's figures and contact sheet)."""
    members, divergences = as_members(AnalysisMember, members), as_members(DivergenceItem, divergences)
    inject_fault_once()
    outcomes = Members("analysis")
    redone: set[str] = set()
    for member in members:
        run_meta = read_json(Path(member.run_dir) / records.META)
        summary = None
        if member.decoded_dir is not None:
            summary = read_json(Path(member.decoded_dir) / records.DECODED_SUMMARY)
        if run_meta is None or (member.decoded_dir is not None and summary is None):
            folder = member.run_dir if run_meta is None else member.decoded_dir
            remove_stale(member.figure_dir, member.score_table)
            outcomes.add(member, "upstream_failed", **upstream_failure(folder))
            continue
        upstream = {
            "run_id": run_meta.get("run_id"),
            "decode_id": summary.get("decode_id") if summary else None,
            "inputs": input_stamps(member.inputs),
        }
        if analysis_member_up_to_date(member, upstream):
            outcomes.add(member, "skipped")
            continue
        figure_dir = Path(member.figure_dir)
        with outcomes.attempt(member, figure_dir):
            figure_dir.mkdir(parents=True, exist_ok=True)
            (figure_dir / FIGURES_MARKER).unlink(missing_ok=True)
            for stale in figure_dir.glob("*.png"):
                stale.unlink()
            run = records.RunRecords(member.run_dir)
            chosen = figure_steps(steps, run)
            figures = render_run_figures(
                member.run_dir, figure_dir, layers=layers, steps=chosen, max_frames=max_frames
            )
            if member.score_table is not None:
                score_run_job(
                    run_dir=member.run_dir,
                    decoded_summary=str(Path(member.decoded_dir) / records.DECODED_SUMMARY)
                    if summary
                    else None,
                    sample_dir=member.sample_dir,
                    labels=member.labels,
                    out=member.score_table,
                )
            write_json(
                figure_dir / FIGURES_MARKER,
                {
                    "fingerprint": member.fingerprint,
                    "upstream": upstream,
                    "figures": sorted(Path(path).name for path in figures),
                    "versions": package_versions(),
                },
            )
            redone.add(member.key)
    done = {row["key"] for row in outcomes.rows if row["status"] in DONE_STATUSES}
    written_divergences = []
    for item in divergences:
        if not set(item.keys) <= done:
            continue  # a seed run of this input failed: nothing to compare
        if redone & set(item.keys) or not os.path.exists(item.out):
            divergence_job(run_dirs=item.run_dirs, labels=item.labels, out=item.out)
        written_divergences.append(item.out)
    _fill_report(members, done, report_figures, report_sheets, records.CONTACT_SHEET)
    prune_older_generations(report_figures)
    prune_older_generations(report_sheets)
    return write_receipt(
        receipt,
        "analysis",
        variant,
        outcomes,
        score_tables=[m.score_table for m in members if m.key in done and m.score_table],
        divergence_tables=written_divergences,
        run_dirs=[m.run_dir for m in members if m.key in done],
    )


def _fill_report(
    members: list[AnalysisMember], done: set[str], figures_root: str, sheets_root: str, sheet_name: str
) -> None:
    """Hard-link every done member's figures and contact sheet into the report folders."""
    for root in (figures_root, sheets_root):
        shutil.rmtree(root, ignore_errors=True)
        Path(root).mkdir(parents=True, exist_ok=True)
    for member in members:
        if member.key not in done:
            continue
        for figure in sorted(Path(member.figure_dir).glob("*.png")):
            link_file(figure, Path(figures_root) / member.key / figure.name)
        if member.decoded_dir is not None:
            sheet = Path(member.decoded_dir) / sheet_name
            if sheet.exists():
                link_file(sheet, Path(sheets_root) / f"{member.key}.png")
