"""Every family from its own downloads: repos and files the loaders open, LoRA modes, step specs that
fit any schedule, and an LTX-2.3 variant through the whole workflow."""

from __future__ import annotations

import fnmatch
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO

from stepscope.errors import StepScopeError
from stepscope.models.adapter import resolve_layout, source_folders
from stepscope.models.hub import allow_patterns
from stepscope.models.registry import FAMILY_NAMES, get_family
from stepscope.models.weight_layouts import LTX_GEMMA_DIR, MAIN, family_sources
from stepscope.stepspec import is_empty, is_relative, parse_steps, resolve_steps

FAMILIES = list(FAMILY_NAMES)


def _matches(relative: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) for pattern in patterns)


@pytest.mark.parametrize("family", FAMILIES)
def test_download_patterns_cover_every_file_the_loader_reads(tiny_weights, family):
    """Each repo's download (allow patterns) includes every file the loader resolves in its folder."""
    folder = tiny_weights(family)
    folders = source_folders(family, folder)
    layout = get_family(family).layout
    resolved = resolve_layout(family, folder, layout)
    sources = {spec.component: spec.source for spec in layout}
    assert set(folders) == {MAIN, *family_sources(family)}
    for component, paths in resolved.items():
        root, patterns = folders[sources[component]], allow_patterns(family, sources[component])
        for path in paths:
            files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
            for file in files:
                assert _matches(str(file.relative_to(root)), patterns), (component, file)


def test_ltx_needs_two_repos_and_gemma_has_its_own_patterns():
    assert family_sources("ltx2.3") == {"text_encoder": LTX_GEMMA_DIR}
    assert family_sources("wan2.2") == family_sources("wan2.1") == {}
    gemma = allow_patterns("ltx2.3", "text_encoder")
    for name in ("model-00001-of-00005.safetensors", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                 "special_tokens_map.json"):
        assert _matches(name, gemma), name
    main = allow_patterns("ltx2.3")
    assert _matches("transformer.safetensors", main) and not _matches("tokenizer.json", main)
    assert not any("gemma" in pattern for pattern in main)


def test_every_file_the_gemma_tokenizer_opens_is_downloaded(tiny_weights, tmp_path):
    """diffsynth's LTX tokenizer (AutoTokenizer.from_pretrained, local files only) opens only files
    the Gemma download fetches, also when the folder holds every file of the real repo."""
    from diffsynth.models.ltx2_text_encoder import LTXVGemmaTokenizer

    gemma = tmp_path / "gemma"
    shutil.copytree(source_folders("ltx2.3", tiny_weights("ltx2.3"))["text_encoder"], gemma)
    # the real repo's other small files (README, generation config, index) are not needed
    for name in ("README.md", "generation_config.json", "model.safetensors.index.json", ".gitattributes"):
        (gemma / name).write_text("{}")
    opened: list[str] = []

    def audit(event, args):
        if event == "open" and isinstance(args[0], str) and args[0].startswith(str(gemma)):
            opened.append(str(Path(args[0]).relative_to(gemma)))

    sys.addaudithook(audit)
    LTXVGemmaTokenizer(tokenizer_path=str(gemma))
    gemma_patterns = allow_patterns("ltx2.3", "text_encoder")
    assert "tokenizer.json" in opened or "tokenizer.model" in opened
    assert [name for name in opened if not _matches(name, gemma_patterns)] == []
    gemma.rename(tmp_path / "ignored")  # the hook lives on: nothing below opens files there


def test_gemma_without_tokenizer_files_fails_naming_file_and_repo(tiny_weights, tmp_path):
    from stepscope.models.loading import load_pipeline

    main, gemma = tmp_path / "ltx", tmp_path / "gemma"
    shutil.copytree(tiny_weights("ltx2.3"), main)
    shutil.move(main / LTX_GEMMA_DIR, gemma)
    (gemma / "tokenizer.json").unlink()
    with pytest.raises(StepScopeError) as error:
        load_pipeline("ltx2.3", main, device="cpu", sources={"text_encoder": gemma})
    message = str(error.value)
    assert "tokenizer.json" in message and str(gemma) in message and f"download {LTX_GEMMA_DIR}" in message


# ----- LoRA modes --------------------------------------------------------------------------------
PROMPT = "move the red square to the green target"
RUN = dict(num_frames=9, height=64, width=64, num_inference_steps=3, seed=2)


