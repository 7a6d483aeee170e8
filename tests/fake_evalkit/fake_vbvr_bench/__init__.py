"""Stand-in for VBVR-EvalKit's package vbvr_bench: VBVRBench(...).evaluate(videos_path, ...).

Follows the real control flow (vbvr_bench/__init__.py): only the In-Domain_50 and
Out-of-Domain_50 folders are read, ``task_list`` restricts the task folders, the evaluator of
each video comes from ``evaluators.get_evaluator`` *outside* the try block (a task without an
evaluator raises TypeError and ends the call), and an error while evaluating one video gives
score 0.0 with an ``error`` entry, counted in the means.
"""

import os

from .evaluators import get_evaluator


class VBVRBench:
    def __init__(self, gt_base_path, output_path="./evaluation_results/", device="cuda", rules_path=None):
        self.gt_base_path = gt_base_path
        self.output_path = output_path
        self.device = device
        os.makedirs(self.output_path, exist_ok=True)

    def build_evaluation_info(self, videos_path, task_list=None, split=None):
        infos = []
        for current_split in [split] if split else ["In-Domain_50", "Out-of-Domain_50"]:
            split_path = os.path.join(videos_path, current_split)
            if not os.path.exists(split_path):
                continue
            for task_name in task_list if task_list else os.listdir(split_path):
                task_path = os.path.join(split_path, task_name)
                if not os.path.isdir(task_path):
                    continue
                for video_file in sorted(f for f in os.listdir(task_path) if f.endswith(".mp4")):
                    video_idx = video_file.replace(".mp4", "")
                    gt = os.path.join(self.gt_base_path, current_split, task_name, video_idx)
                    infos.append(
                        {
                            "split": "In_Domain" if current_split.startswith("In") else "Out_of_Domain",
                            "file_split": current_split,
                            "task_name": task_name,
                            "video_idx": video_idx,
                            "video_path": os.path.join(task_path, video_file),
                            "gt_path": gt,
                        }
                    )
        return infos

    def evaluate(self, videos_path, name=None, task_list=None, split=None, save_detailed=True, **kwargs):
        results = {
            "overall": {},
            "In_Domain": {"scores": []},
            "Out_of_Domain": {"scores": []},
            "detailed": [],
        }
        for info in self.build_evaluation_info(videos_path, task_list, split):
            evaluator = get_evaluator(info["task_name"], self.device)  # TypeError without an evaluator
            try:
                video_result = evaluator.evaluate(info, **kwargs)
            except Exception as e:
                video_result = {"score": 0.0, "error": str(e), "dimensions": {}}
            video_result["video_path"] = info["video_path"]
            video_result["task_name"] = info["task_name"]
            video_result["split"] = info["split"]
            video_result["video_idx"] = info["video_idx"]
            results["detailed"].append(video_result)
            results[info["split"]]["scores"].append(video_result["score"])
        scores = [r["score"] for r in results["detailed"]]
        results["overall"]["mean_score"] = sum(scores) / len(scores) if scores else 0.0
        return results
