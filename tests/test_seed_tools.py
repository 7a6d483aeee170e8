"""The seed's four tools as drop-in commands: flags, file trees, quantities, reruns.

The seed is OpenSenseNova/Demystifying_Video_Reasoning at commit a20a3a7; the flag tables and the
file trees below were read from its tools/*.py (argparse calls, save paths) and are data here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stepscope.cli import build_parser, main
from stepscope.plots import seed_figures as SF
from stepscope.records import RunRecords

# flag -> (type, default, required, nargs, action, choices), per seed tool, as its argparse declares it.
_COMMON = {
    "--model": (str, None, True, None, "store", ("wan2.2", "wan2.1", "ltx2.3")),
    "--lora_path": (str, None, False, None, "store", None),
    "--high_noise_lora_path": (str, None, False, None, "store", None),
    "--low_noise_lora_path": (str, None, False, None, "store", None),
    "--lora_alpha": (float, 1.0, False, None, "store", None),
    "--num_inference_steps": (int, 50, False, None, "store", None),
    "--seed": (int, 1, False, None, "store", None),
    "--fps": (int, 16, False, None, "store", None),
    "--negative_prompt": (str, None, False, None, "store", None),
}
_BENCH = {
    "--eval_root": (str, "./data/VBVR-Bench", False, None, "store", None),
    "--output_root": (str, None, True, None, "store", None),
    "--max_samples": (int, None, False, None, "store", None),
}
_CUSTOM = {
    "--image": (str, None, True, None, "store", None),
    "--prompt": (str, None, True, None, "store", None),
    "--output_dir": (str, None, True, None, "store", None),
    "--num_frames": (int, 81, False, None, "store", None),
}
_STEP = {
    "--vis_steps": (str, "all", False, None, "store", None),
    "--save_noise_schedule": (None, False, False, 0, "store_true", None),
}
_TOKEN = {
    "--layers": (int, [0, 10, 20, 30, 39], False, "+", "store", None),
    "--viz_steps": (str, "all", False, None, "store", None),
    "--save_step_videos": (None, False, False, 0, "store_true", None),
}
SEED_FLAGS = {
    "step-visualization": {**_COMMON, **_BENCH, **_STEP},
    "token-visualization": {**_COMMON, **_BENCH, **_TOKEN},
    "custom-step-visualization": {**_COMMON, **_CUSTOM, **_STEP},
    "custom-token-visualization": {**_COMMON, **_CUSTOM, **_TOKEN},
}
OURS = {"--weights", "--text_encoder", "--device", "--dtype", "--offload"}


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices[command]


def _declared(action: argparse.Action):
    kind = "store_true" if isinstance(action, argparse._StoreTrueAction) else "store"
    choices = tuple(action.choices) if action.choices else None
    return (action.type, action.default, action.required, action.nargs, kind, choices)


@pytest.mark.parametrize("command", sorted(SEED_FLAGS))
def test_every_seed_flag_is_accepted_with_its_meaning(command):
    actions = {
        a.option_strings[0]: a for a in _subparser(command)._actions if a.option_strings and a.dest != "help"
    }
    missing = sorted(set(SEED_FLAGS[command]) - set(actions))
    assert not missing, f"seed flags without an equivalent: {missing}"
    for flag, declared in SEED_FLAGS[command].items():
        assert _declared(actions[flag]) == declared, flag
    assert set(actions) - set(SEED_FLAGS[command]) == OURS


def test_help_shows_the_mapping_from_seed_commands():
    text = build_parser().format_help()
    for command in SEED_FLAGS:
        script = command.replace("-", "_")
        assert f"tools/{script}.py" in text and f"stepscope {command}" in text


# --------------------------------------------------------------------------- end to end


def _bench(root: Path) -> Path:
    from stepscope.bench import generate_demo_bench

    return generate_demo_bench(
        root, splits=("In-Domain_50",), tasks_per_split=1, samples_per_task=1, num_frames=9
    )


def _tree(root: Path) -> set[str]:
    """Every file and folder under root, except stepscope's own records folders."""
    return {
        str(p.relative_to(root)) for p in root.rglob("*") if ".stepscope" not in p.relative_to(root).parts
    }


