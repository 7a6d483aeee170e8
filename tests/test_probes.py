"""The paper's probes: zero-strength noise is the clean run, CKA of identical states is 0, a swap with
identical inputs changes nothing; the probe jobs end to end on the tiny twin; the demo plans them."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO
from test_workflow import job_counts, snakemake, write_config

from stepscope import records
from stepscope.models.registry import get_family
from stepscope.probes.common import (
    ALL_FRAMES,
    HookChain,
    NoiseAtStep,
    cka_dissimilarity,
    latent_tokens,
    linear_cka,
    seeded_noise,
)
from stepscope.probes.job import probe_job
from stepscope.probes.noise_frame import NoiseAtFrame
from stepscope.probes.registry import KINDS, PROBES
from stepscope.probes.sensitivity import HiddenSensitivity
from stepscope.probes.tables import probe_table_job
from stepscope.probes.token_swap import SWAP_SOURCES, TokenCapture, TokenSwap
from stepscope.sampling.blocks import block_hooks, forward_hooks, pipe_blocks
from stepscope.sampling.capture import CaptureSpec
from stepscope.sampling.context import StepContext
from stepscope.sampling.loop import RecordSpec, sample, sample_lockstep

RUN = dict(prompt="move the red square to the right", num_frames=9, height=64, width=64, cfg_scale=5.0)
STEPS = 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny twin gains nothing from more threads, and oversubscribed cores slow it down 100-fold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _record():
    return RecordSpec(x0_steps=None, capture=CaptureSpec(layers=(0, 3), steps=None, passes=("cond",)))


def _same_run(a, b) -> None:
    assert torch.equal(a.final_latent, b.final_latent)
    assert a.x0_hats.keys() == b.x0_hats.keys()
    for step in a.x0_hats:
        assert torch.equal(a.x0_hats[step], b.x0_hats[step])
    assert np.array_equal(a.frames, b.frames)
    assert a.activation_maps.keys() == b.activation_maps.keys()
    for key in a.activation_maps:
        assert np.array_equal(a.activation_maps[key], b.activation_maps[key])


@pytest.fixture(scope="module")
def clean_run(tiny_pipe, test_image):
    return sample(
        tiny_pipe("wan2.2"), "wan2.2", image=test_image, num_inference_steps=STEPS, record=_record(), **RUN
    )


# ----- noise hooks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hook", [NoiseAtStep(1, strength=0.0), NoiseAtFrame(1, strength=0.0)], ids=["step", "frame"]
)
def test_zero_strength_reproduces_the_clean_run_exactly(tiny_pipe, test_image, clean_run, hook):
    perturbed = sample(
        tiny_pipe("wan2.2"),
        "wan2.2",
        image=test_image,
        num_inference_steps=STEPS,
        record=_record(),
        hook=hook,
        **RUN,
    )
    _same_run(perturbed, clean_run)


def test_lockstep_sweep_keeps_the_clean_trajectory_and_perturbs_from_the_step_on(
    tiny_pipe, test_image, clean_run
):
    hook = HookChain(
        [
            NoiseAtStep(2, strength=0.0, trajectories=[1]),
            NoiseAtStep(2, strength=1.0, trajectories=[2]),
        ]
    )
    results = sample_lockstep(
        tiny_pipe("wan2.2"),
        "wan2.2",
        image=test_image,
        seeds=[1, 1, 1],
        num_inference_steps=STEPS,
        record=_record(),
        hook=hook,
        **RUN,
    )
    _same_run(results[0], clean_run)
    _same_run(results[1], clean_run)  # strength 0 inside a sweep, too
    noised = results[2]
    for step in (0, 1):
        assert torch.equal(noised.x0_hats[step], clean_run.x0_hats[step])
    for step in (2, 3):
        assert not torch.equal(noised.x0_hats[step], clean_run.x0_hats[step])


def test_noise_hooks_replace_what_they_say_and_are_seeded():
    x = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    frame = NoiseAtFrame(1, strength=1.0, seed=7, steps=[2])
    assert frame.on_latents(1, 0.5, [x]) is None
    (out,) = frame.on_latents(2, 0.5, [x])
    assert torch.equal(out[:, :, 0], x[:, :, 0]) and torch.equal(out[:, :, 2], x[:, :, 2])
    assert not torch.equal(out[:, :, 1], x[:, :, 1])
    assert torch.equal(out, frame.on_latents(2, 0.5, [x])[0])  # same seed, same noise
    assert not torch.equal(out, NoiseAtFrame(1, 1.0, seed=8).on_latents(2, 0.5, [x])[0])
    half = NoiseAtStep(0, strength=0.5, seed=3).on_latents(0, 1.0, [x])[0]
    noise = seeded_noise(x, 3, 0, ALL_FRAMES)
    assert torch.allclose(half, 0.5 * x + 0.5 * noise)
    full = NoiseAtStep(0, strength=1.0, seed=3).on_latents(0, 1.0, [x])[0]
    assert torch.equal(full, noise)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        NoiseAtStep(0, strength=1.5)
    with pytest.raises(ValueError, match="latent has 3 frames"):
        NoiseAtFrame(5).on_latents(0, 1.0, [x])


# ----- CKA --------------------------------------------------------------------------------------


def test_cka_dissimilarity_of_identical_states_is_zero():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(300, 12, generator=generator)
    assert cka_dissimilarity(x, x) == 0.0
    assert cka_dissimilarity(x.numpy(), x.clone().numpy()) == 0.0
    rotation, _ = torch.linalg.qr(torch.randn(12, 12, generator=generator))
    assert cka_dissimilarity(x, 3.0 * x @ rotation + 5.0) < 1e-12  # invariant to rotation/scale/shift
    unrelated = cka_dissimilarity(x, torch.randn(300, 12, generator=generator))
    assert 0.8 < unrelated <= 1.0
    # feature-space (n > p) and Gram-space (n <= p) forms agree
    wide = torch.randn(10, 40, generator=generator)
    other = wide + 0.3 * torch.randn(10, 40, generator=generator)
    gram = linear_cka(wide, other)
    feature = linear_cka(torch.cat([wide] * 5), torch.cat([other] * 5))
    assert math.isclose(gram, feature, rel_tol=1e-9)
    assert math.isnan(linear_cka(torch.ones(5, 3), x[:5]))
    latent = torch.randn(16, 3, 4, 4, generator=generator)
    assert latent_tokens(latent).shape == (48, 16)
    assert cka_dissimilarity(latent_tokens(latent), latent_tokens(latent.clone())) == 0.0


# ----- token swap -------------------------------------------------------------------------------


def _swapped(pipe, image, source_prompt, layers, step=1):
    """The target run with layer L's cond tokens at `step` taken from a source run (library level)."""
    blocks = pipe_blocks(pipe, get_family("wan2.2"))
    source_context = StepContext()
    capture = TokenCapture(source_context, step)
    with forward_hooks(block_hooks(blocks, layers, capture.hook)):
        sample_lockstep(
            pipe,
            "wan2.2",
            image=image,
            seeds=[1],
            num_inference_steps=STEPS,
            decode=False,
            context=source_context,
            **{**RUN, "prompt": source_prompt},
        )
    context = StepContext()
    swap = TokenSwap(context, step, [None, *layers], capture.tokens)
    with forward_hooks(block_hooks(blocks, layers, swap.hook)):
        results = sample_lockstep(
            pipe,
            "wan2.2",
            image=image,
            seeds=[1] * (1 + len(layers)),
            num_inference_steps=STEPS,
            decode=False,
            context=context,
            **RUN,
        )
    assert swap.swaps == len(layers)
    return results


