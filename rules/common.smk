"""Helpers shared by the rules: config validation, the plan (which runs exist), and paths."""

import fnmatch
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

from stepscope.ensemble import EnsembleSpec, seed_label
from stepscope.hub import allow_patterns
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


def under(folder, name):
    return f"{folder}/{name}"


RUN_DIR = results("runs/{variant}/{split}/{task}/{sample}/{run}")
DECODED_DIR = results("decoded/{variant}/{split}/{task}/{sample}/{run}")
SCORE_TABLE = results("scores/runs/{variant}/{split}/{task}/{sample}/{run}.parquet")
DIVERGENCE_TABLE = results(
    "scores/divergence/{variant}/{split}/{task}/{sample}.parquet"
)
FIGURE_RUN_DIR = results("figures/runs/{variant}/{split}/{task}/{sample}/{run}")
FIGURE_GROUP_DIR = results("figures/groups/{variant}/{split}/{task}")
RECORDS = [
    "video.mp4",
    "steps.safetensors",
    "schedule.parquet",
    "activations.npz",
    "activations.parquet",
    "meta.json",
]
CUSTOM_SPLIT = "custom"


wildcard_constraints:
    variant="[^/]+",
    split="[^/]+",
    task="[^/]+",
    sample="[0-9]{5}",
    run="seed[0-9]+|ens-[a-z0-9]+-k[0-9]+-[0-9]+-[0-9]+(-rescale)?",
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
    if model.get("local_path"):
        return model["local_path"]
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


def final_video(variant, split, task, sample, run):
    """Where a run's final video is laid out for the VBVR-Bench scorer."""
    return results(
        f"videos/{video_model_name(variant, run)}/{split}/{task}/{sample}.mp4"
    )


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


# ----- used by rules/sample.smk ------------------------------------------------------------
def weights_inputs(wildcards):
    variant = config["variants"][wildcards.variant]
    return {
        "weights": model_marker(variant["model"]),
        "loras": lora_files(wildcards.variant),
    }


def video_source(wildcards):
    """The run whose final video a scorer-layout path stands for."""
    for variant in config["run_variants"]:
        for run in SEED_RUNS + ENSEMBLE_RUNS:
            if video_model_name(variant, run) == wildcards.model:
                return run_path(
                    under(RUN_DIR, "video.mp4"),
                    variant=variant,
                    run=run,
                    **dict(wildcards.items()),
                )
    raise ValueError(f"no run is laid out as videos/{wildcards.model}")


# ----- used by rules/scoring.smk ------------------------------------------------------------


def scored_runs():
    """Runs with a ground truth to score against (bench samples, not custom inputs)."""
    return [run for run in all_runs() if run["split"] != CUSTOM_SPLIT]


def evalkit_tables():
    """The VBVR-EvalKit score table, when that scorer is configured."""
    return (
        [results("scores/evalkit.parquet")]
        if "vbvr-evalkit" in config["scoring"]["scorers"]
        else []
    )


def divergence_groups():
    """(variant, split, task, sample) with at least two seeds to compare."""
    if len(SEED_RUNS) < 2:
        return []
    groups = {(r["variant"], r["split"], r["task"], r["sample"]) for r in scored_runs()}
    return [
        dict(zip(("variant", "split", "task", "sample"), group))
        for group in sorted(groups)
    ]


# ----- used by rules/figures.smk ------------------------------------------------------------


def figure_layers():
    layers = config["figures"]["layers"]
    return None if layers == "all" else list(layers)


def group_runs(wildcards):
    """Every single-seed run of one variant x task (the samples x seeds a group figure pools)."""
    return [
        run_path(
            RUN_DIR,
            variant=wildcards.variant,
            split=wildcards.split,
            task=wildcards.task,
            sample=sample,
            run=run,
        )
        for sample in (["00000"] if wildcards.split == CUSTOM_SPLIT else SAMPLES)
        for run in SEED_RUNS
    ]


def figure_groups():
    return sorted({(r["variant"], r["split"], r["task"]) for r in all_runs()})
