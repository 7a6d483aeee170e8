"""The workflow's plan without Snakemake: runs, batches, members, fingerprints, targets and downloads
for the demo config, which config change touches which fingerprint, the run-name grammar, the bench
files each stage stamps, and CPU job modules that never import torch."""

from __future__ import annotations

import ast
import copy
import fnmatch
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO
from snakemake.utils import validate

from stepscope import run_names
from stepscope.bench import SAMPLE_FILES, SAMPLING_FILES, SCORING_FILES, generate_demo_bench, read_task_sheet
from stepscope.jobs.config_checks import check_config, select_tasks
from stepscope.jobs.members import AnalysisMember, DecodeMember, SampleMember, as_members
from stepscope.jobs.plan import fingerprint
from stepscope.jobs.workflow_plan import WorkflowPlan
from stepscope.run_names import EnsembleSpec

SCHEMA = REPO / "config/schema/config.schema.yaml"


def demo_config(tmp_path: Path, **changes) -> dict:
    """config/demo.yaml as the workflow sees it (schema defaults filled in), results under tmp_path;
    `changes`: dotted key -> value, applied before validation."""
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    for key, value in changes.items():
        node = config
        *parents, last = key.split(".")
        for parent in parents:
            node = node[parent]
        node[last] = value
    config["results"], config["resources"] = str(tmp_path / "results"), str(tmp_path / "resources")
    validate(config, str(SCHEMA), set_default=True)
    check_config(config)
    return config


def make_plan(config: dict) -> WorkflowPlan:
    sheet = read_task_sheet(REPO / config["bench"]["sample_sheet"])
    return WorkflowPlan(config, select_tasks(sheet, config["bench"]), basedir=str(REPO))


@pytest.fixture
def plan(tmp_path) -> WorkflowPlan:
    return make_plan(demo_config(tmp_path))


def test_runs_follow_the_variants_task_and_sample_choices(plan):
    config = plan.config
    runs = ["seed1", "seed2", "ens-latent-k2-0-3"]
    assert plan.seed_runs + plan.ensemble_runs == runs
    units = list(plan.units())
    assert len(units) == len(set(units))
    for variant in config["run_variants"]:
        settings = config["variants"][variant]
        globs = settings["task_globs"] or ["*"]
        limit = settings["samples_per_task"] or config["bench"]["samples_per_task"]
        expected = {
            (row.split, row.task, f"{index:05d}", run)
            for row in plan.tasks.itertuples()
            if any(fnmatch.fnmatch(row.task, glob) for glob in globs)
            for index in range(limit)
            for run in runs
        }
        assert {(u.split, u.task, u.sample, u.run) for u in units if u.variant == variant} == expected


def test_batches_hold_whole_inputs_and_members_say_what_each_job_needs(plan):
    per_batch = plan.config["batch"]["inputs"]
    for variant, batches in plan.batched.batches.items():
        assert [unit for batch in batches for unit in batch.units] == [u for u in plan.units() if u.variant == variant]
        for batch in batches:
            assert 1 <= len(batch.inputs) <= per_batch
            samples = plan.sample_members(batch)
            assert [m.key for m in samples] == [u.key for u in batch.units]
            for member, unit in zip(samples, batch.units, strict=True):
                folder = f"{plan.bench_root()}/{unit.split}/{unit.task}/{unit.sample}"
                assert member.fingerprint == fingerprint(plan.sampling_request(unit))
                assert member.source == {"sample_dir": folder}
                assert member.inputs == [f"{folder}/{name}" for name in SAMPLING_FILES]
                assert member.seeds == ([int(unit.run[4:])] if unit.run.startswith("seed") else [1])
                assert member.ensemble == (None if unit.run.startswith("seed") else unit.run)
                assert member.out_dir == plan.layout.run_dir(unit)
            analysed = plan.analysis_members(batch)
            assert all(m.inputs == [f"{m.sample_dir}/{name}" for name in SCORING_FILES] for m in analysed)
            assert all(m.decoded_dir == plan.layout.decoded_dir(u) for m, u in zip(analysed, batch.units, strict=True))
            # Snakemake gets dicts in the members' field order; the job scripts get the members back.
            for stage, kind in (("sample", SampleMember), ("decode", DecodeMember), ("analysis", AnalysisMember)):
                params = plan.member_params(stage, batch)
                assert all(isinstance(item, dict) for item in params)
                assert as_members(kind, params) == {"sample": samples, "decode": plan.decode_members(batch),
                                                    "analysis": analysed}[stage]  # fmt: skip
            divergences = plan.divergence_items(batch)
            assert [tuple(item.labels.values())[1:] for item in divergences] == batch.inputs
            assert all(len(item.keys) == len(plan.seed_runs) == len(item.run_dirs) for item in divergences)


