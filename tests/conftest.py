"""Shared fixtures: tiny twins are written once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
VBVR_MINI = SHARED / "vbvr-mini"


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """family -> tiny weights folder, made lazily once per session."""
    from stepscope.models.loading import make_tiny_weights

    made: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in made:
            made[family] = make_tiny_weights(family, tmp_path_factory.mktemp(f"tiny-{family}"))
        return made[family]

    return get


@pytest.fixture(scope="session")
def tiny_pipe(tiny_weights):
    """family -> loaded tiny pipeline (CPU, float32), cached per session."""
    from stepscope.models.loading import load_pipeline

    pipes = {}

    def get(family: str):
        if family not in pipes:
            pipes[family] = load_pipeline(family, tiny_weights(family), device="cpu")
        return pipes[family]

    return get


@pytest.fixture(scope="session")
def test_image(tmp_path_factory) -> Path:
    """A 64x64 picture with structure (a red square on a grey background)."""
    array = np.full((64, 64, 3), 200, dtype=np.uint8)
    array[16:32, 8:24] = (220, 30, 30)
    array[40:56, 40:56] = (30, 180, 60)
    path = tmp_path_factory.mktemp("inputs") / "first_frame.png"
    Image.fromarray(array).save(path)
    return path
