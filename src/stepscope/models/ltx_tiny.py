"""Tiny LTX-2.3 twins: the real diffsynth classes at small widths, written in the real repos' layout.

Loaded by the same code as the real weights (stepscope.models.ltx); used by tests and the demo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffsynth.models.ltx2_audio_vae import (
    LTX2AudioDecoder,
    LTX2Vocoder,
    LTX2VocoderWithBWE,
    MelSTFT,
    UpSample1d,
)
from diffsynth.models.ltx2_audio_vae import PerChannelStatistics as AudioPerChannelStatistics
from diffsynth.models.ltx2_dit import LTXModel
from diffsynth.models.ltx2_text_encoder import LTX2TextEncoder, LTX2TextEncoderPostModules
from diffsynth.models.ltx2_video_vae import (
    LogVarianceType,
    LTX2VideoDecoder,
    LTX2VideoEncoder,
    NormLayerType,
    PaddingModeType,
    PerChannelStatistics,
    PixelNorm,
    _make_encoder_block,
    make_conv_nd,
)
from torch import nn
from transformers import Gemma3Config, Gemma3ForConditionalGeneration

from stepscope.atomic import write_json
from stepscope.models.tiny import TINY_MANIFEST, write_tiny_component, write_word_tokenizer
from stepscope.models.weight_layouts import LTX_GEMMA_DIR as GEMMA_DIR

CONVERTERS = "diffsynth.utils.state_dict_converters"


# ----- tiny twins ---------------------------------------------------------------------------
# Subclasses only where a diffsynth constructor fixes the widths; each keeps the forward code
# and the state-dict layout of its parent.


class TinyLTX2VideoEncoder(LTX2VideoEncoder):
    """LTX-2.3's video encoder (same block kinds and 8x32x32 compression) with small widths.

    LTX2VideoEncoder starts its features at the latent width (128) and doubles them three
    times (1024 at the bottom); here they start at `base_channels` and each stage has
    `layers_per_stage` resnet blocks. The output is still 128 latent channels.
    """

    def __init__(self, base_channels: int = 4, layers_per_stage: int = 1, latent_channels: int = 128):
        nn.Module.__init__(self)
        layers = {"num_layers": layers_per_stage}
        encoder_blocks = [
            ["res_x", layers],
            ["compress_space_res", {"multiplier": 2}],
            ["res_x", layers],
            ["compress_time_res", {"multiplier": 2}],
            ["res_x", layers],
            ["compress_all_res", {"multiplier": 2}],
            ["res_x", layers],
            ["compress_all_res", {"multiplier": 1}],
            ["res_x", layers],
        ]
        self.patch_size = 4
        self.norm_layer = NormLayerType.PIXEL_NORM
        self.latent_channels = latent_channels
        self.latent_log_var = LogVarianceType.UNIFORM
        self._norm_num_groups = self._DEFAULT_NORM_NUM_GROUPS
        self.per_channel_statistics = PerChannelStatistics(latent_channels=latent_channels)
        feature_channels = base_channels
        self.conv_in = make_conv_nd(
            dims=3,
            in_channels=3 * self.patch_size**2,
            out_channels=feature_channels,
            kernel_size=3,
            stride=1,
            padding=1,
            causal=True,
            spatial_padding_mode=PaddingModeType.ZEROS,
        )
        self.down_blocks = nn.ModuleList([])
        for block_name, block_config in encoder_blocks:
            block, feature_channels = _make_encoder_block(
                block_name=block_name,
                block_config=block_config,
                in_channels=feature_channels,
                convolution_dimensions=3,
                norm_layer=self.norm_layer,
                norm_num_groups=self._norm_num_groups,
                spatial_padding_mode=PaddingModeType.ZEROS,
            )
            self.down_blocks.append(block)
        self.conv_norm_out = PixelNorm()
        self.conv_act = nn.SiLU()
        self.conv_out = make_conv_nd(
            dims=3,
            in_channels=feature_channels,
            out_channels=latent_channels + 1,  # UNIFORM log-variance: 128 means + 1 shared logvar
            kernel_size=3,
            padding=1,
            causal=True,
            spatial_padding_mode=PaddingModeType.ZEROS,
        )


class TinyLTX2AudioDecoder(LTX2AudioDecoder):
    """LTX2AudioDecoder ties the width of its latent statistics (128 = 8 channels x 16 mel bins
    of the patchified audio latent) to its first conv width `ch`; this keeps 128 statistics
    with a small `ch`."""

    def __init__(
        self, *, latent_features: int = 128, ch_mult: list[int] | tuple[int, ...] = (1, 2, 4), **kwargs
    ):
        super().__init__(ch_mult=tuple(ch_mult), **kwargs)
        self.per_channel_statistics = AudioPerChannelStatistics(latent_channels=latent_features)


class TinyLTX2VocoderWithBWE(LTX2VocoderWithBWE):
    """LTX-2.3's vocoder + bandwidth extension (same upsampling factors, sample rates and
    stereo 2x64-mel input) with small widths, one resblock kernel, and a short STFT filter."""

    def __init__(
        self,
        vocoder_channels: int = 64,
        bwe_channels: int = 32,
        resblock_kernel_sizes: list[int] | tuple[int, ...] = (3,),
        filter_length: int = 128,
        input_sampling_rate: int = 16000,
        output_sampling_rate: int = 48000,
        hop_length: int = 80,
    ):
        nn.Module.__init__(self)
        kernels = list(resblock_kernel_sizes)
        dilations = [[1, 3, 5]] * len(kernels)
        self.vocoder = LTX2Vocoder(
            resblock_kernel_sizes=kernels,
            upsample_rates=[5, 2, 2, 2, 2, 2],
            upsample_kernel_sizes=[11, 4, 4, 4, 4, 4],
            resblock_dilation_sizes=dilations,
            upsample_initial_channel=vocoder_channels,
            resblock="AMP1",
            activation="snakebeta",
            use_tanh_at_final=False,
            apply_final_activation=True,
            use_bias_at_final=False,
            output_sampling_rate=input_sampling_rate,
        )
        self.bwe_generator = LTX2Vocoder(
            resblock_kernel_sizes=kernels,
            upsample_rates=[6, 5, 2, 2, 2],
            upsample_kernel_sizes=[12, 11, 4, 4, 4],
            resblock_dilation_sizes=dilations,
            upsample_initial_channel=bwe_channels,
            resblock="AMP1",
            activation="snakebeta",
            use_tanh_at_final=False,
            apply_final_activation=False,
            use_bias_at_final=False,
            output_sampling_rate=output_sampling_rate,
        )
        self.mel_stft = MelSTFT(
            filter_length=filter_length, hop_length=hop_length, win_length=filter_length, n_mel_channels=64
        )
        self.input_sampling_rate = input_sampling_rate
        self.output_sampling_rate = output_sampling_rate
        self.hop_length = hop_length
        with torch.device("cpu"):
            self.resampler = UpSample1d(
                ratio=output_sampling_rate // input_sampling_rate, persistent=False, window_type="hann"
            )


class TinyLTX2TextEncoder(LTX2TextEncoder):
    """A small Gemma-3 (text + vision towers) in place of gemma-3-12b, whose config LTX2TextEncoder hard-codes."""

    def __init__(
        self,
        hidden_size: int = 32,
        intermediate_size: int = 64,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 2,
        num_key_value_heads: int = 1,
        head_dim: int = 16,
        vocab_size: int = 256,
        sliding_window: int = 64,
        vision_hidden_size: int = 16,
        vision_layers: int = 1,
    ):
        pattern = ["sliding_attention"] * 5 + ["full_attention"]
        config = Gemma3Config(
            text_config={
                "model_type": "gemma3_text",
                "hidden_size": hidden_size,
                "intermediate_size": intermediate_size,
                "num_hidden_layers": num_hidden_layers,
                "num_attention_heads": num_attention_heads,
                "num_key_value_heads": num_key_value_heads,
                "head_dim": head_dim,
                "query_pre_attn_scalar": head_dim,
                "vocab_size": vocab_size,
                "sliding_window": sliding_window,
                "layer_types": [pattern[i % len(pattern)] for i in range(num_hidden_layers - 1)]
                + ["full_attention"],
                "max_position_embeddings": 2048,
                "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                "rms_norm_eps": 1e-06,
                "hidden_activation": "gelu_pytorch_tanh",
            },
            vision_config={
                "model_type": "siglip_vision_model",
                "hidden_size": vision_hidden_size,
                "intermediate_size": 2 * vision_hidden_size,
                "num_hidden_layers": vision_layers,
                "num_attention_heads": 2,
                "image_size": 28,
                "patch_size": 14,
                "vision_use_head": False,
            },
            mm_tokens_per_image=4,
            # Above every id of the tiny tokenizer, inside the embedding table.
            boi_token_index=vocab_size - 3,
            eoi_token_index=vocab_size - 2,
            image_token_index=vocab_size - 1,
        )
        Gemma3ForConditionalGeneration.__init__(self, config)


@dataclass(frozen=True)
class TinyLTXDims:
    heads: int = 2
    head_dim: int = 16  # video width 32
    audio_head_dim: int = 8  # audio width 16 (video:audio = 2:1, as 4096:2048 in the 22B model)
    layers: int = 4
    text_dim: int = 32
    text_layers: int = 2
    vocab: int = 256
    connector_layers: int = 1
    video_vae_channels: int = 4
    audio_vae_channels: int = 8
    vocoder_channels: int = 64
    bwe_channels: int = 32


def _seeded_state_dict(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """State dict with every parameter re-drawn from one seeded generator (buffers as built).

    Several LTX modules create parameters with ``torch.empty`` (filled from the checkpoint), so
    a freshly built model is not deterministic; drawing everything here makes the twin's bytes
    depend on the seed only. Kaiser/sinc filters (parameters named ``filter``) keep their
    computed values; latent statistics get a positive spread.
    """
    generator = torch.Generator().manual_seed(seed)
    parameters = dict(model.named_parameters())
    state = {}
    for key, value in model.state_dict().items():
        name = key.rsplit(".", 1)[-1]
        if key not in parameters or not value.is_floating_point() or name == "filter" or value.dim() == 0:
            state[key] = value.detach().clone()
            continue
        noise = torch.randn(value.shape, generator=generator)
        if name == "std-of-means":
            drawn = 0.5 + torch.rand(value.shape, generator=generator)
        elif name == "mean-of-means":
            drawn = 0.1 * noise
        elif value.dim() >= 2:
            drawn = noise / math.sqrt(value[0].numel())
        elif name == "weight":
            drawn = 1.0 + 0.1 * noise
        else:
            drawn = 0.1 * noise
        state[key] = drawn.to(value.dtype)
    return state


def _build(model_class: type, kwargs: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return _seeded_state_dict(model_class(**kwargs).eval(), seed)


def _gemma_checkpoint_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' Gemma3ForConditionalGeneration keys -> the keys of the gemma-3 checkpoint files."""
    out = {}
    for key, value in state.items():
        if key.startswith("model.language_model."):
            out["language_model.model." + key[len("model.language_model.") :]] = value
        elif key.startswith("model.vision_tower."):
            out["vision_tower.vision_model." + key[len("model.vision_tower.") :]] = value
        elif key.startswith("model.multi_modal_projector."):
            out["multi_modal_projector." + key[len("model.multi_modal_projector.") :]] = value
        # lm_head is tied to the embeddings and absent from the checkpoint (the converter re-ties it).
    return out