def _with_parents(files: set[str]) -> set[str]:
    out = set(files)
    for name in files:
        parts = Path(name).parts
        out |= {str(Path(*parts[:i])) for i in range(1, len(parts))}
    return out


def _token_files(layers, steps) -> set[str]:
    files = {"feature_maps/summary/norm_evolution.png"}
    files |= {f"feature_maps/summary/temporal_heatmap_L{layer:02d}.png" for layer in layers}
    for step in steps:
        folder = f"feature_maps/step_{step:04d}"
        files |= {f"{folder}/norm_across_layers.png", f"{folder}/layer_grid.png"}
        for layer in layers:
            for kind in ("norm", "pca", "temporal", "ch_imp", "top_ch"):
                files.add(f"{folder}/L{layer:02d}_{kind}.png")
    return files


def _lora_flags(family: str, tiny_pipe, folder: Path) -> list[str]:
    from stepscope.models.loading import make_tiny_lora
    from stepscope.models.registry import get_family

    pipe, match = tiny_pipe(family), get_family(family).tiny_lora_match
    if family == "wan2.2":
        high = make_tiny_lora(pipe.dit, folder / "high.safetensors", match=match, seed=1)
        low = make_tiny_lora(pipe.dit2, folder / "low.safetensors", match=match, seed=2)
        return ["--high_noise_lora_path", str(high), "--low_noise_lora_path", str(low), "--lora_alpha", "0.8"]
    lora = make_tiny_lora(pipe.dit, folder / "lora.safetensors", match=match, seed=1)
    return ["--lora_path", str(lora), "--lora_alpha", "0.8"]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().out


@pytest.mark.parametrize("family", ["wan2.2", "wan2.1", "ltx2.3"])
def test_drop_in_commands_write_the_seed_tree_and_rerun_without_sampling(
    family, tiny_weights, tiny_pipe, test_image, tmp_path, capsys
):
    bench = _bench(tmp_path / "bench")
    (task,) = [p.name for p in (bench / "In-Domain_50").iterdir()]
    common = ["--model", family, "--weights", str(tiny_weights(family)), "--device", "cpu"]
    common += ["--num_inference_steps", "2", "--seed", "3", "--fps", "8", "--negative_prompt", "blurry"]
    common += _lora_flags(family, tiny_pipe, tmp_path)
    custom = ["--image", str(test_image), "--prompt", "a red square moves right", "--num_frames", "9"]
    bench_flags = ["--eval_root", str(bench), "--max_samples", "1"]
    runs = {
        "step-visualization": (
            bench_flags
            + ["--output_root", str(tmp_path / "step"), "--vis_steps", "1", "--save_noise_schedule"],
            tmp_path / "step",
            {f"In-Domain_50/{task}/00000.mp4", f"In-Domain_50/{task}/00000_steps/step_001.mp4"}
            | ({f"In-Domain_50/{task}/00000_noise_schedule.json"} if family != "ltx2.3" else set()),
        ),
        "token-visualization": (
            bench_flags
            + ["--output_root", str(tmp_path / "token"), "--layers", "0", "1", "39", "--viz_steps", "1"],
            tmp_path / "token",
            {f"In-Domain_50/{task}/00000/generated.mp4"}
            | {f"In-Domain_50/{task}/00000/{name}" for name in _token_files([0, 1], [1])},
        ),
        "custom-step-visualization": (
            custom + ["--output_dir", str(tmp_path / "cstep"), "--vis_steps", "0-0", "--save_noise_schedule"],
            tmp_path / "cstep",
            {"generated.mp4", "steps/step_000.mp4"}
            | ({"noise_schedule.json"} if family != "ltx2.3" else set()),
        ),
        "custom-token-visualization": (
            custom + ["--output_dir", str(tmp_path / "ctoken"), "--layers", "1", "--save_step_videos"],
            tmp_path / "ctoken",
            {"generated.mp4", "step_videos/step_0000.mp4", "step_videos/step_0001.mp4"}
            | _token_files([1], [0, 1]),
        ),
    }
    for command, (flags, out, expected) in runs.items():
        code, log = _run([command, *common, *flags], capsys)
        assert code == 0, log
        assert _tree(out) == _with_parents(expected), command
        assert "step 2/2" in log and "model loaded" in log
        records_dirs = [p.parent for p in out.rglob(".stepscope/**/meta.json")]
        assert len(records_dirs) == 1
        meta = json.loads((records_dirs[0] / "meta.json").read_text())
        assert meta["settings"]["negative_prompt"] == "blurry" and meta["seed"] == 3
        assert [lora["alpha"] for lora in meta["loras"]] == [0.8] * (2 if family == "wan2.2" else 1)
        before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
        code, log = _run([command, *common, *flags], capsys)  # the same command again: nothing to do
        assert code == 0 and "up to date, skipped" in log
        assert "model loaded" not in log and "step 1/2" not in log
        assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    schedule = tmp_path / "cstep" / "noise_schedule.json"
    if schedule.exists():
        rows = json.loads(schedule.read_text())
        run = RunRecords(next((tmp_path / "cstep").rglob("meta.json")).parent)
        assert [r["step"] for r in rows] == [0, 1]
        assert [r["sigma"] for r in rows] == [round(float(s), 6) for s in run.schedule["sigma"]]