def _loras(tiny_pipe, tmp_path) -> list[tuple[Path, str]]:
    from stepscope.models.loading import make_tiny_lora

    pipe = tiny_pipe("wan2.2")
    return [
        (make_tiny_lora(pipe.dit, tmp_path / "high.safetensors", seed=1, scale=0.3), "high_noise"),
        (make_tiny_lora(pipe.dit2, tmp_path / "low.safetensors", seed=2, scale=0.3), "low_noise"),
    ]


def test_default_lora_hotload_equals_diffsynths_own_load_lora(tiny_weights, tiny_pipe, test_image, tmp_path):
    """The seed: from_pretrained with its vram_config (offload to CPU, onload to the compute
    device) and pipe.load_lora per expert, then pipe(...). Ours (defaults) gives the same bits."""
    from diffsynth.core import ModelConfig
    from diffsynth.pipelines.wan_video import WanVideoPipeline
    from PIL import Image

    from stepscope.models.loading import LoraSpec, load_pipeline
    from stepscope.models.tiny import register_tiny_configs
    from stepscope.models.wan import WAN_NEGATIVE_PROMPT
    from stepscope.sampling.loop import RecordSpec, sample

    folder = tiny_weights("wan2.2")
    loras = _loras(tiny_pipe, tmp_path)
    register_tiny_configs(folder)
    vram = {
        "offload_dtype": torch.float32, "offload_device": "cpu", "onload_dtype": torch.float32,
        "onload_device": "cpu", "preparing_dtype": torch.float32, "preparing_device": "cpu",
        "computation_dtype": torch.float32, "computation_device": "cpu",
    }
    seed_pipe = WanVideoPipeline.from_pretrained(
        torch_dtype=torch.float32,
        device="cpu",
        redirect_common_files=False,
        model_configs=[
            ModelConfig(path=str(folder / "high_noise_model/diffusion_pytorch_model.safetensors"), **vram),
            ModelConfig(path=str(folder / "low_noise_model/diffusion_pytorch_model.safetensors"), **vram),
            ModelConfig(path=str(folder / "models_t5_umt5-xxl-enc-bf16.safetensors"), **vram),
            ModelConfig(path=str(folder / "Wan2.1_VAE.safetensors"), **vram),
        ],
        tokenizer_config=ModelConfig(path=str(folder / "google/umt5-xxl")),
    )
    seed_pipe.load_lora(seed_pipe.dit, str(loras[0][0]), alpha=1.0)
    seed_pipe.load_lora(seed_pipe.dit2, str(loras[1][0]), alpha=1.0)
    image = Image.open(test_image).convert("RGB")
    reference = seed_pipe(prompt=PROMPT, negative_prompt=WAN_NEGATIVE_PROMPT, input_image=image, tiled=True, **RUN)

    pipe = load_pipeline("wan2.2", folder, device="cpu", loras=[LoraSpec(p, t) for p, t in loras])
    assert [lora["mode"] for lora in pipe.stepscope_loras] == ["hotload", "hotload"]
    ours = sample(pipe, "wan2.2", image=test_image, prompt=PROMPT, record=RecordSpec(capture=None), **RUN)
    np.testing.assert_array_equal(ours.frames, np.stack([np.asarray(frame) for frame in reference]))

    fused = load_pipeline(
        "wan2.2", folder, device="cpu", loras=[LoraSpec(p, t) for p, t in loras], lora_mode="fuse", offload="none"
    )
    assert [lora["mode"] for lora in fused.stepscope_loras] == ["fuse", "fuse"]
    fused_run = sample(fused, "wan2.2", image=test_image, prompt=PROMPT, record=RecordSpec(capture=None), **RUN)
    base_run = sample(tiny_pipe("wan2.2"), "wan2.2", image=test_image, prompt=PROMPT, record=RecordSpec(capture=None), **RUN)
    # both modes apply the same LoRA: far closer to each other than to the base model
    gap_modes = (fused_run.final_latent - ours.final_latent).abs().max()
    gap_base = (base_run.final_latent - ours.final_latent).abs().max()
    assert gap_modes < 1e-3 * gap_base


def test_lora_modes_need_their_memory_presets(tiny_weights, tiny_pipe, tmp_path):
    """Hot-loading needs VRAM management; fusing needs its absence (diffsynth would fuse nothing)."""
    from stepscope.models.loading import LoraSpec, load_pipeline

    (path, target), _ = _loras(tiny_pipe, tmp_path)
    with pytest.raises(StepScopeError, match="device.offload"):
        load_pipeline("wan2.2", tiny_weights("wan2.2"), device="cpu", offload="none", loras=[LoraSpec(path, target)])
    with pytest.raises(StepScopeError, match="offload to 'none'"):
        load_pipeline("wan2.2", tiny_weights("wan2.2"), device="cpu", lora_mode="fuse", loras=[LoraSpec(path, target)])
    pipe = load_pipeline(
        "wan2.2", tiny_weights("wan2.2"), device="cpu", offload="none", lora_mode="fuse", loras=[LoraSpec(path, target)]
    )
    assert pipe.stepscope_loras[0]["mode"] == "fuse"


