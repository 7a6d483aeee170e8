"""Forward hooks on DiT blocks that reduce hidden states on the device.

A raw block output of the real 14B model at 480p is 335 MB; we never copy it. Each hook
reduces (N, D) tokens to a few maps (token norms, channel variance, top-k channel maps,
3-component PCA) on the device, and only those small tensors reach the host, once per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from stepscope.errors import StepScopeError
from stepscope.records import activation_row, map_key
from stepscope.sampling.blocks import BlockHook, block_hooks, block_tokens, dit_blocks
from stepscope.sampling.context import StepContext

PCA_ITERATIONS = 6
PCA_OVERSAMPLE = 8
# A component is accepted from the subspace iteration when its Ritz residual ||C v - theta v|| is at
# most this fraction of its variance theta (then its angle to the exact component is at most
# PCA_TOLERANCE / relative gap); otherwise the exact eigendecomposition is used (see finish_pca).
PCA_TOLERANCE = 1e-3


@dataclass(frozen=True)
class CaptureSpec:
    layers: tuple[int, ...] = (0, 10, 20, 30, 39)
    steps: frozenset[int] | None = None  # None = every step
    passes: tuple[str, ...] = ("cond",)
    top_k: int = 6
    map_steps: frozenset[int] | None = None  # steps whose spatial top-k and PCA maps are kept; None = all

    def wants_step(self, step: int) -> bool:
        return self.steps is None or step in self.steps

    def wants_spatial_maps(self, step: int) -> bool:
        return self.map_steps is None or step in self.map_steps


def _column_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Per column, the sign that makes its largest-magnitude entry positive (deterministic PCA)."""
    index = vectors.abs().argmax(dim=0)
    signs = torch.sign(vectors[index, torch.arange(vectors.shape[1], device=vectors.device)])
    signs[signs == 0] = 1
    return signs


_START_BASES: dict[tuple[int, int, str], torch.Tensor] = {}


def _start_basis(dim: int, width: int, device: torch.device) -> torch.Tensor:
    """Fixed random start of the subspace iteration, made once per shape and device.

    Made on the CPU (same numbers on every device) and cached: a host-to-device copy in the
    hook would stall the GPU queue at every capture.
    """
    key = (dim, width, str(device))
    if key not in _START_BASES:
        generator = torch.Generator(device="cpu").manual_seed(0)
        basis, _ = torch.linalg.qr(torch.randn(dim, width, generator=generator, dtype=torch.float64))
        _START_BASES[key] = basis.float().to(device)
    return _START_BASES[key]


def pca_subspace(x: torch.Tensor, mean: torch.Tensor, n_components: int = 3) -> dict[str, torch.Tensor]:
    """Device part of the PCA of tokens x (N, D) with channel means `mean` (D,); no host sync.

    Subspace iteration from a fixed start (a few N x D x 11 products instead of a D x D
    eigendecomposition; D = 5120 for Wan 14B), never materialising the centred tokens. It
    returns the orthonormal basis Q (D, w), the centred tokens projected on it (N, w), their
    covariance (w, w), and for the convergence check in `finish_pca` the two w x w matrices
    Q^T C Q and (C Q)^T (C Q) (`pca_ritz`). Dense (basis = identity, exact) when D is small.
    linalg.eigh on a GPU synchronises with the host and would stall the DiT at every capture, so
    every eigendecomposition runs on the host at the end of the step.
    """
    n_tokens, dim = x.shape
    if dim <= 256:
        basis = torch.eye(dim, device=x.device, dtype=torch.float32)
    else:
        basis = _start_basis(dim, min(dim, n_components + PCA_OVERSAMPLE), x.device)
        for _ in range(PCA_ITERATIONS):
            projected = x @ basis - mean @ basis  # (x - mean) @ basis, broadcast over tokens
            basis, _ = torch.linalg.qr(x.T @ projected - torch.outer(mean, projected.sum(dim=0)))
    projected = x @ basis - mean @ basis
    out = {"pca_basis": basis, "pca_projected": projected, "pca_cov": projected.T @ projected / n_tokens}
    if dim > 256:
        cov_times_basis = (x.T @ projected - torch.outer(mean, projected.sum(dim=0))) / n_tokens
        ritz = torch.stack([basis.T @ cov_times_basis, cov_times_basis.T @ cov_times_basis])
        out.update({"pca_ritz": ritz, "pca_mean": mean})
    return out


