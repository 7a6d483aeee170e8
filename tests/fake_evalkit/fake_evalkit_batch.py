"""Stand-in with the batch entry point evaluate_videos(videos_dir, bench_root)."""

from pathlib import Path

from fake_evalkit_common import last_frame_brightness


def evaluate_videos(videos_dir: str, bench_root: str):
    for video in sorted(Path(videos_dir).glob("*/*/*.mp4")):
        score = last_frame_brightness(str(video))
        yield {
            "split": video.parent.parent.name,
            "task": video.parent.name,
            "sample": video.stem,
            "score": score,
            "dimensions": {"final_frame_accuracy": 1.0 - score},
        }
