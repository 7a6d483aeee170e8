"""Send a job's output to its Snakemake log file (and keep the traceback there on failure)."""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def redirect_to_log(path: str | Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with (
        open(path, "a", buffering=1) as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        try:
            yield
        except BaseException:
            traceback.print_exc(file=log)
            # Snakemake shows stderr of failed jobs: repeat the last line there.
            print(
                f"failed; see {path}: {traceback.format_exc().strip().splitlines()[-1]}", file=sys.__stderr__
            )
            raise