def ritz_residuals(ritz: torch.Tensor, n_components: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Top Ritz values theta_i of the covariance C in span(Q) and their residuals ||C v_i - theta_i v_i||.

    From H = Q^T C Q (theta and the Ritz vectors v = Q u) and G = (C Q)^T (C Q):
    ||C v - theta v||^2 = u^T G u - theta^2 (v orthonormal, v^T C v = theta).
    """
    small, gram = ritz.double().cpu()
    values, vectors = torch.linalg.eigh((small + small.T) / 2)
    order = torch.argsort(values, descending=True)[:n_components]
    values, vectors = values[order], vectors[:, order]
    squared = (vectors * (gram @ vectors)).sum(dim=0) - values**2
    return values, squared.clamp_min(0).sqrt()


def exact_pca_basis(x: torch.Tensor, mean: torch.Tensor, n_components: int = 3) -> torch.Tensor:
    """The top principal directions (D, n) from the full covariance (float64 eigendecomposition)."""
    centred = (x - mean).double()
    values, vectors = torch.linalg.eigh(centred.T @ centred / x.shape[0])
    order = torch.argsort(values, descending=True)[:n_components]
    return vectors[:, order].to(x.dtype)


def pca_converged(
    reduced: dict[str, torch.Tensor], n_components: int = 3, tolerance: float = PCA_TOLERANCE
) -> bool:
    """Whether each of the top components from the subspace iteration is accurate: its Ritz residual
    is at most `tolerance` times its variance (the dense path is exact)."""
    if "pca_ritz" not in reduced:
        return True
    values, residuals = ritz_residuals(reduced["pca_ritz"], n_components)
    return bool((residuals <= tolerance * values.clamp_min(1e-30)).all())


def finish_pca(
    reduced: dict[str, torch.Tensor],
    grid: tuple[int, int, int],
    n_components: int = 3,
    tolerance: float = PCA_TOLERANCE,
) -> dict[str, torch.Tensor]:
    """Host part of the PCA: top components, their projections (f, h, w, 3) and explained ratios.

    Where the subspace iteration has not converged (flat or nearly degenerate spectra), the exact
    eigendecomposition of the covariance replaces it, from the tokens the capture kept until the
    end of the step (only where it kept them: see `reduce_on_device`); `pca_exact` says which one
    was used, `pca_converged` whether the iteration passed its check.
    """
    exact = "pca_ritz" not in reduced
    converged = pca_converged(reduced, n_components, tolerance)
    if not converged and "pca_tokens" in reduced:
        x = reduced["pca_tokens"].float()
        mean = reduced["pca_mean"]
        basis = exact_pca_basis(x, mean, n_components)
        projected = x @ basis - mean @ basis
        reduced = {
            **reduced,
            "pca_basis": basis,
            "pca_projected": projected,
            "pca_cov": projected.T @ projected / len(x),
        }
        exact = True
    basis, projected, cov = (reduced[k].double().cpu() for k in ("pca_basis", "pca_projected", "pca_cov"))
    values, vectors = torch.linalg.eigh(cov)
    order = torch.argsort(values, descending=True)[:n_components]
    top = vectors[:, order]
    pca = projected @ top * _column_signs(basis @ top)  # signs fixed on the components in channel space
    total_variance = reduced["channel_var"].double().cpu().sum().clamp_min(1e-12)
    f, h, w = grid
    return {
        "pca": pca.float().view(f, h, w, -1),
        "pca_explained": (values[order].clamp_min(0) / total_variance).float(),
        "pca_exact": torch.tensor(exact),
        "pca_converged": torch.tensor(converged),
    }


@torch.no_grad()
def reduce_on_device(
    tokens: torch.Tensor, grid: tuple[int, int, int], top_k: int = 6, exact_fallback: bool = True
) -> dict[str, torch.Tensor]:
    """The device half of `reduce_tokens`: no host synchronisation, small outputs only.

    `exact_fallback`: keep a copy of the tokens for the exact PCA if the subspace iteration fails its
    check. The capture asks for it only at the steps whose PCA maps are stored (record.map_steps):
    on a flat spectrum the exact eigendecomposition (D x D in float64, D = 5120 for Wan 14B) costs
    ~0.2 s per block on an H200, 38% of the sampling time when done for 5 layers, both passes, every step.
    """
    f, h, w = grid
    x = tokens.reshape(-1, tokens.shape[-1])
    if x.shape[0] != f * h * w:
        raise StepScopeError(
            f"block output has {x.shape[0]} tokens but the patch grid {grid} has {f * h * w}"
        )
    x = x.float()
    norm = torch.linalg.vector_norm(x, dim=1)
    channel_var, mean = torch.var_mean(x, dim=0, unbiased=False)
    by_frame = norm.view(f, h * w)
    k = min(top_k, x.shape[1])
    top_channels = torch.topk(channel_var, k).indices
    pca = pca_subspace(x, mean)
    if exact_fallback and "pca_ritz" in pca:  # kept until the end of the step, for the exact PCA if the check fails
        pca["pca_tokens"] = tokens.reshape(x.shape).detach().clone()
    return {
        "norm": norm.view(f, h, w),
        "frame_energy": by_frame.mean(dim=1),
        # the seed's temporal energy: the L2 norm of the frame's token matrix
        "frame_l2": torch.linalg.vector_norm(by_frame, dim=1),
        "channel_var": channel_var,
        "topk_channels": top_channels,
        "topk_maps": x[:, top_channels].T.reshape(k, f, h, w),
        **pca,
    }


def finish_reduction(reduced: dict[str, torch.Tensor], grid: tuple[int, int, int]) -> dict[str, torch.Tensor]:
    """The host half: complete the PCA; drop the intermediate PCA tensors."""
    done = {name: value for name, value in reduced.items() if not name.startswith("pca_")}
    done.update(finish_pca(reduced, grid))
    return done


@torch.no_grad()
def reduce_tokens(
    tokens: torch.Tensor, grid: tuple[int, int, int], top_k: int = 6
) -> dict[str, torch.Tensor]:
    """Reduce one block output (N, D) on the patch grid (f, h, w) to the maps of docs/records.md."""
    return {k: v.cpu() for k, v in finish_reduction(reduce_on_device(tokens, grid, top_k), grid).items()}


# Token norms and the spatial maps are float16 (3 significant digits, half the bytes: a 50-step,
# 5-layer run at 480p stays within its storage budget); the small vectors stay float32.
SPATIAL_MAPS = ("topk_maps", "pca")
STORED_DTYPES = {
    "norm": np.float16,
    "frame_energy": np.float32,
    "frame_l2": np.float32,
    "channel_var": np.float32,
    "topk_channels": np.int64,
    "topk_maps": np.float16,
    "pca": np.float16,
    "pca_explained": np.float32,
}


@dataclass
class Recorder:
    """Hook state for one sampling run: what was captured. Which step, trajectory, CFG pass and expert
    are running, and the token grid, it reads from the loop's `StepContext`."""

    spec: CaptureSpec
    context: StepContext = field(default_factory=StepContext)
    pending: list[tuple[int, int, str, str, tuple[int, int, int], dict[str, torch.Tensor]]] = field(
        default_factory=list
    )
    maps: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    rows: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def active(self) -> bool:
        return self.spec.wants_step(self.context.step) and self.context.pass_ in self.spec.passes

    def hooks(
        self,
        dits: dict[str, torch.nn.Module],
        block_list_name: str,
        patch_embeddings: dict[str, torch.nn.Module | None],
    ) -> list[tuple[torch.nn.Module, BlockHook]]:
        """The forward hooks to register (`blocks.forward_hooks`): the captured blocks of every DiT and,
        where the family has one, the patch embedding that tells the token grid."""
        pairs = block_hooks(dit_blocks(dits, block_list_name), self.spec.layers, self._block_hook)
        pairs += [
            (embedding, self._grid_hook) for embedding in patch_embeddings.values() if embedding is not None
        ]
        return pairs

    def _grid_hook(self, module, inputs, output) -> None:
        self.context.grid = tuple(int(size) for size in output.shape[2:5])

    def _block_hook(self, layer: int, expert: str):
        def hook(module, inputs, output):
            if not self.active():
                return
            context = self.context
            if context.grid is None:
                raise StepScopeError(
                    "patch grid unknown: the patch-embedding hook did not fire before the block"
                )
            reduced = reduce_on_device(
                block_tokens(output),
                context.grid,
                self.spec.top_k,
                exact_fallback=self.spec.wants_spatial_maps(context.step),
            )
            self.pending.append(
                (context.trajectory, layer, context.pass_, context.expert, context.grid, reduced)
            )

        return hook

    def flush(self) -> None:
        """Copy this step's reduced maps to the host (one sync per step, not per hook)."""
        step = self.context.step
        spatial = self.spec.wants_spatial_maps(step)
        for seed_index, layer, pass_, expert, grid, reduced in self.pending:
            done = finish_reduction(reduced, grid)
            pca_exact, pca_converged = bool(done.pop("pca_exact")), bool(done.pop("pca_converged"))
            arrays = {
                name: value.detach().cpu().numpy().astype(STORED_DTYPES[name])
                for name, value in done.items()
                if spatial or name not in SPATIAL_MAPS
            }
            store = self.maps.setdefault(seed_index, {})
            for name, array in arrays.items():
                store[map_key(layer, step, pass_, name)] = array
            self.rows.setdefault(seed_index, []).append(
                {
                    **activation_row(arrays, step=step, layer=layer, pass_=pass_, expert=expert),
                    "pca_exact": pca_exact,
                    "pca_converged": pca_converged,
                }
            )
        self.pending.clear()
