"""The config checks the schema cannot express (cross-references), and the task sheet's selection.

Run at parse time by rules/common.smk, after the schema check; each failure names its key.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd

from stepscope.models.weight_layouts import family_sources
from stepscope.run_names import EnsembleSpec
from stepscope.stepspec import parse_steps


def config_error(key: str, message: str) -> NoReturn:
    raise ValueError(f"config error at `{key}`: {message}")


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
