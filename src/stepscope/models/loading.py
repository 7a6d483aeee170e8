"""Public entry points for weights: tiny twins, pipeline loading, LoRAs.

make_tiny_weights(family, out_dir) -> Path
load_pipeline(family, weights_dir, *, device=None, dtype=None, loras=None, offload="seed",
              lora_mode="hotload", sources=None)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffsynth.core import load_state_dict
from safetensors.torch import save_file

from stepscope.atomic import atomic_path
from stepscope.errors import StepScopeError
from stepscope.models.registry import get_family
from stepscope.models.weights_check import names_bad_weights

# diffsynth VRAM management presets ("device" is the compute device, "dtype" the compute dtype).
OFFLOAD_PRESETS = {
    # The seed's vram_config: weights wait on the CPU and diffsynth moves the models of the current
    # stage onto the device whole (text encoder, then one DiT/expert at a time, then the VAE), so
    # an 80 GB GPU holds every family at 1024x1024; LoRAs can be hot-loaded.
    "seed": {"offload_device": "cpu", "offload_dtype": "dtype", "onload_device": "device", "onload_dtype": "dtype"},
    # Everything resident on the device (the most memory; LoRAs can only be fused).
    "none": None,
    # Weights stay on the CPU and each layer visits the device when used (small GPUs; slowest).
    "cpu": {"offload_device": "cpu", "offload_dtype": None, "onload_device": "cpu", "onload_dtype": None},
}
# How LoRAs are applied: kept beside the weights and added at every forward, as the seed does
# (diffsynth's load_lora under VRAM management), or fused into the weights once (W += alpha*B*A,
# in the weights' dtype: other numbers at bf16 rounding).
LORA_MODES = ("hotload", "fuse")


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA file applied to one expert (`high_noise`, `low_noise`, or `dit`) with weight alpha."""

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


def vram_config(offload: str, device: str, dtype: torch.dtype) -> dict[str, Any] | None:
    """diffsynth's per-model VRAM settings for an offload preset (None: no VRAM management)."""
    if offload not in OFFLOAD_PRESETS:
        raise StepScopeError(
            f"unknown offload preset {offload!r} (device.offload): choose one of {', '.join(OFFLOAD_PRESETS)}"
        )
    preset = OFFLOAD_PRESETS[offload]
    if preset is None:
        return None
    stand_in = {"device": device, "dtype": dtype}
    vram = {key: stand_in.get(value, value) for key, value in preset.items()}
    vram.update(preparing_dtype=dtype, computation_dtype=dtype, preparing_device=device, computation_device=device)
    return {key: value for key, value in vram.items() if value is not None}


def allow_vram_management_on_cpu() -> None:
    """diffsynth's VRAM management calls `torch.<device>.empty_cache()` after offloading, which
    torch.cpu lacks; on the CPU there is no cache to empty, so a no-op makes the same code path
    (and the seed's LoRA hot-loading) run on CPU-only machines. diffsynth itself is untouched."""
    if not hasattr(torch.cpu, "empty_cache"):
        torch.cpu.empty_cache = lambda: None


@names_bad_weights  # a load failure names the broken file and the fix
def load_pipeline(
    family: str,
    weights_dir: str | Path,
    *,
    device: str | None = None,
    dtype: torch.dtype | str | None = None,
    loras: list[LoraSpec] | None = None,
    offload: str = "seed",
    lora_mode: str = "hotload",
    sources: dict[str, str | Path] | None = None,
):
    """Load a family's diffsynth pipeline from local folders; never downloads.

    `sources` gives the folders of a family's other repos (LTX-2.3: {"text_encoder": gemma}).
    Returns the diffsynth pipeline object, callable directly as diffsynth users do; what each
    LoRA matched is in `pipe.stepscope_loras` (see `apply_lora`).
    """
    adapter = get_family(family)
    device = device or default_device()
    dtype = resolve_dtype(dtype, device)
    if lora_mode not in LORA_MODES:
        raise StepScopeError(f"unknown LoRA mode {lora_mode!r} (device.lora_mode): choose one of {LORA_MODES}")
    vram = vram_config(offload, device, dtype)
    if vram is not None and str(device).startswith("cpu"):
        allow_vram_management_on_cpu()
    if loras and lora_mode == "hotload" and vram is None:
        raise StepScopeError(
            "LoRA hot-loading needs diffsynth's VRAM management: set device.offload to 'seed' or 'cpu', "
            "or device.lora_mode to 'fuse'"
        )
    if loras and lora_mode == "fuse" and vram is not None:
        # diffsynth fuses by module name, and VRAM management renames the wrapped blocks' layers:
        # it would silently fuse nothing.
        raise StepScopeError(
            "fusing LoRAs needs the model without VRAM management: set device.offload to 'none' "
            "(or device.lora_mode to 'hotload')"
        )
    pipe = adapter.load_pipeline(Path(weights_dir), device=device, dtype=dtype, vram=vram, sources=sources)
    pipe.stepscope_loras = [apply_lora(pipe, adapter, lora, hotload=lora_mode == "hotload") for lora in loras or []]
    return pipe


