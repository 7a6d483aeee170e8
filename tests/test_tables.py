"""Table arithmetic on hand-made scores: mean, std, best-of-K, ensemble gains, weighted overall."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from stepscope.analysis import tables
from stepscope.analysis.evalkit import EVALKIT
from stepscope.analysis.proxy_scorer import PROXY
from stepscope.analysis.score_table import FAILED, SKIPPED, RunId, rows_to_table, score_rows

ID, OOD = "In-Domain_50", "Out-of-Domain_50"
# task -> split, sample -> scores of seeds 1, 2, 3
SINGLE = {
    ("A", ID): {"00000": [0.2, 0.4, 0.6], "00001": [0.5, 0.5, 0.8]},
    ("B", OOD): {"00000": [0.1, 0.3, 0.2], "00001": [0.9, 0.7, 0.8]},
    ("C", OOD): {"00000": [0.0, 0.3, 0.6]},
}
K3 = "ens-latent-k3-0-10"
K2 = "ens-latent-k2-5-10"
ENSEMBLES = {
    K3: {
        ("A", "00000"): 0.7,
        ("A", "00001"): 0.6,
        ("B", "00000"): 0.3,
        ("B", "00001"): 0.8,
        ("C", "00000"): 0.5,
    },
    K2: {("A", "00000"): 0.5, ("A", "00001"): 0.7},  # only task A has this ensemble
}


def _scores() -> pd.DataFrame:
    rows = []
    split_of = {task: split for task, split in SINGLE}
    for (task, split), samples in SINGLE.items():
        for sample, values in samples.items():
            for seed, value in enumerate(values, start=1):
                rid = RunId("wan22", split, task, sample, str(seed))
                rows += score_rows(rid, {"total": value, "task_progress": 1 - value}, PROXY)
                # noise that must be ignored: another step and another scorer
                rows += score_rows(rid._replace(step=3), {"total": 0.0}, PROXY)
                rows += score_rows(rid, {"task_specific": 0.0}, "vbvr-evalkit")
    for name, values in ENSEMBLES.items():
        for (task, sample), value in values.items():
            rows += score_rows(RunId("wan22", split_of[task], task, sample, name), {"total": value}, PROXY)
    return rows_to_table(rows)


def _row(df, split, task):
    hit = df[(df["split"] == split) & (df["task"] == task)]
    assert len(hit) == 1, (split, task)
    return hit.iloc[0]


def test_summary_task_rows():
    df = tables.summary_table(_scores(), scorer=PROXY)
    a = _row(df, ID, "A")
    assert a["level"] == "task"
    assert (a["n_samples"], a["n_videos"], a["n_seeds"]) == (2, 6, 3)
    assert a["single_mean"] == pytest.approx(0.5)
    # per-seed means 0.35, 0.45, 0.70 -> sample std
    assert a["single_std"] == pytest.approx(np.std([0.35, 0.45, 0.70], ddof=1))
    assert a["best_of_k"] == pytest.approx(0.7)
    assert a["best_of_k_gain"] == pytest.approx(0.2)
    assert a[f"mean[{K3}]"] == pytest.approx(0.65)
    assert a[f"gain[{K3}]"] == pytest.approx(0.15)
    assert a[f"mean[{K2}]"] == pytest.approx(0.6)
    assert a[f"gain[{K2}]"] == pytest.approx(0.1)
    b = _row(df, OOD, "B")
    assert b["single_mean"] == pytest.approx(0.5)
    assert b["best_of_k"] == pytest.approx(0.6)
    assert b[f"gain[{K3}]"] == pytest.approx(0.05)
    assert np.isnan(b[f"mean[{K2}]"]) and np.isnan(b[f"gain[{K2}]"])
    # ensemble columns are ordered by parsed (strategy, K, start, end)
    ens_cols = [c for c in df.columns if c.startswith(("mean[", "gain["))]
    assert ens_cols == [f"mean[{K2}]", f"gain[{K2}]", f"mean[{K3}]", f"gain[{K3}]"]


def test_summary_split_and_overall_rows_are_video_weighted():
    df = tables.summary_table(_scores(), scorer=PROXY)
    ood = _row(df, OOD, tables.ALL)
    assert ood["level"] == "split" and ood["n_samples"] == 3 and ood["n_videos"] == 9
    assert ood["single_mean"] == pytest.approx((0.2 + 0.8 + 0.3) / 3)
    assert ood["best_of_k"] == pytest.approx((0.3 + 0.9 + 0.6) / 3)
    overall = _row(df, tables.OVERALL, tables.ALL)
    assert overall["level"] == "overall" and overall["n_videos"] == 15
    # mean over all 15 videos (0.46), not the mean of the split means (0.4667)
    assert overall["single_mean"] == pytest.approx(0.46)
    assert overall["single_mean"] != pytest.approx((0.5 + 1.3 / 3) / 2)
    assert overall["best_of_k"] == pytest.approx(0.64)
    assert overall[f"mean[{K3}]"] == pytest.approx(0.58)
    assert overall[f"gain[{K3}]"] == pytest.approx(0.12)
    # K2 covers only task A: its gain compares against the single-seed mean of those samples
    assert overall[f"mean[{K2}]"] == pytest.approx(0.6)
    assert overall[f"gain[{K2}]"] == pytest.approx(0.1)
    seeds = [np.mean([v[i] for s in SINGLE.values() for v in s.values()]) for i in range(3)]
    assert overall["single_std"] == pytest.approx(np.std(seeds, ddof=1))
    assert df["level"].tolist() == ["task"] * 3 + ["split"] * 2 + ["overall"]


def test_summary_other_metric_and_scorer_checks():
    scores = _scores()
    df = tables.summary_table(scores, metric="task_progress", scorer=PROXY)
    assert _row(df, ID, "A")["single_mean"] == pytest.approx(0.5)
    assert _row(df, tables.OVERALL, tables.ALL)["single_mean"] == pytest.approx(0.54)
    with pytest.raises(ValueError, match="mixes scorers"):
        tables.summary_table(pd.concat([scores, scores.assign(scorer="other")]))
    # with a single scorer in the table there is no need to name it
    assert len(tables.summary_table(scores[scores["scorer"] == PROXY])) == 6
    step3 = tables.summary_table(scores, scorer=PROXY, step=3)
    assert _row(step3, tables.OVERALL, tables.ALL)["single_mean"] == 0.0


def test_parse_ensemble():
    assert tables.parse_ensemble("ens-latent-k3-0-10") == {
        "strategy": "latent",
        "k": 3,
        "start": 0,
        "end": 10,
        "rescale": False,
    }
    assert tables.parse_ensemble("ens-x0-avg-k5-12-40") is None  # not a strategy stepscope makes
    assert tables.parse_ensemble("ens-velocity-k2-0-20-rescale")["rescale"] is True
    assert tables.parse_ensemble("1") is None
    assert tables.parse_ensemble("ens-latent") is None


def test_ablation_table():
    df = tables.ablation_table(_scores(), scorer=PROXY)
    assert list(df.columns) == tables.ABLATION_COLUMNS
    k3 = df[df["ensemble"] == K3].set_index("split")
    assert set(k3.index) == {ID, OOD, tables.OVERALL}
    assert (k3["k"] == 3).all() and (k3["start"] == 0).all() and (k3["end"] == 10).all()
    assert not k3["rescale"].any()
    assert k3.loc[ID, "mean"] == pytest.approx(0.65)
    assert k3.loc[ID, "gain"] == pytest.approx(0.15)
    assert k3.loc[OOD, "mean"] == pytest.approx(1.6 / 3)
    assert k3.loc[OOD, "single_mean"] == pytest.approx(1.3 / 3)
    assert k3.loc[OOD, "gain"] == pytest.approx(0.1)
    assert k3.loc[tables.OVERALL, "gain"] == pytest.approx(0.12)
    assert k3.loc[tables.OVERALL, "n_samples"] == 5
    k2 = df[df["ensemble"] == K2].set_index("split")
    assert set(k2.index) == {ID, tables.OVERALL}
    assert (k2["k"] == 2).all() and (k2["start"] == 5).all()
    assert k2.loc[tables.OVERALL, "single_mean"] == pytest.approx(0.5)
    assert k2.loc[tables.OVERALL, "gain"] == pytest.approx(0.1)


def test_write_tables(tmp_path, monkeypatch):
    scores = _scores()
    scores_path = tmp_path / "scores.parquet"
    scores.to_parquet(scores_path)
    built = tables.build_tables(scores_path, tmp_path / "out", scorer=PROXY, prefix="proxy_")
    for name in ("summary", "ablation"):
        for ext in ("parquet", "csv", "md"):
            assert (tmp_path / "out" / f"proxy_{name}.{ext}").is_file()
        back = pd.read_parquet(tmp_path / "out" / f"proxy_{name}.parquet")
        assert back.shape == built[name].shape
    md = (tmp_path / "out" / "proxy_summary.md").read_text()
    assert md.splitlines()[0] == (
        "Scores: total [stepscope-proxy (approximation, not VBVR's score); "
        "weighted sum of the proxy's 5 dimensions], step -1"
    )
    assert md.splitlines()[2].startswith("| scorer") and "0.460" in md
    # the dependency-free writer is used when tabulate is missing
    monkeypatch.setitem(sys.modules, "tabulate", None)
    fallback = tables.to_markdown(built["summary"])
    assert fallback == tables.markdown_table(built["summary"])
    lines = fallback.splitlines()
    assert len(lines) == 2 + len(built["summary"]) and "0.460" in fallback
    assert lines[1].startswith("| --- |")
    assert "| nan" not in fallback


def test_tables_name_scorer_and_metric():
    """Every row says which scorer and which metric (mode) produced its numbers."""
    scores = _scores()
    proxy = tables.summary_table(scores)  # "total" is only the proxy's
    assert set(proxy["scorer"]) == {PROXY} and set(proxy["metric"]) == {"total"}
    evalkit = tables.summary_table(scores, metric="task_specific")
    assert set(evalkit["scorer"]) == {EVALKIT} and set(evalkit["metric"]) == {"task_specific"}
    assert _row(evalkit, tables.OVERALL, tables.ALL)["single_mean"] == 0.0
    ablation = tables.ablation_table(scores)
    assert set(ablation["scorer"]) == {PROXY} and set(ablation["metric"]) == {"total"}
    with pytest.raises(ValueError, match="mixes scorers"):  # one metric from two scorers: name one
        tables.summary_table(pd.concat([scores, scores.assign(scorer=EVALKIT)]))


def test_summary_counts_failed_and_says_skipped_tasks():
    """EvalKit's status rows: a failed video counts as 0.0 (and in n_failed); a task folder
    without an evaluator keeps a row whose note says its videos were not scored."""
    rows = []
    for sample, value in (("00000", 0.8), ("00001", 0.0)):
        rows += score_rows(RunId("wan22", ID, "A", sample, "1"), {"task_specific": value}, EVALKIT)
    rows += score_rows(RunId("wan22", ID, "A", "00001", "1"), {FAILED: 1.0}, EVALKIT)
    for sample in ("00000", "00001"):
        rows += score_rows(RunId("wan22", "custom", "mine", sample, "1"), {SKIPPED: 1.0}, EVALKIT)
    df = tables.summary_table(rows_to_table(rows), metric="task_specific")
    a = _row(df, ID, "A")
    assert a["single_mean"] == pytest.approx(0.4) and a["n_failed"] == 1 and a["note"] == ""
    mine = _row(df, "custom", "mine")
    assert mine["n_videos"] == 0 and np.isnan(mine["single_mean"])
    assert mine["note"] == "2 video(s) not scored: no vbvr-evalkit evaluator for the task"
    overall = _row(df, tables.OVERALL, tables.ALL)
    assert overall["n_videos"] == 2 and overall["n_failed"] == 1
    assert overall["single_mean"] == pytest.approx(0.4) and overall["note"].startswith("2 video(s)")
