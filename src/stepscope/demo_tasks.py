"""The demo bench's tasks: each draws one clip of a simple visual-reasoning task with PIL.

Used by `stepscope.bench.generate_demo_bench` (the demo and tests run without the real data) and by
the trained twin's training data (stepscope.training.twin), so both see the same tasks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

Render = Callable[[float], np.ndarray]
RGB = tuple[int, int, int]

_COLOURS: dict[str, RGB] = {
    "red": (220, 40, 40),
    "blue": (40, 80, 220),
    "orange": (240, 140, 30),
    "purple": (140, 60, 200),
}
_GREEN: RGB = (40, 170, 70)
_INK: RGB = (20, 20, 20)


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _lerp_rgb(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(round(_lerp(x, y, t)) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def _pick_colour(rng: np.random.Generator) -> tuple[str, RGB]:
    name = str(rng.choice(list(_COLOURS)))
    return name, _COLOURS[name]


def _painter(size: int, background: RGB, draw: Callable[[ImageDraw.ImageDraw, float], None]) -> Render:
    """Turn a drawing function of t in [0, 1] into a renderer of uint8 (size, size, 3) frames."""

    def render(t: float) -> np.ndarray:
        image = Image.new("RGB", (size, size), background)
        draw(ImageDraw.Draw(image), t)
        return np.asarray(image)

    return render


def _move_to_target(rng: np.random.Generator, size: int, bg: RGB) -> tuple[str, Render]:
    name, colour = _pick_colour(rng)
    side = 0.16 * size
    x0, y0 = rng.uniform(0.05, 0.3) * size, rng.uniform(0.1, 0.74) * size
    x1, y1 = rng.uniform(0.55, 0.79) * size, rng.uniform(0.1, 0.74) * size
    line = max(1, size // 32)

    def draw(d: ImageDraw.ImageDraw, t: float) -> None:
        d.rectangle([x1, y1, x1 + side, y1 + side], outline=_GREEN, width=line)
        x, y = _lerp(x0, x1, t), _lerp(y0, y1, t)
        d.rectangle([x, y, x + side, y + side], fill=colour)

    return f"Move the {name} square onto the green target outline.", _painter(size, bg, draw)


def _fill_circle(rng: np.random.Generator, size: int, bg: RGB) -> tuple[str, Render]:
    name, colour = _pick_colour(rng)
    r = rng.uniform(0.15, 0.3) * size
    cx, cy = rng.uniform(r + 2, size - r - 2), rng.uniform(r + 2, size - r - 2)
    line = max(1, size // 32)

    def draw(d: ImageDraw.ImageDraw, t: float) -> None:
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_lerp_rgb(bg, colour, t), outline=_INK, width=line)

    return f"Fill the outlined circle with {name}.", _painter(size, bg, draw)


def _ball_to_wall(rng: np.random.Generator, size: int, bg: RGB) -> tuple[str, Render]:
    name, colour = _pick_colour(rng)
    r = rng.uniform(0.06, 0.1) * size
    floor = rng.uniform(0.7, 0.85) * size
    wall = size - max(2, size // 16)
    x0, x1 = rng.uniform(0.1, 0.4) * size, wall - r

    def draw(d: ImageDraw.ImageDraw, t: float) -> None:
        d.rectangle([0, floor, size, size], fill=_INK)
        d.rectangle([wall, 0, size, floor], fill=_INK)
        x = _lerp(x0, x1, t)
        d.ellipse([x - r, floor - 2 * r, x + r, floor], fill=colour)

    return (
        f"The {name} ball rolls to the right until it touches the wall.",
        _painter(size, bg, draw),
    )


def _bar_to_mark(rng: np.random.Generator, size: int, bg: RGB) -> tuple[str, Render]:
    name, colour = _pick_colour(rng)
    base, width = 0.9 * size, 0.16 * size
    x = rng.uniform(0.2, 0.64) * size
    h0, h1 = rng.uniform(0.1, 0.3) * size, rng.uniform(0.5, 0.8) * size
    line = max(1, size // 32)

    def draw(d: ImageDraw.ImageDraw, t: float) -> None:
        d.line([x - 0.1 * size, base - h1, x + width + 0.1 * size, base - h1], fill=_INK, width=line)
        d.rectangle([x, base - _lerp(h0, h1, t), x + width, base], fill=colour)

    return f"Grow the {name} bar upward until it reaches the marked line.", _painter(size, bg, draw)


def _shrink_to_match(rng: np.random.Generator, size: int, bg: RGB) -> tuple[str, Render]:
    name, colour = _pick_colour(rng)
    big, small = rng.uniform(0.3, 0.4) * size, rng.uniform(0.1, 0.16) * size
    cx, cy = 0.3 * size, rng.uniform(0.3, 0.7) * size
    rx, ry = 0.8 * size, rng.uniform(0.2, 0.8) * size
    line = max(1, size // 32)

    def draw(d: ImageDraw.ImageDraw, t: float) -> None:
        d.rectangle(
            [rx - small / 2, ry - small / 2, rx + small / 2, ry + small / 2], outline=_INK, width=line
        )
        half = _lerp(big, small, t) / 2
        d.rectangle([cx - half, cy - half, cx + half, cy + half], fill=colour)

    return (
        f"Shrink the {name} square until it is the same size as the small outlined square.",
        _painter(size, bg, draw),
    )


def _drop_to_floor(rng: np.random.Generator, size: int, bg: RGB) -> tuple[str, Render]:
    name, colour = _pick_colour(rng)
    side = rng.uniform(0.12, 0.2) * size
    floor = rng.uniform(0.8, 0.9) * size
    x = rng.uniform(0.1, 0.9) * size - side / 2
    y0 = rng.uniform(0.05, 0.25) * size

    def draw(d: ImageDraw.ImageDraw, t: float) -> None:
        d.rectangle([0, floor, size, size], fill=_INK)
        y = _lerp(y0, floor - side, t)
        d.rectangle([x, y, x + side, y + side], fill=colour)

    return f"The {name} block falls straight down and lands on the floor.", _painter(size, bg, draw)


def _move_to_either_target(rng: np.random.Generator, size: int, bg: RGB) -> tuple[str, Render]:
    """Two valid answers: the square may go to either of two targets; the sample's GT picks one."""
    name, colour = _pick_colour(rng)
    side = 0.16 * size
    x0, y0 = rng.uniform(0.05, 0.25) * size, rng.uniform(0.35, 0.5) * size
    targets = either_targets(rng, size)
    x1, y1 = targets[int(rng.integers(2))]
    line = max(1, size // 32)

    def draw(d: ImageDraw.ImageDraw, t: float) -> None:
        for tx, ty in targets:
            d.rectangle([tx, ty, tx + side, ty + side], outline=_GREEN, width=line)
        x, y = _lerp(x0, x1, t), _lerp(y0, y1, t)
        d.rectangle([x, y, x + side, y + side], fill=colour)

    return f"Move the {name} square onto either green target outline.", _painter(size, bg, draw)


def either_targets(rng: np.random.Generator, size: int) -> list[tuple[float, float]]:
    """Top-left corners of the two targets of the two-answer task (one high, one low, on the right)."""
    x = rng.uniform(0.6, 0.79) * size
    return [(x, rng.uniform(0.05, 0.2) * size), (x, rng.uniform(0.62, 0.79) * size)]


EITHER_TASK = "D-7_move_to_either_target_data-generator"
EITHER_SIDE = 0.16  # target side as a fraction of the frame (for measuring candidate mass)

# Ordered: split i of a demo bench gets the next `tasks_per_split` tasks, so splits never share a task.
DEMO_TASKS: dict[str, Callable[[np.random.Generator, int, RGB], tuple[str, Render]]] = {
    "D-1_move_to_target_data-generator": _move_to_target,
    "D-2_fill_circle_data-generator": _fill_circle,
    "D-3_ball_to_wall_data-generator": _ball_to_wall,
    "D-4_bar_to_mark_data-generator": _bar_to_mark,
    "D-5_shrink_to_match_data-generator": _shrink_to_match,
    "D-6_drop_to_floor_data-generator": _drop_to_floor,
    EITHER_TASK: _move_to_either_target,
}


def render_demo_clip(
    task: str, rng: np.random.Generator, size: int, num_frames: int
) -> tuple[str, np.ndarray]:
    """(prompt, uint8 (T, size, size, 3) frames) of one demo-task clip drawn from `rng`.

    The frames ease from the first frame (t=0) to the solved final frame (t=1) with a smoothstep,
    so objects start and stop gently. Shared by the bench and the trained twin's training data.
    """
    background = tuple(int(v) for v in rng.integers(225, 256, size=3))
    prompt, render = DEMO_TASKS[task](rng, size, background)
    times = np.linspace(0.0, 1.0, num_frames)
    eased = times * times * (3 - 2 * times)
    return prompt, np.stack([render(float(t)) for t in eased])
