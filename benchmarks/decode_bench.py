"""Step-decoding cost on a GPU: the Wan VAE at real shapes, tiled vs untiled, through stepscope's decoder.

    python benchmarks/decode_bench.py --out benchmarks/results/decode.json

Writes a real-shape random Wan2.1 VAE (`Wan2.1_VAE.pth`, the file every Wan repo ships), loads it
with `jobs.load_decoder` (the decode job's loader) and decodes 81-frame latents at 480x832 and
1024x1024 with `decode_latent`, tiled (30, 52)/(15, 26) as the seed and untiled, timing each video
(CUDA-synchronised, median of `--repeats`) and its peak memory. The ratios against sampling use the
measured s/step of the rehearsal (results/rehearsal.json) or the seconds given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SHAPES = {"480x832": (16, 21, 60, 104), "1024x1024": (16, 21, 128, 128)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from real_shape_weights import vae_state, write_pth

    from stepscope.jobs.runs import load_decoder
    from stepscope.models.registry import get_family

    family = get_family("wan2.2")
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "videos": {}}
    with tempfile.TemporaryDirectory() as folder:
        write_pth(vae_state(), Path(folder) / "Wan2.1_VAE.pth", seed=0, device="cuda")
        pipe = load_decoder("wan2.2", folder, {"device": "cuda", "dtype": "bf16"})
        for name, shape in SHAPES.items():
            latent = torch.randn((1, *shape), device="cuda", dtype=torch.bfloat16)
            for tiled in (True, False):
                times = []
                torch.cuda.reset_peak_memory_stats()
                for _ in range(args.repeats + 1):  # the first is a warm-up
                    torch.cuda.synchronize()
                    started = time.perf_counter()
                    family.decode_latent(pipe, latent, {"tiled": tiled})
                    torch.cuda.synchronize()
                    times.append(time.perf_counter() - started)
                results["videos"][f"{name}/{'tiled' if tiled else 'untiled'}"] = {
                    "s_per_video": statistics.median(times[1:]),
                    "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
                    "estimate_untiled_gib": family.untiled_decode_gib(shape),
                }
                print(name, tiled, results["videos"][f"{name}/{'tiled' if tiled else 'untiled'}"], flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
