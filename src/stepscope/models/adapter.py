"""What the sampling loop needs to know about one model family.

The loop in `stepscope.sampling.loop` is family-agnostic; each family adapter reproduces the
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

from stepscope.errors import StepScopeError  # noqa: F401  (re-exported: families raise it)
from stepscope.models.weight_layouts import MAIN, WeightLayout, family_sources


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
    # The seed's sampler settings for keys a request leaves out (cfg_scale, steps, ...).
    defaults: dict[str, Any]
    # Substring of the linear layers a tiny stand-in LoRA adapts (tests and the demo).
    tiny_lora_match: str

    def make_tiny_weights(self, out_dir: Path) -> Path: ...

    def load_pipeline(
        self,
        weights_dir: Path,
        *,
        device: str,
        dtype: torch.dtype,
        vram: dict | None,
        sources: dict[str, str | Path] | None = None,
    ) -> Any: ...

    def load_decoder(self, weights_dir: Path, *, device: str, dtype: torch.dtype) -> Any:
        """A pipeline holding only what `decode_latent` needs (the video VAE decoder)."""
        ...

    def decode_latent(self, pipe: Any, latent: torch.Tensor, settings: dict[str, Any]) -> np.ndarray:
        """Frames of one stored video latent (x0_hat), decoded with the run's recorded settings."""
        ...

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


def source_folders(family: str, weights_dir: Path, sources: dict[str, str | Path] | None = None) -> dict[str, Path]:
    """The folder of each repo of a family: the main weights folder, and for every other source the
    folder given for it or, by default, `<weights_dir>/<repo id>` (the seed's ./models layout)."""
    folders = {MAIN: Path(weights_dir)}
    for source, repo_id in family_sources(family).items():
        given = (sources or {}).get(source)
        folders[source] = Path(given) if given else Path(weights_dir) / repo_id
    return folders


def resolve_layout(
    family: str,
    weights_dir: Path,
    layout: tuple[WeightLayout, ...],
    sources: dict[str, str | Path] | None = None,
) -> dict[str, list[Path]]:
    """Map components to files; fail naming every missing file, its folder and the repo to download."""
    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        raise StepScopeError(
            f"weights folder {weights_dir} does not exist: download the {family} weights "
            f"(the workflow's download rules do it) or make a tiny twin with "
            f"`stepscope tiny-weights --family {family} --out {weights_dir}`"
        )
    folders = source_folders(family, weights_dir, sources)
    repos = family_sources(family)
    found, missing = {}, {}
    for spec in layout:
        files = find_component(folders[spec.source], spec)
        if files:
            found[spec.component] = files
        elif spec.required:
            missing.setdefault(spec.source, []).append(f"{spec.component} ({' or '.join(spec.patterns)})")
    if missing:
        problems = []
        for source, items in missing.items():
            repo = f" (download {repos[source]} there, or give its folder)" if source in repos else ""
            problems.append(f"{folders[source]} lacks: {'; '.join(items)}{repo}")
        raise StepScopeError(
            f"{family} weights are incomplete: {' | '.join(problems)}. "
            "Re-run the download rules for this model, or point the config at complete folders."
        )
    return found


def local_model_configs(
    family: str,
    weights_dir: Path,
    layout: tuple[WeightLayout, ...],
    order: list[str],
    vram: dict | None = None,
    sources: dict[str, str | Path] | None = None,
) -> tuple[dict[str, list[Path]], list[Any]]:
    """Resolve a family's weights folders and make diffsynth ModelConfigs with local paths (never
    downloads). A tiny twin's registry entries are added first, so real and tiny weights load the
    same way.
    """
    from diffsynth.core import ModelConfig

    from stepscope.models.tiny import register_tiny_configs

    files = resolve_layout(family, weights_dir, layout, sources)
    for folder in set(source_folders(family, weights_dir, sources).values()):
        register_tiny_configs(folder)
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
