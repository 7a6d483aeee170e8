"""Public entry points for weights: tiny twins, pipeline loading, LoRAs.

make_tiny_weights(family, out_dir) -> Path
load_pipeline(family, weights_dir, *, device=None, dtype=None, loras=None, vram=None)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import StepScopeError
from .families import get_family
from .weights_check import names_bad_weights

OFFLOAD_PRESETS = {
    # diffsynth VRAM management: keep weights on CPU, move each layer to the GPU when used.
    "none": None,
    "cpu": {"offload_device": "cpu", "offload_dtype": None, "onload_device": "cpu", "onload_dtype": None},
}


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA file fused into one expert (`high_noise`, `low_noise`, or `dit`) with weight alpha."""

    path: Path
    target: str = "dit"
    alpha: float = 1.0


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    """bf16 on GPUs (as the VBVR authors ran), float32 on CPU (exact, and bf16 is slow there)."""
    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}


def resolve_dtype(dtype: torch.dtype | str | None, device: str) -> torch.dtype:
    """A dtype given by name (config) or object; None means the device's default."""
    if isinstance(dtype, str):
        dtype = DTYPES[dtype]
    return dtype or default_dtype(device)


def make_tiny_weights(family: str, out_dir: str | Path) -> Path:
    """Write the tiny twin of `family` into `out_dir` (real folder layout, random weights)."""
    return get_family(family).make_tiny_weights(Path(out_dir))


@names_bad_weights  # a load failure names the broken file and the fix
def load_pipeline(
    family: str,
    weights_dir: str | Path,
    *,
    device: str | None = None,
    dtype: torch.dtype | str | None = None,
    loras: list[LoraSpec] | None = None,
    offload: str = "none",
):
    """Load a family's diffsynth pipeline from a local folder; never downloads.

    Returns the diffsynth pipeline object, callable directly as diffsynth users do.
    """
    adapter = get_family(family)
    device = device or default_device()
    dtype = resolve_dtype(dtype, device)
    if offload not in OFFLOAD_PRESETS:
        raise StepScopeError(
            f"unknown offload preset {offload!r}: choose one of {', '.join(OFFLOAD_PRESETS)}"
        )
    vram = OFFLOAD_PRESETS[offload]
    if vram is not None:
        vram = {
            **vram,
            "preparing_dtype": dtype,
            "computation_dtype": dtype,
            "preparing_device": device,
            "computation_device": device,
        }
        vram = {key: value for key, value in vram.items() if value is not None}
    pipe = adapter.load_pipeline(Path(weights_dir), device=device, dtype=dtype, vram=vram)
    for lora in loras or []:
        apply_lora(pipe, adapter, lora)
    return pipe


def apply_lora(pipe, adapter, lora: LoraSpec) -> None:
    """Fuse a LoRA after checking that every layer it targets exists with matching shapes.

    diffsynth's loader silently skips layers it cannot find, which would turn a wrong LoRA
    into a no-op; we refuse instead.
    """
    from diffsynth.core import load_state_dict

    path = Path(lora.path)
    if not path.is_file():
        raise StepScopeError(
            f"LoRA file {path} does not exist: download it (workflow download rule) or fix the path"
        )
    targets = adapter.lora_targets(pipe)
    if lora.target not in targets:
        raise StepScopeError(
            f"LoRA target {lora.target!r} is not part of {adapter.name}: choose one of {sorted(targets)}"
        )
    module = targets[lora.target]
    state = load_state_dict(str(path), torch_dtype=pipe.torch_dtype, device="cpu")
    converted = pipe.lora_loader(torch_dtype=pipe.torch_dtype, device="cpu").convert_state_dict(state)
    check_lora_fits(module, converted, path)
    pipe.load_lora(module, str(path), alpha=lora.alpha)


def check_lora_fits(module: torch.nn.Module, converted: dict[str, torch.Tensor], path: Path) -> None:
    layers = {name for name in (key.rsplit(".lora_B.", 1)[0] for key in converted if ".lora_B." in key)}
    if not layers:
        raise StepScopeError(f"LoRA file {path} holds no lora_A/lora_B pairs: is it a LoRA?")
    modules = dict(module.named_modules())
    problems = []
    for name in sorted(layers):
        target = modules.get(name)
        up, down = converted[f"{name}.lora_B.weight"], converted[f"{name}.lora_A.weight"]
        if target is None or not hasattr(target, "weight"):
            problems.append(f"{name}: no such layer")
        elif tuple(target.weight.shape[:2]) != (up.shape[0], down.shape[1]):
            problems.append(
                f"{name}: layer is {tuple(target.weight.shape[:2])}, LoRA gives {(up.shape[0], down.shape[1])}"
            )
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
        raise StepScopeError(
            f"LoRA {path} does not fit the model ({shown}): is it for another family or size?"
        )


def make_tiny_lora(
    module: torch.nn.Module,
    out_path: str | Path,
    *,
    rank: int = 4,
    seed: int = 0,
    scale: float = 0.05,
    match: str = "self_attn.q",
) -> Path:
    """A random LoRA (diffsynth key format) for the linear layers whose name contains `match`."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, Any] = {}
    for name, layer in module.named_modules():
        if isinstance(layer, torch.nn.Linear) and match in name:
            out_features, in_features = layer.weight.shape
            tensors[f"{name}.lora_A.weight"] = torch.randn(rank, in_features, generator=generator) * scale
            tensors[f"{name}.lora_B.weight"] = torch.randn(out_features, rank, generator=generator) * scale
    if not tensors:
        raise StepScopeError(f"no linear layer matches {match!r}")
    from .atomic import atomic_path

    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        save_file(tensors, str(tmp))
    return out_path


def limit_cpu_threads(threads: int) -> None:
    """Use the CPU threads the scheduler granted (torch otherwise takes every core, and jobs fight)."""
    torch.set_num_threads(max(1, int(threads)))
