"""Random weights at the real shapes, in the real repos' file names, formats, sharding and index files.

    python benchmarks/real_shape_weights.py weights --family wan2.2 --out W [--link-experts] [--reuse W21]
    python benchmarks/real_shape_weights.py lora --family wan2.2 --out L [--rank 32]
    python benchmarks/real_shape_weights.py check

For the GPU dress rehearsal (issue #14): a user's first real run meets sharded safetensors with their
index, `.pth` files, tokenizer folders and real-size memory, which the tiny twins never show. Every
file is checked against diffsynth's own model registry (the md5 of its keys and shapes that
diffsynth computes for real downloads): no stepscope registration is involved. `check` verifies
that for every component without writing anything (meta tensors), which the CPU tests run.

Covered: Wan2.2-I2V-A14B (two 14B experts in 6 shards each, umT5-xxl .pth, Wan2.1 VAE .pth, the
google/umt5-xxl tokenizer folder), Wan2.1-I2V-14B-720P (DiT in 7 shards, umT5, VAE and the
open-clip XLM-RoBERTa/ViT-H CLIP .pth with both towers, float32 as the real file) and LTX-2.3
(DiffSynth-Studio/LTX-2.3-Repackage's seven files + Gemma-3-12B in 5 shards with its index and a
tokenizer folder; `--gemma-dir` puts Gemma outside the folder, e.g. in /dev/shm, since 38 + 24 GB
exceed the lent machine's 64 GB disk). Every file hashes to diffsynth's registry.
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
WAN_CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
FLOAT32_FILES = {WAN_CLIP_FILE}  # the released CLIP .pth is float32 (4.8 GB)


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


def xlm_roberta_text_shapes(vocab=250002, positions=514, dim=1024, layers=24, out_dim=1024) -> dict[str, tuple]:
    """The CLIP file's text tower (`textual.*`): Wan's XLMRobertaWithHead (wan/modules/xlm_roberta.py,
    clip.py of Wan-Video/Wan2.1). diffsynth drops it on load and cannot build it: its copy of the
    class picks up the vision AttentionBlock defined later in the same module, so it is spelled
    out here; the real file holds it, and diffsynth's hash covers it."""
    shapes = {"token_embedding.weight": (vocab, dim), "type_embedding.weight": (1, dim), "pos_embedding.weight": (positions, dim)}
    for block in range(layers):
        prefix = f"blocks.{block}."
        for name in ("attn.q", "attn.k", "attn.v", "attn.o"):
            shapes[f"{prefix}{name}.weight"], shapes[f"{prefix}{name}.bias"] = (dim, dim), (dim,)
        for name in ("norm1", "norm2"):
            shapes[f"{prefix}{name}.weight"], shapes[f"{prefix}{name}.bias"] = (dim,), (dim,)
        shapes[f"{prefix}ffn.0.weight"], shapes[f"{prefix}ffn.0.bias"] = (4 * dim, dim), (4 * dim,)
        shapes[f"{prefix}ffn.2.weight"], shapes[f"{prefix}ffn.2.bias"] = (dim, 4 * dim), (dim,)
    shapes["norm.weight"], shapes["norm.bias"] = (dim,), (dim,)
    middle = (dim + out_dim) // 2
    shapes["head.0.weight"], shapes["head.2.weight"] = (middle, dim), (out_dim, middle)
    return shapes


def clip_state() -> dict[str, torch.Tensor]:
    """models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth: Wan's XLMRobertaCLIP, both towers
    (the visual tower diffsynth keeps, `textual.*` and `log_scale`)."""
    from diffsynth.models.wan_video_image_encoder import WanImageEncoder

    state = {key.removeprefix("model."): value for key, value in _meta_state(WanImageEncoder).items()}
    for key, shape in xlm_roberta_text_shapes().items():
        state[f"textual.{key}"] = torch.empty(shape, device="meta")
    return state


