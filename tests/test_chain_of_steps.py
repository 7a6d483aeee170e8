"""Emergence step, AUC, cross-seed divergence and the Chain-of-Steps plots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from stepscope import records
from stepscope.analysis.chain_of_steps import (
    curve_auc,
    curve_summary,
    divergence_curve,
    emergence_step,
    frame_divergence,
    latent_divergence,
    step_curves,
)
from stepscope.analysis.proxy_scorer import PROXY
from stepscope.analysis.score_table import RunId, rows_to_table, score_rows
from stepscope.analysis.scoring import score_label
from stepscope.plots.curves import plot_divergence, plot_split_curves, plot_step_curves
from stepscope.records import expert_switch_step

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_emergence_step_monotone():
    steps = list(range(10))
    scores = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.96, 0.97, 0.99, 1.0]
    assert emergence_step(steps, scores, 1.0) == 6
    assert emergence_step(steps, scores, 1.0, frac=0.5) == 3
    assert emergence_step(steps, scores, 0.8) == 5  # 0.9 >= 0.76
    assert emergence_step(steps, scores, 2.0) is None
    assert emergence_step(steps, scores, float("nan")) is None
    # order of the input does not matter
    assert emergence_step(steps[::-1], scores[::-1], 1.0) == 6


def test_emergence_step_non_monotone_and_nan():
    steps = [0, 5, 10, 15, 20]
    scores = [0.0, 0.96, 0.5, 0.96, 1.0]
    assert emergence_step(steps, scores, 1.0) == 5
    assert emergence_step(steps, scores, 1.0, sustained=True) == 15
    assert emergence_step(steps, [0.0, float("nan"), 0.99, 0.5, 0.2], 1.0, sustained=True) is None
    assert emergence_step(steps, [0.0, float("nan"), 0.99, 0.5, 0.2], 1.0) == 10


def test_curve_auc():
    assert curve_auc([0, 10, 20], [0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert curve_auc(np.arange(11), np.linspace(0, 1, 11)) == pytest.approx(0.5)
    # uneven spacing: 0.5 * 1 (0->1) + 9 * 1 (1->10), over a range of 10
    assert curve_auc([0, 1, 10], [0.0, 1.0, 1.0]) == pytest.approx(0.95)
    assert curve_auc([10, 0, 1], [1.0, 0.0, 1.0]) == pytest.approx(0.95)
    assert curve_auc([3], [0.7]) == pytest.approx(0.7)
    assert math.isnan(curve_auc([], []))
    assert 0.0 <= curve_auc([0, 1, 2, 3], [0.0, 1.0, 0.0, 1.0]) <= 1.0


def test_latent_divergence():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, 3, 6, 8)).astype(np.float32)
    assert latent_divergence([z, z.copy(), z.copy()]) == 0.0
    assert latent_divergence([z, -z]) == pytest.approx(2.0)
    assert latent_divergence([z, np.zeros_like(z)]) == pytest.approx(2.0)
    # two orthogonal latents of equal norm: sqrt(2)
    a = np.zeros((2, 2), np.float32)
    b = np.zeros((2, 2), np.float32)
    a[0, 0], b[1, 1] = 3.0, 3.0
    assert latent_divergence([a, b]) == pytest.approx(math.sqrt(2))
    # three seeds: mean of the three pairwise distances over the mean norm
    c = np.full((2, 2), 0.0, np.float32)
    c[0, 1] = 3.0
    assert latent_divergence([a, b, c]) == pytest.approx(math.sqrt(2))
    # torch fp16 tensors are accepted and scale-invariant
    t = torch.from_numpy(z).half()
    noisy = (t.float() + 0.1 * torch.randn_like(t.float())).half()
    d = latent_divergence([t, noisy])
    assert 0.0 < d < 0.2
    assert latent_divergence([t * 10, noisy * 10]) == pytest.approx(d, rel=1e-2)
    assert latent_divergence([np.zeros(3), np.zeros(3)]) == 0.0
    with pytest.raises(ValueError):
        latent_divergence([z])
    with pytest.raises(ValueError):
        latent_divergence([z, z[:2]])


def test_frame_divergence():
    rng = np.random.default_rng(1)
    f = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    assert frame_divergence([f, f.copy()]) == 0.0
    g = f.copy()
    g[2] = 255 - g[2]
    d = frame_divergence([f, g])
    assert d > 0
    assert frame_divergence([f.astype(np.float32) / 255, g.astype(np.float32) / 255]) == pytest.approx(
        d, rel=1e-6
    )


def _write_run(run_dir, latents: dict[int, torch.Tensor], experts: list[str]) -> None:
    records.write_steps(run_dir / records.STEPS, latents, latents[max(latents)].float(), max(latents))
    rows = [
        {"step": s, "timestep": 1000.0 * (1 - s / len(experts)), "sigma": 1 - s / len(experts),
         "expert": e, "recorded": s in latents}
        for s, e in enumerate(experts)
    ]  # fmt: skip
    records.write_schedule(run_dir / records.SCHEDULE, rows)


def test_divergence_curve(tmp_path):
    experts = ["high_noise"] * 3 + ["low_noise"] * 3
    shared = torch.randn(4, 2, 3, 5)
    run_dirs = []
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        own = torch.randn(4, 2, 3, 5, generator=gen)
        # early steps depend on the seed, from step 3 on every seed predicts the same video
        latents = {s: (own if s < 3 else shared).clone() for s in range(6)}
        run = tmp_path / f"seed{seed}"
        _write_run(run, latents, experts)
        run_dirs.append(run)
    curve = divergence_curve(run_dirs)
    assert list(curve.columns) == ["step", "latent_divergence"]
    assert curve["step"].tolist() == list(range(6))
    early, late = curve["latent_divergence"][:3], curve["latent_divergence"][3:]
    assert (early > 0.5).all() and (late == 0).all()
    assert divergence_curve(run_dirs, steps=[4])["latent_divergence"].tolist() == [0.0]
    schedule = records.RunRecords(run_dirs[0]).schedule
    assert expert_switch_step(schedule) == 3
    assert expert_switch_step(schedule.assign(expert="dit")) is None
    assert expert_switch_step(schedule.assign(expert="low_noise")) is None  # no switch within the run
    assert expert_switch_step(schedule.to_dict("records")) == 3  # the loop's in-memory rows
    with pytest.raises(ValueError):
        divergence_curve(run_dirs[:1])


def _curve_table() -> pd.DataFrame:
    rows = []
    for split, task, rate in [
        ("In-Domain_50", "A", 1.0),
        ("In-Domain_50", "B", 0.5),
        ("Out-of-Domain_50", "C", 0.25),
    ]:
        for sample in ("00000", "00001"):
            for seed in ("1", "2"):
                for step in range(10):
                    value = min(1.0, rate * step / 6) * (0.9 if seed == "2" else 1.0)
                    rows += score_rows(
                        RunId("wan22", split, task, sample, seed, step), {"total": value}, PROXY
                    )
                rows += score_rows(RunId("wan22", split, task, sample, seed, -1), {"total": 0.9}, PROXY)
            rows += score_rows(
                RunId("wan22", split, task, sample, "ens-latent-k2-0-5", -1), {"total": 0.0}, PROXY
            )
    return rows_to_table(rows)


def test_step_curves_and_summary():
    table = _curve_table()
    curves = step_curves(table)
    a = curves[(curves["task"] == "A")].set_index("step")
    assert a.loc[6, "mean"] == pytest.approx(0.95)
    assert a.loc[-1, "mean"] == pytest.approx(0.9)  # ensembles are left out
    assert a.loc[6, "n"] == 4
    summary = curve_summary(table).set_index("task")
    # task A: mean curve 0.95 * step / 6 reaches 0.95 * 0.9 at step 6
    assert summary.loc["A", "emergence_step"] == 6
    assert summary.loc["A", "final_score"] == pytest.approx(0.9)
    assert pd.isna(summary.loc["C", "emergence_step"])  # 0.25 * 9/6 * 0.95 < 0.855
    assert 0 < summary.loc["C", "auc"] < summary.loc["B", "auc"] < summary.loc["A", "auc"] <= 1


def test_plots(tmp_path):
    table = _curve_table()
    out = plot_step_curves(table, tmp_path / "curves.png", switch_step=4, title="wan22")
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert plot_split_curves(table, tmp_path / "split.png", switch_step=4).read_bytes()[:8] == PNG_MAGIC
    div = pd.DataFrame(
        [{"split": sp, "sample": s, "step": st, "latent_divergence": 1.0 / (1 + st) + 0.01 * s}
         for sp in ("In-Domain_50", "Out-of-Domain_50") for s in range(3) for st in range(10)]
    )  # fmt: skip
    assert plot_divergence(div, tmp_path / "div.png", switch_step=4).read_bytes()[:8] == PNG_MAGIC
    single = div[div["sample"] == 0].drop(columns="split")
    assert plot_divergence(single, tmp_path / "div1.png", group_col=None).read_bytes()[:8] == PNG_MAGIC
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary files


def test_figures_name_scorer_and_metric(tmp_path, monkeypatch):
    """Step-curve figures say which scorer and mode produced the curve."""
    from stepscope.plots import curves

    texts = []

    def keep_text(fig, target, result=None, **_):
        texts.append(" ".join([fig.get_suptitle(), *(ax.get_title() for ax in fig.axes)]))
        return {"path": Path(target)}

    monkeypatch.setattr(curves, "save", keep_text)
    table = _curve_table()
    plot_step_curves(table, tmp_path / "curves.png", title="wan22")
    plot_split_curves(table, tmp_path / "split.png")
    label = score_label(PROXY, "total")
    assert "not VBVR's score" in label
    assert all(label in " ".join(text.split()) for text in texts) and len(texts) == 2
