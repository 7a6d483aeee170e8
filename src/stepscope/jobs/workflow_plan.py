"""The workflow's plan as a tested object: which runs exist, how they batch, what each job reads,
writes and is told, and the fingerprints that decide what is current (docs/workflow.md).

rules/common.smk builds one `WorkflowPlan` from the validated config and the task sheet, and its
input functions only delegate here, so the plan is unit-tested without Snakemake. The config is the
validated one: every default comes from config/schema/config.schema.yaml, none is repeated here.
Changing what a request holds changes fingerprints, which reruns users' finished work: keep
`sampling_request`, `decode_settings` and `analysis_settings` as they are unless that is the point.
"""

from __future__ import annotations

import fnmatch
import functools
import os
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import pandas as pd

from stepscope import records
from stepscope.bench import SAMPLING_FILES, SCORING_FILES, sample_files
from stepscope.jobs.batch_common import FIGURES_MARKER, decoded_files
from stepscope.jobs.members import AnalysisMember, DecodeMember, DivergenceItem, SampleMember
from stepscope.jobs.plan import (
    RECORDS_FORMAT,
    Batch,
    Plan,
    ResultsLayout,
    StagePlan,
    Unit,
    fingerprint,
    make_batches,
)
from stepscope.jobs.sources import SourcePlan
from stepscope.run_names import ensemble_run, is_seed_run, parse_ensemble_run, run_seed, seed_label, seed_run
from stepscope.stepspec import is_empty, resolve_steps

CUSTOM_SPLIT = "custom"


class Input(Protocol):
    """Anything naming one input of a variant: a Unit, or a rule's wildcards."""

    variant: str
    split: str
    task: str
    sample: str


