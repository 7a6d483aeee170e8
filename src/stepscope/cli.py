"""Command line: `stepscope sample` (one image + prompt, no benchmark needed), `stepscope tiny-weights`,
`stepscope demo-bench`, and the seed's four tools as drop-in commands (same flags, same outputs;
docs/seed-parity.md):

  python tools/step_visualization.py ...          ->  stepscope step-visualization ...
  python tools/token_visualization.py ...         ->  stepscope token-visualization ...
  python tools/custom_step_visualization.py ...   ->  stepscope custom-step-visualization ...
  python tools/custom_token_visualization.py ...  ->  stepscope custom-token-visualization ...

Weights come from --weights DIR or the seed's ./models/<repo id> folders (never downloaded)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from stepscope.errors import StepScopeError
from stepscope.models.registry import FAMILY_NAMES


def _layers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"--layers takes comma-separated block indices, got {text!r}"
        ) from error


def _lora(text: str):
    from stepscope.models.loading import LoraSpec

    path, _, rest = text.partition(":")
    target, _, alpha = rest.partition(":")
    return LoraSpec(path=Path(path), target=target or "dit", alpha=float(alpha or 1.0))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stepscope", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    sample = commands.add_parser("sample", help="run one image + prompt and record every step")
    sample.add_argument("--family", required=True, choices=FAMILY_NAMES)
    sample.add_argument(
        "--weights", required=True, type=Path, help="local weights folder (real or tiny twin)"
    )
    sample.add_argument("--image", required=True, type=Path)
    sample.add_argument("--prompt", required=True)
    sample.add_argument("--out", required=True, type=Path, help="run directory for the records")
    sample.add_argument("--seed", type=int, default=1)
    sample.add_argument("--steps", type=int, default=50)
    sample.add_argument("--num-frames", type=int, default=81)
    sample.add_argument("--height", type=int, default=480)
    sample.add_argument("--width", type=int, default=832)
    sample.add_argument("--cfg", type=float, default=None, help="default: the family's (Wan 5.0, LTX-2.3 3.0)")
    sample.add_argument("--shift", type=float, default=None, help="Wan sigma shift (default 5.0)")
    sample.add_argument("--boundary", type=float, default=None, help="Wan2.2 expert switch boundary (default 0.875)")
    sample.add_argument("--negative-prompt", default=None)
    sample.add_argument("--layers", type=_layers, default=(0, 10, 20, 30, 39))
    sample.add_argument("--capture-steps", default="all", help="'all', 'none' or ranges like 0-19,45-49")
    sample.add_argument("--record-steps", default="all", help="steps whose x0_hat is stored")
    sample.add_argument("--passes", default="cond", help="CFG passes to capture: cond, uncond or cond,uncond")
    sample.add_argument("--lora", type=_lora, action="append", default=[], help="PATH[:TARGET[:ALPHA]]")
    sample.add_argument("--device", default=None)
    sample.add_argument("--dtype", default=None, choices=[None, "bf16", "fp16", "fp32"])
    sample.add_argument("--offload", default="seed", choices=["seed", "none", "cpu"], help="memory preset")
    sample.add_argument("--lora-mode", default="hotload", choices=["hotload", "fuse"])
    sample.add_argument(
        "--text-encoder", type=Path, default=None, help="LTX-2.3: the Gemma-3 folder (default: inside --weights)"
    )
    sample.add_argument("--fps", type=int, default=16)
    sample.add_argument("--untiled", action="store_true", help="decode without VAE tiling")

    tiny = commands.add_parser("tiny-weights", help="write a tiny random-weight twin of a family")
    tiny.add_argument("--family", required=True, choices=FAMILY_NAMES)
    tiny.add_argument("--out", required=True, type=Path)

    bench = commands.add_parser("demo-bench", help="generate the small VBVR-format demo bench")
    bench.add_argument("--out", required=True, type=Path)
    bench.add_argument("--seed", type=int, default=0)

    from stepscope.seed_tools import add_seed_commands

    add_seed_commands(commands)
    return parser


def run_sample(args: argparse.Namespace) -> Path:
    from stepscope.models.loading import load_pipeline, loaded_model_meta
    from stepscope.provenance import weights_identity
    from stepscope.sampling.capture import CaptureSpec
    from stepscope.sampling.loop import RecordSpec, sample
    from stepscope.stepspec import parse_steps

    capture_steps = parse_steps(args.capture_steps, args.steps)
    capture = None
    if capture_steps is None or capture_steps:
        capture = CaptureSpec(layers=args.layers, steps=capture_steps, passes=tuple(args.passes.split(",")))
    record = RecordSpec(x0_steps=parse_steps(args.record_steps, args.steps), capture=capture, fps=args.fps)
    started = time.perf_counter()
    sources = {"text_encoder": str(args.text_encoder)} if args.text_encoder else None
    pipe = load_pipeline(
        args.family,
        args.weights,
        device=args.device,
        dtype=args.dtype,
        loras=args.lora,
        offload=args.offload,
        lora_mode=args.lora_mode,
        sources=sources,
    )
    load_s = time.perf_counter() - started
    meta = {
        "variant": "custom",
        "image": str(args.image),
        **loaded_model_meta(pipe, weights_identity(args.weights, sources), load_s),
    }
    sample(
        pipe,
        args.family,
        image=args.image,
        prompt=args.prompt,
        seed=args.seed,
        num_frames=args.num_frames,
        height=args.height,
        width=args.width,
        num_inference_steps=args.steps,
        cfg_scale=args.cfg,
        sigma_shift=args.shift,
        switch_boundary=args.boundary,
        negative_prompt=args.negative_prompt,
        tiled=not args.untiled,
        record=record,
        out_dir=args.out,
        meta=meta,
    )
    return args.out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "sample":
            print(run_sample(args))
        elif args.command == "tiny-weights":
            from stepscope.models.loading import make_tiny_weights

            print(make_tiny_weights(args.family, args.out))
        elif args.command == "demo-bench":
            from stepscope.bench import generate_demo_bench

            print(generate_demo_bench(args.out, seed=args.seed))
        else:
            from stepscope.seed_tools import run_seed_command

            return run_seed_command(args)
    except StepScopeError as error:
        print(f"stepscope: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
