"""Shared helper of the VBVR-EvalKit stand-ins: score = mean brightness of the last frame / 255."""

import imageio.v2 as imageio
import numpy as np


def last_frame_brightness(video_path: str) -> float:
    reader = imageio.get_reader(video_path, format="FFMPEG")
    try:
        last = None
        for frame in reader:
            last = frame
    finally:
        reader.close()
    return float(np.asarray(last, dtype=np.float64)[..., :3].mean() / 255.0)
