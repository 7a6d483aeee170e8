"""Helpers shared by the rules: config validation, the plan (which runs exist), and paths."""

import fnmatch
import functools
import os
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

from stepscope import records
from stepscope.jobs.batches import FIGURES_MARKER, decoded_files
from stepscope.sampling.ensemble import EnsembleSpec, seed_label
from stepscope.models.hub import allow_patterns
from stepscope.models.weight_layouts import family_sources
from stepscope.jobs.plan import (
    RECORDS_FORMAT,
    Layout,
    Plan,
    StagePlan,
    Unit,
    fingerprint,
    make_batches,
)
from stepscope.analysis.scoring import check_scorer_names
from stepscope.stepspec import is_empty, parse_steps, resolve_steps


def validate_config():
    """Schema check with one line naming the offending key (Snakemake's own message repeats the
    whole schema and config: over a thousand lines for one unknown key)."""
    import jsonschema
    from snakemake.exceptions import WorkflowError

    try:
        validate(config, schema="../config/schema/config.schema.yaml", set_default=True)
    except WorkflowError as error:
        # the jsonschema error Snakemake's own was raised from
        cause = error.__context__
        if not isinstance(cause, jsonschema.ValidationError):
            raise
        key = ".".join(str(part) for part in cause.absolute_path) or "(top level)"
        raise ValueError(
            f"config error at `{key}`: {cause.message}; see config/schema/config.schema.yaml"
        ) from None


# A renamed scorer fails with its new name before the schema's generic message.
check_scorer_names(config.get("scoring", {}).get("scorers", []))
validate_config()

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
        unknown = set(model.get("sources") or {}) - set(family_sources(model["family"]))
        if unknown:
            config_error(
                f"models.{name}.sources",
                f"{sorted(unknown)} is not a weights source of {model['family']}; "
                f"known: {sorted(family_sources(model['family']))}",
            )
        if (
            not model.get("tiny")
            and not model.get("local_path")
            and not model.get("repo_id")
        ):
            config_error(
                f"models.{name}", "give repo_id (download), local_path, or tiny: true"
            )
    device = config["device"]
    with_loras = any(config["variants"][v].get("loras") for v in config["run_variants"])
    if with_loras and (device["lora_mode"] == "hotload") == (
        device["offload"] == "none"
    ):
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


def variant_inputs(variant):
    """The inputs a variant runs: every input, or the bench tasks and samples its `task_globs` /
    `samples_per_task` keep (e.g. a second family on a few tasks); custom inputs always.
    """
    settings = config["variants"][variant]
    globs, limit = settings.get("task_globs"), settings.get("samples_per_task")
    for split, task, sample in inputs():
        keep_task = globs is None or any(fnmatch.fnmatch(task, g) for g in globs)
        keep_sample = limit is None or int(sample) < limit
        if split == CUSTOM_SPLIT or (keep_task and keep_sample):
            yield split, task, sample


def all_runs():
    """Every run the plan holds, as wildcard dicts."""
    for variant in config["run_variants"]:
        for split, task, sample in variant_inputs(variant):
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


@functools.cache  # the plan asks per run; the config does not change
def source_entries(name):
    """A model's other repos (source -> {repo_id, revision, local_path}), for downloaded models the
    family's defaults (LTX-2.3: the Gemma-3 repo the seed loads); {} when one folder holds all.
    Unknown source names are refused by check_config.
    """
    model = config["models"][name]
    given = model.get("sources") or {}
    entries = {}
    for source, repo_id in family_sources(model["family"]).items():
        entry = dict(given.get(source) or {})
        if not entry and (model.get("local_path") or model.get("tiny")):
            continue  # looked for inside the model's folder (the seed's ./models/<repo_id>)
        entry.setdefault("repo_id", repo_id)
        entry.setdefault("revision", "main")
        entries[source] = entry
    return entries


def source_dir(entry):
    if entry.get("local_path"):
        return entry["local_path"]
    return f"{RESOURCES}/hub/models/{slug(entry['repo_id'])}/{entry['revision']}"


def model_sources(name):
    """Folders of a model's other repos, as the loader takes them (`sources`)."""
    return {source: source_dir(entry) for source, entry in source_entries(name).items()}


def model_markers(name):
    """The files that prove a model's folders are complete (none for a user's local folders)."""
    markers = [marker] if (marker := model_marker(name)) else []
    for entry in source_entries(name).values():
        if not entry.get("local_path"):
            markers.append(f"{source_dir(entry)}/.stepscope_source.json")
    return markers


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
    """Inputs for a variant's LoRAs: the files themselves, or a download's completion marker. A
    missing file of a local_path LoRA is no planning error (that would stop every variant): the
    variant's sampling jobs fail, naming it."""
    inputs = []
    for item in config["variants"][variant].get("loras", []):
        lora = config["loras"][item["lora"]]
        path = f"{lora_dir(item['lora'])}/{item['file']}"
        if lora.get("repo_id") and not lora.get("local_path"):
            inputs.append(f"{lora_dir(item['lora'])}/.stepscope_source.json")
        elif not lora.get("local_path") or os.path.exists(path):
            inputs.append(path)
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


