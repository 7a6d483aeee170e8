"""Multi-seed ensembles over the lockstep loop."""

from __future__ import annotations

import pytest
import torch

from stepscope.models.adapter import StepScopeError
from stepscope.run_names import EnsembleSpec
from stepscope.sampling.ensemble import EnsembleHook, merge
from stepscope.sampling.loop import sample, sample_lockstep

SETTINGS = dict(
    prompt="fill the circle",
    negative_prompt="blurry",
    num_frames=5,
    height=32,
    width=32,
    num_inference_steps=6,
    cfg_scale=4.0,
)


def lockstep(pipe, image, seeds, spec=None):
    hook = EnsembleHook(spec) if spec else None
    return sample_lockstep(pipe, "wan2.2", image=image, seeds=seeds, hook=hook, **SETTINGS)


def test_ensemble_of_one_equals_the_single_run(tiny_pipe, test_image):
    pipe = tiny_pipe("wan2.2")
    single = sample(pipe, "wan2.2", image=test_image, seed=5, **SETTINGS)
    for strategy in ("latent", "velocity", "x0"):
        merged = lockstep(pipe, test_image, [5], EnsembleSpec(strategy, k=1, start=0, end=6))[0]
        assert torch.equal(merged.final_latent, single.final_latent), strategy


def test_empty_window_equals_independent_runs(tiny_pipe, test_image):
    pipe = tiny_pipe("wan2.2")
    independent = lockstep(pipe, test_image, [5, 6])
    for strategy in ("latent", "velocity", "x0"):
        merged = lockstep(pipe, test_image, [5, 6], EnsembleSpec(strategy, k=2, start=3, end=3))
        for a, b in zip(merged, independent, strict=True):
            assert torch.equal(a.final_latent, b.final_latent), strategy


def test_latent_merge_makes_trajectories_identical_and_differs_from_each_seed(tiny_pipe, test_image):
    pipe = tiny_pipe("wan2.2")
    independent = lockstep(pipe, test_image, [5, 6])
    merged = lockstep(pipe, test_image, [5, 6], EnsembleSpec("latent", k=2, start=0, end=2))
    assert torch.equal(merged[0].final_latent, merged[1].final_latent)
    assert not torch.equal(merged[0].final_latent, independent[0].final_latent)
    velocity = lockstep(pipe, test_image, [5, 6], EnsembleSpec("velocity", k=2, start=0, end=2))
    assert not torch.equal(velocity[0].final_latent, velocity[1].final_latent)


def test_x0_strategy_steers_every_trajectory_to_the_mean_clean_estimate():
    sigma = 0.7
    latents = [torch.randn(1, 4, 2, 3, 3) for _ in range(3)]
    velocities = [torch.randn_like(x) for x in latents]
    new = EnsembleHook(EnsembleSpec("x0", k=3, start=0, end=1)).on_velocity(0, sigma, latents, velocities)
    mean_x0 = torch.stack([x - sigma * v for x, v in zip(latents, velocities, strict=True)]).mean(0)
    for x, v in zip(latents, new, strict=True):
        torch.testing.assert_close(x - sigma * v, mean_x0)


def test_rescale_keeps_the_mean_norm():
    tensors = [torch.randn(1000) for _ in range(4)]
    merged = merge(tensors, rescale=True)
    assert float(merged.norm()) == pytest.approx(
        float(torch.stack([t.norm() for t in tensors]).mean()), rel=1e-5
    )
    assert merge(tensors, rescale=False).norm() < 0.7 * merged.norm()


def test_names_round_trip_and_bad_specs_fail():
    spec = EnsembleSpec("velocity", k=3, start=0, end=10, rescale=True)
    assert spec.name == "ens-velocity-k3-0-10-rescale"
    assert EnsembleSpec.from_name(spec.name) == spec
    assert spec.seeds(7) == [7, 8, 9]
    with pytest.raises(StepScopeError):
        EnsembleSpec("median")
    with pytest.raises(StepScopeError):
        EnsembleSpec.from_name("ens-latent-k3")
