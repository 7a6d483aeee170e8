"""Wan2.2-I2V-A14B (two experts) and Wan2.1-I2V-14B-720P through diffsynth's WanVideoPipeline.

The sampling pieces below mirror ``WanVideoPipeline.__call__`` of diffsynth 2.1.12 line by line
(units, expert switch, CFG combination, scheduler step, first-frame pinning, decode); the
exactness tests fail if they drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffsynth.core import ModelConfig
from diffsynth.models.wan_video_dit import WanModel
from diffsynth.models.wan_video_text_encoder import WanTextEncoder
from diffsynth.pipelines.wan_video import WanVideoPipeline
from PIL import Image

from stepscope.atomic import write_json
from stepscope.models.adapter import (
    Prepared,
    StepScopeError,
    local_model_configs,
    signature_defaults,
    uint8_frames,
)
from stepscope.models.tiny import TINY_MANIFEST, write_tiny_component, write_word_tokenizer
from stepscope.models.tiny_modules import TinyWanImageEncoder, TinyWanVideoVAE
from stepscope.models.weight_layouts import WAN21_LAYOUT, WAN22_LAYOUT
from stepscope.models.weight_layouts import WAN_CLIP as CLIP
from stepscope.models.weight_layouts import WAN_TEXT_ENCODER as TEXT_ENCODER
from stepscope.models.weight_layouts import WAN_VAE as VAE

# Keys of WanVideoPipeline.__call__ that go to the positive / negative branches (as in __call__).
POSI_KEYS = ("prompt", "vap_prompt", "tea_cache_l1_thresh", "tea_cache_model_id", "num_inference_steps")
NEGA_KEYS = (
    "negative_prompt",
    "negative_vap_prompt",
    "tea_cache_l1_thresh",
    "tea_cache_model_id",
    "num_inference_steps",
)
NOT_SHARED = {
    "prompt",
    "negative_prompt",
    "vap_prompt",
    "negative_vap_prompt",
    "tea_cache_l1_thresh",
    "tea_cache_model_id",
    "num_inference_steps",
    "switch_DiT_boundary",
    "progress_bar_cmd",
    "output_type",
}

# The VBVR authors' standard Wan negative prompt (Chinese, as shipped with Wan).
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


@dataclass(frozen=True)
class TinyWanDims:
    # head dim 24: Wan's 3-D RoPE needs (head_dim // 3) even.
    dim: int = 48
    ffn_dim: int = 96
    num_heads: int = 2
    num_layers: int = 4
    text_dim: int = 32
    text_layers: int = 2
    vae_dim: int = 8
    vocab: int = 256


class WanFamily:
    """Shared Wan logic; `two_experts` selects Wan2.2-A14B (dit + dit2) vs Wan2.1 (dit + CLIP)."""

    block_list_name = "blocks"
    frame_multiple = 4
    spatial_multiple = 16
    default_fps = 16
    # The seed's settings (diffsynth's WanVideoPipeline defaults, as the VBVR authors ran them).
    tiny_lora_match = "self_attn.q"  # the layers a tiny stand-in LoRA adapts (query projections)
    defaults = {"num_inference_steps": 50, "cfg_scale": 5.0, "sigma_shift": 5.0, "switch_boundary": 0.875}

    def __init__(self, name: str, two_experts: bool):
        self.name = name
        self.two_experts = two_experts
        self.layout = WAN22_LAYOUT if two_experts else WAN21_LAYOUT
        self.experts = ("high_noise", "low_noise") if two_experts else ("dit",)

    # ----- weights -------------------------------------------------------------------------
    def make_tiny_weights(self, out_dir: Path, dims: TinyWanDims = TinyWanDims(), seed: int = 0) -> Path:
        """Write a tiny twin in the real folder layout, through the real state-dict formats."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        manifest = []
        vocab = write_word_tokenizer(out_dir / "google/umt5-xxl", dims.vocab)
        dit_kwargs = {
            "has_image_input": not self.two_experts,
            "patch_size": [1, 2, 2],
            "in_dim": 36,
            "dim": dims.dim,
            "ffn_dim": dims.ffn_dim,
            "freq_dim": 256,
            "text_dim": dims.text_dim,
            "out_dim": 16,
            "num_heads": dims.num_heads,
            "num_layers": dims.num_layers,
            "eps": 1e-06,
        }
        dit_files = (
            [
                "high_noise_model/diffusion_pytorch_model.safetensors",
                "low_noise_model/diffusion_pytorch_model.safetensors",
            ]
            if self.two_experts
            else ["diffusion_pytorch_model.safetensors"]
        )
        for index, relative in enumerate(dit_files):
            manifest.append(
                write_tiny_component(
                    out_dir,
                    relative,
                    WanModel,
                    dit_kwargs,
                    "wan_video_dit",
                    seed=seed + index,
                    converter="diffsynth.utils.state_dict_converters.wan_video_dit.WanVideoDiTStateDictConverter",
                )
            )
        text_kwargs = {
            "vocab": vocab,
            "dim": dims.text_dim,
            "dim_attn": dims.text_dim,
            "dim_ffn": 2 * dims.text_dim,
            "num_heads": 2,
            "num_layers": dims.text_layers,
            "num_buckets": 32,
        }
        manifest.append(
            write_tiny_component(
                out_dir,
                TEXT_ENCODER.patterns[0],
                WanTextEncoder,
                text_kwargs,
                "wan_video_text_encoder",
                seed=seed + 10,
            )
        )
        manifest.append(
            write_tiny_component(
                out_dir,
                VAE.patterns[0],
                TinyWanVideoVAE,
                {"z_dim": 16, "dim": dims.vae_dim},
                "wan_video_vae",
                seed=seed + 11,
                strip_prefix="model.",
                converter="diffsynth.utils.state_dict_converters.wan_video_vae.WanVideoVAEStateDictConverter",
            )
        )
        if not self.two_experts:
            manifest.append(
                write_tiny_component(
                    out_dir,
                    CLIP.patterns[0],
                    TinyWanImageEncoder,
                    {},
                    "wan_video_image_encoder",
                    seed=seed + 12,
                    strip_prefix="model.",
                    storage_dtype=torch.bfloat16,
                    converter="diffsynth.utils.state_dict_converters.wan_video_image_encoder.WanImageEncoderStateDictConverter",
                )
            )
        # Written last: its presence marks a complete twin (the workflow's output file).
        write_json(out_dir / TINY_MANIFEST, {"family": self.name, "components": manifest})
        return out_dir

    def load_pipeline(
        self,
        weights_dir: Path,
        *,
        device: str,
        dtype: torch.dtype,
        vram: dict | None = None,
        sources: dict[str, str | Path] | None = None,
    ):
        """Load through diffsynth's own `from_pretrained` with local paths (never downloads).
        The Wan repos hold every file, so `sources` is unused."""
        order = ["dit", "dit2", "text_encoder", "vae", "image_encoder"]
        files, configs = local_model_configs(self.name, weights_dir, self.layout, order, vram)
        pipe = WanVideoPipeline.from_pretrained(
            torch_dtype=dtype,
            device=device,
            model_configs=configs,
            tokenizer_config=ModelConfig(path=str(files["tokenizer"][0])),
            redirect_common_files=False,
        )
        if self.two_experts and pipe.dit2 is None:
            raise StepScopeError(
                f"{weights_dir}: expected two experts (high_noise_model, low_noise_model), found one"
            )
        return pipe

    def load_decoder(self, weights_dir: Path, *, device: str, dtype: torch.dtype):
        """A pipeline holding only the VAE: step decoding needs nothing else (and 14B DiTs take minutes)."""
        _, configs = local_model_configs(self.name, weights_dir, (VAE,), ["vae"])
        return WanVideoPipeline.from_pretrained(
            torch_dtype=dtype,
            device=device,
            model_configs=configs,
            tokenizer_config=None,
            redirect_common_files=False,
        )

    def untiled_decode_gib(self, latent_shape) -> float:
        """GPU memory an untiled Wan VAE decode needs: 4.4 GiB measured for an 81-frame 480x832
        latent (16, 21, 60, 104) on an H200, scaled by the latent's size."""
        return 4.4 * math.prod(latent_shape[-3:]) / (21 * 60 * 104)

    def decode_latent(self, pipe, latent: torch.Tensor, settings: dict[str, Any]) -> np.ndarray:
        """Frames of one recorded video latent (an x0_hat), decoded as the run's final video was."""
        call_kwargs = {
            "tiled": bool(settings.get("tiled", True)),
            "tile_size": tuple(settings.get("tile_size", (30, 52))),
            "tile_stride": tuple(settings.get("tile_stride", (15, 26))),
        }
        return self.decode(pipe, Prepared({}, {}, {}, call_kwargs=call_kwargs), latent)

    def lora_targets(self, pipe) -> dict[str, torch.nn.Module]:
        targets = {"high_noise": pipe.dit, "low_noise": pipe.dit2} if self.two_experts else {"dit": pipe.dit}
        return targets

    # ----- sampling pieces -------------------------------------------------------------------
    def call_kwargs(self, request: dict[str, Any]) -> dict[str, Any]:
        """Arguments for `pipe(...)` that reproduce a request (also used by our loop)."""
        kwargs = {
            "prompt": request["prompt"],
            "negative_prompt": request.get("negative_prompt", WAN_NEGATIVE_PROMPT),
            "input_image": request["image"],
            "seed": int(request["seed"]),
            "rand_device": request.get("rand_device", "cpu"),
            "height": int(request["height"]),
            "width": int(request["width"]),
            "num_frames": int(request["num_frames"]),
            "cfg_scale": float(request.get("cfg_scale", self.defaults["cfg_scale"])),
            "num_inference_steps": int(request.get("num_inference_steps", self.defaults["num_inference_steps"])),
            "sigma_shift": float(request.get("sigma_shift", self.defaults["sigma_shift"])),
            "tiled": bool(request.get("tiled", True)),
            "tile_size": tuple(request.get("tile_size", (30, 52))),
            "tile_stride": tuple(request.get("tile_stride", (15, 26))),
        }
        if self.two_experts:
            kwargs["switch_DiT_boundary"] = float(request.get("switch_boundary", self.defaults["switch_boundary"]))
        if request.get("tea_cache_l1_thresh") is not None:
            kwargs["tea_cache_l1_thresh"] = request["tea_cache_l1_thresh"]
        return kwargs

    def prepare(self, pipe, call_kwargs: dict[str, Any]) -> Prepared:
        args = signature_defaults(type(pipe).__call__)
        args.update(call_kwargs)
        pipe.scheduler.set_timesteps(
            args["num_inference_steps"],
            denoising_strength=args["denoising_strength"],
            shift=args["sigma_shift"],
        )
        posi = {key: args[key] for key in POSI_KEYS}
        posi["positive"] = True
        nega = {key: args[key] for key in NEGA_KEYS}
        nega["positive"] = False
        shared = {key: value for key, value in args.items() if key not in NOT_SHARED}
        for unit in pipe.units:
            shared, posi, nega = pipe.unit_runner(unit, pipe, shared, posi, nega)
        pipe.load_models_to_device(pipe.in_iteration_models)
        return Prepared(shared=shared, posi=posi, nega=nega, call_kwargs=args)

    def seed_latents(self, pipe, prepared: Prepared, seed: int):
        """Initial latents for another seed, drawn exactly as WanVideoUnit_NoiseInitializer does."""
        if seed == prepared.call_kwargs["seed"]:
            return prepared.shared["latents"].clone()
        latents = pipe.generate_noise(
            prepared.shared["noise"].shape, seed=seed, rand_device=prepared.call_kwargs["rand_device"]
        )
        if "first_frame_latents" in prepared.shared:
            latents[:, :, 0:1] = prepared.shared["first_frame_latents"]
        return latents

    def expert_for_step(self, pipe, prepared: Prepared, step: int) -> str:
        if not self.two_experts:
            return "dit"
        timestep = pipe.scheduler.timesteps[step]
        boundary = prepared.call_kwargs["switch_DiT_boundary"]
        return "low_noise" if timestep.item() < boundary * 1000 and pipe.dit2 is not None else "high_noise"

    def _models(self, pipe, prepared: Prepared, expert: str) -> dict[str, Any]:
        models = {name: getattr(pipe, name) for name in pipe.in_iteration_models}
        if expert == "low_noise":
            if prepared.extras.get("active_expert") != "low_noise":
                pipe.load_models_to_device(
                    pipe.in_iteration_models_2
                )  # once, at the switch, as __call__ does
            models["dit"] = pipe.dit2
            models["vace"] = pipe.vace2
        prepared.extras["active_expert"] = expert
        return models

    def velocity(
        self, pipe, prepared: Prepared, expert: str, latents, step: int, on_pass: Callable[[str], None]
    ):
        models = self._models(pipe, prepared, expert)
        shared = dict(prepared.shared, latents=latents)
        timestep = pipe.scheduler.timesteps[step].unsqueeze(0).to(dtype=pipe.torch_dtype, device=pipe.device)
        cfg_scale = prepared.call_kwargs["cfg_scale"]
        on_pass("cond")
        noise_pred_posi = pipe.model_fn(**models, **shared, **prepared.posi, timestep=timestep)
        if cfg_scale == 1.0:
            return noise_pred_posi
        if prepared.call_kwargs["cfg_merge"]:
            raise StepScopeError("cfg_merge is not supported while recording: the passes must be told apart")
        on_pass("uncond")
        noise_pred_nega = pipe.model_fn(**models, **shared, **prepared.nega, timestep=timestep)
        return noise_pred_nega + cfg_scale * (noise_pred_posi - noise_pred_nega)

    def scheduler_step(self, pipe, prepared: Prepared, velocity, step: int, latents, to_final: bool):
        out = pipe.scheduler.step(velocity, pipe.scheduler.timesteps[step], latents, to_final=to_final)
        if "first_frame_latents" in prepared.shared:
            out[:, :, 0:1] = prepared.shared["first_frame_latents"]
        return out

    def video_latent(self, latents) -> torch.Tensor:
        return latents

    @torch.no_grad()
    def decode(self, pipe, prepared: Prepared, latents) -> np.ndarray:
        args = prepared.call_kwargs
        pipe.load_models_to_device(["vae"])
        video = pipe.vae.decode(
            latents,
            device=pipe.device,
            tiled=args["tiled"],
            tile_size=args["tile_size"],
            tile_stride=args["tile_stride"],
        )
        frames = uint8_frames(pipe.vae_output_to_video(video))
        pipe.load_models_to_device([])
        return frames

    def dit_modules(self, pipe) -> dict[str, torch.nn.Module]:
        return self.lora_targets(pipe)

    def patch_embedding(self, dit: torch.nn.Module) -> torch.nn.Module:
        return dit.patch_embedding

    def check_capture_safe(self, pipe, call_kwargs: dict[str, Any]) -> None:
        if call_kwargs.get("tea_cache_l1_thresh") is not None:
            raise StepScopeError(
                "TeaCache is on (tea_cache_l1_thresh set): it skips the DiT blocks, so hooks would silently "
                "miss steps. Disable TeaCache while capturing hidden states."
            )


def load_image(path: str | Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise StepScopeError(
            f"input image {path} does not exist: check the sample folder or the --image path"
        )
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as error:  # PIL raises several types for bad files
        raise StepScopeError(
            f"input image {path} cannot be read ({error}): replace it with a valid PNG/JPEG"
        ) from error


WAN22 = WanFamily("wan2.2", two_experts=True)
WAN21 = WanFamily("wan2.1", two_experts=False)
