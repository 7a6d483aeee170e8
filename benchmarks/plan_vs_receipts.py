"""Would this code rerun a finished results folder? Compares the fingerprints and input stamps the
current plan (stepscope.jobs.workflow_plan) computes for a config with those in the folder's receipts,
which the code that made them wrote.

    PYTHONPATH=src .venv/bin/python benchmarks/plan_vs_receipts.py config/demo.yaml [--results DIR]

Run it from the folder the workflow ran in (relative paths in the config resolve there). Prints, per
stage, how many receipt members the plan agrees with; a fingerprint that differs reruns that run.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import yaml
from snakemake.utils import validate

from stepscope.bench import read_task_sheet
from stepscope.jobs.config_checks import check_config, select_tasks, workflow_path
from stepscope.jobs.plan import STAGES
from stepscope.jobs.workflow_plan import WorkflowPlan

REPO = Path(__file__).resolve().parents[1]


def compare(config_path: Path, results: str | None) -> dict[str, Counter]:
    config = yaml.safe_load(config_path.read_text())
    if results:
        config["results"] = results
    validate(config, str(REPO / "config/schema/config.schema.yaml"), set_default=True)
    check_config(config)
    sheet = read_task_sheet(workflow_path(config["bench"]["sample_sheet"], REPO))
    plan = WorkflowPlan(config, select_tasks(sheet, config["bench"]), basedir=str(REPO))
    counts = {}
    for stage in STAGES:
        units = {(unit.variant, unit.key): unit for unit in plan.fingerprints[stage]}
        inputs = {"sample": plan.input_files, "analysis": plan.scored_files}.get(stage)
        tally: Counter = Counter()
        for path in sorted(Path(config["results"], "batches", stage).glob("*/*.json")):
            receipt = json.loads(path.read_text())
            for member in receipt["members"]:
                unit = units.get((receipt["variant"], member["key"]))
                if unit is None:
                    tally["not planned"] += 1
                    continue
                tally["same fingerprint" if plan.fingerprints[stage][unit] == member["fingerprint"] else "other fingerprint"] += 1
                if inputs is not None:
                    same = set(member.get("inputs", {})) == set(inputs(unit))
                    tally["same stamped files" if same else "other stamped files"] += 1
        counts[stage] = tally
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("--results", help="the results folder (default: the config's)")
    args = parser.parse_args()
    for stage, tally in compare(args.config, args.results).items():
        print(f"{stage}: " + ", ".join(f"{key} {value}" for key, value in sorted(tally.items())))


if __name__ == "__main__":
    main()
