"""Train (or resume) the Wan2.2 twin, then optionally export it in the loader's layout.

    python scripts/train_twin.py --ckpt CKPT [--time-limit S] [--smoke] [--export models/wan2.2-twin]

Pieces: rerun the same command with the same CKPT folder and it resumes where it stopped.
"""

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from stepscope.training.twin import TrainConfig, export_weights, preview, train  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True, help="checkpoint folder (resumed if present)")
    parser.add_argument("--smoke", action="store_true", help="a few CPU steps on a few samples")
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--time-limit", type=float, default=float("inf"), help="stop and checkpoint after S s"
    )
    parser.add_argument("--vae-seconds", type=float, help="fix the VAE step count to fit S seconds")
    parser.add_argument("--dit-seconds", type=float, help="fix the DiT step count to fit S seconds")
    parser.add_argument("--preview", type=Path, help="after training: sample held-out clips, save a PNG grid")
    parser.add_argument("--workers", type=int, default=1, help="processes drawing the training clips")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="override TrainConfig fields"
    )
    parser.add_argument("--export", type=Path, help="write the trained twin here (loader's layout)")
    parser.add_argument("--skip-train", action="store_true", help="only export")
    args = parser.parse_args(argv)
    config = TrainConfig.smoke() if args.smoke else TrainConfig()
    fields = asdict(config)
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in fields or key == "dims":
            parser.error(f"--set {item}: unknown field {key!r}; fields: {sorted(fields)}")
        setattr(config, key, type(fields[key])(value))
    if not args.skip_train:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 weights, TF32 matrix maths on the GPU
        torch.backends.cudnn.allow_tf32 = True
        state, pipe = train(
            config,
            args.ckpt,
            device=args.device,
            time_limit=args.time_limit,
            stage_seconds=(args.vae_seconds, args.dit_seconds),
            workers=args.workers,
        )
        print(
            json.dumps({"vae_step": state["vae_step"], "dit_step": state["dit_step"], "plan": state["plan"]})
        )
        if args.preview and state["dit_step"] > 0:
            print("preview |final - GT final| per task:", json.dumps(preview(pipe, config, args.preview)))
    if args.export:
        note = " ".join(["scripts/train_twin.py --ckpt CKPT", *(["--set", *args.set] if args.set else [])])
        export_weights(config, args.ckpt, args.export, note)
        print(f"exported to {args.export}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
