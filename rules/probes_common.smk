"""Helpers for rules/probes.smk: which probes run, on which variant x bench sample, and their inputs."""

import sys
from types import SimpleNamespace

from stepscope.probes.registry import KINDS as PROBE_NAMES

PROBES = config["probes"]
PROBE_KINDS = [name for name in PROBE_NAMES if PROBES[name]["enabled"]]
PROBE_DIR = results("probes/{probe}/{variant}/{split}/{task}/{sample}")
PROBE_TABLE = results("probes/tables/{probe}.parquet")
PROBE_SUMMARY = results("probes/tables/{probe}_summary.csv")
PROBE_FIGURES = results("probes/figures/{probe}")


wildcard_constraints:
    probe="|".join(PROBE_NAMES),


def probe_variants():
    return PROBES["variants"] or config["run_variants"]


def probe_samples():
    return [f"{int(index):05d}" for index in PROBES["samples"]]


def probe_tasks():
    """(split, task) of the plan's bench tasks that match probes.task_globs."""
    return [
        (row.split, row.task)
        for row in TASKS.itertuples()
        if any(fnmatch.fnmatch(row.task, pattern) for pattern in PROBES["task_globs"])
    ]


def probe_groups():
    """Every (variant, split, task, sample) the enabled probes run on, as wildcard dicts."""
    return [
        dict(variant=variant, split=split, task=task, sample=sample)
        for variant in probe_variants()
        for split, task in probe_tasks()
        for sample in probe_samples()
    ]


def check_probe_config():
    """Cross-references of the probes section, checked at parse time with the key named."""
    if not PROBE_KINDS:
        return
    for name in probe_variants():
        if name not in config["variants"]:
            config_error(
                "probes.variants",
                f"unknown variant {name!r}; defined: {sorted(config['variants'])}",
            )
    if not probe_tasks():
        # A narrowed bench (e.g. a test's task_globs) simply has nothing to probe.
        print(
            f"note: probes.task_globs {PROBES['task_globs']} matches none of the planned "
            "tasks; no probe runs",
            file=sys.stderr,
        )
        return
    per_task = config["bench"]["samples_per_task"]
    for index in PROBES["samples"]:
        if index >= per_task:
            config_error(
                "probes.samples",
                f"sample {index} does not exist: bench.samples_per_task is {per_task}",
            )
    steps = [config["variants"][name]["steps"] for name in probe_variants()]
    for name in PROBE_KINDS:  # the probes with a step list (token_swap has one step)
        if "steps" in PROBES[name]:
            try:
                for count in steps:
                    parse_steps(PROBES[name]["steps"], count)
            except ValueError as error:
                config_error(f"probes.{name}.steps", str(error))
    swap = PROBES["token_swap"]
    if "token_swap" in PROBE_KINDS:
        if swap["step"] >= min(steps):
            config_error(
                "probes.token_swap.step",
                f"step {swap['step']} does not exist: a probed variant has {min(steps)} steps",
            )
        if swap["source"] in ("next_sample", "next_image") and per_task < 2:
            config_error(
                "probes.token_swap.source",
                f"{swap['source']!r} needs a second sample per task (bench.samples_per_task >= 2)",
            )
        if swap["source"] == "prompt" and not swap["prompt"]:
            config_error(
                "probes.token_swap.prompt", "source is 'prompt' but no prompt is given"
            )


check_probe_config()


def probe_targets():
    """The final targets: each enabled probe's summary table and figures (none when
    disabled or when nothing matches)."""
    if not probe_groups():
        return []
    return [
        path.format(probe=probe)
        for probe in PROBE_KINDS
        for path in (PROBE_SUMMARY, PROBE_FIGURES)
    ]


def probe_dirs(wildcards):
    """Every probe directory one probe's tables pool."""
    return [
        run_path(PROBE_DIR, probe=wildcards.probe, **group) for group in probe_groups()
    ]


def swap_source_sample(wildcards):
    """The bench sample a token swap takes its source run from (the next one of the task)."""
    index = (int(wildcards.sample) + 1) % config["bench"]["samples_per_task"]
    return SimpleNamespace(
        split=wildcards.split, task=wildcards.task, sample=f"{index:05d}"
    )


def probe_swap_source(wildcards):
    """What a token swap's source run reads (None for the other probes)."""
    if wildcards.probe != "token_swap":
        return None
    swap = PROBES["token_swap"]
    source = {"kind": swap["source"], "prompt": swap["prompt"]}
    if swap["source"] in ("next_sample", "next_image"):
        source.update(sample_source(swap_source_sample(wildcards)))
    return source


def probe_sample_inputs(wildcards):
    """The probed sample's files, and the swap source sample's where it has one."""
    inputs = list(sample_inputs(wildcards))
    if wildcards.probe == "token_swap" and PROBES["token_swap"]["source"] in (
        "next_sample",
        "next_image",
    ):
        inputs += sample_inputs(swap_source_sample(wildcards))
    return sorted(set(inputs))


def probe_seed():
    return PROBES["seed"] if PROBES["seed"] is not None else config["seeds"][0]
