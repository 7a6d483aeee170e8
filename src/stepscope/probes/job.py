"""The probe job (the GPU rule): load the model once, let the probe's `run` sweep its conditions on
one input, write a run directory per condition and ``probe.json`` last.

A sweep runs in one `sample_lockstep` call: trajectory 0 is the clean run and trajectory k the k-th
condition, all from the same seed, so every condition shares one model load and one prompt encoding.
Each trajectory is written as an ordinary run directory (docs/records.md).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stepscope.atomic import write_json
from stepscope.errors import StepScopeError
from stepscope.jobs.runs import load_job_pipeline, loop_settings, record_spec, resolve_input, resolve_shape
from stepscope.models.loading import loaded_model_meta
from stepscope.models.registry import get_family
from stepscope.probes.files import PROBE_JSON
from stepscope.probes.registry import get_probe
from stepscope.provenance import package_versions, weights_identity
from stepscope.records import expert_switch_step
from stepscope.sampling.blocks import block_hooks, forward_hooks, num_blocks, pipe_blocks
from stepscope.sampling.context import StepContext
from stepscope.sampling.loop import SampleResult, StepHook, round_shape, sample_lockstep, write_run


@dataclasses.dataclass
class ProbeJob:
    """One probe job's loaded model, input and output folder: what a probe's `run` sweeps with."""

    kind: str
    pipe: Any
    adapter: Any
    settings: dict[str, Any]
    record: Any  # the RecordSpec of every run
    height: int
    width: int
    num_frames: int
    steps: int
    load_s: float
    base_meta: dict[str, Any]
    info: dict[str, Any]  # the probed input (image, prompt, sample_dir)
    seed: int
    out: Path
    labels: dict[str, Any]
    swap_source: dict[str, Any] | None = None

    def sample(
        self,
        trajectories: int,
        hook: StepHook | None = None,
        *,
        info: dict[str, Any] | None = None,
        context: StepContext | None = None,
    ) -> list[SampleResult]:
        """`trajectories` lockstep runs of the job's seed on `info` (default: the probed input)."""
        info = info or self.info
        return sample_lockstep(
            self.pipe,
            self.adapter,
            image=info["image"],
            prompt=info["prompt"],
            seeds=[self.seed] * trajectories,
            num_frames=self.num_frames,
            height=self.height,
            width=self.width,
            num_inference_steps=self.steps,
            **loop_settings(self.settings),
            record=self.record,
            hook=hook,
            context=context,
        )

    def write(
        self,
        result: SampleResult,
        condition: dict[str, Any],
        *,
        info: dict[str, Any] | None = None,
        labels: dict[str, Any] | None = None,
    ) -> None:
        """Write one condition's run directory, named by ``condition["name"]``."""
        info = info or self.info
        meta = {
            **self.base_meta,
            **(self.labels if labels is None else labels),
            "run": condition["name"],
            "image": info["image"],
            "sample_dir": info.get("sample_dir"),
            "gt_num_frames": info.get("gt_num_frames"),
            "probe": {"kind": self.kind, **condition},
        }
        write_run(self.out / condition["name"], result, meta)

    def write_sweep(
        self, results: Sequence[SampleResult], conditions: Sequence[dict[str, Any]], **fields: Any
    ) -> dict[str, Any]:
        """Write each condition's run; returns the probe.json fields of the sweep: its conditions, the
        expert switch step (of the clean run) and `fields`."""
        for result, condition in zip(results, conditions, strict=True):
            self.write(result, condition)
        return {"conditions": conditions, "switch_step": expert_switch_step(results[0].schedule), **fields}

    @contextmanager
    def hooks_on_blocks(self, layers: Iterable[int], make_hook: Callable) -> Iterator[None]:
        """`make_hook(layer, expert)` on the listed blocks of every DiT while the block runs."""
        with forward_hooks(block_hooks(pipe_blocks(self.pipe, self.adapter), layers, make_hook)):
            yield

    def num_blocks(self) -> int:
        return num_blocks(self.pipe, self.adapter)

    def latent_frames(self) -> int:
        """Latent frames of the probed video (after diffsynth's rounding of the frame count)."""
        _, _, frames, _ = round_shape(self.pipe, self.adapter, self.height, self.width, self.num_frames)
        return (frames - 1) // self.adapter.frame_multiple + 1


def resolve_layers(layers: str | Sequence[int] | None, count: int) -> list[int]:
    if layers is None or layers == "all":
        return list(range(count))
    chosen = sorted({int(layer) for layer in layers})
    beyond = [layer for layer in chosen if not 0 <= layer < count]
    if beyond:
        raise StepScopeError(f"layers {beyond} do not exist: the DiT has {count} blocks (0-{count - 1})")
    return chosen


def probe_job(
    *,
    kind: str,
    family: str,
    weights_dir: str,
    loras: list[dict[str, Any]],
    source: dict[str, Any],
    settings: dict[str, Any],
    record: dict[str, Any],
    seed: int,
    spec: dict[str, Any],
    out_dir: str,
    device: dict[str, Any] | None = None,
    labels: dict[str, Any] | None = None,
    swap_source: dict[str, Any] | None = None,
    sources: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run one probe's whole sweep on one input with one model load; write a run directory per
    condition (``clean`` / ``target`` / ``source`` first) and ``probe.json`` last."""
    probe = get_probe(kind)
    started = time.perf_counter()
    labels = dict(labels or {})
    info = resolve_input(source)
    steps = int(settings["steps"])
    record_settings = record_spec(record, steps, int(settings.get("fps", 16)))
    if probe.x0_every_step:
        record_settings = dataclasses.replace(record_settings, x0_steps=None)
    loading = time.perf_counter()
    pipe = load_job_pipeline(family, weights_dir, loras, device or {}, sources)
    load_s = time.perf_counter() - loading
    height, width, num_frames = resolve_shape(settings, info)
    out = Path(out_dir)
    job = ProbeJob(
        kind=kind,
        pipe=pipe,
        adapter=get_family(family),
        settings=settings,
        record=record_settings,
        height=height,
        width=width,
        num_frames=num_frames,
        steps=steps,
        load_s=load_s,
        base_meta={
            "variant_settings": settings,
            "record": record,
            **loaded_model_meta(pipe, weights_identity(weights_dir, sources), load_s),
        },
        info=info,
        seed=int(seed),
        out=out,
        labels=labels,
        swap_source=swap_source,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / PROBE_JSON).unlink(missing_ok=True)
    summary: dict[str, Any] = {
        "kind": kind,
        "spec": spec,
        "labels": labels,
        "seed": int(seed),
        "sample_dir": info.get("sample_dir"),
        "num_steps": job.steps,
        "family": family,
    }
    summary.update(probe.part("run")(job, spec))
    summary["versions"] = package_versions()
    summary["timings"] = {"load_s": job.load_s, "total_s": time.perf_counter() - started}
    write_json(out / PROBE_JSON, summary)
    return summary
