"""Multi-seed ensembles: merge K lockstep trajectories inside a step window [start, end).

Strategies (the paper does not publish its method; these are the three natural readings):
- ``latent``: replace every x_t by the mean of the K x_t at the start of each step in the window.
- ``velocity``: replace every CFG-combined velocity by the mean velocity.
- ``x0``: steer every trajectory to the mean clean estimate: v'_k = (x_t,k - mean_x0) / sigma, so
  x_{t-1},k = (1 - sigma') * mean_x0 + sigma' * eps_k, i.e. the mean x0_hat re-noised with the
  trajectory's own implied noise eps_k = (x_t,k - (1 - sigma) * mean_x0) / sigma.
With ``rescale``, the merged tensor is scaled to the mean norm of its inputs (averaging
independent noises shrinks the norm by ~1/sqrt(K), which the model never saw in training).
The ensemble's video is trajectory 0's (the first seed's); after a ``latent`` merge all K are equal.
"""

from __future__ import annotations

import torch

from stepscope.run_names import EnsembleSpec
from stepscope.sampling.hooks import StepHook


def per_part(function, *states):
    """Apply `function` to tensors, or part by part to tuple states (LTX-2.3's (video, audio))."""
    if isinstance(states[0], tuple):
        return type(states[0])(*(function(*parts) for parts in zip(*states, strict=True)))
    return function(*states)


def merge(tensors: list, rescale: bool):
    """Mean of K states (per part for tuple states); with `rescale`, at the mean norm of the K."""
    if isinstance(tensors[0], tuple):
        return per_part(lambda *parts: merge(list(parts), rescale), *tensors)
    merged = torch.stack(tensors).mean(dim=0)
    if rescale:
        target = torch.stack([t.float().norm() for t in tensors]).mean()
        merged = merged * (target / merged.float().norm().clamp_min(1e-12)).to(merged.dtype)
    return merged


class EnsembleHook(StepHook):
    def __init__(self, spec: EnsembleSpec):
        self.spec = spec

    def active(self, step: int, count: int) -> bool:
        return count > 1 and self.spec.start <= step < self.spec.end

    def on_latents(self, step, sigma, latents):
        if self.spec.strategy != "latent" or not self.active(step, len(latents)):
            return None
        merged = merge(latents, self.spec.rescale)
        return [per_part(lambda part: part.clone(), merged) for _ in latents]

    def on_velocity(self, step, sigma, latents, velocities):
        if self.spec.strategy == "latent" or not self.active(step, len(latents)):
            return None
        if self.spec.strategy == "velocity":
            merged = merge(velocities, self.spec.rescale)
            return [per_part(lambda part: part.clone(), merged) for _ in velocities]
        x0s = [per_part(lambda x, v: x - sigma * v, x, v) for x, v in zip(latents, velocities, strict=True)]
        mean_x0 = merge(x0s, self.spec.rescale)
        return [per_part(lambda x, m: (x - m) / sigma, x, mean_x0) for x in latents]