def test_minutes_count_an_ensembles_trajectories(plan):
    batch = plan.batched.batches["demo-wan22"][0]
    inputs = len(batch.inputs)
    minutes = plan.config["batch"]
    # per input: two seed runs and one ensemble of k=2
    assert plan.batch_minutes("sample", batch, 1) == minutes["sample_minutes"] * inputs * (2 + 2)
    assert plan.batch_minutes("decode", batch, 2) == minutes["decode_minutes"] * inputs * 3 * 2


def test_final_targets_name_every_batch_group_and_table(plan):
    targets = plan.final_targets()
    batches = [b for bs in plan.batched.batches.values() for b in bs]
    assert [t for t in targets if "/batches/analysis/" in t] == [
        plan.layout.receipt("analysis", b.variant, b.name(0)) for b in batches
    ]
    groups = {(u.variant, u.split, u.task) for u in plan.units()}
    assert {t for t in targets if "/figures/groups/" in t} == {
        plan.results(f"figures/groups/{v}/{s}/{t}") for v, s, t in groups
    }
    assert plan.results("manifest.parquet") in targets and plan.results("tables/all_runs_succeeded") in targets
    key = next(iter(sorted(groups)))
    assert plan.group_run_dirs(*key) == [
        plan.layout.run_dir(u) for u in plan.units() if (u.variant, u.split, u.task) == key and u.run in plan.seed_runs
    ]


STAGES = ("sample", "decode", "analysis")


def changed_stages(tmp_path, **changes) -> dict[str, set[str]]:
    """Per stage, the variants whose fingerprints a config change changes (units kept in both)."""
    before = make_plan(demo_config(tmp_path)).fingerprints
    after = make_plan(demo_config(tmp_path, **changes)).fingerprints
    return {
        stage: {unit.variant for unit in before[stage] if unit in after[stage] and after[stage][unit] != before[stage][unit]}
        for stage in STAGES
    }


ALL = {"demo-wan22", "demo-wan21-vbvr", "demo-ltx23-vbvr"}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"decode.steps": "all"}, {"sample": set(), "decode": ALL, "analysis": ALL}),
        ({"figures.steps": "all"}, {"sample": set(), "decode": set(), "analysis": ALL}),
        ({"figures.max_frames": 4}, {"sample": set(), "decode": set(), "analysis": ALL}),
        ({"record.top_k": 3}, {"sample": ALL, "decode": ALL, "analysis": ALL}),
        ({"variants.demo-wan21-vbvr.cfg_scale": 4.0}, {"sample": {"demo-wan21-vbvr"}, "decode": {"demo-wan21-vbvr"},
                                                       "analysis": {"demo-wan21-vbvr"}}),
        ({"batch.inputs": 1}, {"sample": set(), "decode": set(), "analysis": set()}),
        ({"seeds": [1, 2, 3]}, {"sample": set(), "decode": set(), "analysis": set()}),
    ],
)  # fmt: skip
def test_a_config_change_changes_exactly_the_fingerprints_it_touches(tmp_path, changes, expected):
    assert changed_stages(tmp_path, **changes) == expected


