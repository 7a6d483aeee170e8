"""Runs that did not make it: the failure table the tables job writes, and the final check that fails
the workflow naming them (CPU only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from stepscope.atomic import write_text
from stepscope.errors import StepScopeError
from stepscope.jobs.plan import Receipt

FAILURE_COLUMNS = ["variant", "split", "task", "sample", "run", "stage", "error"]


def failure_table(receipts: list[Receipt]) -> pd.DataFrame:
    """One row per run that did not make it through the last stage: the stage it failed in
    (sample, decode or analysis) and the error."""
    rows = []
    for receipt in receipts:
        for member in receipt.failed:
            split, task, sample, run = member["key"].split("/")
            stage = member.get("failed_stage", receipt.stage)
            rows.append([receipt.variant, split, task, sample, run, stage, member.get("error", "")])
    return pd.DataFrame(rows, columns=FAILURE_COLUMNS)


def run_name(row: Any) -> str:
    return f"{row.variant}/{row.split}/{row.task}/{row.sample}/{row.run}"


def write_failures(failures: pd.DataFrame, out_dir: Path) -> None:
    """failures.csv (header only when every run succeeded) and a section of summary.md."""
    write_text(out_dir / "failures.csv", failures.to_csv(index=False))
    summary = out_dir / "summary.md"
    text = summary.read_text() if summary.exists() else ""
    if failures.empty:
        text += "\n## Failed runs\n\nNone: every planned run produced its records, figures and scores.\n"
    else:
        lines = [f"- {run_name(row)}: failed in {row.stage}: {row.error}" for row in failures.itertuples()]
        text += f"\n## Failed runs ({len(failures)})\n\n" + "\n".join(lines) + "\n"
    write_text(summary, text)


def check_failures(failures_csv: str) -> None:
    """Fail, naming every failed run, when the plan has runs that did not make it."""
    failures = pd.read_csv(failures_csv, dtype=str, keep_default_na=False)
    if failures.empty:
        return
    for row in failures.itertuples():
        print(f"{run_name(row)} failed in {row.stage}: {row.error}")
    # Only the exception's last line reaches the console (stepscope.logs): it carries the first causes.
    first = "; ".join(
        f"{run_name(row)} in {row.stage}: {shorten(row.error, CAUSE_CHARS)}"
        for row in failures.head(FIRST_CAUSES).itertuples()
    )
    more = f" (and {len(failures) - FIRST_CAUSES} more)" if len(failures) > FIRST_CAUSES else ""
    raise StepScopeError(
        f"{len(failures)} run(s) failed, every other run completed; fix their inputs (or drop them from "
        f"the plan) and rerun, which redoes only these (all reasons in {failures_csv}). "
        f"First causes: {first}{more}"
    )


FIRST_CAUSES = 3
CAUSE_CHARS = 400


def shorten(text: str, limit: int) -> str:
    """One line of at most `limit` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
