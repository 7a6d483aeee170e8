"""Per-run records: writers used by the GPU job and readers used by every CPU rule.

The layout of one run directory is documented in docs/records.md. Readers load lazily
(one array at a time) so that CPU rules keep memory bounded.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stepscope.atomic import atomic_path, write_json, write_parquet

VIDEO = "video.mp4"
STEPS = "steps.safetensors"
SCHEDULE = "schedule.parquet"
ACTIVATIONS_NPZ = "activations.npz"
ACTIVATIONS_TABLE = "activations.parquet"
META = "meta.json"
RECORD_FILES = (VIDEO, STEPS, SCHEDULE, ACTIVATIONS_NPZ, ACTIVATIONS_TABLE, META)
# Step decoding of a run (its own folder under decoded/): steps/step_SSSS.mp4, the contact sheet,
# and the summary, written last.
DECODED_SUMMARY = "decoded.json"
CONTACT_SHEET = "contact_sheet.png"

MAP_NAMES = ("norm", "frame_energy", "frame_l2", "channel_var", "topk_channels", "topk_maps", "pca", "pca_explained")


def x0_key(step: int) -> str:
    return f"x0_hat.{step:04d}"


def map_key(layer: int, step: int, pass_: str, name: str) -> str:
    """Key of one reduced map in activations.npz, e.g. ``L20.S0013.cond.norm``."""
    return f"L{layer:02d}.S{step:04d}.{pass_}.{name}"


def parse_map_key(key: str) -> tuple[int, int, str, str]:
    layer, step, pass_, name = key.split(".")
    return int(layer[1:]), int(step[1:]), pass_, name


VIDEO_CODEC = "libx264"
VIDEO_QUALITY = 5  # imageio's 0-10 scale; imageio-ffmpeg turns it into x264's crf


def video_encoding(fps: int, quality: int = VIDEO_QUALITY, audio_rate: int | None = None) -> dict[str, Any]:
    """How :func:`write_video` encodes (recorded in meta.json): VBVR-EvalKit's scores move with
    the codec and quality of the video they read (docs/scoring.md). ``audio_rate``: an AAC track
    muxed in by :func:`add_audio` (video packets copied, unchanged)."""
    import imageio
    import imageio_ffmpeg

    audio = None if audio_rate is None else {"codec": "aac", "sample_rate": audio_rate, "muxer": "av"}
    return {
        "container": "mp4",
        "codec": VIDEO_CODEC,
        "pix_fmt": "yuv420p",
        "fps": fps,
        "quality": quality,
        "crf": int((1 - quality / 10) * 51),  # imageio-ffmpeg's mapping for libx264
        "writer": "imageio-ffmpeg",
        "imageio": imageio.__version__,
        "imageio_ffmpeg": imageio_ffmpeg.__version__,
        "ffmpeg": imageio_ffmpeg.get_ffmpeg_version(),
        "audio": audio,
    }


def write_video(target: str | Path, frames: np.ndarray, fps: int, quality: int = VIDEO_QUALITY) -> None:
    """Write uint8 frames (T, H, W, 3) as H.264 mp4 (:func:`video_encoding`), atomically."""
    import imageio.v2 as imageio

    with atomic_path(target) as tmp:
        writer = imageio.get_writer(
            tmp, fps=fps, quality=quality, codec=VIDEO_CODEC, macro_block_size=1, format="FFMPEG"
        )
        try:
            for frame in frames:
                writer.append_data(np.ascontiguousarray(frame))
        finally:
            writer.close()


def add_audio(video: str | Path, waveform: np.ndarray, sample_rate: int) -> None:
    """Mux a float waveform (channels, samples) into an mp4 as AAC, atomically, as the seed does for
    LTX-2.3; the video stream is copied packet by packet (unchanged, so scores do not move)."""
    import av

    waveform = np.ascontiguousarray(np.asarray(waveform, dtype=np.float32))
    if waveform.ndim == 1:
        waveform = waveform[None]
    layout = {1: "mono", 2: "stereo"}[waveform.shape[0]]
    video = Path(video)
    with atomic_path(video) as tmp:
        with av.open(str(video)) as source, av.open(str(tmp), "w") as out:
            video_in = source.streams.video[0]
            video_out = out.add_stream_from_template(video_in)
            audio_out = out.add_stream("aac", rate=sample_rate, layout=layout)
            for packet in source.demux(video_in):
                if packet.dts is None:  # the demuxer's flush packet
                    continue
                packet.stream = video_out
                out.mux(packet)
            frame = av.AudioFrame.from_ndarray(waveform, format="fltp", layout=layout)
            frame.sample_rate = sample_rate
            for packet in audio_out.encode(frame):
                out.mux(packet)
            for packet in audio_out.encode(None):
                out.mux(packet)


def read_video(path: str | Path) -> np.ndarray:
    """Read a video as uint8 (T, H, W, 3)."""
    import imageio.v2 as imageio

    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        return np.stack([np.asarray(frame)[..., :3] for frame in reader])
    finally:
        reader.close()


def write_steps(target: str | Path, x0_hats: dict[int, Any], final_latent: Any, last_step: int) -> None:
    """Write x0_hat latents (fp16) of the recorded steps, and the final latent (fp16) unless it is
    already there: for Wan, x0_hat of the last step *is* the final latent, so it is not stored
    twice (LTX-2.3's x0_hat keeps the model's own conditioning frame, so there both are kept)."""
    import torch
    from safetensors.torch import save_file

    tensors = {x0_key(step): t.detach().to("cpu", torch.float16).contiguous() for step, t in x0_hats.items()}
    final = final_latent.detach().to("cpu", torch.float16).contiguous()
    if last_step not in x0_hats or not torch.equal(tensors[x0_key(last_step)], final):
        tensors["final_latent"] = final
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "stepscope.steps.v1"})


def write_activation_maps(target: str | Path, maps: dict[str, np.ndarray]) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **maps)


@dataclass
class RunRecords:
    """Lazy reader over one run directory."""

    path: Path
    _npz: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @cached_property
    def meta(self) -> dict[str, Any]:
        return json.loads((self.path / META).read_text())

    @cached_property
    def schedule(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / SCHEDULE)

    @cached_property
    def activations(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / ACTIVATIONS_TABLE)

    @property
    def npz(self):
        if self._npz is None:
            self._npz = np.load(self.path / ACTIVATIONS_NPZ)
        return self._npz

    def map_keys(self) -> list[tuple[int, int, str, str]]:
        with zipfile.ZipFile(self.path / ACTIVATIONS_NPZ) as archive:
            return [parse_map_key(name[: -len(".npy")]) for name in archive.namelist()]

    def maps(self, layer: int, step: int, pass_: str = "cond") -> dict[str, np.ndarray]:
        """The reduced maps of one (layer, step, pass): norm (f,h,w), pca (f,h,w,3), ...

        The spatial maps (topk_maps, pca) are present only at `spatial_steps`.
        """
        keys = {name: map_key(layer, step, pass_, name) for name in MAP_NAMES}
        return {name: self.npz[key] for name, key in keys.items() if key in self.npz.files}

    def map(self, layer: int, step: int, name: str, pass_: str = "cond") -> np.ndarray:
        return self.npz[map_key(layer, step, pass_, name)]

    def frame_l2(self, layer: int, step: int, pass_: str = "cond") -> np.ndarray:
        """The seed's temporal energy per latent frame: the L2 norm of the frame's token matrix,
        sqrt(sum of squared token norms). Stored as `frame_l2`; records made before it was
        recorded compute it from the (float16) `norm` map."""
        key = map_key(layer, step, pass_, "frame_l2")
        if key in self.npz.files:
            return self.npz[key].astype(np.float64)
        norm = self.map(layer, step, "norm", pass_).astype(np.float64)
        return np.sqrt((norm.reshape(norm.shape[0], -1) ** 2).sum(axis=1))

    def temporal_energy(self, pass_: str = "cond") -> pd.DataFrame:
        """Tidy table (step, layer, frame, frame_l2, frame_mean_norm) of both temporal energies:
        the seed's (`frame_l2`, L2 norm of the frame's tokens) and ours (mean token norm)."""
        rows = []
        for layer in self.layers:
            for step in self.captured_steps:
                l2 = self.frame_l2(layer, step, pass_)
                mean = self.map(layer, step, "frame_energy", pass_).astype(np.float64)
                rows += [(step, layer, frame, l2[frame], mean[frame]) for frame in range(len(l2))]
        return pd.DataFrame(rows, columns=["step", "layer", "frame", "frame_l2", "frame_mean_norm"])

    @property
    def layers(self) -> list[int]:
        return sorted(self.activations["layer"].unique().tolist())

    @property
    def captured_steps(self) -> list[int]:
        return sorted(self.activations["step"].unique().tolist())

    @cached_property
    def spatial_steps(self) -> list[int]:
        """Captured steps that also kept the spatial maps (top-k channel maps, PCA)."""
        return sorted({step for _, step, _, name in self.map_keys() if name == "pca"})

    @property
    def recorded_steps(self) -> list[int]:
        return self.schedule.loc[self.schedule["recorded"], "step"].tolist()

    def x0_hat(self, step: int):
        from safetensors import safe_open

        with safe_open(self.path / STEPS, framework="pt") as handle:
            return handle.get_tensor(x0_key(step))

    def final_latent(self):
        """The final latent (fp16): stored on its own only where the last step's x0_hat differs from it."""
        from safetensors import safe_open

        with safe_open(self.path / STEPS, framework="pt") as handle:
            if "final_latent" in handle.keys():
                return handle.get_tensor("final_latent")
        return self.x0_hat(int(self.schedule["step"].max()))

    def frames(self) -> np.ndarray:
        return read_video(self.path / VIDEO)

    def close(self) -> None:
        if self._npz is not None:
            self._npz.close()
            self._npz = None


