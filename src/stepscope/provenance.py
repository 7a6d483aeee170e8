"""Provenance recorded with every output: package versions and weight file identities."""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("stepscope", "diffsynth", "torch", "numpy", "safetensors", "transformers", "huggingface_hub")
REVISION_FILE = ".stepscope_source.json"
HEAD_BYTES = 1 << 20


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def file_identity(path: Path) -> dict[str, Any]:
    """Name, size and sha256 of the first MiB: cheap even for 28 GB shards, and changes with the file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(HEAD_BYTES))
    return {"file": path.name, "bytes": path.stat().st_size, "sha256_head": digest.hexdigest()}


def weights_identity(weights_dir: str | Path, sources: dict[str, str | Path] | None = None) -> dict[str, Any]:
    """Identity of a weights folder: its download source (repo id, revision) if known, and its
    files; with `sources` (a family's other repos, e.g. LTX-2.3's Gemma), theirs under "sources"."""
    identity = _folder_identity(Path(weights_dir))
    if sources:
        identity["sources"] = {name: _folder_identity(Path(folder)) for name, folder in sorted(sources.items())}
    return identity


def _folder_identity(weights_dir: Path) -> dict[str, Any]:
    files = sorted(path for path in weights_dir.rglob("*") if path.is_file())
    source_file = weights_dir / REVISION_FILE
    source = json.loads(source_file.read_text()) if source_file.exists() else {"source": "local folder"}
    return {
        "folder": str(weights_dir),
        **source,
        "files": [dict(file_identity(p), path=str(p.relative_to(weights_dir))) for p in files if p.is_file()],
    }