def ltx_state(model_hash: str) -> dict[str, torch.Tensor]:
    """An LTX-2.3 file's keys: diffsynth's registry entry (class + kwargs) built on meta tensors, its
    keys mapped back to the checkpoint format by the tiny twin's inverse converters (the same
    mappings the CPU tests load through diffsynth's converters)."""
    import importlib

    from diffsynth.configs import MODEL_CONFIGS

    from stepscope.models import ltx_tiny as ltx

    to_file = {
        "ltx2_dit": lambda state: ltx._prefixed(state, "model.diffusion_model."),
        "ltx2_text_encoder_post_modules": ltx._post_module_checkpoint_keys,
        "ltx2_video_vae_encoder": lambda state: ltx._prefixed(state, "vae.encoder.", "vae.per_channel_statistics."),
        "ltx2_video_vae_decoder": lambda state: ltx._prefixed(state, "vae.decoder.", "vae.per_channel_statistics."),
        "ltx2_audio_vae_decoder": lambda state: ltx._prefixed(
            state, "audio_vae.decoder.", "audio_vae.per_channel_statistics."
        ),
        "ltx2_audio_vocoder": lambda state: ltx._prefixed(state, "vocoder."),
        "ltx2_text_encoder": ltx._gemma_checkpoint_keys,
    }
    config = next(c for c in MODEL_CONFIGS if c["model_hash"] == model_hash)
    module, name = config["model_class"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    return to_file[config["model_name"]](_meta_state(lambda: cls(**config.get("extra_kwargs", {}))))


# diffsynth 2.1.12's registry entries of the files of DiffSynth-Studio/LTX-2.3-Repackage (the audio
# VAE decoder is LTX-2's) and of google/gemma-3-12b-it-qat-q4_0-unquantized (5 shards + index).
LTX_FILES = {
    "transformer.safetensors": ("1c55afad76ed33c112a2978550b524d1", 0, "ltx2_dit"),
    "text_encoder_post_modules.safetensors": ("05da2aab1c4b061f72c426311c165a43", 0, "ltx2_text_encoder_post_modules"),
    "video_vae_encoder.safetensors": ("eecdc07c2ec30863b8a2b8b2134036cf", 0, "ltx2_video_vae_encoder"),
    "video_vae_decoder.safetensors": ("deda2f542e17ee25bc8c38fd605316ea", 0, "ltx2_video_vae_decoder"),
    "audio_vae_decoder.safetensors": ("7d7823dde8f1ea0b50fb07ac329dd4cb", 0, "ltx2_audio_vae_decoder"),
    "audio_vocoder.safetensors": ("cd436c99e69ec5c80f050f0944f02a15", 0, "ltx2_audio_vocoder"),
    "google/gemma-3-12b-it-qat-q4_0-unquantized": ("33917f31c4a79196171154cca39f165e", 5, "ltx2_text_encoder"),
}
GEMMA_VOCAB = 262208
SHARD_STEMS = {"ltx2_text_encoder": "model"}  # else diffusion_pytorch_model (the Wan-AI repos)


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
            WAN_CLIP_FILE: (clip_state, 0, "wan_video_image_encoder"),
        }
    if family == "ltx2.3":
        return {
            relative: ((lambda digest=digest: ltx_state(digest)), shards, model_name)
            for relative, (digest, shards, model_name) in LTX_FILES.items()
        }
    raise SystemExit(f"{family}: real-shape weights are written for wan2.2, wan2.1 and ltx2.3")


def registered(state: dict[str, torch.Tensor], model_name: str) -> bool:
    """Whether diffsynth's own registry knows a file holding exactly these keys and shapes."""
    from diffsynth.configs import MODEL_CONFIGS
    from diffsynth.core.loader.file import hash_state_dict_keys

    digest = hash_state_dict_keys(state)
    return any(c["model_hash"] == digest and c["model_name"] == model_name for c in MODEL_CONFIGS)


def _random_like(value: torch.Tensor, generator: torch.Generator, device: str, dtype=torch.bfloat16) -> torch.Tensor:
    dtype = dtype if value.is_floating_point() else value.dtype
    fan_in = value[0].numel() if value.dim() >= 2 else 1
    drawn = torch.randn(value.shape, generator=generator, device=device, dtype=torch.float32)
    return (drawn / math.sqrt(fan_in) if value.dim() >= 2 else 0.02 * drawn).to(dtype).cpu()


def write_shards(
    state: dict[str, torch.Tensor], folder: Path, shards: int, seed: int, device: str, stem: str = "diffusion_pytorch_model"
) -> list[Path]:
    """`{stem}-0000i-of-0000n.safetensors` + `{stem}.safetensors.index.json`, as the Wan-AI (and
    Gemma) repos ship."""
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
        name = f"{stem}-{index:05d}-of-{len(groups):05d}.safetensors"
        save_file({key: _random_like(state[key], generator, device) for key in group}, str(folder / name))
        weight_map.update(dict.fromkeys(group, name))
        paths.append(folder / name)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / f"{stem}.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return paths


def write_safetensors(state: dict[str, torch.Tensor], path: Path, seed: int, device: str) -> Path:
    from safetensors.torch import save_file

    generator = torch.Generator(device=device).manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: _random_like(value, generator, device) for key, value in state.items()}, str(path))
    return path


def write_pth(state: dict[str, torch.Tensor], path: Path, seed: int, device: str, dtype=torch.bfloat16) -> Path:
    generator = torch.Generator(device=device).manual_seed(seed)
    torch.save({key: _random_like(value, generator, device, dtype) for key, value in state.items()}, str(path))
    return path


