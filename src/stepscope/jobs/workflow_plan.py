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
from pathlib import Path
from typing import Any, NoReturn, Protocol

import pandas as pd

from stepscope import records
from stepscope.bench import SAMPLE_FILES, SAMPLING_FILES, SCORING_FILES, sample_files, sample_folders
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
from stepscope.models.hub import allow_patterns
from stepscope.models.weight_layouts import family_sources
from stepscope.run_names import ensemble_run, is_seed_run, parse_ensemble_run, run_seed, seed_label, seed_run
from stepscope.sampling.ensemble import EnsembleSpec
from stepscope.stepspec import is_empty, parse_steps, resolve_steps

CUSTOM_SPLIT = "custom"
SOURCE_MARKER = ".stepscope_source.json"  # written last by a download (or the demo bench)
TINY_MARKER = "stepscope_tiny.json"
FAMILY_SOURCE_REVISION = "main"  # a family's other repo (LTX-2.3: Gemma-3) as the seed loads it


class Input(Protocol):
    """Anything naming one input of a variant: a Unit, or a rule's wildcards."""

    variant: str
    split: str
    task: str
    sample: str


def config_error(key: str, message: str) -> NoReturn:
    raise ValueError(f"config error at `{key}`: {message}")


def slug(repo_id: str) -> str:
    """A repo id as one path component (owner--name)."""
    owner, _, name = repo_id.partition("/")
    return f"{owner}--{name}" if name else owner


def check_config(config: dict[str, Any]) -> None:
    """Cross-references the schema cannot express, checked at parse time with the key named."""
    for name in config["run_variants"]:
        if name not in config["variants"]:
            config_error("run_variants", f"unknown variant {name!r}; defined: {sorted(config['variants'])}")
    for name, variant in config["variants"].items():
        if variant["model"] not in config["models"]:
            config_error(
                f"variants.{name}.model", f"unknown model {variant['model']!r}; defined: {sorted(config['models'])}"
            )
        for index, lora in enumerate(variant["loras"]):
            key = f"variants.{name}.loras[{index}]"
            if lora["lora"] not in config["loras"]:
                config_error(key, f"unknown LoRA {lora['lora']!r}; defined: {sorted(config['loras'])}")
            if lora["file"] not in config["loras"][lora["lora"]]["files"]:
                config_error(key, f"file {lora['file']!r} is not listed in loras.{lora['lora']}.files")
    for name, model in config["models"].items():
        known = family_sources(model["family"])
        unknown = set(model["sources"]) - set(known)
        if unknown:
            config_error(
                f"models.{name}.sources",
                f"{sorted(unknown)} is not a weights source of {model['family']}; known: {sorted(known)}",
            )
        if not model["tiny"] and not model["local_path"] and not model.get("repo_id"):
            config_error(f"models.{name}", "give repo_id (download), local_path, or tiny: true")
    device = config["device"]
    with_loras = any(config["variants"][v]["loras"] for v in config["run_variants"])
    if with_loras and (device["lora_mode"] == "hotload") == (device["offload"] == "none"):
        config_error(
            "device.lora_mode",
            f"{device['lora_mode']!r} does not go with device.offload {device['offload']!r}: "
            "hotload needs offload seed or cpu (diffsynth's VRAM management), fuse needs offload none",
        )
    steps = [config["variants"][name]["steps"] for name in config["run_variants"]]
    for key, spec in (
        ("record.capture_steps", config["record"]["capture_steps"]),
        ("record.x0_steps", config["record"]["x0_steps"]),
        ("record.map_steps", config["record"]["map_steps"]),
        ("decode.steps", config["decode"]["steps"]),
        ("figures.steps", config["figures"]["steps"]),
    ):
        try:
            for count in steps:
                parse_steps(spec, count)
        except ValueError as error:
            config_error(key, str(error))
    for index, ensemble in enumerate(config["ensembles"]):
        try:
            EnsembleSpec(ensemble["strategy"], ensemble["k"], ensemble["start"], ensemble["end"], ensemble["rescale"])
        except ValueError as error:
            config_error(f"ensembles[{index}]", str(error))


