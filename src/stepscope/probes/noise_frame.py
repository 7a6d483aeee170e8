"""Probe ``noise_frame``: replace one latent frame by seeded noise at every listed step; sweep the
frame. The final videos are scored against the clean run (docs/probes.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from stepscope.errors import StepScopeError
from stepscope.probes.common import (
    HookChain,
    PerTrajectory,
    check_strength,
    mix,
    noise_settings,
    seeded_noise,
    video_part,
    with_video,
)
from stepscope.probes.files import CLEAN
from stepscope.probes.job import ProbeJob
from stepscope.stepspec import resolve_steps


class NoiseAtFrame(PerTrajectory):
    """At every step in `steps` (None = all), replace latent frame `frame` by ``mix(x, noise, strength)``.

    Fresh noise each step, seeded by (seed, step, frame)."""

    def __init__(
        self,
        frame: int,
        strength: float = 1.0,
        seed: int = 0,
        steps: Iterable[int] | None = None,
        trajectories: Iterable[int] | None = None,
    ):
        super().__init__(trajectories)
        self.frame = int(frame)
        self.strength = check_strength(strength)
        self.seed = int(seed)
        self.steps = None if steps is None else frozenset(int(s) for s in steps)

    def on_latents(self, step, sigma, latents):
        if self.strength == 0.0 or (self.steps is not None and step not in self.steps):
            return None
        out = list(latents)
        for k in self.targets(len(out)):
            video = video_part(out[k])
            frames = video.shape[2]
            if not 0 <= self.frame < frames:
                raise StepScopeError(
                    f"latent frame {self.frame} does not exist: the latent has {frames} frames (0-{frames - 1})"
                )
            f = self.frame
            noise = seeded_noise(video[:, :, f : f + 1], self.seed, step, f + 1)
            changed = video.clone()
            changed[:, :, f : f + 1] = mix(video[:, :, f : f + 1], noise, self.strength)
            out[k] = with_video(out[k], changed)
        return out


def resolve_frames(frames: str | Sequence[int], count: int) -> list[int]:
    if frames == "all":
        return list(range(count))
    chosen = sorted({int(frame) for frame in frames})
    beyond = [frame for frame in chosen if not 0 <= frame < count]
    if beyond:
        raise StepScopeError(
            f"latent frames {beyond} do not exist: this run's latent has {count} frames (0-{count - 1})"
        )
    return chosen


def run(job: ProbeJob, spec: dict[str, Any]) -> dict[str, Any]:
    count = job.latent_frames()
    frames = resolve_frames(spec.get("frames", "all"), count)
    steps = resolve_steps(spec.get("steps", "all"), job.steps)
    strength, noise_seed = noise_settings(spec)
    hook = HookChain(
        NoiseAtFrame(frame, strength, noise_seed, steps=steps, trajectories=[k + 1])
        for k, frame in enumerate(frames)
    )
    results = job.sample(1 + len(frames), hook)
    conditions = [{"name": CLEAN}] + [
        {"name": f"frame{frame:04d}", "frame": frame, "strength": strength, "noise_seed": noise_seed}
        for frame in frames
    ]
    return job.write_sweep(results, conditions, latent_frames=count)