def is_complete(run_dir: str | Path) -> bool:
    """A run is complete when meta.json exists; it is written last."""
    run_dir = Path(run_dir)
    return all((run_dir / name).exists() for name in RECORD_FILES)


def expert_switch_step(schedule: pd.DataFrame | list[dict[str, Any]]) -> int | None:
    """First step run by another expert than the one before it (Wan2.2's high -> low noise switch).

    The one definition of the switch for figures, curves, probes and tables: the step drawn and
    reported is the first step of the new expert. None when one DiT runs every step.
    """
    frame = pd.DataFrame(schedule)
    if "expert" not in frame or frame.empty:
        return None
    frame = frame.sort_values("step")
    experts = frame["expert"].astype(str).to_numpy()
    changed = np.flatnonzero(experts[1:] != experts[:-1])
    return int(frame["step"].iloc[changed[0] + 1]) if len(changed) else None


def write_schedule(target: str | Path, rows: list[dict[str, Any]]) -> None:
    write_parquet(target, pd.DataFrame(rows, columns=["step", "timestep", "sigma", "expert", "recorded"]))


def activation_row(maps: dict[str, np.ndarray], *, step: int, layer: int, pass_: str, expert: str) -> dict[str, Any]:
    """One activations.parquet row from one block's reduced maps (``total_energy`` = the sum of the
    per-token norms; PCA variances padded to three)."""
    norm = maps["norm"].astype(np.float64)
    f, h, w = norm.shape
    explained = list(maps["pca_explained"]) + [0.0] * 3
    return {
        "step": step,
        "layer": layer,
        "pass": pass_,
        "expert": expert,
        "frames": f,
        "height": h,
        "width": w,
        "dim": int(maps["channel_var"].shape[0]),
        "mean_norm": float(norm.mean()),
        "std_norm": float(norm.std()),
        "max_norm": float(norm.max()),
        "total_energy": float(norm.sum()),
        "pca_ev1": float(explained[0]),
        "pca_ev2": float(explained[1]),
        "pca_ev3": float(explained[2]),
    }


def write_activation_table(target: str | Path, rows: list[dict[str, Any]]) -> None:
    columns = [
        "step",
        "layer",
        "pass",
        "expert",
        "frames",
        "height",
        "width",
        "dim",
        "mean_norm",
        "std_norm",
        "max_norm",
        "total_energy",
        "pca_ev1",
        "pca_ev2",
        "pca_ev3",
        "pca_exact",
        "pca_converged",
    ]
    write_parquet(target, pd.DataFrame(rows, columns=columns))


def write_meta(target: str | Path, meta: dict[str, Any]) -> None:
    write_json(target, meta)
