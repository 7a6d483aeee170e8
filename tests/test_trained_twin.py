"""The trained Wan2.2 twin: training code (smoke), conditioning, shipped weights, validation measures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stepscope.analysis.validation import bootstrap_ci, candidate_mass, commitment, static_first_video
from stepscope.bench import generate_demo_bench, read_sample, sample_dir
from stepscope.demo_tasks import EITHER_TASK
from stepscope.records import read_video

REPO = Path(__file__).resolve().parents[1]
TWIN = REPO / "weights" / "wan2.2-twin"
D1 = "D-1_move_to_target_data-generator"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    return generate_demo_bench(root, splits=["In-Domain_50"], tasks=[D1, EITHER_TASK], samples_per_task=2)


def test_shipped_twin_loads_and_solves_a_held_out_sample(bench):
    """Through the normal loader, loop and decoder with the demo's settings: the final frame
    matches the sample's answer far better than holding the first frame does."""
    from stepscope.analysis.proxy_scorer import score_video
    from stepscope.models.loading import load_pipeline
    from stepscope.sampling.loop import sample

    manifest = json.loads((TWIN / "stepscope_tiny.json").read_text())
    assert manifest["trained"]["dit_step"] > 0
    pipe = load_pipeline("wan2.2", TWIN, device="cpu", dtype="fp32")
    folder = sample_dir(bench, "In-Domain_50", D1, 0)
    info = read_sample(folder)
    result = sample(
        pipe,
        "wan2.2",
        image=info["image"],
        prompt=info["prompt"],
        seed=1,
        num_frames=9,
        height=64,
        width=64,
        num_inference_steps=8,
        cfg_scale=5.0,
    )
    trained = score_video(result.frames, folder)
    static = score_video(static_first_video(read_video(folder / "ground_truth.mp4")[0], 9), folder)
    assert trained["final_frame_match"] > 0.7
    assert trained["final_frame_match"] > static["final_frame_match"] + 0.15
    assert trained["total"] > static["total"] + 0.1


def test_batched_condition_equals_the_pipeline_unit(tiny_pipe):
    from diffsynth.pipelines.wan_video import WanVideoUnit_ImageEmbedderVAE
    from PIL import Image

    from stepscope.training.twin import i2v_condition

    pipe = tiny_pipe("wan2.2")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    unit = WanVideoUnit_ImageEmbedderVAE()
    expected = [
        unit.process(pipe, Image.fromarray(image), None, 9, 64, 64, False, (30, 52), (15, 26))["y"]
        for image in images
    ]
    frames = torch.stack([pipe.preprocess_image(Image.fromarray(image))[0] for image in images])
    with torch.no_grad():
        got = i2v_condition(pipe, frames, 9)
    torch.testing.assert_close(got, torch.cat(expected), rtol=1e-5, atol=1e-5)


def test_expert_ranges_meet_at_the_pipeline_switch():
    from diffsynth.diffusion.flow_match import FlowMatchScheduler

    from stepscope.training.twin import TrainConfig, expert_ranges

    config = TrainConfig()
    scheduler = FlowMatchScheduler("Wan")
    scheduler.set_timesteps(1000, training=True, shift=config.sigma_shift)
    high, low = expert_ranges(config)["high_noise"], expert_ranges(config)["low_noise"]
    assert high[1] == low[0]
    split = int(high[1] * 1000)
    boundary = config.switch_boundary * 1000
    assert scheduler.timesteps[split - 1] >= boundary - 1 and scheduler.timesteps[split] < boundary + 1


def test_smoke_training_resumes_and_exports_a_loadable_twin(tmp_path):
    """CPU smoke mode: a piece stopped by its time limit resumes; the export loads and samples."""
    from stepscope.models.loading import load_pipeline
    from stepscope.training.twin import TrainConfig, export_weights, read_state, train

    config = TrainConfig.smoke()
    config.samples_per_task = 1
    config.dit_steps = 1
    ckpt = tmp_path / "ckpt"
    state, _ = train(config, ckpt, device="cpu", log=lambda _: None)  # piece 1
    assert (state["vae_step"], state["dit_step"]) == (config.vae_steps, 1)
    assert "opt" in torch.load(ckpt / "high_noise.pt")  # experts resume with their Adam moments
    config.dit_steps = 3
    state, _ = train(config, ckpt, device="cpu", log=lambda _: None)  # piece 2 resumes at step 1
    assert [row["step"] for row in state["log"] if row["stage"] == "dit"] == [0, 2]
    assert (state["vae_step"], state["dit_step"]) == (config.vae_steps, config.dit_steps)
    assert read_state(ckpt)["dit_step"] == config.dit_steps
    assert all(np.isfinite(row.get("high_noise", 0.0)) for row in state["log"])
    config.dit_cycles, config.dit_steps = 2, 2  # a warm restart: a second cycle of 2 steps
    state, _ = train(config, ckpt, device="cpu", log=lambda _: None)
    assert state["dit_step"] == 5 and state["plan"]["dit_cycles"] == [[0, 3], [3, 5]]
    assert [row["step"] for row in state["log"] if row["stage"] == "dit"][-2:] == [3, 4]
    out = export_weights(config, ckpt, tmp_path / "twin", "smoke")
    pipe = load_pipeline("wan2.2", out, device="cpu", dtype="fp32")
    saved = torch.load(ckpt / "low_noise.pt")["model"]
    loaded = {k.replace(".module", ""): v for k, v in pipe.dit2.state_dict().items()}["head.head.weight"]
    torch.testing.assert_close(loaded, saved["head.head.weight"], atol=2e-3, rtol=1e-2)  # bf16 files