def test_lora_layers_the_model_lacks_are_skipped_and_reported(tiny_weights, tiny_pipe, tmp_path):
    """As diffsynth (and the seed) do, keys for layers the model lacks are skipped; we report them.
    A LoRA that matches nothing is refused."""
    from safetensors.torch import load_file, save_file

    from stepscope.models.loading import LoraSpec, load_pipeline

    (path, target), _ = _loras(tiny_pipe, tmp_path)
    tensors = load_file(str(path))
    extra = dict(tensors)
    extra["blocks.99.self_attn.q.lora_A.weight"] = torch.zeros(4, 48)
    extra["blocks.99.self_attn.q.lora_B.weight"] = torch.zeros(48, 4)
    save_file(extra, str(tmp_path / "extra.safetensors"))
    pipe = load_pipeline("wan2.2", tiny_weights("wan2.2"), device="cpu", loras=[LoraSpec(tmp_path / "extra.safetensors", target)])
    report = pipe.stepscope_loras[0]
    assert report["layers_skipped"] == ["blocks.99.self_attn.q"]
    assert report["layers_matched"] == len(tensors) // 2
    stray = {key.replace("blocks.", "nowhere."): value for key, value in tensors.items()}
    save_file(stray, str(tmp_path / "stray.safetensors"))
    with pytest.raises(StepScopeError, match="none of its"):
        load_pipeline("wan2.2", tiny_weights("wan2.2"), device="cpu", loras=[LoraSpec(tmp_path / "stray.safetensors", target)])


# ----- step specs --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "steps", "expected"),
    [
        ("every:10,last", 50, [0, 10, 20, 30, 40, 49]),
        ("every:10,last", 40, [0, 10, 20, 30, 39]),
        ("every:10,last", 8, [0, 7]),
        ("every:5,last", 50, [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 49]),
        ("first,50%,last", 41, [0, 20, 40]),
        ("0-2, 45-49", 50, [0, 1, 2, 45, 46, 47, 48, 49]),
        ("all", 3, [0, 1, 2]),
        ("none", 3, []),
    ],
)
def test_step_specs_resolve_against_the_schedule(spec, steps, expected):
    assert resolve_steps(spec, steps) == expected


def test_step_specs_fail_clearly():
    assert is_relative("every:5") and is_relative("0,last") and not is_relative("0-4,7")
    assert is_empty("none") and is_empty([]) and not is_empty("every:5")
    with pytest.raises(StepScopeError, match="only 40 steps"):
        parse_steps("0,45", 40)
    with pytest.raises(StepScopeError, match="every:K"):
        parse_steps("every:0", 10)
    with pytest.raises(StepScopeError, match="malformed"):
        parse_steps("evry:5", 10)
    with pytest.raises(StepScopeError, match="schedule"):
        parse_steps("every:5")  # relative parts need the schedule's length


# ----- the workflow ------------------------------------------------------------------------------
def test_six_seed_configurations_plan_their_own_downloads(tmp_path):
    from test_workflow import job_counts, snakemake

    variants = ["wan22-base", "wan22-vbvr", "wan21-base", "wan21-vbvr", "ltx23-base", "ltx23-vbvr"]
    result = snakemake(
        "-n", "--configfile", str(REPO / "config/config.yaml"), "--config", f"run_variants={variants}",
        f"resources={tmp_path}/r", f"results={tmp_path}/o", "--until", "download_model", "download_lora",
        cwd=tmp_path,
    )
    counts = job_counts(result.stdout)
    assert counts["download_model"] == 4 and counts["download_lora"] == 3
    for repo in ("Wan-AI--Wan2.2-I2V-A14B", "Wan-AI--Wan2.1-I2V-14B-720P", "DiffSynth-Studio--LTX-2.3-Repackage",
                 "google--gemma-3-12b-it-qat-q4_0-unquantized"):
        assert f"hub/models/{repo}/main/.stepscope_source.json" in result.stdout, repo