class WorkflowPlan(SourcePlan):
    """The plan of one validated config over its task sheet (`tasks`: split, task rows)."""

    def __init__(self, config: dict[str, Any], tasks: pd.DataFrame, *, basedir: str, check_disk: bool = True):
        super().__init__(config, basedir=basedir)
        self.tasks = tasks
        # A job process on a cluster node runs the one job it was given: it takes the receipts on
        # disk as they are instead of re-deciding which batches are current.
        self.check_disk = check_disk
        self.layout = ResultsLayout(config["results"])
        self.samples = [f"{index:05d}" for index in range(config["bench"]["samples_per_task"])]
        self.seed_runs = [seed_run(seed) for seed in config["seeds"]]
        self.ensemble_runs = [
            ensemble_run(e["strategy"], e["k"], e["start"], e["end"], e["rescale"]) for e in config["ensembles"]
        ]
        self.custom = {item["name"]: item for item in config["custom"]}
        self.decode_steps = config["decode"]["steps"]
        self.decoding = not is_empty(self.decode_steps)
        self.group_dir = self.results("figures/groups/{variant}/{split}/{task}")

    # ----- runs ----------------------------------------------------------------------------------
    def inputs(self) -> Iterator[tuple[str, str, str]]:
        """(split, task, sample) of every input: bench samples from the sheet, then custom inputs."""
        for row in self.tasks.itertuples():
            for sample in self.samples:
                yield row.split, row.task, sample
        for name in self.custom:
            yield CUSTOM_SPLIT, name, "00000"

    def variant_inputs(self, variant: str) -> Iterator[tuple[str, str, str]]:
        """The inputs a variant runs: every input, or the bench tasks and samples its `task_globs` /
        `samples_per_task` keep (e.g. a second family on a few tasks); custom inputs always."""
        settings = self.config["variants"][variant]
        globs, limit = settings["task_globs"], settings["samples_per_task"]
        for split, task, sample in self.inputs():
            keep_task = globs is None or any(fnmatch.fnmatch(task, g) for g in globs)
            keep_sample = limit is None or int(sample) < limit
            if split == CUSTOM_SPLIT or (keep_task and keep_sample):
                yield split, task, sample

    def units(self) -> Iterator[Unit]:
        """Every run the plan holds."""
        for variant in self.config["run_variants"]:
            for split, task, sample in self.variant_inputs(variant):
                for run in self.seed_runs + self.ensemble_runs:
                    yield Unit(variant, split, task, sample, run)

    def figure_groups(self) -> list[tuple[str, str, str]]:
        return sorted({(unit.variant, unit.split, unit.task) for unit in self.units()})

    def sample_dir(self, item: Input) -> str:
        return f"{self.bench_root()}/{item.split}/{item.task}/{item.sample}"

    def sample_source(self, item: Input) -> dict[str, str]:
        """What a sampling job reads: a bench sample folder or a custom image + prompt."""
        if item.split == CUSTOM_SPLIT:
            custom = self.custom[item.task]
            return {"image": custom["image"], "prompt": custom["prompt"]}
        return {"sample_dir": self.sample_dir(item)}

    def input_files(self, item: Input, names: Sequence[str] = SAMPLING_FILES) -> list[str]:
        """The files of an input a stage reads (`names`: bench.SAMPLING_FILES or SCORING_FILES),
        stamped in its records and receipts: a change to one makes the stage's outputs stale.
        A custom input is its image."""
        if item.split == CUSTOM_SPLIT:
            return [self.custom[item.task]["image"]]
        return sample_files(self.sample_dir(item), names)

    def scored_files(self, unit: Unit) -> list[str]:
        """What the analysis stage stamps: the files the scorer reads (none for custom inputs)."""
        return self.input_files(unit, SCORING_FILES) if self.is_scored(unit) else []

    def sample_inputs(self, item: Input, names: Sequence[str] = SAMPLING_FILES) -> list[str]:
        """What Snakemake waits for: the input's files that exist, or the bench's marker. A missing
        file is no planning error: its run alone fails in the batch job, naming the file and the fix."""
        if item.split == CUSTOM_SPLIT or self.config["bench"]["source"] == "local":
            return [path for path in self.input_files(item, names) if os.path.exists(path)]
        return [self.bench_marker()]

    def bench_plan(self) -> dict[str, Any]:
        """What a failed input's message quotes: where the plan takes bench inputs from."""
        return {
            "sample_sheet": str(self.workflow_path(self.config["bench"]["sample_sheet"])),
            "samples_per_task": self.config["bench"]["samples_per_task"],
        }

    # ----- requests and fingerprints -------------------------------------------------------------
    def run_settings(self, item: Input) -> dict[str, Any]:
        """What a variant's runs of an input are sampled with (not which model, LoRAs or inputs)."""
        settings = dict(self.config["variants"][item.variant])
        for key in ("model", "loras", "task_globs", "samples_per_task"):
            settings.pop(key, None)
        if item.split == CUSTOM_SPLIT and not settings["num_frames"]:
            settings["num_frames"] = self.custom[item.task]["num_frames"]
        return settings

    def run_seeds(self, run: str) -> list[int]:
        """A plain run's seed, or an ensemble's first seed (the first of `seeds`)."""
        return [run_seed(run)] if is_seed_run(run) else [self.config["seeds"][0]]

    @functools.cache  # noqa: B019 - the fingerprints and the sampling members both need it
    def sampling_request(self, unit: Unit) -> dict[str, Any]:
        """Everything a run's records depend on; its fingerprint decides whether they are current."""
        model = self.config["variants"][unit.variant]["model"]
        return {
            "format": RECORDS_FORMAT,
            "family": self.family(unit.variant),
            "weights": self.model_dir(model),
            # only families with several repos have sources (other runs keep their fingerprints)
            **({"weight_sources": sources} if (sources := self.model_sources(model)) else {}),
            "loras": self.lora_params(unit.variant),
            "source": self.sample_source(unit),
            "settings": self.run_settings(unit),
            "record": self.config["record"],
            "seeds": self.run_seeds(unit.run),
            "ensemble": None if is_seed_run(unit.run) else unit.run,
            "device": self.config["device"],
        }

    def decode_settings(self) -> dict[str, Any]:
        decode = self.config["decode"]
        return {"steps": self.decode_steps, "sheet_frames": decode["sheet_frames"], "tiled": decode["tiled"]}

    def figure_layers(self) -> list[int] | None:
        layers = self.config["figures"]["layers"]
        return None if layers == "all" else list(layers)

    def analysis_settings(self) -> dict[str, Any]:
        figures = self.config["figures"]
        return {"layers": self.figure_layers(), "steps": figures["steps"], "max_frames": figures["max_frames"]}

    @functools.cached_property
    def fingerprints(self) -> dict[str, dict[Unit, str]]:
        """Per stage, each run's fingerprint: decoding's holds its run's, analysis holds both."""
        units = list(self.units())
        sampled = {unit: fingerprint(self.sampling_request(unit)) for unit in units}
        decoded = {unit: fingerprint({"decode": self.decode_settings(), "run": sampled[unit]}) for unit in units}
        analysed = {
            unit: fingerprint(
                {
                    "analysis": self.analysis_settings(),
                    "run": sampled[unit],
                    "decode": decoded[unit] if self.decoding else None,
                }
            )
            for unit in units
        }
        return {"sample": sampled, "decode": decoded, "analysis": analysed}

    # ----- outputs -------------------------------------------------------------------------------
    def is_scored(self, unit: Unit) -> bool:
        """Runs with a ground truth to score against (bench samples, not custom inputs)."""
        return unit.split != CUSTOM_SPLIT

    def video_model_name(self, variant: str, run: str) -> str:
        """Model folder name for the VBVR scorer's layout: the variant for the first seed."""
        return variant if run == self.seed_runs[0] else f"{variant}_{run}"

    def final_video(self, unit: Unit) -> str:
        """Where a run's final video is laid out for the VBVR-Bench scorer."""
        return self.layout.video_link(self.video_model_name(unit.variant, unit.run), unit)

    def record_files(self, unit: Unit) -> list[str]:
        """Every record a sampled run promises: one deleted later makes the run (and batch) stale."""
        run_dir = self.layout.run_dir(unit)
        return [f"{run_dir}/{name}" for name in records.RECORD_FILES] + [self.final_video(unit)]

    def decoding_outputs(self, unit: Unit) -> list[str]:
        """Every file a run's decoding promises: its step videos, contact sheet and summary."""
        out = self.layout.decoded_dir(unit)
        steps = resolve_steps(self.decode_steps, self.config["variants"][unit.variant]["steps"])
        return [str(path) for path in decoded_files(out, {"steps": steps})] + [f"{out}/{records.DECODED_SUMMARY}"]

    def analysis_outputs(self, unit: Unit) -> list[str]:
        outputs = [f"{self.layout.figure_dir(unit)}/{FIGURES_MARKER}"]
        return outputs + ([self.layout.score_table(unit)] if self.is_scored(unit) else [])

    def divergence_items(self, batch: Batch) -> list[DivergenceItem]:
        """Per input of a batch with >= 2 seeds: the seed runs whose x0_hats are compared."""
        if len(self.seed_runs) < 2:
            return []
        items = []
        for split, task, sample in batch.inputs:
            if split == CUSTOM_SPLIT:
                continue
            seeds = [
                unit
                for unit in batch.units
                if unit.input_key == (split, task, sample) and unit.run in self.seed_runs
            ]
            labels = dict(variant=batch.variant, split=split, task=task, sample=sample)
            items.append(
                DivergenceItem(
                    labels=labels,
                    keys=[unit.key for unit in seeds],
                    run_dirs=[self.layout.run_dir(unit) for unit in seeds],
                    out=self.layout.divergence_table(**labels),
                )
            )
        return items

    # ----- batches and receipts ------------------------------------------------------------------
    @functools.cached_property
    def batched(self) -> Plan:
        """The batched plan with its stages (receipt generations are decided on first use)."""
        fingerprints = self.fingerprints
        stages = {
            "sample": StagePlan("sample", fingerprints["sample"], self.record_files, inputs=self.input_files),
            "decode": StagePlan("decode", fingerprints["decode"], self.decoding_outputs),
            "analysis": StagePlan(
                "analysis",
                fingerprints["analysis"],
                self.analysis_outputs,
                lambda batch: [item.out for item in self.divergence_items(batch)],
                inputs=self.scored_files,
            ),
        }
        batches = make_batches(list(fingerprints["sample"]), self.config["batch"]["inputs"])
        return Plan(self.layout, batches, stages, check_disk=self.check_disk)

    def batch(self, variant: str, name: str) -> Batch:
        return self.batched.batch(variant, name)

    def receipt(self, stage: str, batch: Batch) -> str:
        return self.batched.receipt(stage, batch)

    def receipts(self, stage: str, batches: Sequence[Batch] | None = None) -> list[str]:
        return self.batched.receipts(stage, batches)

    def batch_sample_inputs(self, units: Sequence[Unit], names: Sequence[str] = SAMPLING_FILES) -> list[str]:
        """What a batch reads of its inputs: bench sample files (or the bench download), custom images."""
        return sorted({path for unit in units for path in self.sample_inputs(unit, names)})

    def analysis_inputs(self, batch: Batch) -> dict[str, Any]:
        inputs = {
            "runs": self.receipt("sample", batch),
            # the ground truth of the runs it scores (custom inputs have none)
            "samples": self.batch_sample_inputs([u for u in batch.units if self.is_scored(u)], SCORING_FILES),
        }
        if self.decoding:
            inputs["decoded"] = self.receipt("decode", batch)
        return inputs

    def batch_minutes(self, stage: str, batch: Batch, attempt: int) -> int:
        """Scheduler runtime of a batch job, growing with each attempt (an ensemble counts K)."""
        per_run = self.config["batch"][f"{stage}_minutes"]
        if stage == "sample":
            count = sum(1 if is_seed_run(u.run) else parse_ensemble_run(u.run).k for u in batch.units)
        else:
            count = len(batch.units)
        return per_run * count * attempt

    # ----- batch members -------------------------------------------------------------------------
    def member_params(self, stage: str, batch: Batch) -> list[dict[str, Any]]:
        """A batch job's members as the dicts its rule passes on (stepscope.jobs.members)."""
        build = {"sample": self.sample_members, "decode": self.decode_members, "analysis": self.analysis_members}
        return [member.as_params() for member in build[stage](batch)]

    def member_identity(self, stage: str, unit: Unit) -> dict[str, Any]:
        """What every member says of its run: key, labels and the stage's fingerprint."""
        return {"key": unit.key, "labels": unit.labels, "fingerprint": self.fingerprints[stage][unit]}

    def sample_members(self, batch: Batch) -> list[SampleMember]:
        members = []
        for unit in batch.units:
            request = self.sampling_request(unit)
            members.append(
                SampleMember(
                    **self.member_identity("sample", unit),
                    source=request["source"],
                    settings=request["settings"],
                    record=request["record"],
                    seeds=request["seeds"],
                    ensemble=request["ensemble"],
                    out_dir=self.layout.run_dir(unit),
                    video_link=self.final_video(unit),
                    inputs=self.input_files(unit),
                )
            )
        return members

    def decode_members(self, batch: Batch) -> list[DecodeMember]:
        return [
            DecodeMember(
                **self.member_identity("decode", unit),
                run_dir=self.layout.run_dir(unit),
                out_dir=self.layout.decoded_dir(unit),
            )
            for unit in batch.units
        ]

    def analysis_members(self, batch: Batch) -> list[AnalysisMember]:
        return [
            AnalysisMember(
                **self.member_identity("analysis", unit),
                run_dir=self.layout.run_dir(unit),
                decoded_dir=self.layout.decoded_dir(unit) if self.decoding else None,
                figure_dir=self.layout.figure_dir(unit),
                score_table=self.layout.score_table(unit) if self.is_scored(unit) else None,
                sample_dir=self.sample_source(unit).get("sample_dir"),
                inputs=self.scored_files(unit),
            )
            for unit in batch.units
        ]

    # ----- groups and final targets --------------------------------------------------------------
    @functools.cached_property
    def group_index(self) -> dict[tuple[str, str, str], tuple[list[Unit], list[Batch]]]:
        """(variant, split, task) -> its single-seed runs and the batches that hold them."""
        index: dict[tuple[str, str, str], tuple[list[Unit], list[Batch]]] = {}
        for variant, batches in self.batched.batches.items():
            for batch in batches:
                for unit in batch.units:
                    if unit.run not in self.seed_runs:
                        continue
                    units, holders = index.setdefault((variant, unit.split, unit.task), ([], []))
                    units.append(unit)
                    if not holders or holders[-1] is not batch:
                        holders.append(batch)
        return index

    def group_run_dirs(self, variant: str, split: str, task: str) -> list[str]:
        """Every single-seed run of one variant x task (the samples x seeds a group figure pools)."""
        return [self.layout.run_dir(unit) for unit in self.group_index[(variant, split, task)][0]]

    def group_receipts(self, variant: str, split: str, task: str) -> list[str]:
        """The sampling receipts of the batches holding a group's runs."""
        return self.receipts("sample", self.group_index[(variant, split, task)][1])

    def evalkit_tables(self) -> list[str]:
        """The VBVR-EvalKit score table, when that scorer is configured."""
        return [self.results("scores/evalkit.parquet")] if "vbvr-evalkit" in self.config["scoring"]["scorers"] else []

    def evalkit_model_map(self) -> dict[str, tuple[str, str]]:
        """Scorer model folder -> (variant, seed label), for the score table."""
        return {
            self.video_model_name(variant, run): (variant, seed_label(run))
            for variant in self.config["run_variants"]
            for run in self.seed_runs + self.ensemble_runs
        }

    def final_targets(self) -> list[str]:
        """Everything the workflow makes but the probes."""
        return [
            self.results("manifest.parquet"),
            *self.receipts("analysis"),
            self.results("tables/summary.csv"),
            self.results("tables/all_runs_succeeded"),
            *[self.group_dir.format(variant=v, split=s, task=t) for v, s, t in self.figure_groups()],
        ]