def test_swap_with_identical_inputs_changes_nothing(tiny_pipe, test_image, clean_run):
    results = _swapped(tiny_pipe("wan2.2"), test_image, RUN["prompt"], [0, 2, 3])
    for result in results:
        assert torch.equal(result.final_latent, clean_run.final_latent)
    different = _swapped(tiny_pipe("wan2.2"), test_image, "fill the green circle", [0, 3])
    assert torch.equal(different[0].final_latent, clean_run.final_latent)
    for result in different[1:]:
        assert not torch.equal(result.final_latent, clean_run.final_latent)


# ----- step context and block hooks -------------------------------------------------------------


def test_the_loop_publishes_step_trajectory_pass_and_expert_to_block_hooks(tiny_pipe, test_image):
    pipe = tiny_pipe("wan2.2")
    context = StepContext()
    seen = []

    def make_hook(layer, expert):
        return lambda module, inputs, output: seen.append(
            (context.step, context.trajectory, context.pass_, context.expert, expert)
        )

    with forward_hooks(block_hooks(pipe_blocks(pipe, get_family("wan2.2")), [0], make_hook)):
        (result, _) = sample_lockstep(
            pipe,
            "wan2.2",
            image=test_image,
            seeds=[1, 2],
            num_inference_steps=STEPS,
            decode=False,
            context=context,
            **RUN,
        )
    experts = [row["expert"] for row in result.schedule]
    assert len(set(experts)) == 2  # the sweep crosses the expert switch
    assert seen == [
        (step, trajectory, pass_, experts[step], experts[step])
        for step in range(STEPS)
        for trajectory in (0, 1)
        for pass_ in ("cond", "uncond")
    ]
    assert context.pass_ is None  # no pass runs outside a velocity evaluation


