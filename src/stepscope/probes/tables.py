"""The probe table job (the CPU rule): one probe's tidy table (Parquet), summary (CSV) and figures
over all its probe directories; and the tables and summaries that need no torch (scores of the noise
probes' videos; every summary). The latent comparisons are in `latent_tables`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from stepscope.analysis.proxy_scorer import score_video
from stepscope.atomic import atomic_path, write_parquet
from stepscope.errors import StepScopeError
from stepscope.probes.files import CLEAN, probe_labels, read_probe
from stepscope.probes.registry import get_probe


def noise_table(probe_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """Builtin scores of every condition's final video: one row per condition and metric.

    Columns: variant, split, task, sample, probe, condition, perturbed, step, frame, strength,
    switch_step, metric, value (step / frame: the injection step or noised latent frame, NA for
    the clean run).
    """
    rows = []
    for probe_dir in probe_dirs:
        probe = read_probe(probe_dir)
        if not probe.get("sample_dir"):
            raise StepScopeError(
                f"{probe_dir}: the probe ran on a custom input, which has no ground truth to score"
            )
        for condition in probe["conditions"]:
            scores = score_video(Path(probe_dir) / condition["name"] / "video.mp4", probe["sample_dir"])
            for metric, value in scores.items():
                rows.append(
                    {
                        **probe_labels(probe),
                        "probe": probe["kind"],
                        "condition": condition["name"],
                        "perturbed": condition["name"] != CLEAN,
                        "step": condition.get("step"),
                        "frame": condition.get("frame"),
                        "strength": condition.get("strength", 0.0),
                        "switch_step": probe.get("switch_step"),
                        "metric": metric,
                        "value": float(value),
                    }
                )
    table = pd.DataFrame(rows)
    for column in ("step", "frame", "switch_step"):
        table[column] = pd.array(table[column], dtype="Int64")
    return table


def noise_summary(table: pd.DataFrame, position: str, metric: str) -> pd.DataFrame:
    """Per variant and swept position: mean/std/n of `metric`, the clean mean and the drop from it."""
    df = table[table["metric"] == metric]
    clean = df[~df["perturbed"]].groupby("variant")["value"].mean().rename("clean_mean")
    perturbed = df[df["perturbed"]]
    summary = (
        perturbed.groupby(["variant", position])["value"]
        .agg(mean="mean", std="std", n="count")
        .reset_index()
        .join(clean, on="variant")
    )
    summary["drop"] = summary["clean_mean"] - summary["mean"]
    summary.insert(2, "metric", metric)
    return summary


def noise_step_summary(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    return noise_summary(table, "step", metric)


def noise_frame_summary(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    return noise_summary(table, "frame", metric)


SENSITIVITY_SUMMARY_COLUMNS = [
    "variant",
    "representation",
    "injection_step",
    "mean_after",
    "final",
    "n",
    "peak_step",
    "switch_step",
    "peak_is_switch",
]


def sensitivity_summary(table: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Per variant, representation and injection step: mean dissimilarity over the steps from the
    injection on (``mean_after``) and at the last step (``final``); plus the curve's peak step and
    the expert switch, so the two can be told apart."""
    if table.empty:
        return pd.DataFrame(columns=SENSITIVITY_SUMMARY_COLUMNS)
    last = table.groupby("variant")["step"].transform("max")
    final = (
        table[table["step"] == last]
        .groupby(["variant", "representation", "injection_step"])["dissimilarity"]
        .mean()
        .rename("final")
    )
    summary = (
        table.groupby(["variant", "representation", "injection_step"])["dissimilarity"]
        .agg(mean_after="mean", n="count")
        .join(final)
        .reset_index()
    )
    peaks = summary.loc[
        summary.groupby(["variant", "representation"])["mean_after"].idxmax(),
        ["variant", "representation", "injection_step"],
    ].rename(columns={"injection_step": "peak_step"})
    switches = table.groupby("variant")["switch_step"].first()
    summary = summary.merge(peaks, on=["variant", "representation"]).join(switches, on="variant")
    summary["peak_is_switch"] = summary["peak_step"] == summary["switch_step"]
    return summary[SENSITIVITY_SUMMARY_COLUMNS]


def swap_summary(table: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Per variant and layer: mean source fraction, the share of samples following the source, the
    majority outcome, and ``flip`` = the majority outcome differs from the previous swept layer's."""
    rows = []
    for variant, group in table.groupby("variant", sort=True):
        previous = None
        for layer, at_layer in group.groupby("layer", sort=True):
            share = float((at_layer["follows"] == "source").mean())
            follows = "source" if share > 0.5 else "target"
            rows.append(
                {
                    "variant": variant,
                    "layer": int(layer),
                    "source_fraction": float(at_layer["source_fraction"].mean()),
                    "follows_source_share": share,
                    "follows": follows,
                    "changed_share": float(at_layer["changed"].mean()),
                    "flip": previous is not None and follows != previous,
                    "n": len(at_layer),
                }
            )
            previous = follows
    return pd.DataFrame(
        rows,
        columns=[
            "variant",
            "layer",
            "source_fraction",
            "follows_source_share",
            "follows",
            "changed_share",
            "flip",
            "n",
        ],
    )


def _write_csv(target: str | Path, frame: pd.DataFrame) -> None:
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)


def probe_table_job(
    *, kind: str, probe_dirs: Sequence[str], metric: str, out_table: str, out_summary: str, figure_dir: str
) -> list[Path]:
    """Tables (Parquet, tidy; CSV summary) and figures of one probe over all its probe directories."""
    probe = get_probe(kind)
    figures_root = Path(figure_dir)
    figures_root.mkdir(parents=True, exist_ok=True)
    table = probe.part("table")(probe_dirs)
    summary = probe.part("summary")(table, metric)
    figures = probe.part("figures")(table, summary, figures_root, metric)
    write_parquet(out_table, table)
    _write_csv(out_summary, summary)
    return figures
