"""Foreground masks on the token grid, from a run's first-frame image (for the fg/bg figures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights: the fraction of each output cell covered by each input pixel."""
    edges = np.linspace(0.0, n_in, n_out + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    pix = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, pix + 1) - np.maximum(lo, pix), 0.0, None)
    return overlap / (hi - lo)


def foreground_mask(
    image: str | Path | np.ndarray, height: int, width: int, threshold: float = 0.5
) -> np.ndarray:
    """Boolean (height, width) token-grid mask of the first frame's foreground.

    Foreground pixels are those whose RGB colour differs from the background colour, taken as the
    most common colour of the image; the pixel mask is downsampled to the token grid by area
    average and thresholded (> `threshold`).
    """
    if not isinstance(image, np.ndarray):
        import imageio.v2 as imageio

        image = imageio.imread(image)
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    rgb = image[..., :3].astype(np.uint32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    values, counts = np.unique(packed, return_counts=True)
    background = values[counts.argmax()]
    pixels = (packed != background).astype(np.float64)
    frac = _area_matrix(pixels.shape[0], height) @ pixels @ _area_matrix(pixels.shape[1], width).T
    return frac > threshold

