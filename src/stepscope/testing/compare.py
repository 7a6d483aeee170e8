"""Compare two results folders of the same plan: records, decoded steps, scores, tables, figures.

Used to check that the workflow gives the same results whatever executes it (a local run vs a
SLURM cluster). Provenance that legitimately differs (timings, run ids, absolute paths, receipts,
logs) is not compared.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from stepscope import records

Check = Callable[[Path, Path], str | None]


def _same_bytes(a: Path, b: Path) -> str | None:
    return None if a.read_bytes() == b.read_bytes() else "bytes differ"


def _same_table(a: Path, b: Path) -> str | None:
    left, right = pd.read_parquet(a), pd.read_parquet(b)
    columns = sorted(left.columns)
    if columns != sorted(right.columns):
        return f"columns differ: {sorted(left.columns)} vs {sorted(right.columns)}"
    left = left[columns].sort_values(columns).reset_index(drop=True)
    right = right[columns].sort_values(columns).reset_index(drop=True)
    try:
        pd.testing.assert_frame_equal(left, right, check_exact=True)
    except AssertionError as error:
        return str(error).splitlines()[0]
    return None


def _same_tensors(a: Path, b: Path) -> str | None:
    from safetensors.numpy import load_file

    left, right = load_file(str(a)), load_file(str(b))
    if left.keys() != right.keys():
        return f"tensors differ: {sorted(left)} vs {sorted(right)}"
    unequal = [key for key in left if not np.array_equal(left[key], right[key])]
    return f"values differ in {unequal[:5]}" if unequal else None


def _same_arrays(a: Path, b: Path) -> str | None:
    with np.load(a) as left, np.load(b) as right:
        if set(left.files) != set(right.files):
            return "array names differ"
        unequal = [key for key in left.files if not np.array_equal(left[key], right[key])]
    return f"values differ in {unequal[:5]}" if unequal else None


def _same_frames(a: Path, b: Path) -> str | None:
    if a.read_bytes() == b.read_bytes():
        return None
    left, right = records.read_video(a), records.read_video(b)
    return None if left.shape == right.shape and np.array_equal(left, right) else "decoded frames differ"


CHECKS: list[tuple[str, Check]] = [
    ("runs/**/steps.safetensors", _same_tensors),
    ("runs/**/activations.npz", _same_arrays),
    ("runs/**/schedule.parquet", _same_table),
    ("runs/**/activations.parquet", _same_table),
    ("runs/**/video.mp4", _same_frames),
    ("decoded/**/step_*.mp4", _same_frames),
    ("decoded/**/contact_sheet.png", _same_bytes),
    ("figures/**/*.png", _same_bytes),
    ("scores/**/*.parquet", _same_table),
    ("tables/*.parquet", _same_table),
    ("tables/*.csv", _same_bytes),
    ("probes/tables/*.parquet", _same_table),
    ("videos/**/*.mp4", _same_frames),
]


def _files(root: Path, pattern: str) -> dict[str, Path]:
    return {str(path.relative_to(root)): path for path in root.glob(pattern) if path.is_file()}


def differences(a: str | Path, b: str | Path) -> Iterator[str]:
    """Yield one line per difference between results folders `a` and `b` (nothing: the same)."""
    a, b = Path(a), Path(b)
    compared = 0
    for pattern, check in CHECKS:
        left, right = _files(a, pattern), _files(b, pattern)
        for name in sorted(left.keys() ^ right.keys()):
            yield f"{name}: only in {a if name in left else b}"
        for name in sorted(left.keys() & right.keys()):
            compared += 1
            problem = check(left[name], right[name])
            if problem:
                yield f"{name}: {problem}"
    if compared == 0:
        yield f"nothing to compare: neither {a} nor {b} holds results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("a", type=Path, help="a results folder")
    parser.add_argument("b", type=Path, help="another results folder of the same plan")
    args = parser.parse_args(argv)
    found = list(differences(args.a, args.b))
    for line in found:
        print(line)
    counted = sum(len(_files(args.a, pattern)) for pattern, _ in CHECKS)
    if found:
        print(f"{len(found)} difference(s) between {args.a} and {args.b}")
        return 1
    print(f"{args.a} and {args.b} hold the same results ({counted} files compared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
