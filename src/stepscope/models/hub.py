"""Hugging Face hub downloads for the workflow's download rules (the library never downloads).

The token comes from the environment only (HF_TOKEN, read by huggingface_hub itself); it never
appears in params, logs or metadata. Partial downloads resume on retry.
"""

from __future__ import annotations

import os
from pathlib import Path

from stepscope.atomic import write_json
from stepscope.errors import StepScopeError
from stepscope.models.weight_layouts import MAIN, source_layout
from stepscope.provenance import package_versions


def allow_patterns(family: str, source: str = MAIN) -> list[str]:
    """Hub allow patterns for one repo of a family: every file its layout can resolve, nothing else."""
    patterns = []
    for spec in source_layout(family, source):
        patterns += [f"{pattern}/*" if spec.is_dir else pattern for pattern in spec.patterns]
    return patterns


def download_snapshot(
    *, repo_id: str, revision: str, repo_type: str, allow_patterns: list[str], marker: str | Path
) -> Path:
    """Fetch only `allow_patterns` of repo_id@revision into the marker's folder; write the marker last."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise StepScopeError(
            f"cannot download {repo_id}@{revision}: HF_HUB_OFFLINE=1. Run the download rules on a node with "
            "network access (they are local rules), or set a local_path in the config."
        )
    from huggingface_hub import HfApi, snapshot_download

    folder = Path(marker).parent
    folder.mkdir(parents=True, exist_ok=True)
    info = HfApi().repo_info(repo_id, revision=revision, repo_type=repo_type)
    snapshot_download(
        repo_id=repo_id,
        revision=info.sha,
        repo_type=repo_type,
        allow_patterns=allow_patterns,
        local_dir=folder,
    )
    files = sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts
    )
    if not files:
        raise StepScopeError(f"{repo_id}@{revision}: no file matched {allow_patterns}")
    write_json(
        marker,
        {
            "repo_id": repo_id,
            "repo_type": repo_type,
            "revision": revision,
            "commit": info.sha,
            "allow_patterns": allow_patterns,
            "files": files,
            "huggingface_hub": package_versions().get("huggingface_hub"),
        },
    )
    return folder
