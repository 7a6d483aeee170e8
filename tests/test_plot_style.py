"""One look for every figure: the expert-switch marker, the figure lists, torch-free plotting."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import stepscope.analysis
import stepscope.plots
from stepscope.plots import curves, figures, group_figures, run_figures, style
from stepscope.records import RunRecords, expert_switch_step
from stepscope.testing.synthetic import write_synthetic_run

SWITCH = 4


@pytest.fixture(scope="module")
def wan22_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("style")
    return [
        write_synthetic_run(root / f"r{i}", layers=(0, 2), steps=8, expert_switch=SWITCH, seed=i, sample=f"{i:05d}")
        for i in range(2)
    ]


def _capture(monkeypatch, module) -> list:
    """Keep the figures `module` saves (they are still written)."""
    kept = []
    real = module.save

    def keep(fig, path, result=None, **kwargs):
        kept.append(fig)
        return real(fig, path, result, **kwargs)

    monkeypatch.setattr(module, "save", keep)
    return kept


def _switch_lines(fig) -> list:
    return [line for ax in fig.axes for line in ax.lines if line.get_gid() == style.SWITCH_GID]


def test_switch_is_drawn_one_way_in_every_figure_kind(wan22_runs, tmp_path, monkeypatch):
    """Run, group and score-curve figures put the switch between steps s-1 and s, same label and style."""
    switch = expert_switch_step(RunRecords(wan22_runs[0]).schedule)
    assert switch == SWITCH
    kept = {module: _capture(monkeypatch, module) for module in (run_figures, group_figures, curves)}
    run_figures.plot_norm_vs_step(wan22_runs[0], tmp_path / "a.png")
    run_figures.plot_step_frame_energy(wan22_runs[0], tmp_path / "b.png", layer=0)
    group_figures.plot_group_energy_matrix(wan22_runs, tmp_path / "c.png")
    group_figures.plot_group_norm_vs_step(wan22_runs, tmp_path / "d.png")
    scores = pd.DataFrame(
        [{"variant": "v", "split": "s", "task": "t", "sample": "0", "seed": "1", "step": step, "scorer": "x",
          "metric": "total", "value": step / 8} for step in [-1, *range(8)]]
    )  # fmt: skip
    curves.plot_step_curves(scores, tmp_path / "e.png", switch_step=switch)
    curves.plot_split_curves(scores, tmp_path / "f.png", switch_step=switch)
    divergence = pd.DataFrame({"step": range(8), "latent_divergence": np.linspace(1, 0, 8)})
    curves.plot_divergence(divergence, tmp_path / "g.png", switch_step=switch, group_col=None)
    figs = [fig for module_figs in kept.values() for fig in module_figs]
    assert len(figs) == 7
    for fig in figs:
        lines = _switch_lines(fig)
        assert lines, fig
        for line in lines:
            assert list(line.get_xdata()) == [switch - 0.5, switch - 0.5]
            assert line.get_label().startswith(style.switch_label(switch))
            assert line.get_linestyle() == "--" and line.get_linewidth() == style.SWITCH_STYLE["linewidth"]
            assert line.get_color() in (style.DARK, style.LIGHT)


def test_switch_colour_contrasts_with_what_is_behind_it():
    assert style.switch_color() == style.DARK  # plain axes
    assert style.switch_color("viridis") == style.switch_color("magma") == style.LIGHT
    assert style.switch_color("RdBu_r") == style.switch_color("Greys") == style.DARK
    assert style.switch_label(4, runs=(2, 3)) == "expert switch (high→low noise) before step 4 (2/3 runs)"


def test_a_figure_is_one_function_and_one_registration(wan22_runs, tmp_path):
    """`draw` formats file names with the loop values, passes the context, skips None and `when`."""
    calls = []

    def plot_probe(rec, path, *, layer, pass_):
        calls.append((layer, pass_))
        return None if layer == 2 else {"path": Path(path)}

    extra = [
        figures.Figure("probe_L{layer:02d}.png", plot_probe, each=("layer=layers",), needs=("pass_",)),
        figures.Figure("never.png", plot_probe, needs=("pass_",), when="spatial"),
    ]
    rec = RunRecords(wan22_runs[0])
    paths = figures.draw(extra, rec, tmp_path, {"layers": [0, 2], "pass_": "cond", "spatial": []})
    assert calls == [(0, "cond"), (2, "cond")]
    assert paths == [tmp_path / "probe_L00.png"]


def test_run_figure_list_names_every_file(wan22_runs, tmp_path):
    """Every registered run figure is drawn, once per loop value, under its file pattern."""
    paths = figures.render_run_figures(wan22_runs[0], tmp_path, layers=[0], steps=[0, 7], topk_steps=[7])
    names = sorted(path.name for path in paths)
    for figure in figures.RUN_FIGURES:
        assert any(name.startswith(figure.file.split("{")[0]) for name in names), figure.file
    assert "layer_frame_grid_S0007.png" in names and "topk_maps_L00_S0007.png" in names
    assert len(names) == len(set(names)) == 2 + 2 + 5 + 1  # run-wide, per step, per layer, top-k
    assert sorted(p.name for p in tmp_path.iterdir()) == names


def test_plotting_and_analysis_never_import_torch():
    """CPU jobs: every module of stepscope.plots and stepscope.analysis imports without torch."""
    names = [
        f"{package.__name__}.{info.name}"
        for package in (stepscope.plots, stepscope.analysis)
        for info in pkgutil.iter_modules(package.__path__)
    ]
    assert "stepscope.plots.style" in names and "stepscope.analysis.scoring" in names
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffsynth', 'cv2'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