def test_task_weights_draw_each_task_as_often_as_asked():
    from stepscope.training.twin import TRAIN_TASKS, TrainConfig, draw_batch, task_probabilities

    config = TrainConfig()
    tasks = np.repeat(np.arange(len(TRAIN_TASKS)), [10, 40, 10, 10, 10])  # D-2 has 4x the clips
    assert task_probabilities(config, tasks) is None  # default: uniform draws, the original stream
    config.dit_task_weights = "1,3,1,1,1"
    probabilities = task_probabilities(config, tasks)
    torch.manual_seed(0)
    drawn = tasks[draw_batch(probabilities, len(tasks), 7000, "cpu").numpy()]
    share = np.bincount(drawn, minlength=len(TRAIN_TASKS)) / len(drawn)
    np.testing.assert_allclose(share, [1 / 7, 3 / 7, 1 / 7, 1 / 7, 1 / 7], atol=0.02)  # by task, not by clip
    config.dit_task_weights = "1,3,1"
    with pytest.raises(ValueError, match="5 weights"):
        task_probabilities(config, tasks)


def test_smoke_piece_with_decoder_temporal_term_and_task_weights_resumes(tmp_path):
    """The piece-4 options on an old-style checkpoint: the decoder trains on with the frame-difference
    term (logged) and a third DiT cycle draws only the weighted task."""
    from stepscope.training.twin import TrainConfig, train

    config = TrainConfig.smoke()
    config.samples_per_task, config.dit_steps = 1, 1
    ckpt = tmp_path / "ckpt"
    train(config, ckpt, device="cpu", log=lambda _: None)  # an old piece: no new options
    config.decoder_steps, config.decoder_temporal = 2, 1.0
    config.dit_cycles, config.dit_task_weights = 2, "0,1,0,0,0"
    state, _ = train(config, ckpt, device="cpu", log=lambda _: None)
    decoder_rows = [row for row in state["log"] if row["stage"] == "decoder"]
    assert [row["step"] for row in decoder_rows] == [0, 1]
    assert all(row["temporal"] > 0 for row in decoder_rows)
    assert state["plan"]["dit_cycles"] == [[0, 1], [1, 2]]
    assert state["config"]["dit_task_weights"] == "0,1,0,0,0"


def test_candidate_mass_tells_the_chosen_target_from_the_other(bench):
    folder = sample_dir(bench, "In-Domain_50", EITHER_TASK, 0)
    video = read_video(folder / "ground_truth.mp4")
    first = np.asarray(Image.open(folder / "first_frame.png").convert("RGB"))
    at_start = candidate_mass(first, first)
    assert at_start == [0.0, 0.0]
    per_frame = [candidate_mass(frame, first) for frame in video]
    split = commitment(per_frame)
    assert split["chosen"][-1] > 0.9 and split["other"][-1] < 0.05  # mp4 compression leaves a trace
    faint = ((video[-1].astype(int) + first.astype(int)) // 2).astype(np.uint8)  # a half-formed answer
    assert 0.3 < max(candidate_mass(faint, first)) < 0.8


def test_bootstrap_interval_brackets_the_mean():
    values = [0.1, 0.5, 0.9, 0.3, 0.7]
    low, high = bootstrap_ci(values)
    assert low < np.mean(values) < high
    assert np.isnan(bootstrap_ci([0.5])[0])


def test_validation_curves_come_from_the_workflow_score_table():
    """The benchmark aggregates the workflow's tidy score table with chain_of_steps.emergence_step."""
    import importlib.util

    from stepscope.analysis.score_table import RunId, rows_to_table, score_rows

    spec = importlib.util.spec_from_file_location("validation_bench", REPO / "benchmarks" / "validation.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = []
    curves = {"00000": [0.1, 0.5, 0.8, 0.79], "00001": [0.7, 0.2, 0.3, 0.9]}
    for sample, curve in curves.items():
        for step, value in [*enumerate(curve), (-1, curve[-1])]:
            run = RunId("trained-plain", "In-Domain_50", D1, sample, "1", step)
            rows += score_rows(run, {"total": value}, "builtin")
    result = bench.curves_and_emergence(rows_to_table(rows), "total")
    assert result["by_task"][D1] == [0.4, 0.35, 0.55, 0.845]
    assert result["emergence_step"][D1] == [2, 3]  # first step from which the score stays >= 95% of final
