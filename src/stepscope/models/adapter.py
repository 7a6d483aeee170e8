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
from diffsynth.core import ModelConfig

from stepscope.errors import StepScopeError  # noqa: F401  (re-exported: families raise it)
from stepscope.models.tiny import register_tiny_configs
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
    """The contract of a model family: everything the loop, capture, probes and jobs ask of one.

    An adapter is one object per family (registered in `stepscope.models.registry`). It splits the
    body of its diffsynth pipeline's ``__call__`` into the pieces below so that the family-agnostic
    loop (`stepscope.sampling.loop.sample_lockstep`) can run them step by step, record x0-hat and
    hidden states, and steer a step, while giving the same video as ``pipe(...)`` bit for bit
    (tests/test_core.py and tests/test_ltx.py check every family against its pipeline).
    A *state* is whatever the family denoises (a latent tensor; LTX: an (video, audio) pair).
    """

    # ----- facts -----
    name: str  # the registry key ("wan2.2", ...)
    block_list_name: str  # attribute of a DiT holding its blocks (forward hooks go on them)
    frame_multiple: int  # num_frames is rounded to k * frame_multiple + 1 (VAE time compression)
    spatial_multiple: int  # height and width are rounded to multiples of it
    default_fps: int  # frame rate the pipeline is told (videos are written at 16 fps)
    experts: tuple[str, ...]  # DiT names the loop switches between ("dit", or Wan2.2's two)
    layout: tuple[WeightLayout, ...]  # files the loader resolves (stepscope.models.weight_layouts)
    defaults: dict[str, Any]  # the seed's sampler settings for keys a request leaves out
    tiny_lora_match: str  # substring of the linear layers a tiny stand-in LoRA adapts

    # ----- weights -----
    def make_tiny_weights(self, out_dir: Path) -> Path:
        """Write a small random twin in the real layout, loadable by `load_pipeline` (tests, demo)."""
        ...

    def load_pipeline(
        self,
        weights_dir: Path,
        *,
        device: str,
        dtype: torch.dtype,
        vram: dict | None,
        sources: dict[str, str | Path] | None = None,
    ) -> Any:
        """The diffsynth pipeline from local folders only (never downloads); `vram` is diffsynth's
        per-model VRAM config of the memory preset, `sources` the folders of the family's other repos."""
        ...

    def load_decoder(self, weights_dir: Path, *, device: str, dtype: torch.dtype) -> Any:
        """A pipeline holding only what `decode_latent` needs (the video VAE decoder)."""
        ...

    def lora_targets(self, pipe: Any) -> dict[str, torch.nn.Module]:
        """The modules a LoRA's `target` may name (the DiT, or each Wan2.2 expert)."""
        ...

    # ----- one sampling run, piece by piece (the pipeline's __call__) -----
    def call_kwargs(self, request: dict[str, Any]) -> dict[str, Any]:
        """The pipeline's ``__call__`` arguments for a request (family defaults filled in)."""
        ...

    def prepare(self, pipe: Any, call_kwargs: dict[str, Any]) -> Prepared:
        """Run the pipeline's units (text, image, noise embeddings) once per run."""
        ...

    def seed_latents(self, pipe: Any, prepared: Prepared, seed: int) -> Any:
        """The initial noise state for one seed, drawn as the pipeline draws it."""
        ...

    def expert_for_step(self, pipe: Any, prepared: Prepared, step: int) -> str:
        """Which of `experts` runs this step (Wan2.2 switches at the boundary timestep)."""
        ...

    def velocity(
        self,
        pipe: Any,
        prepared: Prepared,
        expert: str,
        latents: Any,
        step: int,
        on_pass: Callable[[str], None],
    ) -> Any:
        """The CFG-combined model output of one step; calls ``on_pass("cond"|"uncond")`` before each
        model pass so capture hooks know which pass they see."""
        ...

    def scheduler_step(
        self, pipe: Any, prepared: Prepared, velocity: Any, step: int, latents: Any, to_final: bool
    ) -> Any:
        """The next state; with ``to_final`` the clean-video estimate x0-hat of this step instead."""
        ...

    def video_latent(self, latents: Any) -> torch.Tensor:
        """The video part of a state (what x0-hat records and decoding use)."""
        ...

    def decode(self, pipe: Any, prepared: Prepared, latents: Any) -> np.ndarray:
        """Frames (T, H, W, 3) uint8 of the final state, as the pipeline decodes them."""
        ...

    def decode_latent(self, pipe: Any, latent: torch.Tensor, settings: dict[str, Any]) -> np.ndarray:
        """Frames of one stored video latent (x0_hat), decoded with the run's recorded settings."""
        ...

    # ----- hidden states -----
    def dit_modules(self, pipe: Any) -> dict[str, torch.nn.Module]:
        """Each expert's DiT by name (capture and probes hook their blocks)."""
        ...

    def patch_embedding(self, dit: torch.nn.Module) -> torch.nn.Module | None:
        """The DiT's patch embedding, whose output grid gives the token grid (None: see `token_grid`)."""
        ...

    def check_capture_safe(self, pipe: Any, call_kwargs: dict[str, Any]) -> None:
        """Refuse settings under which per-token hidden states cannot be mapped to the video grid."""
        ...

    # Optional, looked up with hasattr by their one caller:
    #   token_grid(pipe, prepared, latents) -> (F, H, W): the token grid when `patch_embedding` is None
    #   decode_audio(pipe, prepared, latents) -> (waveform, sample_rate): an audio track (LTX)
    #   untiled_decode_gib(latent_shape) -> float: GPU memory an untiled decode needs (decode.tiled: auto)


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
