"""Probe ``noise_step``: at step s, replace the latent of every frame by seeded Gaussian noise; sweep s.
The final videos are scored against the clean run (docs/probes.md)."""

from __future__ import annotations

from typing import Any

from stepscope.probes.common import HookChain, NoiseAtStep, noise_settings
from stepscope.probes.files import CLEAN
from stepscope.probes.job import ProbeJob
from stepscope.stepspec import resolve_steps


def step_sweep(job: ProbeJob, spec: dict[str, Any]) -> tuple[HookChain, list[dict[str, Any]]]:
    """The hook that noises trajectory k at the k-th listed step, and the conditions (clean first).

    Shared with the sensitivity probe, which perturbs the same way."""
    steps = resolve_steps(spec.get("steps", "all"), job.steps)
    strength, noise_seed = noise_settings(spec)
    hook = HookChain(
        NoiseAtStep(step, strength, noise_seed, trajectories=[k + 1]) for k, step in enumerate(steps)
    )
    conditions = [{"name": CLEAN}] + [
        {"name": f"step{step:04d}", "step": step, "strength": strength, "noise_seed": noise_seed}
        for step in steps
    ]
    return hook, conditions


def run(job: ProbeJob, spec: dict[str, Any]) -> dict[str, Any]:
    hook, conditions = step_sweep(job, spec)
    return job.write_sweep(job.sample(len(conditions), hook), conditions)