def test_block_hooks_are_removed_even_when_the_run_fails(tiny_pipe):
    blocks = pipe_blocks(tiny_pipe("wan2.2"), get_family("wan2.2"))
    with pytest.raises(RuntimeError, match="boom"):
        with forward_hooks(block_hooks(blocks, [0, 3], lambda layer, expert: lambda *args: None)):
            assert all(listed[0]._forward_hooks for listed in blocks.values())
            raise RuntimeError("boom")
    assert not any(block._forward_hooks for listed in blocks.values() for block in listed)
    with pytest.raises(ValueError, match="layer 9 does not exist: the .* DiT has 4 blocks"):
        block_hooks(blocks, [9], lambda layer, expert: None)


# ----- jobs end to end --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench_task(tmp_path_factory):
    from stepscope.bench import generate_demo_bench

    root = generate_demo_bench(
        tmp_path_factory.mktemp("probe-bench"), splits=["In-Domain_50"], tasks_per_split=1, samples_per_task=2
    )
    return next((root / "In-Domain_50").iterdir())


def _job(tmp_path, tiny_weights, bench_task, kind, spec, swap_source=None):
    out = tmp_path / kind
    labels = {"variant": "tiny", "split": "In-Domain_50", "task": bench_task.name, "sample": "00000"}
    summary = probe_job(
        kind=kind,
        family="wan2.2",
        weights_dir=str(tiny_weights("wan2.2")),
        loras=[],
        source={"sample_dir": str(bench_task / "00000")},
        settings={"steps": STEPS, "cfg_scale": 5.0, "height": 64, "width": 64, "max_frames": 9},
        record={"layers": [0, 3], "capture_steps": "all", "x0_steps": "2,3", "passes": ["cond"]},
        seed=1,
        spec=spec,
        out_dir=str(out),
        device={"device": "cpu", "dtype": "fp32"},
        labels=labels,
        swap_source=swap_source,
    )
    for condition in summary["conditions"]:
        assert records.is_complete(out / condition["name"])
    tables = tmp_path / "tables"
    figures = probe_table_job(
        kind=kind,
        probe_dirs=[str(out)],
        metric="total",
        out_table=str(tables / f"{kind}.parquet"),
        out_summary=str(tables / f"{kind}_summary.csv"),
        figure_dir=str(tmp_path / "figures" / kind),
    )
    assert figures and all(path.stat().st_size > 0 for path in figures)
    return summary, pd.read_parquet(tables / f"{kind}.parquet"), pd.read_csv(tables / f"{kind}_summary.csv")


