"""Tiny twins: small random-initialised diffsynth models in the real weights layout.

diffsynth recognises a weights file by an MD5 of its tensor names and shapes and looks up
the model class and constructor arguments in ``diffsynth.configs.MODEL_CONFIGS``. A tiny
twin's shapes differ from the real ones, so its folder carries ``stepscope_tiny.json``
with the same kind of entries; `register_tiny_configs` adds them to diffsynth's registry
and loading then goes through exactly the code path real weights take.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffsynth.configs import MODEL_CONFIGS
from diffsynth.core.loader.file import hash_model_file
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

TINY_MANIFEST = "stepscope_tiny.json"


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def write_tiny_component(
    out_dir: Path,
    relative_path: str,
    model_class: type,
    kwargs: dict[str, Any],
    model_name: str,
    *,
    seed: int,
    converter: str | None = None,
    strip_prefix: str | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
    storage_dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """Build `model_class(**kwargs)` with seeded random weights and save it as safetensors.

    `strip_prefix` undoes the prefix that diffsynth's state-dict converter adds, so that the
    file has the same key format as the real checkpoint and goes through the same converter.
    `storage_dtype` bfloat16 halves the size of wide components (as real checkpoints are bf16).
    Returns the registry entry for the file.
    """
    if state_dict is None:
        torch.manual_seed(seed)
        model = model_class(**kwargs)
        state_dict = model.state_dict()
    tensors = {}
    for key, value in state_dict.items():
        if strip_prefix and key.startswith(strip_prefix):
            key = key[len(strip_prefix) :]
        tensors[key] = value.detach().to(storage_dtype).contiguous()
    target = Path(out_dir) / relative_path
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target))
    entry = {
        "file": relative_path,
        "model_hash": hash_model_file(str(target)),
        "model_name": model_name,
        "model_class": class_path(model_class),
        "extra_kwargs": kwargs,
    }
    if converter:
        entry["state_dict_converter"] = converter
    return entry


# Where tiny-twin classes lived in earlier stepscope versions (twins made then name these paths).
MOVED_CLASSES = (
    ("stepscope.families.ltx.Tiny", "stepscope.models.ltx_tiny.Tiny"),
    ("stepscope.families.", "stepscope.models."),
)


def current_class_path(path: str) -> str:
    """A manifest's class path, followed through the modules' moves (so older twins keep loading)."""
    for old, new in MOVED_CLASSES:
        if path.startswith(old):
            return new + path[len(old) :]
    return path


def register_tiny_configs(weights_dir: Path) -> list[dict[str, Any]]:
    """Add a tiny twin's entries to diffsynth's model registry (no-op for real weights)."""
    manifest = Path(weights_dir) / TINY_MANIFEST
    if not manifest.exists():
        return []
    entries = json.loads(manifest.read_text())["components"]
    known = {(config["model_hash"], config["model_name"]) for config in MODEL_CONFIGS}
    added = []
    for entry in entries:
        config = {key: value for key, value in entry.items() if key != "file"}
        config["model_class"] = current_class_path(config["model_class"])
        # Files of one architecture (Wan2.2's two experts) share an entry: register it once, or
        # diffsynth loads each such file once per entry and the experts' order gets mixed up.
        if (config["model_hash"], config["model_name"]) not in known:
            MODEL_CONFIGS.append(config)
            added.append(config)
            known.add((config["model_hash"], config["model_name"]))
    return added


def write_word_tokenizer(out_dir: Path, vocab_size: int) -> int:
    """A character-level WordPiece Hugging Face tokenizer folder; returns its vocab size.

    Every lower-case letter, digit and common punctuation mark has a word-start and a
    continuation token, so different prompts give different token ids (the text encoder
    really sees the prompt) while the vocabulary stays tiny. `vocab_size` is the size the
    text encoder's embedding is built with (>= the tokenizer's own vocabulary).
    """
    specials = ["<pad>", "</s>", "<unk>"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"-()")
    tokens = specials + chars + [f"##{c}" for c in chars]
    if len(tokens) > vocab_size:
        raise ValueError(f"tiny tokenizer needs a vocab of at least {len(tokens)}, got {vocab_size}")
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token="<unk>", max_input_chars_per_word=200))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKD(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(str(out_dir))
    return vocab_size
