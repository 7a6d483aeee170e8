"""Random weights at the real shapes, in the real repos' file names, formats, sharding and index files.

    python benchmarks/real_shape_weights.py weights --family wan2.2 --out W [--link-experts]
    python benchmarks/real_shape_weights.py lora --family wan2.2 --out L [--rank 32]
    python benchmarks/real_shape_weights.py check

For the GPU dress rehearsal (issue #14): a user's first real run meets sharded safetensors with their
index, `.pth` files, tokenizer folders and real-size memory, which the tiny twins never show. Every
file is checked against diffsynth's own model registry (the md5 of its keys and shapes that
diffsynth computes for real downloads): no stepscope registration is involved. `check` verifies
that for every component without writing anything (meta tensors), which the CPU tests run.

Covered: Wan2.2-I2V-A14B (two 14B experts in 6 shards each, umT5-xxl .pth, Wan2.1 VAE .pth, the
google/umt5-xxl tokenizer folder; all four hash to diffsynth's registry) and Wan2.1-I2V-14B-720P's
DiT (7 shards), umT5 and VAE. Not yet: Wan2.1's CLIP .pth (the real file also holds the
XLM-RoBERTa text tower, which diffsynth drops on load and has no class for, so its key set cannot
be rebuilt here and its hash would not match), and LTX-2.3 (a 22B DiT of 44 GB plus Gemma-3-12B
of 24 GB exceed the lent machine's 64 GB disk at full size).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

GIB = 1 << 30
# The registry entries the real files hash to (diffsynth 2.1.12's MODEL_CONFIGS).
A14B_DIT = {
    "has_image_input": False, "patch_size": [1, 2, 2], "in_dim": 36, "dim": 5120, "ffn_dim": 13824,
    "freq_dim": 256, "text_dim": 4096, "out_dim": 16, "num_heads": 40, "num_layers": 40, "eps": 1e-06,
    "require_clip_embedding": False,
}
I2V_720P_DIT = {
    "has_image_input": True, "patch_size": [1, 2, 2], "in_dim": 36, "dim": 5120, "ffn_dim": 13824,
    "freq_dim": 256, "text_dim": 4096, "out_dim": 16, "num_heads": 40, "num_layers": 40, "eps": 1e-06,
}
UMT5_VOCAB = 256384


def _meta_state(build) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return dict(build().state_dict())


def dit_state(kwargs: dict) -> dict[str, torch.Tensor]:
    from diffsynth.models.wan_video_dit import WanModel

    return _meta_state(lambda: WanModel(**kwargs))


def text_encoder_state() -> dict[str, torch.Tensor]:
    from diffsynth.models.wan_video_text_encoder import WanTextEncoder

    return _meta_state(WanTextEncoder)


def vae_state() -> dict[str, torch.Tensor]:
    """The Wan2.1_VAE.pth key format: diffsynth's VideoVAE_ keys (its converter adds `model.`)."""
    from diffsynth.models.wan_video_vae import WanVideoVAE

    state = _meta_state(WanVideoVAE)
    return {key.removeprefix("model."): value for key, value in state.items()}


def clip_state() -> dict[str, torch.Tensor]:
    from diffsynth.models.wan_video_image_encoder import WanImageEncoder

    state = _meta_state(WanImageEncoder)
    return {key.removeprefix("model."): value for key, value in state.items()}


def family_files(family: str) -> dict[str, tuple]:
    """relative path -> (state builder, shards, registry model_name) of one family's repo."""
    common = {
        "models_t5_umt5-xxl-enc-bf16.pth": (text_encoder_state, 0, "wan_video_text_encoder"),
        "Wan2.1_VAE.pth": (vae_state, 0, "wan_video_vae"),
    }
    if family == "wan2.2":
        dit = (lambda: dit_state(A14B_DIT), 6, "wan_video_dit")
        return {"high_noise_model": dit, "low_noise_model": dit, **common}
    if family == "wan2.1":
        return {
            ".": (lambda: dit_state(I2V_720P_DIT), 7, "wan_video_dit"),
            **common,
            "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth": (clip_state, 0, "wan_video_image_encoder"),
        }
    raise SystemExit(f"{family}: real-shape weights are written for wan2.2 and wan2.1 only")


def registered(state: dict[str, torch.Tensor], model_name: str) -> bool:
    """Whether diffsynth's own registry knows a file holding exactly these keys and shapes."""
    from diffsynth.configs import MODEL_CONFIGS
    from diffsynth.core.loader.file import hash_state_dict_keys

    digest = hash_state_dict_keys(state)
    return any(c["model_hash"] == digest and c["model_name"] == model_name for c in MODEL_CONFIGS)


def _random_like(value: torch.Tensor, generator: torch.Generator, device: str) -> torch.Tensor:
    dtype = torch.bfloat16 if value.is_floating_point() else value.dtype
    fan_in = value[0].numel() if value.dim() >= 2 else 1
    drawn = torch.randn(value.shape, generator=generator, device=device, dtype=torch.float32)
    return (drawn / math.sqrt(fan_in) if value.dim() >= 2 else 0.02 * drawn).to(dtype).cpu()


