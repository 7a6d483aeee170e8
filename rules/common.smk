"""Helpers shared by the rules: config validation, the plan (which runs exist), and paths."""

import fnmatch
import functools
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

from stepscope import records
from stepscope.batch_jobs import FIGURES_MARKER
from stepscope.ensemble import EnsembleSpec, seed_label
from stepscope.hub import allow_patterns
from stepscope.plan import (
    RECORDS_FORMAT,
    Layout,
    Plan,
    StagePlan,
    Unit,
    fingerprint,
    make_batches,
)
from stepscope.stepspec import parse_steps

validate(config, schema="../config/schema/config.schema.yaml", set_default=True)

RESULTS = config["results"]
RESOURCES = config["resources"]


def results(path):
    """A path under the results folder (config `results`)."""
    return f"{RESULTS}/{path}"


def resources(path):
    """A path under the resources folder (config `resources`)."""
    return f"{RESOURCES}/{path}"


LAYOUT = Layout(RESULTS)
FIGURE_GROUP_DIR = results("figures/groups/{variant}/{split}/{task}")
CUSTOM_SPLIT = "custom"


wildcard_constraints:
    variant="[^/]+",
    split="[^/]+",
    task="[^/]+",
    sample="[0-9]{5}",
    run="seed[0-9]+|ens-[a-z0-9]+-k[0-9]+-[0-9]+-[0-9]+(-rescale)?",
    batch="b[0-9]{4}[.]r[0-9]+",
    slug="[^/]+",
    revision="[^/]+",


def config_error(key, message):
    raise ValueError(f"config error at `{key}`: {message}")


