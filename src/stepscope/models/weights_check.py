"""Weights that do not load: name the file that is broken and the fix.

diffsynth and safetensors report a truncated file as ``SafetensorError: incomplete metadata``
without its name. The loader entry points (models.load_pipeline, jobs.load_decoder) are wrapped
with :func:`names_bad_weights`: on any failure it checks the headers of the safetensors files
under the weights folder (and the LoRA files), without torch, and raises a StepScopeError naming
the broken ones and how to get them back.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from stepscope.errors import StepScopeError

Load = TypeVar("Load", bound=Callable[..., Any])
# Completion markers the workflow writes last into a weights folder (rules/download.smk):
# deleting one makes its rule fetch or generate the folder again.
MARKERS = {
    ".stepscope_source.json": "the download rule fetches it again",
    "stepscope_tiny.json": "the tiny_weights rule writes it again",
}


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot load (its header or data is cut short), or None."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                return f"{size} bytes: too short for a safetensors header"
            length = int.from_bytes(prefix, "little")
            if 8 + length > size:
                return (
                    f"incomplete: its header needs {length} bytes, the file has {size - 8} after the length"
                )
            header = json.loads(handle.read(length))
    except OSError as error:
        return f"unreadable ({error})"
    except ValueError:
        return "its header is not valid JSON"
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    needed = 8 + length + max(ends, default=0)
    if needed > size:
        return f"truncated: its tensors need {needed} bytes, the file has {size}"
    return None


def bad_weight_files(paths: Iterable[str | Path]) -> list[tuple[Path, str]]:
    """(file, problem) for every broken safetensors file in the given files and folders."""
    found = []
    for path in map(Path, paths):
        files = sorted(path.rglob("*.safetensors")) if path.is_dir() else [path]
        for file in files:
            problem = safetensors_problem(file) if file.suffix == ".safetensors" else None
            if not file.exists():
                problem = "missing"
            if problem:
                found.append((file, problem))
    return found


def fix_for(weights_dir: Path) -> str:
    for marker, effect in MARKERS.items():
        if (weights_dir / marker).exists():
            return f"delete {weights_dir / marker} and rerun: {effect}"
    return f"{weights_dir} is a folder of your own (local_path): copy the file(s) again from their source"


def weights_error(
    family: str, weights_dir: str | Path, loras: list[Path], error: BaseException, sources: Iterable[Path] = ()
) -> StepScopeError:
    """`sources`: the folders of the family's other repos (LTX-2.3's Gemma-3), checked too."""
    weights_dir = Path(weights_dir)
    cause = f"{type(error).__name__}: {error}"
    bad = bad_weight_files([weights_dir, *sources, *loras])
    if not bad:
        return StepScopeError(
            f"cannot load the {family} weights in {weights_dir}: {cause}; every safetensors header "
            f"there is whole: check the folder against the family's layout, or {fix_for(weights_dir)}"
        )
    names = "; ".join(f"{file}: {problem}" for file, problem in bad)
    folder = weights_dir if any(weights_dir in file.parents for file, _ in bad) else bad[0][0].parent
    return StepScopeError(
        f"cannot load the {family} weights ({cause}); broken file(s): {names}. Fix: {fix_for(folder)}"
    )


def names_bad_weights(load: Load) -> Load:
    """Wrap a loader ``load(family, weights_dir, ...)``: a failure names the broken file and the fix."""

    @functools.wraps(load)
    def wrapper(family: str, weights_dir: str | Path, *args: Any, **kwargs: Any) -> Any:
        try:
            return load(family, weights_dir, *args, **kwargs)
        except StepScopeError:
            raise  # already says what is wrong and how to fix it
        except Exception as error:
            loras = [Path(lora.path) for lora in kwargs.get("loras") or []]
            sources = [Path(folder) for folder in (kwargs.get("sources") or {}).values()]
            raise weights_error(family, weights_dir, loras, error, sources) from error

    return wrapper  # type: ignore[return-value]
