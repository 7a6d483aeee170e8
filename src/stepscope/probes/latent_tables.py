"""The probe tables that compare the runs' latents (sensitivity, token swap), for the CPU table job.
They read tensors and compute CKA with the same torch code as the device side, so this module imports
torch (`tables` does not)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stepscope.probes.common import cka_dissimilarity, latent_tokens
from stepscope.probes.files import CLEAN, HIDDEN_CKA, LABELS, probe_labels, read_probe
from stepscope.records import RunRecords


def sensitivity_table(probe_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """CKA dissimilarity of each perturbed trajectory vs the clean one at every step from the
    injection on: x0_hat latents (representation ``x0``, from the records) and the full block
    outputs measured while sampling (``L<layer>``, from hidden_cka.parquet)."""
    rows = []
    for probe_dir in probe_dirs:
        probe = read_probe(probe_dir)
        base = {**probe_labels(probe), "switch_step": probe.get("switch_step")}
        clean = RunRecords(Path(probe_dir) / CLEAN)
        experts = dict(zip(clean.schedule["step"], clean.schedule["expert"], strict=True))
        clean_steps = set(clean.recorded_steps)
        for condition in probe["conditions"][1:]:
            run = RunRecords(Path(probe_dir) / condition["name"])
            injected = int(condition["step"])
            for step in sorted(clean_steps & set(run.recorded_steps)):
                if step < injected:
                    continue
                rows.append(
                    {
                        **base,
                        "injection_step": injected,
                        "step": step,
                        "representation": "x0",
                        "expert": experts.get(step),
                        "dissimilarity": cka_dissimilarity(
                            latent_tokens(clean.x0_hat(step)), latent_tokens(run.x0_hat(step))
                        ),
                    }
                )
        hidden_path = Path(probe_dir) / HIDDEN_CKA
        if hidden_path.is_file():
            hidden = pd.read_parquet(hidden_path)
            if "pass" in hidden:
                hidden = hidden[hidden["pass"] == "cond"]
            for row in hidden.itertuples(index=False):
                rows.append(
                    {
                        **base,
                        "injection_step": int(row.injection_step),
                        "step": int(row.step),
                        "representation": f"L{int(row.layer):02d}",
                        "expert": row.expert,
                        "dissimilarity": float(row.dissimilarity),
                    }
                )
    columns = [*LABELS, "switch_step", "injection_step", "step", "representation", "expert", "dissimilarity"]
    table = pd.DataFrame(rows, columns=columns)
    table["switch_step"] = pd.array(table["switch_step"], dtype="Int64")
    return table


def _relative(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> float:
    norm = float(scale.double().norm())
    return float((a.double() - b.double()).norm()) / norm if norm else 0.0


def swap_table(probe_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """Which clean run each swapped run's outcome follows.

    ``latent_to_target`` / ``latent_to_source``: ||z - z_target|| / ||z_target|| and
    ||z - z_source|| / ||z_target|| of the final latents; ``frames_to_*``: mean absolute
    difference of the decoded videos (in [0, 1]); ``source_fraction`` = d_target / (d_target +
    d_source) on the latents (0: the target's outcome, 1: the source's; 0 when nothing changed);
    ``follows``: the nearer clean run (``target`` on a tie).
    """
    rows = []
    for probe_dir in probe_dirs:
        probe = read_probe(probe_dir)
        target = RunRecords(Path(probe_dir) / "target")
        source = RunRecords(Path(probe_dir) / "source")
        z_target, z_source = target.final_latent(), source.final_latent()
        f_target, f_source = target.frames().astype(np.float64), source.frames().astype(np.float64)
        for condition in probe["conditions"][1:]:
            run = RunRecords(Path(probe_dir) / condition["name"])
            z = run.final_latent()
            frames = run.frames().astype(np.float64)
            d_target = _relative(z, z_target, z_target)
            d_source = _relative(z, z_source, z_target)
            total = d_target + d_source
            rows.append(
                {
                    **probe_labels(probe),
                    "source": probe["source"]["source"],
                    "swap_step": int(probe["step"]),
                    "switch_step": probe.get("switch_step"),
                    "layer": int(condition["layer"]),
                    "latent_to_target": d_target,
                    "latent_to_source": d_source,
                    "frames_to_target": float(np.abs(frames - f_target).mean() / 255.0),
                    "frames_to_source": float(np.abs(frames - f_source).mean() / 255.0),
                    "source_fraction": d_target / total if total else 0.0,
                    "changed": bool(not torch.equal(z, z_target)),
                    "follows": "source" if d_source < d_target else "target",
                }
            )
    table = pd.DataFrame(rows)
    if not table.empty:
        table["switch_step"] = pd.array(table["switch_step"], dtype="Int64")
    return table