def test_without_decoding_the_analysis_does_not_wait_for_it(tmp_path):
    plan = make_plan(demo_config(tmp_path, **{"decode.steps": "none"}))
    batch = plan.batched.batches["demo-wan22"][0]
    assert "decoded" not in plan.analysis_inputs(batch)
    assert all(member.decoded_dir is None for member in plan.analysis_members(batch))


def test_downloads_are_looked_up_by_their_path(tmp_path):
    config = demo_config(
        tmp_path,
        models={"ltx": {"family": "ltx2.3", "repo_id": "Lightricks/LTX-2.3", "revision": "v1"}},
        loras={"vbvr": {"repo_id": "Video-Reason/VBVR-LTX", "files": ["a.safetensors"]}},
        variants={"v": {"model": "ltx", "loras": [{"lora": "vbvr", "file": "a.safetensors"}]}},
        run_variants=["v"],
        probes={},
    )
    plan = make_plan(config)
    assert plan.hub_lookup("models", "Lightricks--LTX-2.3", "v1")["repo_id"] == "Lightricks/LTX-2.3"
    (gemma,) = plan.model_sources("ltx").values()
    _, kind, slug, revision = gemma.rsplit("/", 3)
    assert plan.hub_lookup("models", slug, revision)["repo_id"] == slug.replace("--", "/")
    assert plan.weights_inputs("v") == {
        "weights": [f"{plan.model_dir('ltx')}/.stepscope_source.json", f"{gemma}/.stepscope_source.json"],
        "loras": [f"{plan.resources('hub/loras/Video-Reason--VBVR-LTX/main')}/.stepscope_source.json"],
    }
    assert plan.hub_lookup("loras", "Video-Reason--VBVR-LTX", "main")["patterns"] == ["a.safetensors"]
    # the schema's defaults reach the LoRA's load parameters (no default repeated in the plan)
    assert plan.lora_params("v") == [
        {"path": f"{plan.resources('hub/loras/Video-Reason--VBVR-LTX/main')}/a.safetensors", "target": "dit", "alpha": 1.0}
    ]
    with pytest.raises(ValueError, match="no configured models repo 'x--y' at revision 'main'"):
        plan.hub_lookup("models", "x--y", "main")


def test_a_cross_reference_the_schema_cannot_check_names_its_key(tmp_path):
    config = demo_config(tmp_path)
    bad = copy.deepcopy(config)
    bad["variants"]["demo-wan21-vbvr"]["loras"][0]["file"] = "other.safetensors"
    with pytest.raises(ValueError, match=r"config error at `variants.demo-wan21-vbvr.loras\[0\]`"):
        check_config(bad)
    bad = copy.deepcopy(config)
    bad["ensembles"] = [{"strategy": "latent", "k": 2, "start": 5, "end": 3, "rescale": False}]
    with pytest.raises(ValueError, match=r"config error at `ensembles\[0\]`"):
        check_config(bad)


# ----- run names -------------------------------------------------------------------------------


def test_run_names_are_built_and_parsed_by_one_grammar():
    import re

    pattern = re.compile(f"^(?:{run_names.RUN_PATTERN})$")
    spec = EnsembleSpec("x0", 4, 2, 9, True)
    assert spec.name == run_names.ensemble_run("x0", 4, 2, 9, True) == "ens-x0-k4-2-9-rescale"
    assert EnsembleSpec.from_name(spec.name) == spec
    assert tuple(run_names.parse_ensemble_run(spec.name)) == ("x0", 4, 2, 9, True)
    for name in (spec.name, EnsembleSpec("velocity", 3, 0, 10).name, run_names.seed_run(12)):
        assert pattern.match(name)
    for name in ("ens-mean-k3-0-10", "ens-latent-k3", "seed", "seedx", "seed1/x"):
        assert not pattern.match(name)
    assert run_names.run_seed("seed12") == 12 and run_names.seed_label("seed12") == "12"
    assert run_names.seed_label(spec.name) == spec.name