def test_one_bad_sample_fails_alone_with_a_nonzero_exit(tiny_weights, tmp_path, capsys):
    from stepscope.bench import generate_demo_bench

    bench = generate_demo_bench(
        tmp_path / "bench", splits=("In-Domain_50",), tasks_per_split=1, samples_per_task=2, num_frames=9
    )
    (task,) = list((bench / "In-Domain_50").iterdir())
    (task / "00000" / "prompt.txt").write_text("")  # a broken sample
    argv = [
        "step-visualization",
        "--model",
        "wan2.1",
        "--weights",
        str(tiny_weights("wan2.1")),
        "--device",
        "cpu",
    ]
    argv += ["--eval_root", str(bench), "--output_root", str(tmp_path / "out"), "--num_inference_steps", "1"]
    code, log = _run(argv, capsys)
    assert code == 1 and "1 of 2 inputs failed" in log and "00000" in log.split("inputs failed:")[1]
    assert (tmp_path / "out" / "In-Domain_50" / task.name / "00001.mp4").is_file()
    assert not (tmp_path / "out" / "In-Domain_50" / task.name / "00000.mp4").exists()


def test_seed_weight_folders_are_found_as_the_seed_finds_them(monkeypatch, tmp_path):
    from stepscope.seed_tools import model_folders

    parser = _subparser("custom-step-visualization")
    base = ["--image", "x.png", "--prompt", "p", "--output_dir", "o"]
    monkeypatch.delenv("DIFFSYNTH_MODEL_BASE_PATH", raising=False)
    args = parser.parse_args(["--model", "wan2.2", *base])
    assert model_folders(args) == ("models/Wan-AI/Wan2.2-I2V-A14B", None)
    args = parser.parse_args(["--model", "ltx2.3", *base])
    assert model_folders(args) == (
        "models/DiffSynth-Studio/LTX-2.3-Repackage",
        {"text_encoder": "models/google/gemma-3-12b-it-qat-q4_0-unquantized"},
    )
    monkeypatch.setenv("DIFFSYNTH_MODEL_BASE_PATH", str(tmp_path))
    args = parser.parse_args(["--model", "wan2.1", *base])
    assert model_folders(args) == (str(tmp_path / "Wan-AI/Wan2.1-I2V-14B-720P"), None)
    args = parser.parse_args(["--model", "ltx2.3", *base, "--weights", "w", "--text_encoder", "g"])
    assert model_folders(args) == ("w", {"text_encoder": "g"})


# --------------------------------------------------------------------------- the seed's quantities