def test_probe_jobs_end_to_end_at_zero_strength_and_with_identical_swap_inputs(
    tmp_path, tiny_weights, bench_task
):
    summary, table, noise = _job(
        tmp_path, tiny_weights, bench_task, "noise_step", {"steps": "0,2", "strength": 0.0}
    )
    assert [c["name"] for c in summary["conditions"]] == ["clean", "step0000", "step0002"]
    assert summary["switch_step"] is not None
    assert (noise["drop"] == 0.0).all() and set(noise["step"]) == {0, 2}
    assert table[table["metric"] == "total"].shape[0] == 3

    summary, table, sensitivity = _job(
        tmp_path, tiny_weights, bench_task, "sensitivity", {"steps": "1,3", "strength": 0.0, "layers": [0, 2]}
    )
    assert set(table["representation"]) == {"x0", "L00", "L02"}  # x0 at every step, despite record.x0_steps
    assert (table["dissimilarity"] == 0.0).all()
    assert set(table.loc[table["injection_step"] == 1, "step"]) == {1, 2, 3}
    assert set(sensitivity["peak_step"]) <= {1, 3} and "switch_step" in sensitivity

    summary, table, swap = _job(
        tmp_path,
        tiny_weights,
        bench_task,
        "token_swap",
        {"step": 1, "layers": "all", "passes": ["cond"]},
        swap_source={"kind": "same"},
    )
    assert summary["layers"] == [0, 1, 2, 3]
    assert not table["changed"].any() and (table["latent_to_target"] == 0.0).all()
    assert (table["frames_to_target"] == 0.0).all() and (table["follows"] == "target").all()
    assert not swap["flip"].any()


def test_noise_frame_job_sweeps_every_latent_frame(tmp_path, tiny_weights, bench_task):
    summary, table, noise = _job(
        tmp_path, tiny_weights, bench_task, "noise_frame", {"frames": "all", "steps": "all", "strength": 1.0}
    )
    assert summary["latent_frames"] == 3  # 9 frames -> (9 - 1) / 4 + 1 latent frames
    assert list(noise["frame"]) == [0, 1, 2] and noise["clean_mean"].notna().all()


# ----- registry -----------------------------------------------------------------------------------


def test_probe_names_agree_between_the_schema_and_the_registry():
    """Every probe section of the config schema is a registered probe and vice versa; every part the
    registry names exists; the swap sources are the schema's. (The workflow takes its names from the
    registry: the plan test below finds one table job per registered probe.)"""
    schema = yaml.safe_load((REPO / "config/schema/config.schema.yaml").read_text())
    sections = schema["properties"]["probes"]["properties"]
    probe_sections = [
        name for name, section in sections.items() if "enabled" in section.get("properties", {})
    ]
    assert probe_sections == list(KINDS)
    assert sections["token_swap"]["properties"]["source"]["enum"] == list(SWAP_SOURCES)
    for probe in PROBES.values():
        assert all(callable(probe.part(part)) for part in ("run", "table", "summary", "figures"))
    with pytest.raises(ValueError, match="unknown probe 'noise'.*noise_step"):
        probe_job(
            kind="noise",
            family="wan2.2",
            weights_dir="",
            loras=[],
            source={},
            settings={},
            record={},
            seed=0,
            spec={},
            out_dir="",
        )


