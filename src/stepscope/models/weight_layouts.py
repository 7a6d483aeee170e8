"""Where each family's weight files live in its Hugging Face repo (no heavy imports).

The loader resolves these globs in a weights folder (stepscope.models.adapter.resolve_layout) and
the download rules fetch exactly the files they match (stepscope.models.hub.allow_patterns), so both
agree by construction; the workflow's parse step reads them without importing torch or diffsynth.
"""

from __future__ import annotations

from dataclasses import dataclass

from stepscope.errors import StepScopeError

MAIN = "main"


@dataclass(frozen=True)
class WeightLayout:
    """One component of a family's weights: globs (first match wins), whether it is needed, and
    the repo (`source`) it comes from; families whose weights span several repos (LTX-2.3 with
    Gemma-3) name the others in SOURCES."""

    component: str
    patterns: tuple[str, ...]
    required: bool = True
    is_dir: bool = False
    source: str = MAIN


# ----- Wan2.2-I2V-A14B and Wan2.1-I2V-14B-720P (Wan-AI repos) ------------------------------------
WAN_TOKENIZER = WeightLayout("tokenizer", ("google/umt5-xxl",), is_dir=True)
WAN_TEXT_ENCODER = WeightLayout(
    "text_encoder", ("models_t5_umt5-xxl-enc-bf16.safetensors", "models_t5_umt5-xxl-enc-bf16.pth")
)
WAN_VAE = WeightLayout("vae", ("Wan2.1_VAE.safetensors", "Wan2.1_VAE.pth"))
WAN_CLIP = WeightLayout(
    "image_encoder",
    (
        "models_clip_open-clip-xlm-roberta-large-vit-huge-14.safetensors",
        "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
    ),
)
WAN22_LAYOUT = (
    WeightLayout("dit", ("high_noise_model/diffusion_pytorch_model*.safetensors",)),
    WeightLayout("dit2", ("low_noise_model/diffusion_pytorch_model*.safetensors",)),
    WAN_TEXT_ENCODER,
    WAN_VAE,
    WAN_TOKENIZER,
)
WAN21_LAYOUT = (
    WeightLayout("dit", ("diffusion_pytorch_model*.safetensors",)),
    WAN_TEXT_ENCODER,
    WAN_VAE,
    WAN_CLIP,
    WAN_TOKENIZER,
)

# ----- LTX-2.3 (DiffSynth-Studio/LTX-2.3-Repackage + the Gemma-3 text encoder) ------------------
LTX_GEMMA_DIR = "google/gemma-3-12b-it-qat-q4_0-unquantized"
LTX_REPACKAGE_DIR = "DiffSynth-Studio/LTX-2.3-Repackage"


def _repackaged(component: str, file_name: str, required: bool = True) -> WeightLayout:
    """A file of DiffSynth-Studio/LTX-2.3-Repackage: at the folder root or under the repo's own path."""
    return WeightLayout(component, (file_name, f"{LTX_REPACKAGE_DIR}/{file_name}"), required)



def _gemma(component: str, patterns: tuple[str, ...], required: bool = True) -> WeightLayout:
    """A file of google/gemma-3-12b-it-qat-q4_0-unquantized (the LTX-2.3 text encoder repo)."""
    return WeightLayout(component, patterns, required, source="text_encoder")


# The files of DiffSynth-Studio/LTX-2.3-Repackage (split from Lightricks/LTX-2.3's
# ltx-2.3-22b-dev.safetensors by diffsynth's split_model_statedicts_ltx2.3.py) that a one-stage
# image-to-video run loads, plus the Gemma-3 text encoder and its tokenizer from their own repo.
# The tokenizer files are those `AutoTokenizer.from_pretrained(local_files_only=True)` opens
# (diffsynth 2.1.12), plus the image-processor files the seed's diffsynth also opens.
LTX23_LAYOUT = (
    _repackaged("dit", "transformer.safetensors"),
    _repackaged("text_encoder_post_modules", "text_encoder_post_modules.safetensors"),
    _repackaged("video_vae_encoder", "video_vae_encoder.safetensors"),
    _repackaged("video_vae_decoder", "video_vae_decoder.safetensors"),
    _repackaged("audio_vae_decoder", "audio_vae_decoder.safetensors"),
    _repackaged("audio_vocoder", "audio_vocoder.safetensors"),
    # Only needed for audio inputs (retake / audio-to-video), which stepscope does not use.
    _repackaged("audio_vae_encoder", "audio_vae_encoder.safetensors", required=False),
    _gemma("text_encoder", ("model-*.safetensors",)),
    _gemma("tokenizer", ("tokenizer.json", "tokenizer.model")),
    _gemma("tokenizer_config", ("tokenizer_config.json",)),
    _gemma("tokenizer_model", ("tokenizer.model",), required=False),
    _gemma("special_tokens_map", ("special_tokens_map.json",), required=False),
    _gemma("added_tokens", ("added_tokens.json",), required=False),
    _gemma("chat_template", ("chat_template.json", "chat_template.jinja"), required=False),
    _gemma("text_encoder_config", ("config.json",), required=False),
    _gemma("image_processor", ("preprocessor_config.json",), required=False),
    _gemma("processor", ("processor_config.json",), required=False),
)

LAYOUTS = {"wan2.2": WAN22_LAYOUT, "wan2.1": WAN21_LAYOUT, "ltx2.3": LTX23_LAYOUT}

# Repos besides the main one, by family: source name -> the repo the seed loads it from. Unless a
# folder is given for it, a source is looked for inside the main folder under its repo id (the
# seed's ./models/<repo_id> layout, and the tiny twins').
SOURCES = {"ltx2.3": {"text_encoder": LTX_GEMMA_DIR}}


def family_sources(family: str) -> dict[str, str]:
    """Extra repos of a family (source name -> default repo id); {} when one repo holds everything."""
    family_layout(family)
    return dict(SOURCES.get(family, {}))


def source_layout(family: str, source: str = MAIN) -> tuple[WeightLayout, ...]:
    """The components one repo of a family provides."""
    layout = tuple(spec for spec in family_layout(family) if spec.source == source)
    if not layout:
        raise StepScopeError(f"{family} has no weights source {source!r}: choose one of {[MAIN, *SOURCES.get(family, {})]}")
    return layout


def family_layout(family: str) -> tuple[WeightLayout, ...]:
    """The weights layout of a family; unknown names fail with the list of known ones."""
    try:
        return LAYOUTS[family]
    except KeyError:
        raise StepScopeError(f"unknown model family {family!r}: choose one of {', '.join(LAYOUTS)}") from None
