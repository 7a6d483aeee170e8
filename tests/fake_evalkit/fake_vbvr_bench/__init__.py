"""Stand-in mimicking the public package's API: VBVRBench(...).evaluate(videos_path, ...)."""

import os

from fake_evalkit_common import last_frame_brightness


class VBVRBench:
    def __init__(self, gt_base_path, output_path="./evaluation_results/", device="cuda", rules_path=None):
        self.gt_base_path = gt_base_path
        self.output_path = output_path
        self.device = device

    def evaluate(self, videos_path, name=None, task_list=None, split=None, save_detailed=True, **kwargs):
        detailed = []
        for current_split in ("In-Domain_50", "Out-of-Domain_50"):
            split_path = os.path.join(videos_path, current_split)
            if not os.path.isdir(split_path):
                continue
            for task in sorted(os.listdir(split_path)):
                for video in sorted(os.listdir(os.path.join(split_path, task))):
                    path = os.path.join(split_path, task, video)
                    s = last_frame_brightness(path)
                    if kwargs.get("task_specific_only"):
                        dims, score = {"task_specific": s}, s
                    else:
                        dims = {
                            "first_frame_consistency": 1.0,
                            "final_frame_accuracy": 0.5,
                            "temporal_smoothness": 1.0,
                            "visual_quality": 1.0,
                            "task_specific": s,
                        }
                        score = 0.15 + 0.35 * 0.5 + 0.15 + 0.10 + 0.25 * s
                    detailed.append(
                        {
                            "score": score,
                            "dimensions": dims,
                            "details": {},
                            "video_path": path,
                            "task_name": task,
                            "split": "In_Domain" if current_split.startswith("In") else "Out_of_Domain",
                            "video_idx": video[: -len(".mp4")],
                        }
                    )
        return {"overall": {}, "detailed": detailed}
