"""The batched plan: the runs of an experiment, how they group into jobs, and which are done.

Snakemake schedules *batches* (docs/workflow.md): one GPU job samples the runs of several
samples of one variant with one model load, one GPU job decodes their steps, one CPU job draws
and scores them. Outputs stay per run (one records folder each, written atomically), and every
batch job skips the members whose outputs are already up to date, so a batch whose samples are
partly done only runs the missing ones.

A batch job's declared output is its *receipt* (``batches/<stage>/<variant>/bNNNN.rG.json``): the
members it covered, each with the fingerprint of its request and its status. At parse time the
workflow checks the newest receipt of every batch against the current plan (member set,
fingerprints, statuses and the members' outputs on disk); a receipt that no longer holds gets a
successor generation ``G + 1``, which Snakemake then has to make. Fingerprints hash the
config-derived request only, so the head process and the remote job processes on a cluster agree
on them whatever the file system holds at the time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Bump when the recording code changes what a run's records hold: every run becomes stale.
RECORDS_FORMAT = 1
STAGES = ("sample", "decode", "analysis")
DONE_STATUSES = ("done", "skipped")
BATCH_NAME = re.compile(r"^b(\d{4})\.r(\d+)$")


def fingerprint(value: Any) -> str:
    """A short, stable hash of a JSON-able value (key order does not matter)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Unit:
    """One run: a variant on one input with one seed (or one ensemble)."""

    variant: str
    split: str
    task: str
    sample: str
    run: str

    @property
    def key(self) -> str:
        """Identity inside a variant, as receipts list it."""
        return f"{self.split}/{self.task}/{self.sample}/{self.run}"

    @property
    def labels(self) -> dict[str, str]:
        return {
            "variant": self.variant,
            "split": self.split,
            "task": self.task,
            "sample": self.sample,
            "run": self.run,
        }

    @property
    def input_key(self) -> tuple[str, str, str]:
        return (self.split, self.task, self.sample)


@dataclass(frozen=True)
class Layout:
    """Where every per-run output lives under the results folder."""

    results: str

    def run_dir(self, unit: Unit) -> str:
        return f"{self.results}/runs/{unit.variant}/{unit.split}/{unit.task}/{unit.sample}/{unit.run}"

    def decoded_dir(self, unit: Unit) -> str:
        return f"{self.results}/decoded/{unit.variant}/{unit.split}/{unit.task}/{unit.sample}/{unit.run}"

    def figure_dir(self, unit: Unit) -> str:
        return f"{self.results}/figures/runs/{unit.variant}/{unit.split}/{unit.task}/{unit.sample}/{unit.run}"

    def score_table(self, unit: Unit) -> str:
        return f"{self.results}/scores/runs/{unit.variant}/{unit.split}/{unit.task}/{unit.sample}/{unit.run}.parquet"

    def divergence_table(self, variant: str, split: str, task: str, sample: str) -> str:
        return f"{self.results}/scores/divergence/{variant}/{split}/{task}/{sample}.parquet"

    def video_link(self, model_name: str, unit: Unit) -> str:
        """The final video in the layout VBVR-Bench's scorer reads: <model>/<split>/<task>/<index>.mp4."""
        return f"{self.results}/videos/{model_name}/{unit.split}/{unit.task}/{unit.sample}.mp4"

    def receipt_dir(self, stage: str, variant: str) -> str:
        return f"{self.results}/batches/{stage}/{variant}"

    def receipt(self, stage: str, variant: str, batch: str) -> str:
        return f"{self.receipt_dir(stage, variant)}/{batch}.json"


@dataclass(frozen=True)
class Batch:
    """The runs of consecutive inputs of one variant, processed by one job per stage."""

    variant: str
    index: int
    units: tuple[Unit, ...]

    @property
    def stem(self) -> str:
        return f"b{self.index:04d}"

    def name(self, generation: int) -> str:
        return f"{self.stem}.r{generation}"

    @property
    def inputs(self) -> list[tuple[str, str, str]]:
        """(split, task, sample) of the batch's inputs, in order."""
        return list(dict.fromkeys(unit.input_key for unit in self.units))


def parse_batch_name(name: str) -> tuple[int, int]:
    """``b0003.r1`` -> (3, 1)."""
    match = BATCH_NAME.match(name)
    if not match:
        raise ValueError(f"not a batch name: {name!r} (expected bNNNN.rG)")
    return int(match.group(1)), int(match.group(2))


def make_batches(units: Iterable[Unit], inputs_per_batch: int) -> dict[str, list[Batch]]:
    """Group the runs of each variant by input, in plan order, `inputs_per_batch` inputs a batch.

    All runs of one input (its seeds and ensembles) land in the same batch, so that cross-seed
    comparisons never span two jobs.
    """
    if inputs_per_batch < 1:
        raise ValueError("inputs_per_batch must be >= 1")
    by_variant: dict[str, dict[tuple[str, str, str], list[Unit]]] = {}
    for unit in units:
        by_variant.setdefault(unit.variant, {}).setdefault(unit.input_key, []).append(unit)
    batches: dict[str, list[Batch]] = {}
    for variant, by_input in by_variant.items():
        groups = list(by_input.values())
        batches[variant] = [
            Batch(variant, index, tuple(unit for group in chunk for unit in group))
            for index, chunk in enumerate(
                groups[start : start + inputs_per_batch] for start in range(0, len(groups), inputs_per_batch)
            )
        ]
    return batches


# ----- receipts --------------------------------------------------------------------------------