def manifest_inputs(wildcards):
    """The bench's marker, or for a local bench the files it scans: a fixed, added or removed
    sample file then rebuilds the manifest (a local bench has no marker that would change).
    """
    if config["bench"]["source"] != "local":
        return [bench_marker()]
    from stepscope.bench import SAMPLE_FILES, sample_folders

    folders = sample_folders(
        bench_root(),
        config["bench"]["splits"],
        config["bench"]["task_globs"],
        config["bench"]["samples_per_task"],
    )
    files = (f"{folder}/{name}" for folder in folders for name in SAMPLE_FILES)
    return [path for path in files if os.path.exists(path)]


def sample_source(wildcards):
    """What a sampling job reads: a bench sample folder or a custom image + prompt."""
    if wildcards.split == CUSTOM_SPLIT:
        item = CUSTOM[wildcards.task]
        return {"image": item["image"], "prompt": item["prompt"]}
    return {
        "sample_dir": f"{bench_root()}/{wildcards.split}/{wildcards.task}/{wildcards.sample}"
    }


def sample_inputs(wildcards):
    """What Snakemake waits for: the input's files that exist, or the bench's marker. A missing
    file is no planning error: its run alone fails in the batch job, naming the file and the fix.
    """
    if wildcards.split == CUSTOM_SPLIT or config["bench"]["source"] == "local":
        return [path for path in sample_files(wildcards) if os.path.exists(path)]
    return [bench_marker()]


def bench_plan():
    """What a failed input's message quotes: where the plan takes bench inputs from."""
    return {
        "sample_sheet": str(workflow_path(config["bench"]["sample_sheet"])),
        "samples_per_task": config["bench"]["samples_per_task"],
    }


def variant_settings(variant):
    """What a variant's runs are sampled with (not which model, LoRAs or inputs it runs)."""
    settings = dict(config["variants"][variant])
    for key in ("model", "loras", "task_globs", "samples_per_task"):
        settings.pop(key, None)
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
@functools.cache
def hub_repos():
    """Every hub repo the config downloads, by (kind, slug, revision): repo id and allow patterns.

    A model's main repo and its family's other repos (LTX-2.3: Gemma-3) each get their own
    folder and download job, with exactly the files its part of the loader layout opens.
    """
    repos = {}
    for name, model in config["models"].items():
        if (
            model.get("repo_id")
            and not model.get("local_path")
            and not model.get("tiny")
        ):
            repos[("models", slug(model["repo_id"]), model.get("revision", "main"))] = {
                "repo_id": model["repo_id"],
                "patterns": allow_patterns(model["family"]),
            }
        for source, entry in source_entries(name).items():
            if not entry.get("local_path"):
                repos[("models", slug(entry["repo_id"]), entry["revision"])] = {
                    "repo_id": entry["repo_id"],
                    "patterns": allow_patterns(model["family"], source),
                }
    for lora in config["loras"].values():
        if lora.get("repo_id") and not lora.get("local_path"):
            repos[("loras", slug(lora["repo_id"]), lora.get("revision", "main"))] = {
                "repo_id": lora["repo_id"],
                "patterns": lora["files"],
            }
    return repos


def hub_lookup(kind, slug_name, revision):
    """The download behind a hub path (kind: models | loras): repo id and allow patterns."""
    try:
        return hub_repos()[(kind, slug_name, revision)]
    except KeyError:
        raise ValueError(
            f"no configured {kind} repo {slug_name!r} at revision {revision!r}"
        ) from None


# ----- the batched plan (stepscope.jobs.plan; docs/workflow.md) -------------------------------------
DECODE_STEPS = config["decode"]["steps"]
DECODING = not is_empty(DECODE_STEPS)


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
        # only families with several repos have sources (other runs keep their fingerprints)
        **(
            {"weight_sources": sources}
            if (sources := model_sources(variant["model"]))
            else {}
        ),
        "loras": lora_params(unit.variant),
        "source": sample_source(unit),
        "settings": run_settings(unit),
        "record": config["record"],
        "seeds": run_seeds(unit),
        "ensemble": None if unit.run.startswith("seed") else unit.run,
        "device": config["device"],
    }


def decode_settings():
    return {
        "steps": DECODE_STEPS,
        "sheet_frames": config["decode"]["sheet_frames"],
        "tiled": config["decode"]["tiled"],
    }


def analysis_settings():
    return {
        "layers": figure_layers(),
        "steps": config["figures"]["steps"],
        "max_frames": config["figures"]["max_frames"],
    }


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


def record_files(unit):
    """Every record a sampled run promises: one deleted later makes the run (and batch) stale."""
    run_dir = LAYOUT.run_dir(unit)
    return [f"{run_dir}/{name}" for name in records.RECORD_FILES] + [final_video(unit)]


def decoding_outputs(unit):
    """Every file a run's decoding promises: its step videos, contact sheet and summary."""
    out = LAYOUT.decoded_dir(unit)
    steps = resolve_steps(DECODE_STEPS, config["variants"][unit.variant]["steps"])
    files = decoded_files(out, {"steps": steps})
    return [str(path) for path in files] + [f"{out}/{records.DECODED_SUMMARY}"]


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
        "sample": StagePlan("sample", sampled, record_files, inputs=sample_files),
        "decode": StagePlan("decode", decoded, decoding_outputs),
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
    """A batch job's declared output: its receipt (stepscope.jobs.plan), named by variant and batch."""
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


# ----- used by rules/sample.smk ------------------------------------------------------------
def weights_inputs(wildcards):
    variant = config["variants"][wildcards.variant]
    return {
        "weights": model_markers(variant["model"]),
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
