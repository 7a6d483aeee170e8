"""What a probe directory holds: one run directory per condition (docs/records.md) and, written last,
``probe.json``. The GPU job writes it, the table job reads it; no torch import."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stepscope.errors import StepScopeError

PROBE_JSON = "probe.json"
HIDDEN_CKA = "hidden_cka.parquet"  # sensitivity: CKA of full block outputs, measured while sampling
CLEAN = "clean"  # the unperturbed run of the noise probes (token_swap: ``target`` and ``source``)
LABELS = ("variant", "split", "task", "sample")


def read_probe(probe_dir: str | Path) -> dict[str, Any]:
    path = Path(probe_dir) / PROBE_JSON
    if not path.is_file():
        raise StepScopeError(f"{probe_dir} has no {PROBE_JSON}: the probe job did not finish; rerun it")
    return json.loads(path.read_text())


def probe_labels(probe: dict[str, Any]) -> dict[str, str]:
    """The probed variant, split, task and sample of a ``probe.json``, for table rows."""
    return {key: str(probe["labels"].get(key, "")) for key in LABELS}