def _post_module_checkpoint_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LTX2TextEncoderPostModules keys -> the keys of text_encoder_post_modules.safetensors."""
    out = {}
    for key, value in state.items():
        if key.startswith("feature_extractor_linear."):
            out["text_embedding_projection." + key[len("feature_extractor_linear.") :]] = value
        elif key.startswith("embeddings_connector."):
            out["model.diffusion_model.video_" + key] = value
        else:  # audio_embeddings_connector.*
            out["model.diffusion_model." + key] = value
    return out


def _prefixed(state: dict[str, torch.Tensor], prefix: str, stats_prefix: str | None = None):
    out = {}
    for key, value in state.items():
        if stats_prefix and key.startswith("per_channel_statistics."):
            out[stats_prefix + key[len("per_channel_statistics.") :]] = value
        else:
            out[prefix + key] = value
    return out


# ----- the family ---------------------------------------------------------------------------


def write_tiny_ltx(out_dir: Path, family: str, dims: TinyLTXDims, seed: int = 0) -> Path:
    """Write a tiny LTX-2.3 twin in the real folder layout and key formats (same converters as real files)."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = []

    def add(relative, model_class, kwargs, model_name, converter, index, keys=None):
        state = _build(model_class, kwargs, seed + index)
        state = keys(state) if keys is not None else state
        manifest.append(
            write_tiny_component(
                out_dir,
                relative,
                model_class,
                kwargs,
                model_name,
                seed=seed + index,
                converter=f"{CONVERTERS}.{converter}",
                state_dict=state,
            )
        )

    video_width = dims.heads * dims.head_dim
    audio_width = dims.heads * dims.audio_head_dim
    vocab = write_word_tokenizer(out_dir / GEMMA_DIR, dims.vocab)
    add(
        f"{GEMMA_DIR}/model-00001-of-00001.safetensors",
        TinyLTX2TextEncoder,
        {
            "hidden_size": dims.text_dim,
            "intermediate_size": 2 * dims.text_dim,
            "num_hidden_layers": dims.text_layers,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": dims.text_dim // 2,
            "vocab_size": vocab,
        },
        "ltx2_text_encoder",
        "ltx2_text_encoder.LTX2TextEncoderStateDictConverter",
        0,
        _gemma_checkpoint_keys,
    )
    add(
        "text_encoder_post_modules.safetensors",
        LTX2TextEncoderPostModules,
        {
            "separated_audio_video": True,
            "embedding_dim_gemma": dims.text_dim,
            "num_layers_gemma": dims.text_layers + 1,  # embeddings + every layer's hidden state
            "video_attention_heads": dims.heads,
            "video_attention_head_dim": dims.head_dim,
            "audio_attention_heads": dims.heads,
            "audio_attention_head_dim": dims.audio_head_dim,
            "num_connector_layers": dims.connector_layers,
            "apply_gated_attention": True,
        },
        "ltx2_text_encoder_post_modules",
        "ltx2_text_encoder.LTX2TextEncoderPostModulesStateDictConverter",
        1,
        _post_module_checkpoint_keys,
    )
    add(
        "transformer.safetensors",
        LTXModel,
        {
            # The LTX-2.3 entries of diffsynth's registry ...
            "apply_gated_attention": True,
            "cross_attention_adaln": True,
            "caption_channels": None,
            # ... at tiny widths (latent widths stay 128 / 128: they are fixed by the VAEs).
            "num_attention_heads": dims.heads,
            "attention_head_dim": dims.head_dim,
            "num_layers": dims.layers,
            "cross_attention_dim": video_width,
            "audio_num_attention_heads": dims.heads,
            "audio_attention_head_dim": dims.audio_head_dim,
            "audio_cross_attention_dim": audio_width,
        },
        "ltx2_dit",
        "ltx2_dit.LTXModelStateDictConverter",
        2,
        lambda state: _prefixed(state, "model.diffusion_model."),
    )
    add(
        "video_vae_encoder.safetensors",
        TinyLTX2VideoEncoder,
        {"base_channels": dims.video_vae_channels, "layers_per_stage": 1},
        "ltx2_video_vae_encoder",
        "ltx2_video_vae.LTX2VideoEncoderStateDictConverter",
        3,
        lambda state: _prefixed(state, "vae.encoder.", "vae.per_channel_statistics."),
    )
    add(
        "video_vae_decoder.safetensors",
        LTX2VideoDecoder,
        {"decoder_version": "ltx-2.3", "base_channels": dims.video_vae_channels},
        "ltx2_video_vae_decoder",
        "ltx2_video_vae.LTX2VideoDecoderStateDictConverter",
        4,
        lambda state: _prefixed(state, "vae.decoder.", "vae.per_channel_statistics."),
    )
    add(
        "audio_vae_decoder.safetensors",
        TinyLTX2AudioDecoder,
        {"ch": dims.audio_vae_channels, "ch_mult": [1, 1, 1], "num_res_blocks": 1},
        "ltx2_audio_vae_decoder",
        "ltx2_audio_vae.LTX2AudioDecoderStateDictConverter",
        5,
        lambda state: _prefixed(state, "audio_vae.decoder.", "audio_vae.per_channel_statistics."),
    )
    add(
        "audio_vocoder.safetensors",
        TinyLTX2VocoderWithBWE,
        {"vocoder_channels": dims.vocoder_channels, "bwe_channels": dims.bwe_channels},
        "ltx2_audio_vocoder",
        "ltx2_audio_vae.LTX2VocoderStateDictConverter",
        6,
        lambda state: _prefixed(state, "vocoder."),
    )
    # Written last and atomically: its presence marks a complete twin (the workflow's output file).
    write_json(out_dir / TINY_MANIFEST, {"family": family, "components": manifest})
    return out_dir