def write_shards(state: dict[str, torch.Tensor], folder: Path, shards: int, seed: int, device: str) -> list[Path]:
    """`diffusion_pytorch_model-0000i-of-0000n.safetensors` + its index, as the Wan-AI repos ship."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    keys = list(state)
    sizes = [state[k].numel() * 2 for k in keys]
    per_shard, groups, current, total = sum(sizes) / shards, [[]], 0, 0
    for key, size in zip(keys, sizes, strict=True):
        if current + size > per_shard and len(groups) < shards and groups[-1]:
            groups.append([])
            current = 0
        groups[-1].append(key)
        current += size
        total += size
    generator = torch.Generator(device=device).manual_seed(seed)
    weight_map, paths = {}, []
    for index, group in enumerate(groups, 1):
        name = f"diffusion_pytorch_model-{index:05d}-of-{len(groups):05d}.safetensors"
        save_file({key: _random_like(state[key], generator, device) for key in group}, str(folder / name))
        weight_map.update(dict.fromkeys(group, name))
        paths.append(folder / name)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return paths


def write_pth(state: dict[str, torch.Tensor], path: Path, seed: int, device: str) -> Path:
    generator = torch.Generator(device=device).manual_seed(seed)
    torch.save({key: _random_like(value, generator, device) for key, value in state.items()}, str(path))
    return path


def write_tokenizer(folder: Path) -> None:
    """google/umt5-xxl's folder with its file names; the vocabulary is made here (no hub access)."""
    from stepscope.models.tiny import write_word_tokenizer

    write_word_tokenizer(folder, UMT5_VOCAB)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="PreTrainedTokenizerFast", model_max_length=512)
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def write_family(family: str, out: Path, *, link_experts: bool, device: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for seed, (relative, (build, shards, model_name)) in enumerate(family_files(family).items()):
        state = build()
        if not registered(state, model_name):
            raise SystemExit(f"{relative}: not a file diffsynth's registry knows ({model_name})")
        target = out / relative
        if relative == "low_noise_model" and link_experts:
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted((out / "high_noise_model").iterdir()):
                link = target / path.name
                link.unlink(missing_ok=True)
                os.link(path, link)  # the disk holds one expert; the loader reads two folders
            written[relative] = "hard links to high_noise_model"
            continue
        paths = write_shards(state, target, shards, seed, device) if shards else [write_pth(state, target, seed, device)]
        written[relative] = sum(p.stat().st_size for p in paths) / GIB
        print(f"{relative}: {written[relative]:.1f} GiB", flush=True)
    write_tokenizer(out / "google/umt5-xxl")
    return written


def write_lora(family: str, out: Path, rank: int, device: str) -> list[Path]:
    """VBVR-style LoRAs in diffsynth's key format (lora_A/lora_B per linear of every block) at `rank`."""
    from safetensors.torch import save_file

    kwargs = A14B_DIT if family == "wan2.2" else I2V_720P_DIT
    state = dit_state(kwargs)
    names = sorted(
        key.removesuffix(".weight")
        for key, value in state.items()
        if key.startswith("blocks.") and value.dim() == 2 and (".self_attn." in key or ".cross_attn." in key or ".ffn." in key)
    )
    files = ["high_noise_lora.safetensors", "low_noise_lora.safetensors"] if family == "wan2.2" else ["lora.safetensors"]
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed, file in enumerate(files):
        generator = torch.Generator(device=device).manual_seed(seed)
        tensors = {}
        for name in names:
            rows, cols = state[f"{name}.weight"].shape
            tensors[f"{name}.lora_A.weight"] = (torch.randn(rank, cols, generator=generator, device=device) * 0.01).bfloat16().cpu()
            tensors[f"{name}.lora_B.weight"] = (torch.randn(rows, rank, generator=generator, device=device) * 0.01).bfloat16().cpu()
        save_file(tensors, str(out / file))
        paths.append(out / file)
    return paths


def check() -> dict[str, bool]:
    """Every component of every covered family hashes to diffsynth's registry (nothing written)."""
    results = {}
    for family in ("wan2.2", "wan2.1"):
        for relative, (build, _, model_name) in family_files(family).items():
            results[f"{family}/{relative}"] = registered(build(), model_name)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["weights", "lora", "check"])
    parser.add_argument("--family", default="wan2.2")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--link-experts", action="store_true", help="wan2.2: low_noise_model = hard links")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.command == "check":
        results = check()
        print(json.dumps(results, indent=2))
        return 0 if all(results.values()) else 1
    if args.command == "weights":
        print(json.dumps(write_family(args.family, args.out, link_experts=args.link_experts, device=args.device)))
    else:
        print([str(p) for p in write_lora(args.family, args.out, args.rank, args.device)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
