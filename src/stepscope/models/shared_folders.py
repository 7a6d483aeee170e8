"""Folders that several checkouts (or users) share through one `resources/` folder.

Snakemake's lock lives in each checkout's `.snakemake`, so it does not stop a second checkout from
regenerating tiny weights that a first one is loading. A shared folder is therefore made under a
lock beside it, into a temporary sibling, and published file by file with atomic renames; a folder
that another process already completed is kept as it is, so a process using it is never disturbed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

DONE = ".stepscope_complete.json"  # ours, written last; never a Snakemake output (those get deleted)


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on `folder`, held in a file beside it (waits for the holder)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def completed(folder: Path) -> dict | None:
    """The completion record of a folder whose listed files are all there at their sizes, else None."""
    try:
        record = json.loads((folder / DONE).read_text())
    except (OSError, ValueError):
        return None
    for name, size in record["sizes"].items():
        path = folder / name
        if name != record["marker"] and (not path.is_file() or path.stat().st_size != size):
            return None
    return record


def publish_once(folder: str | os.PathLike, make: Callable[[Path], object], marker: str) -> bool:
    """Make `folder` with `make(tmp_folder)` unless another process completed it; True if made here.

    `marker` is the file the workflow declares as the folder's output: Snakemake deletes it before
    the job starts, so it is put back from the record when the folder is kept.
    """
    folder = Path(folder)
    with folder_lock(folder):
        record = completed(folder)
        if record is not None:
            if not (folder / marker).exists():
                (folder / marker).write_text(record["marker_text"])
            return False
        tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            make(tmp)
            files = sorted(p.relative_to(tmp) for p in tmp.rglob("*") if p.is_file())
            sizes = {str(name): (tmp / name).stat().st_size for name in files}
            marker_text = (tmp / marker).read_text()
            (folder / DONE).unlink(missing_ok=True)
            for name in sorted(files, key=lambda name: str(name) == marker):  # the marker last
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp / name, folder / name)
            record = {"marker": marker, "marker_text": marker_text, "sizes": sizes}
            (folder / f"{DONE}.tmp").write_text(json.dumps(record))
            os.replace(folder / f"{DONE}.tmp", folder / DONE)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return True
