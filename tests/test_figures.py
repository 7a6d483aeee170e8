"""Figures from synthetic runs: PNGs are written, and the numbers drawn are the recorded ones."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from stepscope.plots import figures as F
from stepscope.plots import group_figures as G
from stepscope.plots import helpers as H
from stepscope.plots import masks as M
from stepscope.plots import run_figures as R
from stepscope.records import RunRecords, is_complete
from stepscope.testing.synthetic import object_mask, write_synthetic_first_frame, write_synthetic_run

LAYERS = (0, 2)
STEPS = 8
SWITCH = 4


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    wan22 = write_synthetic_run(root / "wan22", layers=LAYERS, steps=STEPS, expert_switch=SWITCH, seed=1)
    wan21 = write_synthetic_run(root / "wan21", layers=LAYERS, steps=STEPS, recorded_steps=[0, 7], seed=2)
    long = write_synthetic_run(root / "long", layers=(5,), steps=4, frames=12, height=3, width=5, seed=3)
    group = [
        write_synthetic_run(
            root / f"group{i}", layers=LAYERS, steps=6, expert_switch=3, seed=10 + i, sample=f"{i:05d}"
        )
        for i in range(3)
    ]
    first_frame = write_synthetic_first_frame(root / "first_frame.png", height=4, width=4, size=64)
    return {"wan22": wan22, "wan21": wan21, "long": long, "group": group, "first_frame": first_frame}


def png_size(path: Path) -> tuple[int, int]:
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def check_png(result: dict) -> None:
    path = result["path"]
    assert path.is_file() and path.stat().st_size > 1000
    width, height = png_size(path)
    fw, fh = result["figsize"]
    assert abs(width - fw * result["dpi"]) <= 1 and abs(height - fh * result["dpi"]) <= 1
    assert 100 <= result["dpi"] <= 150
    assert fw <= 16.0 and fh <= 16.0
    assert not [p for p in path.parent.iterdir() if ".tmp" in p.name]  # atomic writes left nothing


# --------------------------------------------------------------------------- synthetic records


def test_synthetic_run_is_complete_and_consistent(runs):
    rec = RunRecords(runs["wan22"])
    assert is_complete(rec.path)
    meta = rec.meta
    assert meta["family"] == "wan2.2" and meta["settings"]["steps"] == STEPS
    assert meta["settings"]["switch_boundary"] is not None
    assert set(meta["sample"]) == {"split", "task", "sample"} and meta["fps"] == 16
    assert rec.layers == list(LAYERS) and rec.captured_steps == list(range(STEPS))
    experts = rec.schedule["expert"].tolist()
    assert experts == ["high_noise"] * SWITCH + ["low_noise"] * (STEPS - SWITCH)
    table = rec.activations.set_index(["layer", "step"])
    for layer in LAYERS:
        for step in range(STEPS):
            maps = rec.maps(layer, step)
            norm = maps["norm"].astype(np.float64)
            row = table.loc[(layer, step)]
            assert row["mean_norm"] == pytest.approx(norm.mean(), rel=1e-6)
            assert row["std_norm"] == pytest.approx(norm.std(), rel=1e-5)
            assert row["max_norm"] == pytest.approx(norm.max(), rel=1e-6)
            assert row["expert"] == experts[step]
            np.testing.assert_allclose(maps["frame_energy"], norm.mean(axis=(1, 2)), rtol=1e-5)
            np.testing.assert_allclose(
                maps["pca_explained"], row[["pca_ev1", "pca_ev2", "pca_ev3"]].to_numpy(float)
            )
            var = maps["channel_var"]
            top = maps["topk_channels"]
            np.testing.assert_array_equal(top, np.argsort(-var, kind="stable")[: top.size])
            # a channel's variance over the tokens equals the variance of its map
            np.testing.assert_allclose(
                maps["topk_maps"].reshape(top.size, -1).var(axis=1), var[top], rtol=1e-4
            )
            # PCA projections are centred and their variance ratios follow pca_explained
            pca = maps["pca"].reshape(-1, 3).astype(np.float64)
            np.testing.assert_allclose(pca.mean(axis=0), 0.0, atol=1e-4)
            ratio = pca.var(axis=0) / var.sum()
            np.testing.assert_allclose(ratio, maps["pca_explained"], rtol=1e-3, atol=1e-6)
    assert rec.x0_hat(0).shape == (4, 3, 8, 8)
    assert rec.frames().shape == (9, 32, 32, 3)
    assert RunRecords(runs["wan21"]).recorded_steps == [0, 7]
    assert set(RunRecords(runs["wan21"]).schedule["expert"]) == {"dit"}
    rec.close()


# --------------------------------------------------------------------------- per-run figures


def test_norm_heatmaps_match_records_and_share_scale(runs, tmp_path):
    rec = RunRecords(runs["wan22"])
    steps = [0, 3, 7]
    result = R.plot_norm_heatmaps(rec, tmp_path / "nh.png", layer=2, steps=steps)
    check_png(result)
    for i, step in enumerate(steps):
        np.testing.assert_array_equal(result["norm"][i], rec.map(2, step, "norm"))
    lo, hi = H.norm_clim(rec, 2, steps)
    assert (result["vmin"], result["vmax"]) == (lo, hi)
    assert result["clims"] and all(c == pytest.approx((lo, hi)) for c in result["clims"])


def test_frames_subsampled_to_eight(runs, tmp_path):
    rec = RunRecords(runs["long"])
    result = R.plot_norm_heatmaps(rec, tmp_path / "nh.png", layer=5, steps=[0, 3])
    check_png(result)
    frames = list(result["frames"])
    assert len(frames) == 8 and frames[0] == 0 and frames[-1] == 11
    np.testing.assert_array_equal(result["norm"][1], rec.map(5, 3, "norm")[frames])
    grid = R.plot_layer_frame_grid(rec, tmp_path / "grid.png", step=3)
    assert grid["norm"].shape == (1, 8, 3, 5)
    pca = R.plot_pca_rgb(rec, tmp_path / "pca.png", layer=5, steps=3)
    assert pca["rgb"].shape == (1, 8, 3, 5, 3)


def test_pca_rgb_is_min_max_of_recorded_pca(runs, tmp_path):
    rec = RunRecords(runs["wan22"])
    result = R.plot_pca_rgb(rec, tmp_path / "pca.png", layer=0, steps=[1, 6])
    check_png(result)
    for i, step in enumerate([1, 6]):
        pca = rec.map(0, step, "pca").astype(np.float64)
        expected = (pca - pca.min(axis=(0, 1, 2))) / (pca.max(axis=(0, 1, 2)) - pca.min(axis=(0, 1, 2)))
        np.testing.assert_allclose(result["rgb"][i], expected, atol=1e-6)
        np.testing.assert_array_equal(result["explained"][i], rec.map(0, step, "pca_explained"))


def test_temporal_energy_and_channel_importance(runs, tmp_path):
    rec = RunRecords(runs["wan22"])
    energy = R.plot_temporal_energy(rec, tmp_path / "te.png", layer=0, steps=[0, 7])
    check_png(energy)
    np.testing.assert_allclose(energy["energy"][1], rec.map(0, 7, "frame_energy"))
    np.testing.assert_allclose(energy["energy"][1], rec.map(0, 7, "norm").mean(axis=(1, 2)), rtol=1e-5)

    bars = R.plot_channel_importance(rec, tmp_path / "ci.png", layer=2, steps=[2, 5])
    check_png(bars)
    var = rec.map(2, 5, "channel_var")
    top = min(H.TOP_CHANNELS, var.size)
    np.testing.assert_allclose(bars["variances"][1], np.sort(var)[::-1][:top])
    np.testing.assert_allclose(var[bars["channels"][1]], bars["variances"][1])


def test_topk_channel_maps_are_the_recorded_ones(runs, tmp_path):
    rec = RunRecords(runs["wan22"])
    result = R.plot_topk_channel_maps(rec, tmp_path / "tk.png", layer=2, step=5)
    check_png(result)
    np.testing.assert_array_equal(result["channels"], rec.map(2, 5, "topk_channels"))
    np.testing.assert_allclose(result["maps"], rec.map(2, 5, "topk_maps"))
    assert all(c == (-1.0, 1.0) for c in result["clims"])


def test_layer_figures_match_table(runs, tmp_path):
    rec = RunRecords(runs["wan22"])
    table = rec.activations.set_index(["step", "layer"])["mean_norm"]
    result = R.plot_layer_mean_norm(rec, tmp_path / "lmn.png", steps=[0, 7])
    check_png(result)
    assert result["layers"] == list(LAYERS)
    for i, step in enumerate([0, 7]):
        for j, layer in enumerate(LAYERS):
            assert result["mean_norm"][i, j] == pytest.approx(table[(step, layer)])
            assert result["mean_norm"][i, j] == pytest.approx(rec.map(layer, step, "norm").mean(), rel=1e-6)


def test_layer_frame_grid_shares_each_layers_scale_across_steps(runs, tmp_path):
    rec = RunRecords(runs["wan22"])
    steps = [0, 7]
    clims = {layer: H.norm_clim(rec, layer, steps) for layer in LAYERS}
    results = [R.plot_layer_frame_grid(rec, tmp_path / f"grid{s}.png", step=s, clims=clims) for s in steps]
    for result, step in zip(results, steps, strict=True):
        check_png(result)
        for i, layer in enumerate(LAYERS):
            np.testing.assert_array_equal(result["norm"][i], rec.map(layer, step, "norm"))
    assert results[0]["row_clims"] == results[1]["row_clims"] == [clims[layer] for layer in LAYERS]
    assert results[0]["clims"] == results[1]["clims"]
    # without given limits, each layer uses its own range at that step
    own = R.plot_layer_frame_grid(rec, tmp_path / "own.png", step=0)
    norm0 = rec.map(0, 0, "norm")
    assert own["row_clims"][0] == (float(norm0.min()), float(norm0.max()))


def test_across_step_figures_and_expert_switch(runs, tmp_path):
    for name, switch in (("wan22", SWITCH), ("wan21", None)):
        rec = RunRecords(runs[name])
        curve = R.plot_norm_vs_step(rec, tmp_path / f"{name}_nvs.png")
        check_png(curve)
        for layer in LAYERS:
            steps, values = curve["curves"][layer]
            rows = rec.activations.query("layer == @layer").sort_values("step")
            np.testing.assert_array_equal(steps, rows["step"].to_numpy())
            np.testing.assert_allclose(values, rows["mean_norm"].to_numpy())
        heat = R.plot_step_frame_energy(rec, tmp_path / f"{name}_sfe.png", layer=2)
        check_png(heat)
        expected = np.stack([rec.map(2, s, "frame_energy") for s in range(STEPS)])
        np.testing.assert_allclose(heat["energy"], expected)
        assert curve["switch_step"] == heat["switch_step"] == switch
        marked = 1 if switch is not None else 0
        assert curve["switch_marks"] == marked and heat["switch_marks"] == marked
        # per-step figures carry no switch marker
        assert R.plot_temporal_energy(rec, tmp_path / f"{name}_te.png", layer=0)["switch_marks"] == 0


def test_render_run_figures_writes_stable_names(runs, tmp_path):
    paths = F.render_run_figures(runs["wan22"], tmp_path / "out")
    names = {p.name for p in paths}
    steps = H.default_steps(RunRecords(runs["wan22"]))
    assert steps == [0, SWITCH, STEPS - 1]
    expected = {"norm_vs_step.png", "layer_mean_norm.png"}
    expected |= {f"layer_frame_grid_S{s:04d}.png" for s in steps}
    for layer in LAYERS:
        tag = f"L{layer:02d}"
        expected |= {
            f"{kind}_{tag}.png"
            for kind in (
                "step_frame_energy",
                "norm_heatmap",
                "pca_rgb",
                "temporal_energy",
                "channel_importance",
            )
        }
        expected |= {f"topk_maps_{tag}_S{s:04d}.png" for s in steps}  # every drawn step
    assert names == expected
    assert all(p.stat().st_size > 1000 for p in paths)
    assert {p.name for p in (tmp_path / "out").iterdir()} == expected
    with pytest.raises(ValueError, match="not captured"):
        F.render_run_figures(runs["wan22"], tmp_path / "bad", steps=[99])
    paths = F.render_run_figures(runs["wan21"], tmp_path / "one", layers=[2], steps=[3], topk_steps=[1, 5])
    assert len(paths) == 10 and {"topk_maps_L02_S0001.png", "topk_maps_L02_S0005.png"} <= {
        p.name for p in paths
    }


# --------------------------------------------------------------------------- across runs


def test_foreground_mask_from_first_frame(runs):
    mask = M.foreground_mask(runs["first_frame"], 4, 4)
    np.testing.assert_array_equal(mask, object_mask(1, 4, 4)[0])
    # area average on a grid that does not divide the image: 10x10 image, 3x3 grid
    image = np.full((10, 10, 3), 255, dtype=np.uint8)
    image[0:4, 0:4] = (0, 0, 0)  # covers cell (0, 0) fully (cells are 3.33 px) and 0.2 of (0, 1)
    image[9, 9] = (10, 20, 30)  # a stray pixel: 1/11 of cell (2, 2)
    mask = M.foreground_mask(image, 3, 3)
    expected = np.zeros((3, 3), dtype=bool)
    expected[0, 0] = True
    np.testing.assert_array_equal(mask, expected)
    # the background is the most common colour, whatever it is
    assert M.foreground_mask(255 - image, 3, 3).tolist() == expected.tolist()


def test_group_figures(runs, tmp_path):
    group = runs["group"]
    tables = [RunRecords(p).activations for p in group]
    curve = G.plot_group_norm_vs_step(group, tmp_path / "g_nvs.png")
    check_png(curve)
    stack = np.stack(
        [[t.query("layer == @layer").sort_values("step")["mean_norm"] for layer in LAYERS] for t in tables]
    )
    np.testing.assert_allclose(curve["mean"], stack.mean(axis=0))
    np.testing.assert_allclose(curve["std"], stack.std(axis=0))
    assert curve["switch_steps"] == [3, 3, 3] and curve["switch_marks"] == len(LAYERS)

    matrix = G.plot_group_energy_matrix(group, tmp_path / "g_mat.png")
    check_png(matrix)
    np.testing.assert_allclose(matrix["matrix"], stack.mean(axis=0))
    assert matrix["switch_marks"] == 1

    fgbg = G.plot_group_fg_bg(group, tmp_path / "g_fgbg.png", runs["first_frame"])
    check_png(fgbg)
    obj = object_mask(3, 4, 4)[0]
    fg = np.zeros((len(LAYERS), 6))
    bg = np.zeros_like(fg)
    for run in group:
        rec = RunRecords(run)
        for i, layer in enumerate(LAYERS):
            for step in range(6):
                norm = rec.map(layer, step, "norm").astype(np.float64)
                fg[i, step] += norm[:, obj].mean() / len(group)
                bg[i, step] += norm[:, ~obj].mean() / len(group)
    np.testing.assert_allclose(fgbg["fg"], fg, rtol=1e-6)
    np.testing.assert_allclose(fgbg["bg"], bg, rtol=1e-6)
    np.testing.assert_allclose(fgbg["diff"], fg - bg, rtol=1e-6)
    assert fgbg["mask_fraction"] == [0.25] * 3
    assert fgbg["clims"][0] == fgbg["clims"][1]  # foreground and background share a colour scale

    # a group without expert switch is not marked
    plain = G.plot_group_norm_vs_step([runs["wan21"]], tmp_path / "plain.png")
    assert plain["switch_marks"] == 0 and plain["switch_steps"] == [None]


def test_render_group_figures(runs, tmp_path):
    paths = F.render_group_figures(runs["group"], tmp_path / "g", first_frame=runs["first_frame"])
    assert [p.name for p in paths] == [
        "group_norm_vs_step.png",
        "group_energy_matrix.png",
        "group_fg_bg_energy.png",
    ]
    # no first frame (and none in meta): no foreground figure
    paths = F.render_group_figures(runs["group"], tmp_path / "h")
    assert [p.name for p in paths] == ["group_norm_vs_step.png", "group_energy_matrix.png"]
    # a uniform image gives no usable mask
    blank = tmp_path / "blank.png"
    import imageio.v2 as imageio

    imageio.imwrite(blank, np.zeros((16, 16, 3), dtype=np.uint8))
    assert G.plot_group_fg_bg(runs["group"], tmp_path / "none.png", blank) is None
    assert not (tmp_path / "none.png").exists()


def test_figures_steps_all_draws_every_step_and_max_frames_none_all_frames(runs, tmp_path):
    from stepscope.jobs.batches import figure_steps

    rec = RunRecords(runs["wan22"])
    assert figure_steps("all", rec) == list(range(STEPS))  # not the 3-step default choice
    assert figure_steps("every:3", rec) == [0, 3, 6]
    assert figure_steps("first,last", rec) == [0, STEPS - 1]
    paths = F.render_run_figures(
        runs["long"], tmp_path / "all", steps=figure_steps("all", RunRecords(runs["long"])), max_frames=None
    )
    names = {p.name for p in paths}
    assert {f"topk_maps_L05_S{s:04d}.png" for s in range(4)} <= names  # top-k maps at every drawn step
    assert list(
        R.plot_norm_heatmaps(runs["long"], tmp_path / "n.png", layer=5, max_frames=None)["frames"]
    ) == list(range(12))
    assert len(R.plot_norm_heatmaps(runs["long"], tmp_path / "m.png", layer=5)["frames"]) == 8
