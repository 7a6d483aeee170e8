"""The core: our loop reproduces diffsynth exactly, captures are right, records round-trip, bad input fails clearly."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from stepscope.models.adapter import StepScopeError, uint8_frames
from stepscope.models.registry import get_family
from stepscope.records import RunRecords, is_complete
from stepscope.sampling.capture import CaptureSpec, reduce_tokens
from stepscope.sampling.loop import RecordSpec, sample, sample_lockstep

SETTINGS = dict(num_frames=9, height=64, width=64, num_inference_steps=8, cfg_scale=5.0)
PROMPT = "move the red square onto the green square"


def pipe_call(pipe, family, image, seed, **overrides):
    kwargs = dict(
        prompt=PROMPT,
        negative_prompt="blurry",
        input_image=Image.open(image).convert("RGB"),
        seed=seed,
        height=64,
        width=64,
        num_frames=9,
        cfg_scale=5.0,
        num_inference_steps=8,
    )
    if family == "wan2.2":
        kwargs["switch_DiT_boundary"] = 0.875
    kwargs.update(overrides)
    return uint8_frames(pipe(**kwargs))


def ours(pipe, family, image, seed=3, **kwargs):
    settings = dict(SETTINGS, **kwargs.pop("settings", {}))
    return sample(
        pipe, family, image=image, prompt=PROMPT, negative_prompt="blurry", seed=seed, **settings, **kwargs
    )


@pytest.mark.parametrize("family", ["wan2.2", "wan2.1"])
def test_loop_reproduces_diffsynth_exactly(tiny_pipe, test_image, family):
    pipe = tiny_pipe(family)
    reference = pipe_call(pipe, family, test_image, seed=3)
    result = ours(pipe, family, test_image, record=RecordSpec(capture=CaptureSpec(layers=(0, 3))))
    assert result.frames.dtype == np.uint8 and result.frames.shape == (9, 64, 64, 3)
    assert reference.std() > 1.0, "the tiny twin should produce a non-constant video"
    np.testing.assert_array_equal(result.frames, reference)
    last = max(result.x0_hats)
    assert torch.equal(result.x0_hats[last], result.final_latent.to(torch.float16))


def test_wan22_switches_expert_at_the_boundary(tiny_pipe, test_image):
    result = ours(tiny_pipe("wan2.2"), "wan2.2", test_image)
    experts = [row["expert"] for row in result.schedule]
    timesteps = [row["timestep"] for row in result.schedule]
    assert experts == ["high_noise" if t >= 875 else "low_noise" for t in timesteps]
    assert "high_noise" in experts and "low_noise" in experts


def test_lockstep_seeds_equal_independent_runs(tiny_pipe, test_image):
    pipe = tiny_pipe("wan2.2")
    together = sample_lockstep(
        pipe, "wan2.2", image=test_image, prompt=PROMPT, negative_prompt="blurry", seeds=[3, 4], **SETTINGS
    )
    for result, seed in zip(together, [3, 4], strict=True):
        alone = ours(pipe, "wan2.2", test_image, seed=seed)
        assert torch.equal(result.final_latent, alone.final_latent)
        np.testing.assert_array_equal(result.frames, alone.frames)
    assert not torch.equal(together[0].final_latent, together[1].final_latent)


def test_captured_reductions_equal_a_manual_forward_of_the_block(tiny_pipe, test_image):
    pipe = tiny_pipe("wan2.2")
    layer, step = 2, 5
    block = pipe.dit2.blocks[layer]  # step 5 runs on the low-noise expert
    seen = []

    def keep_inputs(module, args):
        seen.append(tuple(a.clone() if torch.is_tensor(a) else a for a in args))

    handle = block.register_forward_pre_hook(keep_inputs)
    try:
        result = ours(
            pipe,
            "wan2.2",
            test_image,
            record=RecordSpec(capture=CaptureSpec(layers=(layer,), steps=frozenset({step}))),
        )
    finally:
        handle.remove()
    low_noise_steps = [row["step"] for row in result.schedule if row["expert"] == "low_noise"]
    cond_call = 2 * low_noise_steps.index(step)  # cond, uncond per step
    with torch.no_grad():
        manual = block(*seen[cond_call])
    grid = (3, 4, 4)  # 9 frames -> 3 latent frames; 64 px -> 8 latent -> 4 patches
    expected = reduce_tokens(manual[0], grid, top_k=6)
    stored = result.activation_maps
    assert {row["step"] for row in result.activation_rows} == {step}
    np.testing.assert_allclose(
        stored[f"L{layer:02d}.S{step:04d}.cond.norm"], expected["norm"].numpy().astype(np.float16), rtol=1e-6
    )
    np.testing.assert_array_equal(
        stored[f"L{layer:02d}.S{step:04d}.cond.topk_channels"], expected["topk_channels"].numpy()
    )
    np.testing.assert_allclose(
        stored[f"L{layer:02d}.S{step:04d}.cond.channel_var"], expected["channel_var"].numpy(), rtol=1e-6
    )
    np.testing.assert_allclose(
        stored[f"L{layer:02d}.S{step:04d}.cond.pca"], expected["pca"].numpy(), rtol=1e-2, atol=1e-2
    )


def test_reductions_match_numpy_definitions():
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(2 * 3 * 4, 16)).astype(np.float32) * np.linspace(0.5, 3, 16, dtype=np.float32)
    maps = {k: v.numpy() for k, v in reduce_tokens(torch.from_numpy(tokens), (2, 3, 4), top_k=4).items()}
    np.testing.assert_allclose(maps["norm"].ravel(), np.linalg.norm(tokens, axis=1), rtol=1e-5)
    np.testing.assert_allclose(
        maps["frame_energy"], np.linalg.norm(tokens, axis=1).reshape(2, 12).mean(1), rtol=1e-5
    )
    np.testing.assert_allclose(  # the seed's temporal energy: L2 norm of each frame's token matrix
        maps["frame_l2"], np.linalg.norm(tokens.reshape(2, 12, 16), axis=(1, 2)), rtol=1e-5
    )
    variance = tokens.var(axis=0)
    np.testing.assert_allclose(maps["channel_var"], variance, rtol=1e-5)
    assert list(maps["topk_channels"]) == list(np.argsort(-variance)[:4])
    centred = tokens - tokens.mean(0)
    eigenvalues = np.sort(np.linalg.eigvalsh(centred.T @ centred / len(tokens)))[::-1]
    np.testing.assert_allclose(maps["pca_explained"], eigenvalues[:3] / variance.sum(), rtol=1e-4)
    # The wide-D path (subspace iteration) agrees with the dense one on data with a few dominant
    # directions, as DiT hidden states have (a handful of massive channels over a noise floor).
    structure = rng.normal(size=(96, 3)) * [12.0, 7.0, 4.0] @ rng.normal(size=(3, 300))
    wide = (structure + rng.normal(size=(96, 300))).astype(np.float32)
    fast = reduce_tokens(torch.from_numpy(wide), (1, 8, 12))["pca_explained"].numpy()
    w_centred = wide - wide.mean(0)
    exact = np.sort(np.linalg.eigvalsh(w_centred.T @ w_centred / len(wide)))[::-1][:3] / wide.var(0).sum()
    np.testing.assert_allclose(fast, exact, rtol=1e-3)


def test_records_round_trip(tiny_pipe, test_image, tmp_path):
    result = ours(
        tiny_pipe("wan2.2"),
        "wan2.2",
        test_image,
        out_dir=tmp_path / "run",
        record=RecordSpec(
            x0_steps=frozenset({0, 7}), capture=CaptureSpec(layers=(1, 3), steps=frozenset({0, 4}))
        ),
    )
    assert is_complete(tmp_path / "run")
    run = RunRecords(tmp_path / "run")
    assert run.recorded_steps == [0, 7]
    assert run.layers == [1, 3] and run.captured_steps == [0, 4]
    assert torch.equal(run.x0_hat(7), result.x0_hats[7])
    assert torch.equal(run.final_latent(), result.final_latent.to(torch.float16))
    assert run.schedule["expert"].tolist() == [row["expert"] for row in result.schedule]
    maps = run.maps(3, 4)
    np.testing.assert_array_equal(maps["norm"], result.activation_maps["L03.S0004.cond.norm"])
    row = run.activations.query("layer == 3 and step == 4").iloc[0]
    assert row["mean_norm"] == pytest.approx(float(maps["norm"].astype(np.float64).mean()))
    assert run.meta["seed"] == 3 and run.meta["settings"]["num_inference_steps"] == 8
    assert run.meta["versions"]["diffsynth"] == "2.1.12"
    decoded = run.frames()
    assert decoded.shape == result.frames.shape
    # H.264 (quality 5, yuv420) is lossy, and tiny random-weight videos are noise-like: ask for strong agreement.
    assert np.corrcoef(decoded.ravel(), result.frames.ravel())[0, 1] > 0.8


def test_spatial_maps_are_kept_only_at_map_steps(tiny_pipe, test_image, tmp_path):
    from stepscope.plots.figures import render_run_figures

    spec = CaptureSpec(layers=(0, 3), map_steps=frozenset({2, 7}))
    ours(tiny_pipe("wan2.2"), "wan2.2", test_image, out_dir=tmp_path / "run", record=RecordSpec(capture=spec))
    run = RunRecords(tmp_path / "run")
    assert run.captured_steps == list(range(8)) and run.spatial_steps == [2, 7]
    assert set(run.maps(3, 5)) == {"norm", "frame_energy", "frame_l2", "channel_var", "topk_channels", "pca_explained"}
    assert {"pca", "topk_maps"} <= set(run.maps(3, 7))
    paths = {p.name for p in render_run_figures(tmp_path / "run", tmp_path / "figures", steps=[0, 4, 7])}
    assert {"pca_rgb_L03.png", "topk_maps_L03_S0007.png", "norm_heatmap_L03.png"} <= paths


def test_same_seed_twice_gives_identical_step_records(tiny_pipe, test_image, tmp_path):
    for name in ("a", "b"):
        ours(tiny_pipe("wan2.1"), "wan2.1", test_image, out_dir=tmp_path / name)
    digest = [
        hashlib.sha256((tmp_path / name / "steps.safetensors").read_bytes()).hexdigest()
        for name in ("a", "b")
    ]
    assert digest[0] == digest[1]


def test_num_frames_rounding_is_recorded(tiny_pipe, test_image):
    result = ours(
        tiny_pipe("wan2.2"), "wan2.2", test_image, settings={"num_frames": 7, "num_inference_steps": 2}
    )
    assert result.frames.shape[0] == 9
    assert result.settings["rounding"]["num_frames"] == {
        "requested": 7,
        "used": 9,
        "rule": "rounded up to 4n+1 as diffsynth does",
    }


def test_bad_inputs_fail_with_clear_messages(tiny_pipe, tiny_weights, test_image, tmp_path):
    from stepscope.models.loading import LoraSpec, apply_lora, load_pipeline, make_tiny_lora

    pipe = tiny_pipe("wan2.2")
    with pytest.raises(StepScopeError, match="does not exist"):
        ours(pipe, "wan2.2", tmp_path / "missing.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(StepScopeError, match="cannot be read"):
        ours(pipe, "wan2.2", broken)
    with pytest.raises(StepScopeError, match="prompt is empty"):
        sample(pipe, "wan2.2", image=test_image, prompt="  ", seed=1, **SETTINGS)
    with pytest.raises(StepScopeError, match="unknown model family 'wan9'"):
        get_family("wan9")
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "Wan2.1_VAE.safetensors").write_bytes(b"")
    with pytest.raises(StepScopeError, match="high_noise_model/diffusion_pytorch_model"):
        load_pipeline("wan2.2", incomplete, device="cpu")
    wrong = make_tiny_lora(tiny_pipe("wan2.1").image_encoder, tmp_path / "wrong.safetensors", match="visual")
    with pytest.raises(StepScopeError, match="does not fit"):
        apply_lora(pipe, get_family("wan2.2"), LoraSpec(wrong, "high_noise"))
    with pytest.raises(StepScopeError, match="layer 7 does not exist"):
        ours(pipe, "wan2.2", test_image, record=RecordSpec(capture=CaptureSpec(layers=(7,))))
    with pytest.raises(StepScopeError, match="TeaCache"):
        ours(pipe, "wan2.2", test_image, extra={"tea_cache_l1_thresh": 0.1}, record=RecordSpec())


def test_lora_changes_the_output_and_is_recorded(tiny_weights, tiny_pipe, test_image, tmp_path):
    from stepscope.models.loading import LoraSpec, load_pipeline, make_tiny_lora

    base = ours(tiny_pipe("wan2.2"), "wan2.2", test_image)
    lora = make_tiny_lora(tiny_pipe("wan2.2").dit, tmp_path / "high.safetensors", scale=0.5)
    pipe = load_pipeline(
        "wan2.2", tiny_weights("wan2.2"), device="cpu", loras=[LoraSpec(lora, "high_noise", 1.0)]
    )
    with_lora = ours(pipe, "wan2.2", test_image)
    assert not torch.equal(base.final_latent, with_lora.final_latent)


def test_compiled_models_are_refused(tiny_weights, test_image):
    from stepscope.models.loading import load_pipeline

    pipe = load_pipeline("wan2.1", tiny_weights("wan2.1"), device="cpu")
    pipe.dit.blocks[0].compile()
    with pytest.raises(StepScopeError, match="compile"):
        ours(pipe, "wan2.1", test_image, record=RecordSpec())


def test_real_weight_layout_is_recognised_by_diffsynth():
    """The real 14B DiT architecture our loader expects hashes to diffsynth's registered Wan2.2-A14B entry."""
    from diffsynth.configs import MODEL_CONFIGS
    from diffsynth.core.loader.file import convert_keys_dict_to_single_str
    from diffsynth.models.wan_video_dit import WanModel

    registered = {c["model_hash"]: c for c in MODEL_CONFIGS if c["model_name"] == "wan_video_dit"}
    for kwargs in (
        {
            "has_image_input": False,
            "patch_size": [1, 2, 2],
            "in_dim": 36,
            "dim": 5120,
            "ffn_dim": 13824,
            "freq_dim": 256,
            "text_dim": 4096,
            "out_dim": 16,
            "num_heads": 40,
            "num_layers": 40,
            "eps": 1e-06,
            "require_clip_embedding": False,
        },
        {
            "has_image_input": True,
            "patch_size": [1, 2, 2],
            "in_dim": 36,
            "dim": 5120,
            "ffn_dim": 13824,
            "freq_dim": 256,
            "text_dim": 4096,
            "out_dim": 16,
            "num_heads": 40,
            "num_layers": 40,
            "eps": 1e-06,
        },
    ):
        with torch.device("meta"):
            model = WanModel(**kwargs)
        keys = {key: list(value.shape) for key, value in model.state_dict().items()}
        digest = hashlib.md5(convert_keys_dict_to_single_str(keys).encode()).hexdigest()
        assert digest in registered and registered[digest]["extra_kwargs"]["dim"] == 5120
    # And the real folder layout is what the loader resolves (names only; no download here).
    patterns = {spec.component: spec.patterns for spec in get_family("wan2.2").layout}
    assert patterns["dit"] == ("high_noise_model/diffusion_pytorch_model*.safetensors",)
    assert patterns["dit2"] == ("low_noise_model/diffusion_pytorch_model*.safetensors",)


def test_tiny_weights_are_deterministic(tmp_path):
    from stepscope.models.loading import make_tiny_weights

    a = make_tiny_weights("wan2.2", tmp_path / "a")
    b = make_tiny_weights("wan2.2", tmp_path / "b")
    for path in sorted(a.rglob("*.safetensors")):
        assert path.read_bytes() == (b / path.relative_to(a)).read_bytes()