def loaded_model_meta(pipe, weights: dict[str, Any] | None, load_s: float) -> dict[str, Any]:
    """What a record's meta.json says about the loaded model: weights identity, LoRAs (what each
    matched), device, dtype and the load time (one load per job)."""
    meta = {"weights": weights} if weights is not None else {}
    return {
        **meta,
        "loras": pipe.stepscope_loras,
        "device": str(pipe.device),
        "dtype": str(pipe.torch_dtype),
        "timings": {"load_s": load_s},
    }


def apply_lora(pipe, adapter, lora: LoraSpec, *, hotload: bool = True) -> dict[str, Any]:
    """Apply a LoRA as the seed does (`pipe.load_lora`), after checking what it targets.

    Like diffsynth, layers the model lacks are skipped, but we report them (returned and kept in
    the records' provenance); a LoRA that matches no layer, or whose shapes do not fit, is refused.
    """
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
    matched, skipped = check_lora_fits(module, converted, path)
    pipe.load_lora(module, str(path), alpha=lora.alpha, hotload=hotload)
    return {
        "path": str(path),
        "target": lora.target,
        "alpha": lora.alpha,
        "mode": "hotload" if hotload else "fuse",
        "layers_matched": len(matched),
        "layers_skipped": skipped,
    }


def lora_layer_names(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Layers by the names LoRA files use. Under VRAM management diffsynth wraps blocks (their
    children then sit under `.module.`) and keeps each wrapped layer's original name in `.name`."""
    names = {}
    for name, layer in module.named_modules():
        original = getattr(layer, "name", None)
        names[original if isinstance(original, str) and original else name] = layer
    return names


def check_lora_fits(
    module: torch.nn.Module, converted: dict[str, torch.Tensor], path: Path
) -> tuple[list[str], list[str]]:
    """(matched, skipped) layer names of a converted LoRA; refuses one that cannot work."""
    layers = {name for name in (key.rsplit(".lora_B.", 1)[0] for key in converted if ".lora_B." in key)}
    if not layers:
        raise StepScopeError(f"LoRA file {path} holds no lora_A/lora_B pairs: is it a LoRA?")
    modules = lora_layer_names(module)
    matched, skipped, problems = [], [], []
    for name in sorted(layers):
        target = modules.get(name)
        down_key = f"{name}.lora_A.weight"
        if target is None or not hasattr(target, "weight") or down_key not in converted:
            skipped.append(name)
            continue
        up, down = converted[f"{name}.lora_B.weight"], converted[down_key]
        if tuple(target.weight.shape[:2]) != (up.shape[0], down.shape[1]):
            problems.append(
                f"{name}: layer is {tuple(target.weight.shape[:2])}, LoRA gives {(up.shape[0], down.shape[1])}"
            )
        else:
            matched.append(name)
    if problems or not matched:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
        reason = shown or f"none of its {len(layers)} layers exists in the model (e.g. {sorted(layers)[0]})"
        raise StepScopeError(
            f"LoRA {path} does not fit the model ({reason}): is it for another family or size?"
        )
    return matched, skipped


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
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, Any] = {}
    for name, layer in lora_layer_names(module).items():
        if isinstance(layer, torch.nn.Linear) and match in name:
            out_features, in_features = layer.weight.shape
            tensors[f"{name}.lora_A.weight"] = torch.randn(rank, in_features, generator=generator) * scale
            tensors[f"{name}.lora_B.weight"] = torch.randn(out_features, rank, generator=generator) * scale
    if not tensors:
        raise StepScopeError(f"no linear layer matches {match!r}")

    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        save_file(tensors, str(tmp))
    return out_path


def cap_gpu_memory() -> None:
    """Honour STEPSCOPE_GPU_MEMORY_GIB (e.g. 80 on a 141 GB H200): rehearse a smaller GPU's limit."""
    gib = os.environ.get("STEPSCOPE_GPU_MEMORY_GIB")
    if gib and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, float(gib) * 2**30 / total))


def limit_cpu_threads(threads: int) -> None:
    """Use the CPU threads the scheduler granted (torch otherwise takes every core, and jobs fight)."""
    torch.set_num_threads(max(1, int(threads)))
