"""What must be Snakemake: the config's validation, wildcard constraints and the input functions.

The plan itself (runs, batches, members, fingerprints, paths) is stepscope.jobs.workflow_plan,
unit-tested without Snakemake; the functions here only hand it the rules' wildcards.
"""

import fnmatch

from snakemake.utils import validate

from stepscope.analysis.scoring import check_scorer_names
from stepscope.bench import read_task_sheet
from stepscope.jobs.config_checks import (
    check_config,
    config_error,
    select_tasks,
    workflow_path,
)
from stepscope.jobs.workflow_plan import WorkflowPlan
from stepscope.run_names import RUN_PATTERN
from stepscope.stepspec import parse_steps


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
check_config(config)


def load_tasks():
    sheet = read_task_sheet(
        workflow_path(config["bench"]["sample_sheet"], workflow.basedir)
    )
    validate(sheet, schema="../config/schema/samples.schema.yaml")
    return select_tasks(sheet, config["bench"])


TASKS = load_tasks()
PLAN = WorkflowPlan(
    config, TASKS, basedir=workflow.basedir, check_disk=not workflow.remote_exec
)
results = PLAN.results
resources = PLAN.resources
FIGURE_GROUP_DIR = PLAN.group_dir


wildcard_constraints:
    variant="[^/]+",
    split="[^/]+",
    task="[^/]+",
    sample="[0-9]{5}",
    run=RUN_PATTERN,
    batch="b[0-9]{4}[.]r[0-9]+",
    slug="[^/]+",
    revision="[^/]+",


def run_path(pattern, **wildcards):
    return pattern.format(**wildcards)


# ----- input and params functions: the rules' wildcards handed to the plan ----------------------
# (rules/probes*.smk call these names too)
family = PLAN.family
model_dir = PLAN.model_dir
model_sources = PLAN.model_sources
lora_params = PLAN.lora_params
sample_source = PLAN.sample_source  # wildcards with split, task, sample
sample_inputs = PLAN.sample_inputs
run_settings = PLAN.run_settings


def weights_inputs(wildcards):
    return PLAN.weights_inputs(wildcards.variant)


def variant_model(wildcards):
    return config["variants"][wildcards.variant]["model"]


def batch_of(wildcards):
    return PLAN.batch(wildcards.variant, wildcards.batch)


def receipt_pattern(stage):
    """A batch job's declared output: its receipt (stepscope.jobs.plan), named by variant and batch."""
    return PLAN.layout.receipt(stage, "{variant}", "{batch}")


def receipt_of(stage):
    """Input function: the receipt of the same batch's `stage` (at its current generation)."""
    return lambda wildcards: PLAN.receipt(stage, batch_of(wildcards))


def members_of(stage):
    """Params function: the members of the same batch's `stage`, as dicts."""
    return lambda wildcards: PLAN.member_params(stage, batch_of(wildcards))


def batch_minutes(stage):
    """Resources callable: scheduler runtime of a batch job, growing with each attempt."""
    return lambda wildcards, attempt: PLAN.batch_minutes(
        stage, batch_of(wildcards), attempt
    )


def group_key(wildcards):
    return wildcards.variant, wildcards.split, wildcards.task


def final_targets(wildcards):
    """Everything the workflow makes (a function: job processes on a cluster never need it)."""
    return PLAN.final_targets() + probe_targets()
