"""What a batch job is told about each of its runs (members), per stage; built by the workflow's plan.

Snakemake hands them to the job scripts as plain dicts (`as_params`): its params-change check compares
the params' reprs, so dicts in the same key order keep jobs that finished before these types existed
current. The batch runners take either (`as_members`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar


class _Params:
    def as_params(self) -> dict[str, Any]:
        # shallow (asdict would deep-copy every member's settings: thousands per parse)
        return {field.name: getattr(self, field.name) for field in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_params(cls, params: dict[str, Any]):
        return cls(**params)


@dataclass(frozen=True)
class Member(_Params):
    """One run of a batch, as its receipt lists it."""

    key: str  # split/task/sample/run
    labels: dict[str, str]  # variant, split, task, sample, run
    fingerprint: str  # of the stage's request: the run's outputs are current while it holds


@dataclass(frozen=True)
class SampleMember(Member):
    """One run to sample: its input, settings and where its records and scorer video go."""

    source: dict[str, Any]  # {sample_dir} of a bench sample, or a custom {image, prompt}
    settings: dict[str, Any]  # the variant's sampler settings
    record: dict[str, Any]  # config `record`: what is recorded
    seeds: list[int]  # the run's seed (an ensemble's first seed)
    ensemble: str | None  # the ensemble's run name, None for a plain run
    out_dir: str  # the run's records folder
    video_link: str  # the final video in the VBVR scorer's layout
    inputs: list[str]  # the input files whose change makes the run stale (stamped)


@dataclass(frozen=True)
class DecodeMember(Member):
    """One run whose chosen steps are decoded."""

    run_dir: str
    out_dir: str


@dataclass(frozen=True)
class AnalysisMember(Member):
    """One run drawn and scored."""

    run_dir: str
    decoded_dir: str | None  # None when nothing is decoded
    figure_dir: str
    score_table: str | None  # None for custom inputs (no ground truth)
    sample_dir: str | None
    inputs: list[str]  # the sample files the scorer reads (stamped)


@dataclass(frozen=True)
class DivergenceItem(_Params):
    """One input's seed runs, whose x0-hats are compared across seeds."""

    labels: dict[str, str]  # variant, split, task, sample
    keys: list[str]  # the member keys of the seed runs
    run_dirs: list[str]
    out: str


M = TypeVar("M", SampleMember, DecodeMember, AnalysisMember, DivergenceItem)


def as_members(kind: type[M], items: list[M] | list[dict[str, Any]]) -> list[M]:
    """Members of one kind from members or their params dicts (what a job script is handed)."""
    return [item if isinstance(item, kind) else kind.from_params(item) for item in items]