def check_config():
    """Cross-references the schema cannot express, checked at parse time with the key named."""
    for name in config["run_variants"]:
        if name not in config["variants"]:
            config_error(
                "run_variants",
                f"unknown variant {name!r}; defined: {sorted(config['variants'])}",
            )
    for name, variant in config["variants"].items():
        if variant["model"] not in config["models"]:
            config_error(
                f"variants.{name}.model",
                f"unknown model {variant['model']!r}; defined: {sorted(config['models'])}",
            )
        for index, lora in enumerate(variant.get("loras", [])):
            key = f"variants.{name}.loras[{index}]"
            if lora["lora"] not in config["loras"]:
                config_error(
                    key,
                    f"unknown LoRA {lora['lora']!r}; defined: {sorted(config['loras'])}",
                )
            if lora["file"] not in config["loras"][lora["lora"]]["files"]:
                config_error(
                    key,
                    f"file {lora['file']!r} is not listed in loras.{lora['lora']}.files",
                )
    for name, model in config["models"].items():
        if (
            not model.get("tiny")
            and not model.get("local_path")
            and not model.get("repo_id")
        ):
            config_error(
                f"models.{name}", "give repo_id (download), local_path, or tiny: true"
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
            EnsembleSpec(
                ensemble["strategy"],
                ensemble["k"],
                ensemble["start"],
                ensemble["end"],
                ensemble["rescale"],
            )
        except ValueError as error:
            config_error(f"ensembles[{index}]", str(error))


check_config()


# ----- the plan --------------------------------------------------------------------------------
def workflow_path(path):
    """A config path as given, or relative to the workflow's folder when it is not found there."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    return Path(workflow.basedir) / path


def load_tasks():
    sheet_path = workflow_path(config["bench"]["sample_sheet"])
    from stepscope.bench import read_task_sheet

    sheet = read_task_sheet(sheet_path)
    validate(sheet, schema="../config/schema/samples.schema.yaml")
    sheet = sheet[sheet["split"].isin(config["bench"]["splits"])]
    globs = config["bench"]["task_globs"]
    keep = sheet["task"].apply(
        lambda task: any(fnmatch.fnmatch(task, pattern) for pattern in globs)
    )
    return sheet[keep].reset_index(drop=True)


TASKS = load_tasks()
SAMPLES = [f"{index:05d}" for index in range(config["bench"]["samples_per_task"])]
SEED_RUNS = [f"seed{seed}" for seed in config["seeds"]]
ENSEMBLE_RUNS = [
    EnsembleSpec(e["strategy"], e["k"], e["start"], e["end"], e["rescale"]).name
    for e in config["ensembles"]
]
CUSTOM = {item["name"]: item for item in config["custom"]}


def inputs():
    """(split, task, sample) of every input: bench samples from the sheet, then custom inputs."""
    for row in TASKS.itertuples():
        for sample in SAMPLES:
            yield row.split, row.task, sample
    for name in CUSTOM:
        yield CUSTOM_SPLIT, name, "00000"


def all_runs():
    """Every run the plan holds, as wildcard dicts."""
    for variant in config["run_variants"]:
        for split, task, sample in inputs():
            for run in SEED_RUNS + ENSEMBLE_RUNS:
                yield dict(
                    variant=variant, split=split, task=task, sample=sample, run=run
                )


def run_path(pattern, **wildcards):
    return pattern.format(**wildcards)


# ----- models, LoRAs, bench ---------------------------------------------------------------------
def slug(repo_id):
    """A repo id as one path component (owner--name)."""
    owner, _, name = repo_id.partition("/")
    return f"{owner}--{name}" if name else owner


def model_dir(name):
    model = config["models"][name]
    if model.get("local_path"):  # e.g. the repository's trained twin
        return str(workflow_path(model["local_path"]))
    if model.get("tiny"):
        return f"{RESOURCES}/tiny/{name}"
    return f"{RESOURCES}/hub/models/{slug(model['repo_id'])}/{model.get('revision', 'main')}"


def model_marker(name):
    """The file that proves a weights folder is complete (None for a user's local folder)."""
    model = config["models"][name]
    if model.get("local_path"):
        return []
    if model.get("tiny"):
        return f"{model_dir(name)}/stepscope_tiny.json"
    return f"{model_dir(name)}/.stepscope_source.json"


def lora_dir(name):
    lora = config["loras"][name]
    if lora.get("local_path"):
        return lora["local_path"]
    if lora.get("tiny_for"):
        return f"{RESOURCES}/tiny/loras/{name}"
    return (
        f"{RESOURCES}/hub/loras/{slug(lora['repo_id'])}/{lora.get('revision', 'main')}"
    )


def lora_files(variant):
    """Inputs for a variant's LoRAs: the files themselves, or a download's completion marker."""
    inputs = []
    for item in config["variants"][variant].get("loras", []):
        lora = config["loras"][item["lora"]]
        if lora.get("repo_id") and not lora.get("local_path"):
            inputs.append(f"{lora_dir(item['lora'])}/.stepscope_source.json")
        else:
            inputs.append(f"{lora_dir(item['lora'])}/{item['file']}")
    return sorted(set(inputs))


def lora_params(variant):
    return [
        {
            "path": f"{lora_dir(item['lora'])}/{item['file']}",
            "target": item.get("target", "dit"),
            "alpha": item.get("alpha", 1.0),
        }
        for item in config["variants"][variant].get("loras", [])
    ]


def family(variant):
    return config["models"][config["variants"][variant]["model"]]["family"]


def bench_root():
    bench = config["bench"]
    if bench["source"] == "local":
        if not bench.get("local_path"):
            config_error(
                "bench.local_path", "source is 'local' but no local_path is given"
            )
        return bench["local_path"]
    if bench["source"] == "demo":
        return f"{RESOURCES}/demo-bench"
    return f"{RESOURCES}/hub/datasets/{slug(bench['repo_id'])}/{bench['revision']}"


def bench_marker():
    source = config["bench"]["source"]
    if source == "local":
        return []
    return f"{bench_root()}/.stepscope_source.json"


def sample_source(wildcards):
    """What a sampling job reads: a bench sample folder or a custom image + prompt."""
    if wildcards.split == CUSTOM_SPLIT:
        item = CUSTOM[wildcards.task]
        return {"image": item["image"], "prompt": item["prompt"]}
    return {
        "sample_dir": f"{bench_root()}/{wildcards.split}/{wildcards.task}/{wildcards.sample}"
    }


def sample_inputs(wildcards):
    if wildcards.split == CUSTOM_SPLIT:
        return [CUSTOM[wildcards.task]["image"]]
    if config["bench"]["source"] == "local":
        folder = f"{bench_root()}/{wildcards.split}/{wildcards.task}/{wildcards.sample}"
        return [
            f"{folder}/{name}"
            for name in ("first_frame.png", "prompt.txt", "ground_truth.mp4")
        ]
    return [bench_marker()]


def variant_settings(variant):
    settings = dict(config["variants"][variant])
    settings.pop("model")
    settings.pop("loras", None)
    return settings


def run_settings(wildcards):
    settings = variant_settings(wildcards.variant)
    if wildcards.split == CUSTOM_SPLIT and not settings.get("num_frames"):
        settings["num_frames"] = CUSTOM[wildcards.task].get("num_frames", 81)
    return settings


def run_seeds(wildcards):
    if wildcards.run.startswith("seed"):
        return [int(wildcards.run[len("seed") :])]
    return [config["seeds"][0]]


def video_model_name(variant, run):
    """Model folder name for the VBVR scorer's layout: the variant for the first seed."""
    return variant if run == SEED_RUNS[0] else f"{variant}_{run}"


def lora_target_of_file(lora, file):
    """The expert a tiny LoRA file is made for: the target variants use it with."""
    for variant in config["variants"].values():
        for item in variant.get("loras", []):
            if item["lora"] == lora and item["file"] == file:
                return item.get("target", "dit")
    return "dit"


# ----- used by rules/download.smk ------------------------------------------------------------
def hub_lookup(kind, slug_name, revision):
    """The config entry behind a download path (kind: models | loras)."""
    for name, entry in config[kind].items():
        if (
            entry.get("repo_id")
            and slug(entry["repo_id"]) == slug_name
            and entry.get("revision", "main") == revision
        ):
            return name, entry
    raise ValueError(
        f"no {kind} entry with repo {slug_name!r} at revision {revision!r}"
    )


# ----- the batched plan (stepscope.plan; docs/workflow.md) -------------------------------------
DECODE_STEPS = config["decode"]["steps"]
DECODING = parse_steps(DECODE_STEPS) != frozenset()


def sample_files(unit):
    """The files of an input whose change makes its runs stale (they are stamped in meta.json)."""
    if unit.split == CUSTOM_SPLIT:
        return [CUSTOM[unit.task]["image"]]
    folder = f"{bench_root()}/{unit.split}/{unit.task}/{unit.sample}"
    return [
        f"{folder}/{name}"
        for name in ("first_frame.png", "prompt.txt", "ground_truth.mp4")
    ]


@functools.cache  # the plan's fingerprints and the batch jobs' params both need it
def sampling_request(unit):
    """Everything a run's records depend on; its fingerprint decides whether they are current."""
    variant = config["variants"][unit.variant]
    return {
        "format": RECORDS_FORMAT,
        "family": family(unit.variant),
        "weights": model_dir(variant["model"]),
        "loras": lora_params(unit.variant),
        "source": sample_source(unit),
        "settings": run_settings(unit),
        "record": config["record"],
        "seeds": run_seeds(unit),
        "ensemble": None if unit.run.startswith("seed") else unit.run,
        "device": config["device"],
    }


def decode_settings():
    return {"steps": DECODE_STEPS, "sheet_frames": config["decode"]["sheet_frames"]}


def analysis_settings():
    return {"layers": figure_layers(), "steps": config["figures"]["steps"]}


def is_scored(unit):
    """Runs with a ground truth to score against (bench samples, not custom inputs)."""
    return unit.split != CUSTOM_SPLIT


def analysis_outputs(unit):
    outputs = [f"{LAYOUT.figure_dir(unit)}/{FIGURES_MARKER}"]
    return outputs + ([LAYOUT.score_table(unit)] if is_scored(unit) else [])


def divergence_items(batch):
    """Per input of a batch with >= 2 seeds: the seed runs whose x0_hats are compared."""
    if len(SEED_RUNS) < 2:
        return []
    items = []
    for split, task, sample in batch.inputs:
        if split == CUSTOM_SPLIT:
            continue
        seeds = [
            unit
            for unit in batch.units
            if unit.input_key == (split, task, sample) and unit.run in SEED_RUNS
        ]
        labels = dict(variant=batch.variant, split=split, task=task, sample=sample)
        items.append(
            {
                "labels": labels,
                "keys": [unit.key for unit in seeds],
                "run_dirs": [LAYOUT.run_dir(unit) for unit in seeds],
                "out": LAYOUT.divergence_table(**labels),
            }
        )
    return items


@functools.cache
def plan():
    """The batched plan (built once per process, on first use)."""
    units = [Unit(**run) for run in all_runs()]
    sampled = {unit: fingerprint(sampling_request(unit)) for unit in units}
    decoded = {
        unit: fingerprint({"decode": decode_settings(), "run": sampled[unit]})
        for unit in units
    }
    analysed = {
        unit: fingerprint(
            {
                "analysis": analysis_settings(),
                "run": sampled[unit],
                "decode": decoded[unit] if DECODING else None,
            }
        )
        for unit in units
    }
    stages = {
        "sample": StagePlan(
            "sample",
            sampled,
            lambda unit: [f"{LAYOUT.run_dir(unit)}/{records.META}", final_video(unit)],
            inputs=sample_files,
        ),
        "decode": StagePlan(
            "decode",
            decoded,
            lambda unit: [f"{LAYOUT.decoded_dir(unit)}/{records.DECODED_SUMMARY}"],
        ),
        "analysis": StagePlan(
            "analysis",
            analysed,
            analysis_outputs,
            lambda batch: [item["out"] for item in divergence_items(batch)],
            inputs=lambda unit: sample_files(unit) if is_scored(unit) else [],
        ),
    }
    # A job process on a cluster node runs the one job it was given: it takes the receipts on
    # disk as they are instead of re-deciding which batches are current.
    check_disk = not workflow.remote_exec
    return Plan(
        LAYOUT,
        make_batches(units, config["batch"]["inputs"]),
        stages,
        check_disk=check_disk,
    )


def receipt_pattern(stage):
    """A batch job's declared output: its receipt (stepscope.plan), named by variant and batch."""
    return LAYOUT.receipt(stage, "{variant}", "{batch}")


def batch_of(wildcards):
    return plan().batch(wildcards.variant, wildcards.batch)


def receipt_of(stage):
    """Input function: the receipt of the same batch's `stage` (at its current generation)."""

    def receipt(wildcards):
        return plan().receipt(stage, batch_of(wildcards))

    return receipt


def final_video(unit):
    """Where a run's final video is laid out for the VBVR-Bench scorer."""
    return LAYOUT.video_link(video_model_name(unit.variant, unit.run), unit)


def batch_sample_inputs(wildcards, units=None):
    """What a batch reads of its inputs: bench sample files (or the bench download), custom images."""
    units = batch_of(wildcards).units if units is None else units
    return sorted({path for unit in units for path in sample_inputs(unit)})


def trajectories(unit):
    """Sampled trajectories of a run (an ensemble runs K in lockstep)."""
    if unit.run.startswith("seed"):
        return 1
    return EnsembleSpec.from_name(unit.run).k


def batch_minutes(stage):
    """Resources callable: scheduler runtime of a batch job, growing with each attempt."""
    per_run = config["batch"][f"{stage}_minutes"]

    def minutes(wildcards, attempt):
        units = batch_of(wildcards).units
        count = sum(trajectories(u) for u in units) if stage == "sample" else len(units)
        return per_run * count * attempt

    return minutes


def sample_members(wildcards):
    batch = batch_of(wildcards)
    fingerprints = plan().stages["sample"].fingerprints
    members = []
    for unit in batch.units:
        request = sampling_request(unit)
        members.append(
            {
                "key": unit.key,
                "labels": unit.labels,
                "fingerprint": fingerprints[unit],
                "source": request["source"],
                "settings": request["settings"],
                "record": request["record"],
                "seeds": request["seeds"],
                "ensemble": request["ensemble"],
                "out_dir": LAYOUT.run_dir(unit),
                "video_link": final_video(unit),
                "inputs": sample_files(unit),
            }
        )
    return members


def decode_members(wildcards):
    fingerprints = plan().stages["decode"].fingerprints
    return [
        {
            "key": unit.key,
            "labels": unit.labels,
            "fingerprint": fingerprints[unit],
            "run_dir": LAYOUT.run_dir(unit),
            "out_dir": LAYOUT.decoded_dir(unit),
        }
        for unit in batch_of(wildcards).units
    ]


def analysis_members(wildcards):
    fingerprints = plan().stages["analysis"].fingerprints
    return [
        {
            "key": unit.key,
            "labels": unit.labels,
            "fingerprint": fingerprints[unit],
            "run_dir": LAYOUT.run_dir(unit),
            "decoded_dir": LAYOUT.decoded_dir(unit) if DECODING else None,
            "figure_dir": LAYOUT.figure_dir(unit),
            "score_table": LAYOUT.score_table(unit) if is_scored(unit) else None,
            "sample_dir": sample_source(unit).get("sample_dir"),
            "inputs": sample_files(unit) if is_scored(unit) else [],
        }
        for unit in batch_of(wildcards).units
    ]


def analysis_inputs(wildcards):
    inputs = {
        "runs": receipt_of("sample")(wildcards),
        # the ground truth of the runs it scores (custom inputs have none)
        "samples": batch_sample_inputs(
            wildcards, [unit for unit in batch_of(wildcards).units if is_scored(unit)]
        ),
    }
    if DECODING:
        inputs["decoded"] = receipt_of("decode")(wildcards)
    return inputs


def all_receipts(stage):
    return plan().receipts(stage)


# ----- used by rules/download.smk ------------------------------------------------------------
def hub_lookup(kind, slug_name, revision):
    """The config entry behind a download path (kind: models | loras)."""
    for name, entry in config[kind].items():
        if (
            entry.get("repo_id")
            and slug(entry["repo_id"]) == slug_name
            and entry.get("revision", "main") == revision
        ):
            return name, entry
    raise ValueError(
        f"no {kind} entry with repo {slug_name!r} at revision {revision!r}"
    )


# ----- used by rules/sample.smk ------------------------------------------------------------
def weights_inputs(wildcards):
    variant = config["variants"][wildcards.variant]
    return {
        "weights": model_marker(variant["model"]),
        "loras": lora_files(wildcards.variant),
    }


# ----- used by rules/scoring.smk ------------------------------------------------------------


def evalkit_tables():
    """The VBVR-EvalKit score table, when that scorer is configured."""
    return (
        [results("scores/evalkit.parquet")]
        if "vbvr-evalkit" in config["scoring"]["scorers"]
        else []
    )


# ----- used by rules/figures.smk ------------------------------------------------------------


def figure_layers():
    layers = config["figures"]["layers"]
    return None if layers == "all" else list(layers)


@functools.cache
def group_index():
    """(variant, split, task) -> its single-seed runs and the batches that hold them."""
    index = {}
    for variant, batches in plan().batches.items():
        for batch in batches:
            for unit in batch.units:
                if unit.run not in SEED_RUNS:
                    continue
                units, holders = index.setdefault(
                    (variant, unit.split, unit.task), ([], [])
                )
                units.append(unit)
                if not holders or holders[-1] is not batch:
                    holders.append(batch)
    return index


def group_units(wildcards):
    """Every single-seed run of one variant x task (the samples x seeds a group figure pools)."""
    return group_index()[(wildcards.variant, wildcards.split, wildcards.task)][0]


def group_receipts(wildcards):
    """The sampling receipts of the batches holding a group's runs."""
    key = (wildcards.variant, wildcards.split, wildcards.task)
    return plan().receipts("sample", group_index()[key][1])


def figure_groups():
    return sorted({(r["variant"], r["split"], r["task"]) for r in all_runs()})


# ----- used by the Snakefile ---------------------------------------------------------------
def final_targets(wildcards):
    """Everything the workflow makes (a function: job processes on a cluster never need it)."""
    return [
        results("manifest.parquet"),
        *all_receipts("analysis"),
        results("tables/summary.csv"),
        results("tables/all_runs_succeeded"),
        *[
            run_path(FIGURE_GROUP_DIR, variant=v, split=s, task=t)
            for v, s, t in figure_groups()
        ],
        *probe_targets(),
    ]
