"""Stand-in with the per-video entry point evaluate(video_path, sample_dir)."""

from pathlib import Path

from fake_evalkit_common import last_frame_brightness

CALLS = []


def evaluate(video_path: str, sample_dir: str) -> float:
    assert Path(sample_dir).is_dir(), sample_dir
    CALLS.append((video_path, sample_dir))
    if "broken" in Path(video_path).parent.name:
        raise RuntimeError("evaluator crashed")
    return last_frame_brightness(video_path)
