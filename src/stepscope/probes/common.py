"""What the probes share on the device: seeded noise, the mixing of a state with it, hooks that
perturb some of the lockstep trajectories, and linear CKA (also used by the sensitivity table, on
the CPU, so that both representations are compared by the same code).

The perturbation is ``(1 - strength) * x + strength * noise``; at strength 0 the hooks do nothing
at all, so the run is bit-identical to the clean one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from stepscope.errors import StepScopeError
from stepscope.sampling.hooks import StepHook

ALL_FRAMES = 0  # noise key of a whole-latent injection (frame f uses f + 1)


def derived_seed(*parts: int) -> int:
    """A 63-bit seed derived from non-negative integers (order matters, no collisions in practice)."""
    state = np.random.SeedSequence([int(part) for part in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def seeded_noise(like: torch.Tensor, *key: int) -> torch.Tensor:
    """Standard Gaussian noise shaped like `like`, drawn on the CPU from a seed derived from `key`
    (so it is the same on every device), then moved to `like`'s device and dtype."""
    generator = torch.Generator(device="cpu").manual_seed(derived_seed(*key))
    noise = torch.randn(tuple(like.shape), generator=generator, dtype=torch.float32)
    return noise.to(device=like.device, dtype=like.dtype)


def video_part(state: Any) -> torch.Tensor:
    """The video latent (B, C, F, H, W) of a loop state (LTX states carry audio too)."""
    return state.video if hasattr(state, "video") else state


def with_video(state: Any, video: torch.Tensor) -> Any:
    return state._replace(video=video) if hasattr(state, "video") else video


def mix(x: torch.Tensor, noise: torch.Tensor, strength: float) -> torch.Tensor:
    """``(1 - strength) * x + strength * noise``; exactly `noise` at strength 1."""
    if strength >= 1.0:
        return noise
    return (1.0 - strength) * x + strength * noise


def check_strength(strength: float) -> float:
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise StepScopeError(f"noise strength must lie in [0, 1], got {strength}")
    return strength


def noise_settings(spec: dict[str, Any]) -> tuple[float, int]:
    """(strength, noise seed) of a noise probe's config section."""
    return check_strength(spec.get("strength", 1.0)), int(spec.get("noise_seed", 0))


class PerTrajectory(StepHook):
    """Base for hooks that act on some of the K lockstep trajectories (None = all)."""

    def __init__(self, trajectories: Iterable[int] | None):
        self.trajectories = None if trajectories is None else tuple(int(k) for k in trajectories)

    def targets(self, count: int) -> list[int]:
        if self.trajectories is None:
            return list(range(count))
        beyond = [k for k in self.trajectories if k >= count]
        if beyond:
            raise StepScopeError(f"trajectories {beyond} do not exist: the loop runs {count}")
        return list(self.trajectories)


class NoiseAtStep(PerTrajectory):
    """At the start of `step`, replace the whole video latent by ``mix(x, noise, strength)``."""

    def __init__(
        self, step: int, strength: float = 1.0, seed: int = 0, trajectories: Iterable[int] | None = None
    ):
        super().__init__(trajectories)
        self.step = int(step)
        self.strength = check_strength(strength)
        self.seed = int(seed)

    def on_latents(self, step, sigma, latents):
        if step != self.step or self.strength == 0.0:
            return None  # strength 0: not even a no-op arithmetic, so the run stays bit-identical
        out = list(latents)
        for k in self.targets(len(out)):
            video = video_part(out[k])
            noise = seeded_noise(video, self.seed, step, ALL_FRAMES)
            out[k] = with_video(out[k], mix(video, noise, self.strength))
        return out


class HookChain(StepHook):
    """Several hooks in order; each sees the states the previous one returned."""

    def __init__(self, hooks: Iterable[StepHook]):
        self.hooks = list(hooks)

    def on_latents(self, step, sigma, latents):
        changed = None
        for hook in self.hooks:
            result = hook.on_latents(step, sigma, latents if changed is None else changed)
            changed = result if result is not None else changed
        return changed

    def on_velocity(self, step, sigma, latents, velocities):
        changed = None
        for hook in self.hooks:
            result = hook.on_velocity(step, sigma, latents, velocities if changed is None else changed)
            changed = result if result is not None else changed
        return changed


# ----- linear CKA ------------------------------------------------------------------------------


def _as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def linear_cka(x: Any, y: Any) -> float:
    """Linear CKA (Kornblith et al. 2019) of two representations of the same n items.

    ``x``: (n, p), ``y``: (n, q) (tensors or arrays; the columns are centred here).
    ``CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``, computed in feature space when
    n exceeds the widths (a D x D product instead of an n x n Gram matrix) and in Gram space
    otherwise; float64 on the CPU, float32 on accelerators. Invariant to orthogonal transforms
    and isotropic scaling of either side. Returns NaN when a side has no variance.
    """
    x, y = _as_tensor(x), _as_tensor(y)
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise StepScopeError(
            f"CKA needs (n, p) and (n, q) with the same n, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    dtype = torch.float64 if x.device.type == "cpu" else torch.float32
    x = x.to(dtype)
    y = y.to(device=x.device, dtype=dtype)
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    n, p, q = x.shape[0], x.shape[1], y.shape[1]
    if n > max(p, q):
        cross = torch.linalg.matrix_norm(y.T @ x) ** 2
        norm_x = torch.linalg.matrix_norm(x.T @ x)
        norm_y = torch.linalg.matrix_norm(y.T @ y)
    else:
        gram_x, gram_y = x @ x.T, y @ y.T
        cross = (gram_x * gram_y).sum()
        norm_x, norm_y = torch.linalg.matrix_norm(gram_x), torch.linalg.matrix_norm(gram_y)
    denominator = float(norm_x) * float(norm_y)
    if denominator == 0.0 or not math.isfinite(denominator):
        return math.nan
    return float(cross) / denominator


def cka_dissimilarity(x: Any, y: Any) -> float:
    """``1 - linear CKA``, in [0, 1]: 0 = same representation (up to rotation and scale), 1 = unrelated.

    Identical inputs give exactly 0 (not 1 - CKA rounded)."""
    x, y = _as_tensor(x), _as_tensor(y)
    if x.shape == y.shape and x.device == y.device and torch.equal(x, y):
        return 0.0
    cka = linear_cka(x, y)
    return cka if math.isnan(cka) else min(1.0, max(0.0, 1.0 - cka))


def latent_tokens(latent: Any) -> torch.Tensor:
    """A video latent (C, F, H, W) (or (1, C, F, H, W)) as (F*H*W positions, C channels) for CKA."""
    latent = _as_tensor(latent)
    if latent.dim() == 5:
        latent = latent[0]
    if latent.dim() != 4:
        raise StepScopeError(f"expected a (C, F, H, W) latent, got shape {tuple(latent.shape)}")
    return latent.reshape(latent.shape[0], -1).T