@dataclass
class Receipt:
    """What one batch job covered; written last (atomically) by the job."""

    stage: str
    variant: str
    batch: str
    members: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "variant": self.variant,
            "batch": self.batch,
            "members": self.members,
            **self.extra,
        }

    @classmethod
    def read(cls, path: str | os.PathLike) -> Receipt:
        data = json.loads(Path(path).read_text())
        members = data.pop("members")
        return cls(data.pop("stage"), data.pop("variant"), data.pop("batch"), members, data)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [member for member in self.members if member["status"] not in DONE_STATUSES]


def input_stamps(paths: Iterable[str]) -> dict[str, list[int]]:
    """Size and modification time of each existing input file: a run is redone when one changes."""
    stamps = {}
    for path in paths:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            continue
        stamps[path] = [stat.st_size, stat.st_mtime_ns]
    return stamps


def receipt_holds(
    receipt: Receipt,
    expected: Mapping[str, str],
    outputs: Callable[[], Iterable[str]],
    inputs: Callable[[str], Iterable[str]] | None = None,
) -> bool:
    """Whether a receipt still describes the plan: same members, same fingerprints, all done, the
    members' input files unchanged (`inputs`: member key -> its files, as stamped in the receipt)
    and their outputs still on disk (`outputs` is only called when the rest holds)."""
    recorded = {member["key"]: member["fingerprint"] for member in receipt.members}
    if recorded != dict(expected) or receipt.failed:
        return False
    if inputs is not None:
        for member in receipt.members:
            if member.get("inputs", {}) != input_stamps(inputs(member["key"])):
                return False
    return all(os.path.exists(path) for path in outputs())


class ReceiptIndex:
    """The receipts on disk, listed once per folder (parse time touches each folder once)."""

    def __init__(self) -> None:
        self._listing: dict[str, dict[int, list[int]]] = {}

    def generations(self, folder: str, index: int) -> list[int]:
        if folder not in self._listing:
            listing: dict[int, list[int]] = {}
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                names = []
            for name in names:
                if name.endswith(".json"):
                    try:
                        batch, generation = parse_batch_name(name[: -len(".json")])
                    except ValueError:
                        continue
                    listing.setdefault(batch, []).append(generation)
            self._listing[folder] = listing
        return sorted(self._listing[folder].get(index, []))

    def latest(self, folder: str, index: int) -> int | None:
        generations = self.generations(folder, index)
        return generations[-1] if generations else None

    def current(self, folder: str, index: int, holds: Callable[[Receipt], bool]) -> int:
        """The generation the plan needs: the newest receipt if it holds, else its successor."""
        latest = self.latest(folder, index)
        if latest is None:
            return 0
        path = f"{folder}/b{index:04d}.r{latest}.json"
        try:
            receipt = Receipt.read(path)
        except (OSError, ValueError, KeyError):
            return latest + 1
        return latest if holds(receipt) else latest + 1


# ----- stage requests --------------------------------------------------------------------------


@dataclass
class StagePlan:
    """One stage of the plan: each unit's fingerprint and the outputs that prove it done."""

    stage: str
    fingerprints: dict[Unit, str]
    outputs: Callable[[Unit], list[str]]
    batch_outputs: Callable[[Batch], list[str]] = lambda batch: []
    inputs: Callable[[Unit], list[str]] | None = None  # files stamped in the receipt

    def expected(self, batch: Batch) -> dict[str, str]:
        return {unit.key: self.fingerprints[unit] for unit in batch.units}

    def batch_output_paths(self, batch: Batch) -> list[str]:
        paths = [path for unit in batch.units for path in self.outputs(unit)]
        return paths + list(self.batch_outputs(batch))


@dataclass
class Plan:
    """Everything the workflow needs to name batch jobs and their members."""

    layout: Layout
    batches: dict[str, list[Batch]]
    stages: dict[str, StagePlan]
    check_disk: bool = True
    index: ReceiptIndex = field(default_factory=ReceiptIndex)
    _generation_cache: dict[tuple[str, str, int], int] = field(default_factory=dict, init=False, repr=False)

    def batch(self, variant: str, name_or_index: str | int) -> Batch:
        index = name_or_index if isinstance(name_or_index, int) else parse_batch_name(name_or_index)[0]
        try:
            return self.batches[variant][index]
        except (KeyError, IndexError):
            raise ValueError(f"no batch {name_or_index!r} of variant {variant!r} in the plan") from None

    def generation(self, stage: str, batch: Batch) -> int:
        """The receipt generation a stage of a batch needs (see the module docstring).

        With `check_disk` off (a job process on a cluster node, which only runs the job it was
        given) the newest receipt on disk is taken as it is.
        """
        key = (stage, batch.variant, batch.index)
        if key not in self._generation_cache:
            folder = self.layout.receipt_dir(stage, batch.variant)
            if not self.check_disk:
                generation = self.index.latest(folder, batch.index) or 0
            else:
                plan = self.stages[stage]
                expected = plan.expected(batch)
                by_key = {unit.key: unit for unit in batch.units}
                inputs = None if plan.inputs is None else lambda key: plan.inputs(by_key[key])
                generation = self.index.current(
                    folder,
                    batch.index,
                    lambda receipt: receipt_holds(
                        receipt, expected, lambda: plan.batch_output_paths(batch), inputs
                    ),
                )
            self._generation_cache[key] = generation
        return self._generation_cache[key]

    def receipt(self, stage: str, batch: Batch) -> str:
        return self.layout.receipt(stage, batch.variant, batch.name(self.generation(stage, batch)))

    def receipts(self, stage: str, batches: Sequence[Batch] | None = None) -> list[str]:
        chosen = batches if batches is not None else [b for bs in self.batches.values() for b in bs]
        return [self.receipt(stage, batch) for batch in chosen]