def test_seed_quantities_equal_numpy_on_a_manual_block_forward(tiny_pipe, test_image, tmp_path):
    from stepscope.sampling.capture import CaptureSpec
    from stepscope.sampling.loop import RecordSpec, sample

    pipe = tiny_pipe("wan2.1")
    layer, step = 1, 2
    block = pipe.dit.blocks[layer]
    seen = []
    handle = block.register_forward_pre_hook(
        lambda module, args: seen.append(tuple(a.clone() if torch.is_tensor(a) else a for a in args))
    )
    try:
        sample(
            pipe, "wan2.1", image=test_image, prompt="a red square moves right", negative_prompt="blurry", seed=1,
            num_frames=9, height=64, width=64, num_inference_steps=4, out_dir=tmp_path / "run",
            record=RecordSpec(capture=CaptureSpec(layers=(layer,), steps=frozenset({step}))),
        )  # fmt: skip
    finally:
        handle.remove()
    with torch.no_grad():
        tokens = block(*seen[2 * step])[0].double().numpy()  # cond pass of that step (cond, uncond per step)
    f, h, w = 3, 4, 4
    n, d = tokens.shape
    rec = RunRecords(tmp_path / "run")
    token_norm = np.linalg.norm(tokens, axis=1)
    drawn = SF.plot_seed_norm(rec, tmp_path / "n.png", layer=layer, step=step)
    np.testing.assert_allclose(drawn["norm"], token_norm.reshape(f, h, w), rtol=1e-3)
    # temporal energy: the L2 (Frobenius) norm of each frame's token matrix
    frame_l2 = np.array([np.linalg.norm(tokens.reshape(f, h * w, d)[i]) for i in range(f)])
    np.testing.assert_allclose(
        SF.plot_seed_temporal(rec, tmp_path / "t.png", layer=layer, step=step)["energy"], frame_l2, rtol=1e-5
    )
    np.testing.assert_allclose(rec.temporal_energy()["frame_l2"], frame_l2, rtol=1e-5)
    # channel importance: unbiased variance (torch's var default), top 20
    var = tokens.var(axis=0, ddof=1)
    drawn = SF.plot_seed_channel_importance(rec, tmp_path / "c.png", layer=layer, step=step)
    np.testing.assert_array_equal(drawn["channels"], np.argsort(-var, kind="stable")[:20])
    np.testing.assert_allclose(drawn["variances"], np.sort(var)[::-1][:20], rtol=1e-5)
    drawn = SF.plot_seed_top_channels(rec, tmp_path / "k.png", layer=layer, step=step)
    top = np.argsort(-var, kind="stable")[:6]
    np.testing.assert_array_equal(drawn["channels"], top)
    np.testing.assert_allclose(drawn["maps"], tokens[:, top].T.reshape(6, f, h, w), rtol=2e-3, atol=1e-3)
    # PCA: centred, top 3 by SVD, min-max per component (+1e-8), sign: largest loading positive
    centred = tokens - tokens.mean(axis=0)
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    vt = vt[:3] * np.sign(vt[:3][np.arange(3), np.abs(vt[:3]).argmax(axis=1)])[:, None]
    rgb = centred @ vt.T
    rgb = (rgb - rgb.min(axis=0)) / (rgb.max(axis=0) - rgb.min(axis=0) + 1e-8)
    drawn = SF.plot_seed_pca(rec, tmp_path / "p.png", layer=layer, step=step)
    np.testing.assert_allclose(drawn["rgb"], rgb.reshape(f, h, w, 3), atol=5e-3)
    np.testing.assert_allclose(drawn["explained"], (sing[:3] ** 2).sum() / (sing**2).sum(), rtol=1e-4)
    drawn = SF.plot_seed_norm_across_layers(rec, tmp_path / "a.png", layers=[layer], step=step)
    np.testing.assert_allclose(drawn["mean_norm"], [token_norm.mean()], rtol=1e-3)


# --------------------------------------------------------------------------- PCA vs exact SVD


