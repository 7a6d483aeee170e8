"""LTX-2.3 (22B, joint audio+video) through diffsynth's LTX2AudioVideoPipeline, one-stage image-to-video.

The sampling pieces below mirror ``LTX2AudioVideoPipeline.__call__`` and ``denoise_stage`` of
diffsynth 2.1.12 line by line (units, CFG combination of the (video, audio) pair, the masked
scheduler step that keeps the conditioning frame, decode); the exactness tests fail if they
drift apart.

Differences from Wan that the rest of stepscope sees:

* A state is an `AVLatents` pair: the video latent (B, 128, F, H, W) and the audio latent
  (B, 8, T, 16). Both are denoised together (the DiT attends across them), so both travel
  through the loop; `video_latent` picks the video part for x0_hat records and the frames.
* The conditioning image is not written into the latent: the pipeline keeps a denoise mask
  (0 at the first latent frame when the strength is 1.0) that replaces the frame inside the
  model call and, at each scheduler step, swaps the predicted velocity of that frame for the
  one that leads back to the image latent. `scheduler_step` applies the same mask to the
  state. x0_hat follows the seed's modified pipeline instead: the raw CFG velocity, no mask,
  so latent frame 0 of x0_hat is the model's own estimate (not the image latent), and at the
  last step x0_hat equals the final latent everywhere but frame 0.
* The DiT's patch embedding (`patchify_proj`) is a Linear on already patchified tokens (patch
  size 1), so the token grid is the latent grid: `token_grid` returns it.
* The pipeline runs at ``frame_rate=24`` (``default_fps``): it sets the RoPE time positions and
  the audio length. Videos are written at 16 fps by the caller, like the other families.
* The text encoder is Gemma-3-12B (``google/gemma-3-12b-it-qat-q4_0-unquantized``); prompts are
  padded to 1024 tokens, as LTXVGemmaTokenizer does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from diffsynth.core import ModelConfig
from diffsynth.pipelines.ltx2_audio_video import LTX2AudioVideoPipeline

from stepscope.models.adapter import (
    Prepared,
    StepScopeError,
    local_model_configs,
    signature_defaults,
    uint8_frames,
)
from stepscope.models.ltx_tiny import TinyLTXDims, write_tiny_ltx
from stepscope.models.weight_layouts import LTX23_LAYOUT

LAYOUT = LTX23_LAYOUT
# Order in which the files go to `from_pretrained` (the order of diffsynth's examples).
LOAD_ORDER = (
    "text_encoder",
    "dit",
    "text_encoder_post_modules",
    "video_vae_encoder",
    "video_vae_decoder",
    "audio_vae_decoder",
    "audio_vocoder",
    "audio_vae_encoder",
)

# The negative prompt of the seed's step tool (tools/step_visualization.py, run_ltx), the one the
# paper's step videos were made with. (diffsynth's own default is a longer list; the seed's token
# tool passes none, i.e. diffsynth's ""-default of `__call__`.)
LTX_NEGATIVE_PROMPT = (
    "blurry, out of focus, overexposed, underexposed, low contrast, "
    "washed out colors, excessive noise, grainy texture, poor lighting, "
    "flickering, motion blur, distorted proportions, artifacts, "
    "cartoonish rendering, 3D CGI look, unrealistic materials"
)

# Sampling defaults of the VBVR authors for LTX-2.3 (one-stage, first frame at strength 1.0).
DEFAULT_STEPS = 40
DEFAULT_CFG = 3.0
DEFAULT_FRAME_RATE = 24

CONVERTERS = "diffsynth.utils.state_dict_converters"
TILE_KEYS = ("tile_size_in_pixels", "tile_overlap_in_pixels", "tile_size_in_frames", "tile_overlap_in_frames")


class AVLatents(NamedTuple):
    """One LTX state: video (B, 128, F, H, W) and audio (B, 8, T, 16) latents (or their velocities)."""

    video: torch.Tensor
    audio: torch.Tensor


class LTXFamily:
    """LTX-2.3 one-stage image-to-video; one DiT (``dit``), latents are `AVLatents`."""

    block_list_name = "transformer_blocks"
    frame_multiple = 8
    spatial_multiple = 32
    default_fps = DEFAULT_FRAME_RATE  # the pipeline's frame_rate; videos are written at 16 fps by the caller
    # The seed's settings: diffsynth's LTX-2 cfg 3.0, 40 steps as the seed's README runs LTX-2.3.
    defaults = {"num_inference_steps": DEFAULT_STEPS, "cfg_scale": DEFAULT_CFG}
    experts = ("dit",)
    tiny_lora_match = "attn1.to_q"  # the layers a tiny stand-in LoRA adapts (video self-attention queries)

    def __init__(self, name: str = "ltx2.3"):
        self.name = name
        self.layout = LAYOUT

    # ----- weights -------------------------------------------------------------------------
    def make_tiny_weights(self, out_dir: Path, dims: TinyLTXDims | None = None, seed: int = 0) -> Path:
        """Write a tiny twin in the real folder layout and key formats (stepscope.models.ltx_tiny)."""
        return write_tiny_ltx(Path(out_dir), self.name, dims or TinyLTXDims(), seed)

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

        `sources["text_encoder"]` is the Gemma-3 folder; by default `<weights_dir>/<its repo id>`.
        """
        files, configs = local_model_configs(self.name, weights_dir, self.layout, LOAD_ORDER, vram, sources)
        pipe = LTX2AudioVideoPipeline.from_pretrained(
            torch_dtype=dtype,
            device=device,
            model_configs=configs,
            tokenizer_config=ModelConfig(path=str(files["tokenizer"][0].parent)),
        )
        if pipe.is_ltx25 or not getattr(pipe.dit, "cross_attention_adaln", False):
            raise StepScopeError(
                f"{weights_dir}/transformer.safetensors is not an LTX-2.3 DiT "
                f"({'LTX-2.5' if pipe.is_ltx25 else 'LTX-2'}): download DiffSynth-Studio/LTX-2.3-Repackage"
            )
        missing = [
            name
            for name in (
                "text_encoder",
                "text_encoder_post_modules",
                "video_vae_encoder",
                "video_vae_decoder",
            )
            if getattr(pipe, name) is None
        ]
        if missing:
            raise StepScopeError(
                f"{weights_dir}: diffsynth did not recognise the files for {', '.join(missing)}"
            )
        return pipe

    def load_decoder(self, weights_dir: Path, *, device: str, dtype: torch.dtype):
        """A pipeline holding only the video VAE decoder: step decoding needs nothing else (the
        22B DiT and the 12B Gemma would take minutes and most of the GPU)."""
        decoder = tuple(spec for spec in self.layout if spec.component == "video_vae_decoder")
        _, configs = local_model_configs(self.name, weights_dir, decoder, ["video_vae_decoder"])
        pipe = LTX2AudioVideoPipeline(device=device, torch_dtype=dtype)
        pipe.video_vae_decoder = pipe.download_and_load_models(configs).fetch_model("ltx2_video_vae_decoder")
        if pipe.video_vae_decoder is None:
            raise StepScopeError(
                f"{weights_dir}: diffsynth did not recognise video_vae_decoder.safetensors as an LTX-2 video decoder"
            )
        return pipe

    def lora_targets(self, pipe) -> dict[str, torch.nn.Module]:
        return {"dit": pipe.dit}

    # ----- sampling pieces -------------------------------------------------------------------
    def call_kwargs(self, request: dict[str, Any]) -> dict[str, Any]:
        """Arguments for `pipe(...)` that reproduce a request (also used by our loop).

        One-stage image-to-video: the image is the first frame (index 0) at strength 1.0.
        `num_inference_steps` / `cfg_scale` default to the VBVR authors' 40 / 3.0.
        """
        kwargs = {
            "prompt": request["prompt"],
            "negative_prompt": request.get("negative_prompt", LTX_NEGATIVE_PROMPT),
            "input_images": [request["image"]],
            "input_images_indexes": [0],
            "input_images_strength": float(request.get("image_strength", 1.0)),
            "seed": int(request["seed"]),
            "rand_device": request.get("rand_device", "cpu"),
            "height": int(request["height"]),
            "width": int(request["width"]),
            "num_frames": int(request["num_frames"]),
            "frame_rate": int(request.get("frame_rate", DEFAULT_FRAME_RATE)),
            "cfg_scale": float(request.get("cfg_scale", DEFAULT_CFG)),
            "num_inference_steps": int(request.get("num_inference_steps", DEFAULT_STEPS)),
            "tiled": bool(request.get("tiled", True)),
            "use_two_stage_pipeline": False,
        }
        for key in TILE_KEYS:
            if request.get(key) is not None:
                kwargs[key] = int(request[key])
        return kwargs

    def prepare(self, pipe, call_kwargs: dict[str, Any]) -> Prepared:
        args = signature_defaults(type(pipe).__call__)
        args.update(call_kwargs)
        for flag, why in (
            ("use_two_stage_pipeline", "the two-stage pipeline (upsampler + second denoising stage)"),
            ("use_distilled_pipeline", "the distilled pipeline"),
            ("audio_only", "audio-only generation"),
        ):
            if args.get(flag):
                raise StepScopeError(
                    f"{why} is not supported by stepscope's loop: use the one-stage pipeline"
                )
        # As in LTX2AudioVideoPipeline.__call__ (one stage, no distillation).
        pipe.scheduler.set_timesteps(
            args["num_inference_steps"], denoising_strength=args["denoising_strength"], special_case=None
        )
        posi = {"prompt": args["prompt"]}
        nega = {"negative_prompt": args["negative_prompt"]}
        retake_audio = args["retake_audio"]
        shared = {
            "input_images": args["input_images"],
            "input_images_indexes": args["input_images_indexes"],
            "input_images_strength": args["input_images_strength"],
            "retake_video": args["retake_video"],
            "retake_video_regions": args["retake_video_regions"],
            "retake_audio": (retake_audio, args["audio_sample_rate"]) if retake_audio is not None else None,
            "retake_audio_regions": args["retake_audio_regions"],
            "in_context_videos": args["in_context_videos"],
            "in_context_downsample_factor": args["in_context_downsample_factor"],
            "seed": args["seed"],
            "rand_device": args["rand_device"],
            "height": args["height"],
            "width": args["width"],
            "num_frames": args["num_frames"],
            "frame_rate": args["frame_rate"],
            "auto_duration": args["auto_duration"],
            "auto_duration_min_seconds": args["auto_duration_min_seconds"],
            "auto_duration_max_seconds": args["auto_duration_max_seconds"],
            "audio_only": args["audio_only"],
            "cfg_scale": args["cfg_scale"],
            "tiled": args["tiled"],
            "tile_size_in_pixels": args["tile_size_in_pixels"],
            "tile_overlap_in_pixels": args["tile_overlap_in_pixels"],
            "tile_size_in_frames": args["tile_size_in_frames"],
            "tile_overlap_in_frames": args["tile_overlap_in_frames"],
            "use_two_stage_pipeline": args["use_two_stage_pipeline"],
            "use_distilled_pipeline": args["use_distilled_pipeline"],
            "clear_lora_before_state_two": args["clear_lora_before_state_two"],
            "stage2_spatial_upsample_factor": args["stage2_spatial_upsample_factor"],
            "video_patchifier": pipe.video_patchifier,
            "audio_patchifier": pipe.audio_patchifier,
        }
        for unit in pipe.units:
            shared, posi, nega = pipe.unit_runner(unit, pipe, shared, posi, nega)
        pipe.load_models_to_device(pipe.in_iteration_models)
        if shared.get("positive_only_lora") is not None or shared.get("negative_only_lora") is not None:
            raise StepScopeError(
                "per-branch LoRAs (positive_only_lora / negative_only_lora) are not supported"
            )
        return Prepared(shared=shared, posi=posi, nega=nega, call_kwargs=args)

    def seed_latents(self, pipe, prepared: Prepared, seed: int) -> AVLatents:
        """Initial latents for another seed, drawn as LTX2AudioVideoUnit_NoiseInitializer does.

        Video and audio noise each come from a fresh generator seeded with `seed`. The
        conditioning frame is not written into the latent (the denoise mask handles it).
        """
        shared = prepared.shared
        if seed == prepared.call_kwargs["seed"]:
            return AVLatents(shared["video_latents"].clone(), shared["audio_latents"].clone())
        rand_device = prepared.call_kwargs["rand_device"]
        video = pipe.generate_noise(shared["video_noise"].shape, seed=seed, rand_device=rand_device)
        audio = pipe.generate_noise(shared["audio_noise"].shape, seed=seed, rand_device=rand_device)
        return AVLatents(video, audio)

    def expert_for_step(self, pipe, prepared: Prepared, step: int) -> str:
        return "dit"

    def velocity(
        self,
        pipe,
        prepared: Prepared,
        expert: str,
        latents: AVLatents,
        step: int,
        on_pass: Callable[[str], None],
    ) -> AVLatents:
        """CFG-combined (video, audio) velocity, as `cfg_guided_model_fn` inside `denoise_stage`."""
        models = {name: getattr(pipe, name) for name in pipe.in_iteration_models}
        shared = dict(prepared.shared, video_latents=latents.video, audio_latents=latents.audio)
        timestep = pipe.scheduler.timesteps[step].unsqueeze(0).to(dtype=pipe.torch_dtype, device=pipe.device)
        cfg_scale = prepared.call_kwargs["cfg_scale"]
        on_pass("cond")
        posi = pipe.model_fn(**prepared.posi, **shared, **models, timestep=timestep, progress_id=step)
        if cfg_scale == 1.0:
            return AVLatents(*posi)
        on_pass("uncond")
        nega = pipe.model_fn(**prepared.nega, **shared, **models, timestep=timestep, progress_id=step)
        return AVLatents(*(n + cfg_scale * (p - n) for p, n in zip(posi, nega, strict=True)))

    def scheduler_step(
        self, pipe, prepared: Prepared, velocity: AVLatents, step: int, latents: AVLatents, to_final: bool
    ) -> AVLatents:
        """`BasePipeline.step` for both modalities; with `to_final`, x0_hat as the seed computes it.

        The state step (to_final False) replaces the velocity under a denoise mask (the
        conditioning frame, retakes) by the one that leads back to the conditioning latent,
        exactly as the pipeline does. x0_hat (to_final True) is `scheduler.step(v, t, x,
        to_final=True)` with the raw CFG velocity, as the seed's pipeline records it, so its
        conditioning frame is the model's own estimate.
        """
        if to_final:
            timestep = pipe.scheduler.timesteps[step]
            return AVLatents(
                pipe.scheduler.step(velocity.video, timestep, latents.video, to_final=True),
                pipe.scheduler.step(velocity.audio, timestep, latents.audio, to_final=True),
            )
        shared = prepared.shared
        video = _masked_step(
            pipe,
            latents.video,
            step,
            velocity.video,
            shared.get("denoise_mask_video"),
            shared.get("input_latents_video"),
        )
        audio = _masked_step(
            pipe,
            latents.audio,
            step,
            velocity.audio,
            shared.get("denoise_mask_audio"),
            shared.get("input_latents_audio"),
        )
        return AVLatents(video, audio)

    def video_latent(self, latents: AVLatents) -> torch.Tensor:
        return latents.video

    def token_grid(self, pipe, prepared: Prepared, latents: AVLatents) -> tuple[int, int, int]:
        """(f, h, w) of the DiT's video tokens: the latent grid (LTX patchifies with patch size 1)."""
        return tuple(int(size) for size in latents.video.shape[2:5])

    @torch.no_grad()
    def decode(self, pipe, prepared: Prepared, latents: AVLatents) -> np.ndarray:
        """Video frames exactly as `__call__` decodes them (the audio is not decoded: see `decode_audio`)."""
        args = prepared.call_kwargs
        pipe.load_models_to_device(["video_vae_decoder"])
        video = pipe.video_vae_decoder.decode(
            latents.video,
            tiled=args["tiled"],
            tile_size_in_pixels=args["tile_size_in_pixels"],
            tile_overlap_in_pixels=args["tile_overlap_in_pixels"],
            tile_size_in_frames=args["tile_size_in_frames"],
            tile_overlap_in_frames=args["tile_overlap_in_frames"],
            seed=args["seed"],
            rand_device=args["rand_device"],
        )
        frames = uint8_frames(pipe.vae_output_to_video(video))
        pipe.load_models_to_device([])
        return frames

    def decode_latent(self, pipe, latent: torch.Tensor, settings: dict[str, Any]) -> np.ndarray:
        """Frames of one recorded video latent (an x0_hat), decoded as the run's final video was."""
        args = signature_defaults(LTX2AudioVideoPipeline.__call__)
        args.update(
            tiled=bool(settings.get("tiled", True)),
            seed=settings.get("seed"),
            rand_device=settings.get("rand_device", "cpu"),
        )
        for key in TILE_KEYS:
            if settings.get(key) is not None:
                args[key] = int(settings[key])
        return self.decode(pipe, Prepared({}, {}, {}, call_kwargs=args), AVLatents(latent, None))

    @torch.no_grad()
    def decode_audio(self, pipe, prepared: Prepared, latents: AVLatents) -> tuple[torch.Tensor, int]:
        """The waveform `__call__` returns next to the video: float (channels, samples) and its sample rate."""
        pipe.load_models_to_device(["audio_vae_decoder", "audio_vocoder"])
        audio = pipe.audio_vocoder(pipe.audio_vae_decoder(latents.audio))
        audio = pipe.output_audio_format_check(audio)
        pipe.load_models_to_device([])
        return audio, int(pipe.audio_vocoder.output_sampling_rate)

    def dit_modules(self, pipe) -> dict[str, torch.nn.Module]:
        return self.lora_targets(pipe)

    def patch_embedding(self, dit: torch.nn.Module) -> None:
        """None: `patchify_proj` sees patchified tokens, so the grid comes from `token_grid` instead."""
        return None

    def check_capture_safe(self, pipe, call_kwargs: dict[str, Any]) -> None:
        """Captures reduce the video tokens on the (f, h, w) latent grid: refuse inputs that append
        extra video tokens (reference images at other indexes, in-context videos)."""
        indexes = call_kwargs.get("input_images_indexes") or [0]
        if call_kwargs.get("input_images") and any(index != 0 for index in indexes):
            raise StepScopeError(
                "input images at frame indexes other than 0 add reference tokens to the DiT's video sequence; "
                "captures support the first-frame image only"
            )
        if call_kwargs.get("in_context_videos"):
            raise StepScopeError(
                "in-context videos add tokens to the DiT's video sequence; captures do not support them"
            )


def _masked_step(pipe, latents, step: int, noise_pred, inpaint_mask, input_latents):
    """diffsynth's BasePipeline.step (the velocity under the mask leads back to the input latent)."""
    timestep = pipe.scheduler.timesteps[step]
    if inpaint_mask is not None:
        noise_pred_expected = pipe.scheduler.return_to_timestep(timestep, latents, input_latents)
        noise_pred = pipe.blend_with_mask(noise_pred_expected, noise_pred, inpaint_mask)
    return pipe.scheduler.step(noise_pred, timestep, latents)


LTX23 = LTXFamily("ltx2.3")
