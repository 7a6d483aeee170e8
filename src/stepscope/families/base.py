"""What the sampling loop needs to know about one model family.

The loop in `stepscope.sampling` is family-agnostic; each family adapter reproduces the
body of its diffsynth pipeline's ``__call__`` in small pieces (prepare, velocity, step,
decode) so that the loop can record and steer every step while staying bit-exact with
``pipe(...)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..errors import StepScopeError  # noqa: F401  (re-exported: families raise it)
from ..layouts import WeightLayout


@dataclass
class Prepared:
    """Pipeline inputs after the pipeline's units ran (text, image and noise embedded)."""

    shared: dict[str, Any]
    posi: dict[str, Any]
    nega: dict[str, Any]
    call_kwargs: dict[str, Any]
    extras: dict[str, Any] = field(default_factory=dict)


class FamilyAdapter(Protocol):
    name: str
    block_list_name: str
    frame_multiple: int
    spatial_multiple: int
    default_fps: int
    layout: tuple[WeightLayout, ...]

    def make_tiny_weights(self, out_dir: Path) -> Path: ...

    def load_pipeline(
        self, weights_dir: Path, *, device: str, dtype: torch.dtype, vram: dict | None
    ) -> Any: ...

    def lora_targets(self, pipe: Any) -> dict[str, torch.nn.Module]: ...

    def call_kwargs(self, request: dict[str, Any]) -> dict[str, Any]: ...

    def prepare(self, pipe: Any, call_kwargs: dict[str, Any]) -> Prepared: ...

    def seed_latents(self, pipe: Any, prepared: Prepared, seed: int) -> Any: ...

    def expert_for_step(self, pipe: Any, prepared: Prepared, step: int) -> str: ...

    def velocity(
        self,
        pipe: Any,
        prepared: Prepared,
        expert: str,
        latents: Any,
        step: int,
        on_pass: Callable[[str], None],
    ) -> Any: ...

    def scheduler_step(
        self, pipe: Any, prepared: Prepared, velocity: Any, step: int, latents: Any, to_final: bool
    ) -> Any: ...

    def video_latent(self, latents: Any) -> torch.Tensor: ...

    def decode(self, pipe: Any, prepared: Prepared, latents: Any) -> np.ndarray: ...

    def dit_modules(self, pipe: Any) -> dict[str, torch.nn.Module]: ...

    def patch_embedding(self, dit: torch.nn.Module) -> torch.nn.Module | None: ...


def signature_defaults(function: Callable) -> dict[str, Any]:
    """Default values of a pipeline ``__call__``: the baseline our loop starts from."""
    defaults = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            continue
        defaults[name] = None if parameter.default is inspect.Parameter.empty else parameter.default
    return defaults


def find_component(weights_dir: Path, spec: WeightLayout) -> list[Path]:
    """Files (sorted) for one component, or [] when none matches."""
    for pattern in spec.patterns:
        matches = sorted(weights_dir.glob(pattern))
        matches = [m for m in matches if m.is_dir() == spec.is_dir]
        if matches:
            return matches
    return []


def resolve_layout(family: str, weights_dir: Path, layout: tuple[WeightLayout, ...]) -> dict[str, list[Path]]:
    """Map components to files; fail naming every missing file and how to get it."""
    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        raise StepScopeError(
            f"weights folder {weights_dir} does not exist: download the {family} weights "
            f"(the workflow's download rules do it) or make a tiny twin with "
            f"`stepscope tiny-weights --family {family} --out {weights_dir}`"
        )
    found, missing = {}, []
    for spec in layout:
        files = find_component(weights_dir, spec)
        if files:
            found[spec.component] = files
        elif spec.required:
            missing.append(f"{spec.component} ({' or '.join(spec.patterns)})")
    if missing:
        raise StepScopeError(
            f"{family} weights folder {weights_dir} lacks: {'; '.join(missing)}. "
            "Re-run the download rule for this family, or point the config at a complete folder."
        )
    return found


def local_model_configs(
    family: str,
    weights_dir: Path,
    layout: tuple[WeightLayout, ...],
    order: list[str],
    vram: dict | None = None,
) -> tuple[dict[str, list[Path]], list[Any]]:
    """Resolve a weights folder and make diffsynth ModelConfigs with local paths (never downloads).

    A tiny twin's registry entries are added first, so real and tiny weights load the same way.
    """
    from diffsynth.core import ModelConfig

    from .tiny import register_tiny_configs

    weights_dir = Path(weights_dir)
    files = resolve_layout(family, weights_dir, layout)
    register_tiny_configs(weights_dir)
    configs = [
        ModelConfig(
            path=[str(p) for p in files[c]] if len(files[c]) > 1 else str(files[c][0]), **(vram or {})
        )
        for c in order
        if c in files
    ]
    return files, configs


def uint8_frames(images: list) -> np.ndarray:
    """diffsynth returns a list of PIL images; we use one uint8 (T, H, W, 3) array."""
    return np.stack([np.asarray(image, dtype=np.uint8) for image in images])