def test_naming_the_probes_and_their_noise_tables_and_figures_imports_no_torch():
    """The workflow reads the names, and the CPU table job of the noise probes runs, without torch."""
    code = (
        "import sys\n"
        "from stepscope.probes.registry import PROBES\n"
        "for name in ('noise_step', 'noise_frame'):\n"
        "    [PROBES[name].part(part) for part in ('table', 'summary', 'figures')]\n"
        "import stepscope.probes.tables, stepscope.sampling.context\n"
        "print(sorted(m for m in ('torch', 'diffsynth') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ----- workflow -----------------------------------------------------------------------------------


def test_demo_plan_contains_one_probe_and_one_table_job_per_probe(tmp_path):
    result = snakemake("-n", "--configfile", str(write_config(tmp_path)), cwd=tmp_path)
    counts = job_counts(result.stdout)
    assert counts["probe"] == len(KINDS) and counts["probe_table"] == len(KINDS)
    for probe in KINDS:
        assert (
            f"probes/{probe}/demo-wan22/In-Domain_50/D-2_fill_circle_data-generator/00000"
            in result.stdout
        )
        assert f"probes/tables/{probe}_summary.csv" in result.stdout
    # A narrowed bench without the probed task (as the workflow tests use) plans no probe jobs.
    (tmp_path / "small").mkdir()
    small = write_config(tmp_path / "small", **{"bench.task_globs": ["D-1_*"]})
    result = snakemake("-n", "--configfile", str(small), cwd=tmp_path / "small")
    counts = job_counts(result.stdout)
    assert (
        counts["sample_batch"] == 1 and "probe" not in counts and "probe_table" not in counts
    )  # 2 inputs, 6 runs


def test_bad_probe_config_fails_at_parse_time_naming_the_key(tmp_path):
    config = write_config(tmp_path, **{"probes.token_swap.step": 99})
    result = snakemake("-n", "--configfile", str(config), cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "probes.token_swap.step" in result.stdout + result.stderr


def test_ltx_states_and_block_outputs(tmp_path_factory):
    """LTX's (video, audio) states and TransformerArgs block outputs go through the same hooks."""
    pytest.importorskip("torchaudio")
    pytest.importorskip("av")
    from PIL import Image

    from stepscope.models.loading import load_pipeline
    from stepscope.models.ltx import LTX23

    pipe = load_pipeline("ltx2.3", LTX23.make_tiny_weights(tmp_path_factory.mktemp("ltx")), device="cpu")
    image = Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype(np.uint8))
    run = dict(
        image=image, height=64, width=64, num_frames=9, cfg_scale=3.0, num_inference_steps=3, decode=False
    )
    blocks = pipe_blocks(pipe, get_family("ltx2.3"))
    context = StepContext()
    hidden = HiddenSensitivity(context, [1, 1])
    hook = HookChain([NoiseAtStep(1, 0.0, trajectories=[1]), NoiseAtStep(1, 1.0, trajectories=[2])])
    with forward_hooks(block_hooks(blocks, [0], hidden.hook)):
        clean, zero, noised = sample_lockstep(
            pipe, "ltx2.3", prompt="p", seeds=[1, 1, 1], hook=hook, context=context, **run
        )
    assert torch.equal(zero.final_latent, clean.final_latent)
    assert not torch.equal(noised.final_latent, clean.final_latent)
    table = hidden.table()
    assert (table.loc[table.index % 2 == 0, "dissimilarity"] == 0.0).all()  # the zero-strength rows
    assert (table.loc[table.index % 2 == 1, "dissimilarity"] > 0.0).all()

    source_context = StepContext()
    capture = TokenCapture(source_context, 1)
    with forward_hooks(block_hooks(blocks, [0, 3], capture.hook)):
        sample_lockstep(pipe, "ltx2.3", prompt="p", seeds=[1], context=source_context, **run)
    context = StepContext()
    swap = TokenSwap(context, 1, [None, 0, 3], capture.tokens)
    with forward_hooks(block_hooks(blocks, [0, 3], swap.hook)):
        results = sample_lockstep(pipe, "ltx2.3", prompt="p", seeds=[1, 1, 1], context=context, **run)
    assert swap.swaps == 2
    assert all(torch.equal(result.final_latent, clean.final_latent) for result in results)