def workflow_path(path: str | os.PathLike, basedir: str | os.PathLike) -> Path:
    """A config path as given, or relative to the workflow's folder when it is not found there."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    return Path(basedir) / path


def select_tasks(sheet: pd.DataFrame, bench: dict[str, Any]) -> pd.DataFrame:
    """The task sheet's rows the config's bench splits and task globs keep."""
    sheet = sheet[sheet["split"].isin(bench["splits"])]
    keep = sheet["task"].apply(lambda task: any(fnmatch.fnmatch(task, pattern) for pattern in bench["task_globs"]))
    return sheet[keep].reset_index(drop=True)


class WorkflowPlan:
    """The plan of one validated config over its task sheet (`tasks`: split, task rows)."""

    def __init__(self, config: dict[str, Any], tasks: pd.DataFrame, *, basedir: str, check_disk: bool = True):
        self.config = config
        self.tasks = tasks
        self.basedir = Path(basedir)
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

    # ----- paths ---------------------------------------------------------------------------------
    def results(self, path: str) -> str:
        """A path under the results folder (config `results`)."""
        return f"{self.config['results']}/{path}"

    def resources(self, path: str) -> str:
        """A path under the resources folder (config `resources`)."""
        return f"{self.config['resources']}/{path}"

    def workflow_path(self, path: str) -> Path:
        return workflow_path(path, self.basedir)

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

    # ----- models and LoRAs ----------------------------------------------------------------------
    def family(self, variant: str) -> str:
        return self.config["models"][self.config["variants"][variant]["model"]]["family"]

    def model_dir(self, name: str) -> str:
        model = self.config["models"][name]
        if model["local_path"]:  # e.g. the repository's trained twin
            return str(self.workflow_path(model["local_path"]))
        if model["tiny"]:
            return self.resources(f"tiny/{name}")
        return self.resources(f"hub/models/{slug(model['repo_id'])}/{model['revision']}")

    def model_marker(self, name: str) -> str | list[str]:
        """The file that proves a weights folder is complete ([] for a user's local folder)."""
        model = self.config["models"][name]
        if model["local_path"]:
            return []
        if model["tiny"]:
            return f"{self.model_dir(name)}/{TINY_MARKER}"
        return f"{self.model_dir(name)}/{SOURCE_MARKER}"

    @functools.cache  # noqa: B019 - one plan per process; the config does not change
    def source_entries(self, name: str) -> dict[str, dict[str, Any]]:
        """A model's other repos (source -> {repo_id, revision, local_path}), for downloaded models the
        family's defaults (LTX-2.3: the Gemma-3 repo the seed loads); {} when one folder holds all.
        Unknown source names are refused by check_config."""
        model = self.config["models"][name]
        entries = {}
        for source, repo_id in family_sources(model["family"]).items():
            if source in model["sources"]:  # an entry giving only a local_path keeps the family's repo id
                entries[source] = {"repo_id": repo_id, **model["sources"][source]}
            elif not (model["local_path"] or model["tiny"]):
                entries[source] = {"repo_id": repo_id, "revision": FAMILY_SOURCE_REVISION}
            # else: looked for inside the model's folder (the seed's ./models/<repo_id>)
        return entries

    def source_dir(self, entry: dict[str, Any]) -> str:
        if entry.get("local_path"):
            return entry["local_path"]
        return self.resources(f"hub/models/{slug(entry['repo_id'])}/{entry['revision']}")

    def model_sources(self, name: str) -> dict[str, str]:
        """Folders of a model's other repos, as the loader takes them (`sources`)."""
        return {source: self.source_dir(entry) for source, entry in self.source_entries(name).items()}

    def model_markers(self, name: str) -> list[str]:
        """The files that prove a model's folders are complete (none for a user's local folders)."""
        markers = [marker] if (marker := self.model_marker(name)) else []
        for entry in self.source_entries(name).values():
            if not entry.get("local_path"):
                markers.append(f"{self.source_dir(entry)}/{SOURCE_MARKER}")
        return markers

    def lora_dir(self, name: str) -> str:
        lora = self.config["loras"][name]
        if lora["local_path"]:
            return lora["local_path"]
        if lora.get("tiny_for"):
            return self.resources(f"tiny/loras/{name}")
        return self.resources(f"hub/loras/{slug(lora['repo_id'])}/{lora['revision']}")

    def lora_files(self, variant: str) -> list[str]:
        """Inputs for a variant's LoRAs: the files themselves, or a download's completion marker. A
        missing file of a local_path LoRA is no planning error (that would stop every variant): the
        variant's sampling jobs fail, naming it."""
        inputs = []
        for item in self.config["variants"][variant]["loras"]:
            lora = self.config["loras"][item["lora"]]
            path = f"{self.lora_dir(item['lora'])}/{item['file']}"
            if lora.get("repo_id") and not lora["local_path"]:
                inputs.append(f"{self.lora_dir(item['lora'])}/{SOURCE_MARKER}")
            elif not lora["local_path"] or os.path.exists(path):
                inputs.append(path)
        return sorted(set(inputs))

    def lora_params(self, variant: str) -> list[dict[str, Any]]:
        return [
            {"path": f"{self.lora_dir(item['lora'])}/{item['file']}", "target": item["target"], "alpha": item["alpha"]}
            for item in self.config["variants"][variant]["loras"]
        ]

    def lora_target_of_file(self, lora: str, file: str) -> str:
        """The expert a tiny LoRA file is made for: the target variants use it with (dit if none)."""
        for variant in self.config["variants"].values():
            for item in variant["loras"]:
                if item["lora"] == lora and item["file"] == file:
                    return item["target"]
        return "dit"

    def weights_inputs(self, variant: str) -> dict[str, list[str]]:
        return {
            "weights": self.model_markers(self.config["variants"][variant]["model"]),
            "loras": self.lora_files(variant),
        }

    @functools.cached_property
    def hub_repos(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        """Every hub repo the config downloads, by (kind, slug, revision): repo id and allow patterns.

        A model's main repo and its family's other repos (LTX-2.3: Gemma-3) each get their own
        folder and download job, with exactly the files its part of the loader layout opens."""
        repos = {}
        for name, model in self.config["models"].items():
            if model.get("repo_id") and not model["local_path"] and not model["tiny"]:
                repos[("models", slug(model["repo_id"]), model["revision"])] = {
                    "repo_id": model["repo_id"],
                    "patterns": allow_patterns(model["family"]),
                }
            for source, entry in self.source_entries(name).items():
                if not entry.get("local_path"):
                    repos[("models", slug(entry["repo_id"]), entry["revision"])] = {
                        "repo_id": entry["repo_id"],
                        "patterns": allow_patterns(model["family"], source),
                    }
        for lora in self.config["loras"].values():
            if lora.get("repo_id") and not lora["local_path"]:
                repos[("loras", slug(lora["repo_id"]), lora["revision"])] = {
                    "repo_id": lora["repo_id"],
                    "patterns": lora["files"],
                }
        return repos

    def hub_lookup(self, kind: str, slug_name: str, revision: str) -> dict[str, Any]:
        """The download behind a hub path (kind: models | loras): repo id and allow patterns."""
        try:
            return self.hub_repos[(kind, slug_name, revision)]
        except KeyError:
            raise ValueError(f"no configured {kind} repo {slug_name!r} at revision {revision!r}") from None

    # ----- the bench and inputs ------------------------------------------------------------------
    def bench_root(self) -> str:
        bench = self.config["bench"]
        if bench["source"] == "local":
            if not bench["local_path"]:
                config_error("bench.local_path", "source is 'local' but no local_path is given")
            return bench["local_path"]
        if bench["source"] == "demo":
            return self.resources("demo-bench")
        return self.resources(f"hub/datasets/{slug(bench['repo_id'])}/{bench['revision']}")

    def bench_marker(self) -> str | list[str]:
        if self.config["bench"]["source"] == "local":
            return []
        return f"{self.bench_root()}/{SOURCE_MARKER}"

    def manifest_inputs(self) -> list[str]:
        """The bench's marker, or for a local bench the files it scans: a fixed, added or removed
        sample file then rebuilds the manifest (a local bench has no marker that would change)."""
        bench = self.config["bench"]
        if bench["source"] != "local":
            return [self.bench_marker()]
        folders = sample_folders(self.bench_root(), bench["splits"], bench["task_globs"], bench["samples_per_task"])
        files = (path for folder in folders for path in sample_files(folder, SAMPLE_FILES))
        return [path for path in files if os.path.exists(path)]

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

    def sample_members(self, batch: Batch) -> list[SampleMember]:
        fingerprints = self.fingerprints["sample"]
        members = []
        for unit in batch.units:
            request = self.sampling_request(unit)
            members.append(
                SampleMember(
                    key=unit.key,
                    labels=unit.labels,
                    fingerprint=fingerprints[unit],
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
        fingerprints = self.fingerprints["decode"]
        return [
            DecodeMember(
                key=unit.key,
                labels=unit.labels,
                fingerprint=fingerprints[unit],
                run_dir=self.layout.run_dir(unit),
                out_dir=self.layout.decoded_dir(unit),
            )
            for unit in batch.units
        ]

    def analysis_members(self, batch: Batch) -> list[AnalysisMember]:
        fingerprints = self.fingerprints["analysis"]
        return [
            AnalysisMember(
                key=unit.key,
                labels=unit.labels,
                fingerprint=fingerprints[unit],
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