def test_the_schema_offers_exactly_the_ensemble_strategies():
    schema = yaml.safe_load(SCHEMA.read_text())
    strategy = schema["properties"]["ensembles"]["items"]["properties"]["strategy"]
    assert tuple(strategy["enum"]) == run_names.STRATEGIES


# ----- bench files -----------------------------------------------------------------------------


OPENED: list[str] | None = None


def _record_opens(event, args):
    if OPENED is None:
        return
    if event == "open" and isinstance(args[0], str | Path):
        OPENED.append(str(args[0]))
    elif event == "subprocess.Popen":
        OPENED.extend(str(arg) for arg in (args[1] or ()))


sys.addaudithook(_record_opens)


def files_read(folder: Path, action) -> set[str]:
    """The names of the files under `folder` that `action` opens (itself or through a subprocess)."""
    global OPENED
    OPENED = []
    try:
        action()
        return {Path(path).name for path in OPENED if Path(path).resolve().is_relative_to(folder.resolve())}
    finally:
        OPENED = None


def test_the_analysis_stamps_every_file_the_scorer_reads(tmp_path):
    from stepscope.analysis.proxy_scorer import score_video

    split = "In-Domain_50"
    bench = generate_demo_bench(tmp_path / "bench", splits=[split], tasks_per_split=1, samples_per_task=1, num_frames=9)
    folder = next(bench.glob(f"{split}/*/00000"))
    read = files_read(folder, lambda: score_video(np.zeros((5, 16, 16, 3), dtype=np.uint8), folder))
    assert read == set(SCORING_FILES)  # a new reference file must be added to bench.SCORING_FILES
    assert set(SCORING_FILES) <= set(SAMPLE_FILES) and set(SAMPLING_FILES) <= set(SAMPLE_FILES)
    local = {"source": "local", "local_path": str(bench), "splits": [split], "task_globs": [folder.parent.name],
             "samples_per_task": 1, "sample_sheet": "config/demo_bench_tasks.tsv"}  # fmt: skip
    plan = make_plan(demo_config(tmp_path, bench=local, run_variants=["demo-wan22"], probes={}))
    (batch,) = plan.batched.batches["demo-wan22"]
    for member in plan.analysis_members(batch):
        assert member.sample_dir == str(folder) and {Path(path).name for path in member.inputs} == read
    # and Snakemake waits for them (a local bench has no download marker)
    assert {Path(path).name for path in plan.analysis_inputs(batch)["samples"]} == read


# ----- CPU jobs never import torch -------------------------------------------------------------

CPU_MODULES = [
    "stepscope.jobs.workflow_plan",
    "stepscope.jobs.sources",
    "stepscope.jobs.config_checks",
    "stepscope.jobs.analysis_batch",
    "stepscope.jobs.analysis",
    "stepscope.jobs.batch_common",
    "stepscope.jobs.failures",
    "stepscope.jobs.manifest",
    "stepscope.jobs.members",
    "stepscope.jobs.plan",
    "stepscope.run_names",
]
CPU_SCRIPTS = ["analysis_batch.py", "manifest.py", "check_failures.py", "demo_bench.py", "download.py", "tables.py"]


def script_imports(name: str) -> list[str]:
    tree = ast.parse((REPO / "workflow/scripts" / name).read_text())
    return [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]


def test_cpu_jobs_never_import_torch():
    modules = CPU_MODULES + [module for name in CPU_SCRIPTS for module in script_imports(name)]
    assert "stepscope.jobs.analysis_batch" in modules and "stepscope.jobs.manifest" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in ('torch', 'diffsynth') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    # and the GPU runners do import it (what the split is for)
    code = "import sys, stepscope.jobs.batches; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "True"