@pytest.mark.slow
def test_an_ltx_variant_runs_end_to_end_through_the_workflow(tmp_path):
    """Sampling (with a tiny LoRA, hot-loaded), step decoding, figures and scores for LTX-2.3."""
    from test_workflow import snakemake, write_config

    from stepscope import records

    probes = {name: {"enabled": False} for name in ("noise_step", "noise_frame", "sensitivity", "token_swap")}
    config = write_config(
        tmp_path, run_variants=["demo-ltx23-vbvr"], seeds=[1], ensembles=[], probes=probes,
        **{"variants.demo-ltx23-vbvr.steps": 4},
    )
    snakemake("--configfile", str(config), "--cores", "2", "--quiet", "rules", cwd=tmp_path, timeout=1200)
    results = tmp_path / "results"
    run = results / "runs/demo-ltx23-vbvr/Out-of-Domain_50/D-3_ball_to_wall_data-generator/00000/seed1"
    assert run.is_dir(), sorted(str(p) for p in (results / "runs").rglob("*"))[:20]
    meta = json.loads((run / records.META).read_text())
    assert meta["settings"]["cfg_scale"] == 3.0 and meta["settings"]["num_inference_steps"] == 4
    assert meta["loras"][0]["mode"] == "hotload" and meta["loras"][0]["layers_matched"] > 0
    assert "sources" in meta["weights"] or meta["weights"]["files"]
    decoded = results / "decoded/demo-ltx23-vbvr/Out-of-Domain_50/D-3_ball_to_wall_data-generator/00000/seed1"
    assert sorted(p.name for p in (decoded / "steps").glob("step_*.mp4")) == [
        f"step_{step:04d}.mp4" for step in resolve_steps("every:2,last", 4)
    ]
    figures = results / "figures/runs/demo-ltx23-vbvr/Out-of-Domain_50/D-3_ball_to_wall_data-generator/00000/seed1"
    assert len(list(figures.glob("*.png"))) > 5
    scores = list((results / "scores").rglob("*.parquet"))
    assert scores
    import av

    with av.open(str(run / records.VIDEO)) as container:
        assert sorted(stream.type for stream in container.streams) == ["audio", "video"]


def test_real_shape_weights_are_files_diffsynth_knows():
    """The rehearsal's real-shape Wan2.2 files (two sharded 14B experts, umT5 .pth, VAE .pth) hash to
    diffsynth's own registry entries, so they load the way real downloads do (no tiny registration)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("real_shape_weights", REPO / "benchmarks/real_shape_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.check()
    assert {key: value for key, value in results.items() if key.startswith("wan2.2/")} == {
        "wan2.2/high_noise_model": True,
        "wan2.2/low_noise_model": True,
        "wan2.2/models_t5_umt5-xxl-enc-bf16.pth": True,
        "wan2.2/Wan2.1_VAE.pth": True,
    }
    assert results["wan2.1/."] is True
    # a file with one key renamed is not recognised (the check can fail)
    state = module.vae_state()
    state["renamed"] = state.pop(next(iter(state)))
    assert not module.registered(state, "wan_video_vae")


def test_step_decoding_tiling_modes(tiny_pipe, test_image, tmp_path):
    """decode.tiled: auto keeps the run's tiled decode off a GPU; false decodes untiled exactly as
    diffsynth's untiled VAE decode; decoded.json records the mode."""
    from stepscope.jobs.runs import decode_run
    from stepscope.models.adapter import Prepared
    from stepscope.sampling.loop import RecordSpec, sample

    pipe, family = tiny_pipe("wan2.1"), get_family("wan2.1")
    sample(pipe, "wan2.1", image=test_image, prompt=PROMPT, record=RecordSpec(capture=None), out_dir=tmp_path / "run", **RUN)
    for setting, expected in (("auto", True), (False, False)):
        out = tmp_path / f"dec-{setting}"
        decode_run(pipe, "wan2.1", run_dir=str(tmp_path / "run"), steps="last", out_dir=str(out), tiled=setting)
        summary = json.loads((out / "decoded.json").read_text())
        assert summary["tiled"] is expected, summary["tiling"]
    from stepscope import records

    latent = records.RunRecords(tmp_path / "run").x0_hat(RUN["num_inference_steps"] - 1).float().unsqueeze(0)
    untiled = family.decode(pipe, Prepared({}, {}, {}, call_kwargs={"tiled": False, "tile_size": (30, 52), "tile_stride": (15, 26)}), latent)
    written = records.read_video(tmp_path / "dec-False/steps" / f"step_{RUN['num_inference_steps'] - 1:04d}.mp4")
    reference = tmp_path / "reference.mp4"
    records.write_video(reference, untiled, fps=16)
    np.testing.assert_array_equal(written, records.read_video(reference))
    assert family.untiled_decode_gib((16, 21, 60, 104)) == pytest.approx(4.4)
