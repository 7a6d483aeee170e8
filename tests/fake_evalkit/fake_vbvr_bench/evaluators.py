"""Stand-in for vbvr_bench.evaluators: the task -> evaluator map and get_evaluator.

As in VBVR-EvalKit, get_evaluator falls back to the abstract BaseEvaluator for a task missing
from TASK_EVALUATOR_MAP, so instantiating it raises TypeError (VBVRBench.evaluate does not
catch that); BaseEvaluator.evaluate turns any error on one video (e.g. an unreadable file)
into score 0.0 with an ``error`` entry.
"""

import re
from abc import ABC, abstractmethod

from fake_evalkit_common import last_frame_brightness

WEIGHTS = {
    "first_frame_consistency": 0.15,
    "final_frame_accuracy": 0.35,
    "temporal_smoothness": 0.15,
    "visual_quality": 0.10,
    "task_specific": 0.25,
}


class BaseEvaluator(ABC):
    def __init__(self, device="cuda", task_name=""):
        self.device = device
        self.task_name = task_name

    def evaluate(self, eval_info, **kwargs):
        result = {"score": 0.0, "dimensions": {}, "details": {}}
        try:
            task_score = max(0.0, min(1.0, self._evaluate_task_specific(eval_info)))
            if kwargs.get("task_specific_only"):
                result["dimensions"] = {"task_specific": task_score}
                result["score"] = task_score
            else:
                dims = {
                    "first_frame_consistency": 1.0,
                    "final_frame_accuracy": 0.5,
                    "temporal_smoothness": 1.0,
                    "visual_quality": 1.0,
                    "task_specific": task_score,
                }
                result["dimensions"] = dims
                result["score"] = sum(WEIGHTS[k] * v for k, v in dims.items())
        except Exception as e:
            result["error"] = str(e)
            result["score"] = 0.0
        return result

    @abstractmethod
    def _evaluate_task_specific(self, eval_info): ...


class BrightnessEvaluator(BaseEvaluator):
    """Task-specific score = mean brightness of the last frame / 255 (predictable in tests)."""

    def _evaluate_task_specific(self, eval_info):
        return last_frame_brightness(eval_info["video_path"])


class _TaskMap(dict):
    """Stands for the real 100-entry map: every folder named like a VBVR-Bench task
    (``G-3_..._data-generator``) has an evaluator, any other name (custom inputs) has none."""

    PATTERN = re.compile(r"^[GO]-\d+_.+_data-generator$")

    def __contains__(self, task):
        return bool(self.PATTERN.match(str(task)))

    def get(self, task, default=None):
        return BrightnessEvaluator if task in self else default


TASK_EVALUATOR_MAP = _TaskMap()


def get_evaluator(task_name, device="cuda"):
    evaluator_class = TASK_EVALUATOR_MAP.get(task_name, BaseEvaluator)
    return evaluator_class(device=device, task_name=task_name)
