"""The manifest job: the bench scanned into a table of usable samples and one of problems (CPU only)."""

from __future__ import annotations

from stepscope.atomic import write_parquet
from stepscope.bench import scan_bench


def write_manifest(
    bench_root: str,
    splits: list[str],
    task_globs: list[str],
    max_samples: int | None,
    manifest_path: str,
    errors_path: str,
) -> None:
    """Scan the bench into the manifest and its per-sample problems (written first)."""
    manifest, errors = scan_bench(
        bench_root, splits=splits, task_globs=task_globs, max_samples_per_task=max_samples
    )
    write_parquet(errors_path, errors)
    write_parquet(manifest_path, manifest)