def write_tokenizer(folder: Path, vocab: int = UMT5_VOCAB, max_length: int = 512) -> None:
    """A tokenizer folder with the real repo's file names (google/umt5-xxl, or Gemma-3's); the
    vocabulary is made here (no hub access)."""
    from stepscope.models.tiny import write_word_tokenizer

    write_word_tokenizer(folder, vocab)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="PreTrainedTokenizerFast", model_max_length=max_length)
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def write_family(
    family: str,
    out: Path,
    *,
    link_experts: bool,
    device: str,
    reuse: Path | None = None,
    elsewhere: dict[str, Path] | None = None,
) -> dict:
    """`reuse`: another family's folder whose single-file components (umT5, VAE) this one shares:
    hard-linked instead of written again (the Wan repos ship the same files). `elsewhere`: relative
    path -> folder written outside `out` and linked into it."""
    elsewhere = elsewhere or {}
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for seed, (relative, (build, shards, model_name)) in enumerate(family_files(family).items()):
        state = build()
        if not registered(state, model_name):
            raise SystemExit(f"{relative}: not a file diffsynth's registry knows ({model_name})")
        target = out / relative
        if reuse is not None and not shards and (reuse / relative).is_file():
            target.unlink(missing_ok=True)
            os.link(reuse / relative, target)
            written[relative] = f"hard link to {reuse / relative}"
            continue
        if relative == "low_noise_model" and link_experts:
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted((out / "high_noise_model").iterdir()):
                link = target / path.name
                link.unlink(missing_ok=True)
                os.link(path, link)  # the disk holds one expert; the loader reads two folders
            written[relative] = "hard links to high_noise_model"
            continue
        if relative in elsewhere:  # written there, linked here (e.g. Gemma in /dev/shm: the disk is short)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                target.unlink()
            target.symlink_to(elsewhere[relative], target_is_directory=True)
            target = elsewhere[relative]
        dtype = torch.float32 if relative in FLOAT32_FILES else torch.bfloat16
        if shards:
            stem = SHARD_STEMS.get(model_name, "diffusion_pytorch_model")
            paths = write_shards(state, target, shards, seed, device, stem)
        elif relative.endswith(".safetensors"):
            paths = [write_safetensors(state, target, seed, device)]
        else:
            paths = [write_pth(state, target, seed, device, dtype)]
        written[relative] = sum(p.stat().st_size for p in paths) / GIB
        print(f"{relative}: {written[relative]:.1f} GiB", flush=True)
        del state
    if family == "ltx2.3":
        write_tokenizer(out / "google/gemma-3-12b-it-qat-q4_0-unquantized", GEMMA_VOCAB, 131072)
    else:
        write_tokenizer(out / "google/umt5-xxl")
    return written


def write_lora(family: str, out: Path, rank: int, device: str) -> list[Path]:
    """VBVR-style LoRAs in diffsynth's key format (lora_A/lora_B per linear of every block) at `rank`."""
    from safetensors.torch import save_file

    if family == "ltx2.3":  # the video stream's attention and FFN linears of diffsynth's LTXModel
        from diffsynth.configs import MODEL_CONFIGS
        from diffsynth.models.ltx2_dit import LTXModel

        kwargs = next(c for c in MODEL_CONFIGS if c["model_hash"] == LTX_FILES["transformer.safetensors"][0])["extra_kwargs"]
        state, blocks, parts = _meta_state(lambda: LTXModel(**kwargs)), "transformer_blocks.", (".attn1.", ".attn2.", ".ff.")
    else:
        state = dit_state(A14B_DIT if family == "wan2.2" else I2V_720P_DIT)
        blocks, parts = "blocks.", (".self_attn.", ".cross_attn.", ".ffn.")
    names = sorted(
        key.removesuffix(".weight")
        for key, value in state.items()
        if key.startswith(blocks) and value.dim() == 2 and any(part in key for part in parts)
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
    for family in ("wan2.2", "wan2.1", "ltx2.3"):
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
    parser.add_argument("--reuse", type=Path, help="hard-link the single-file components found in this folder")
    parser.add_argument("--gemma-dir", type=Path, help="ltx2.3: write the Gemma folder here (e.g. /dev/shm) and link it")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.command == "check":
        results = check()
        print(json.dumps(results, indent=2))
        return 0 if all(results.values()) else 1
    if args.command == "weights":
        elsewhere = {"google/gemma-3-12b-it-qat-q4_0-unquantized": args.gemma_dir} if args.gemma_dir else {}
        written = write_family(
            args.family, args.out, link_experts=args.link_experts, device=args.device, reuse=args.reuse, elsewhere=elsewhere
        )
        print(json.dumps(written))
    else:
        print([str(p) for p in write_lora(args.family, args.out, args.rank, args.device)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