def _tokens_with_spectrum(spectrum: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n tokens in D = len(spectrum) channels whose covariance has eigenvalues ~ spectrum**2, in a
    random basis, plus a channel offset (DiT hidden states are far from centred)."""
    rng = np.random.default_rng(seed)
    d = spectrum.size
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    scores = rng.normal(size=(n, d))
    scores -= scores.mean(axis=0)
    scores, _ = np.linalg.qr(scores)  # orthonormal columns: the sample spectrum is exactly `spectrum`
    return (scores * spectrum * np.sqrt(n)) @ basis.T + rng.normal(size=d) * 3.0


D = 512  # above the dense limit (256): the subspace iteration runs
SPECTRA = {
    # a few massive directions over a power-law floor (what DiT hidden states look like)
    "massive": np.concatenate([[40.0, 25.0, 12.0], 3.0 * np.arange(1, D - 2) ** -0.5]),
    # nearly degenerate top: 1% gaps, slow decay (the iteration converges slowly)
    "near_degenerate": 10.0 * 0.99 ** np.arange(D),
    # an exactly degenerate pair at components 3/4 above a flat tail
    "tied_3_4": np.concatenate([[9.0, 6.0, 4.0, 4.0], np.full(D - 4, 1.0)]),
    # no structure at all
    "flat_noise": 1.0 + 0.001 * np.arange(D)[::-1],
}


def _exact(tokens: np.ndarray):
    centred = tokens - tokens.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred / len(tokens))
    order = np.argsort(values)[::-1]
    return values[order], vectors[:, order], centred


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_subspace_pca_agrees_with_exact_svd_or_falls_back(name):
    from stepscope.sampling.capture import pca_converged, pca_subspace, reduce_tokens

    tokens = _tokens_with_spectrum(SPECTRA[name], n=1024, seed=5)
    values, vectors, centred = _exact(tokens)
    x = torch.from_numpy(tokens.astype(np.float32))
    reduced = reduce_tokens(x, (4, 16, 16))
    total = values.sum()
    np.testing.assert_allclose(reduced["pca_explained"].numpy(), values[:3] / total, rtol=2e-3)
    # each component that is separated from its neighbours (relative gap > 5%) matches the exact one
    ours = reduced["pca"].numpy().reshape(-1, 3).astype(np.float64)
    exact_proj = centred @ vectors[:, :3]
    for i in range(3):
        gaps = [abs(values[i] - values[j]) / values[i] for j in (i - 1, i + 1) if j >= 0]
        if min(gaps) > 0.05:
            cos = (
                abs(ours[:, i] @ exact_proj[:, i])
                / np.linalg.norm(ours[:, i])
                / np.linalg.norm(exact_proj[:, i])
            )
            assert cos > 0.999, (name, i, cos)
    # the variance the three components capture is the exact top-3 variance (any basis of a tie)
    np.testing.assert_allclose((ours**2).sum() / len(ours), values[:3].sum(), rtol=2e-3)
    # where the subspace iteration alone is off, the check notices it and the exact path is used
    iterated = pca_subspace(x, x.mean(dim=0))
    alone = np.sort(np.linalg.eigvalsh(iterated["pca_cov"].double().numpy()))[::-1][:3]
    if np.abs(alone - values[:3]).max() / values[0] > 1e-3:
        assert not pca_converged(iterated) and bool(reduced["pca_exact"]), name


def test_subspace_pca_is_used_on_well_separated_spectra_and_exact_on_flat_ones():
    from stepscope.sampling.capture import reduce_tokens

    exact_used = {}
    for name, spectrum in SPECTRA.items():
        x = torch.from_numpy(_tokens_with_spectrum(spectrum, n=1024, seed=5).astype(np.float32))
        exact_used[name] = bool(reduce_tokens(x, (4, 16, 16))["pca_exact"])
    assert exact_used == {"massive": False, "tied_3_4": False, "near_degenerate": True, "flat_noise": True}


def test_capture_keeps_no_tokens_when_channels_are_few():
    from stepscope.sampling.capture import reduce_on_device

    small = reduce_on_device(torch.randn(48, 64), (3, 4, 4))
    assert "pca_tokens" not in small and "pca_ritz" not in small  # dense PCA: exact, nothing kept
    wide = reduce_on_device(torch.randn(48, 300), (3, 4, 4))
    assert wide["pca_tokens"].shape == (48, 300)


def test_exact_pca_fallback_only_at_steps_whose_pca_maps_are_stored():
    """At real width the exact eigendecomposition costs ~0.2 s per block: the capture keeps the tokens
    for it only at record.map_steps; elsewhere a flat spectrum keeps the iteration's values, flagged."""
    from stepscope.sampling.capture import CaptureSpec, Recorder
    from stepscope.sampling.context import StepContext

    grid = (4, 16, 16)
    tokens = torch.from_numpy(_tokens_with_spectrum(SPECTRA["flat_noise"], n=1024, seed=5).astype(np.float32))
    context = StepContext(pass_="cond", expert="dit", grid=grid)
    recorder = Recorder(CaptureSpec(layers=(0,), map_steps=frozenset({1})), context)
    hook = recorder._block_hook(0, "dit")
    kept_copy = {}
    for step in (0, 1):
        context.step = step
        hook(None, (), tokens[None])
        kept_copy[step] = "pca_tokens" in recorder.pending[0][-1]
        recorder.flush()
    assert kept_copy == {0: False, 1: True}
    rows = {row["step"]: row for row in recorder.rows[0]}
    assert (rows[0]["pca_exact"], rows[0]["pca_converged"]) == (False, False)  # approximate, and flagged
    assert (rows[1]["pca_exact"], rows[1]["pca_converged"]) == (True, False)  # the check failed: exact used
    values = _exact(tokens.numpy().astype(np.float64))[0]
    exact_ratios = values[:3] / values.sum()
    np.testing.assert_allclose([rows[1][f"pca_ev{i}"] for i in (1, 2, 3)], exact_ratios, rtol=2e-3)
    assert "L00.S0000.cond.pca" not in recorder.maps[0] and "L00.S0001.cond.pca" in recorder.maps[0]


def test_each_seed_tool_keeps_its_own_default_negative_prompt():
    from stepscope.models.ltx import LTX_NEGATIVE_PROMPT
    from stepscope.models.wan import WAN_NEGATIVE_PROMPT
    from stepscope.seed_tools import negative_prompt

    def default(command, model):
        parser = _subparser(command)
        required = (
            ["--output_root", "o"]
            if "custom" not in command
            else ["--image", "i", "--prompt", "p", "--output_dir", "o"]
        )
        return negative_prompt(command, parser.parse_args(["--model", model, *required]))

    assert default("step-visualization", "wan2.2") is None  # the family's default: Wan's prompt
    assert default("step-visualization", "ltx2.3") is None  # ... and LTX-2.3's, the step tool's
    assert default("token-visualization", "ltx2.3") == WAN_NEGATIVE_PROMPT  # the seed's token tool
    assert LTX_NEGATIVE_PROMPT.startswith(default("custom-step-visualization", "ltx2.3"))
    assert default("custom-step-visualization", "ltx2.3").endswith("artifacts")
    assert default("custom-token-visualization", "ltx2.3").endswith("poor lighting")
    assert default("custom-token-visualization", "wan2.1") is None


def test_a_changed_prompt_or_flag_redoes_the_custom_input(tiny_weights, test_image, tmp_path, capsys):
    argv = ["custom-step-visualization", "--model", "wan2.1", "--weights", str(tiny_weights("wan2.1"))]
    argv += ["--device", "cpu", "--image", str(test_image), "--output_dir", str(tmp_path / "out")]
    argv += ["--num_frames", "9", "--num_inference_steps", "1", "--vis_steps", "5"]  # past the schedule
    assert _run([*argv, "--prompt", "a red square"], capsys)[0] == 0
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"generated.mp4", ".stepscope"}  # no step video
    assert "up to date, skipped" in _run([*argv, "--prompt", "a red square"], capsys)[1]
    code, log = _run([*argv, "--prompt", "a green square"], capsys)
    assert code == 0 and "step 1/1" in log
    meta = json.loads(next((tmp_path / "out").rglob("meta.json")).read_text())
    assert meta["settings"]["prompt"] == "a green square"
