"""What every batch job shares (CPU only): member outcomes, error files, receipts, links, the lazy
model loader. The runners: stepscope.jobs.batches (GPU: sampling, decoding) and
stepscope.jobs.analysis_batch (figures and scores); one job per stage and batch, outputs per run
(see stepscope.jobs.plan).

Each runner walks the batch's members in order, skips those whose outputs are up to date (same
fingerprint, same upstream run, same input files), does the rest with one model load, records a
member that fails (``error.json`` beside its outputs) and goes on with the others, and writes the
batch's receipt last. A job fails as a whole only for what no member can get past (the model does
not load, the receipt cannot be written), so Snakemake's retry then redoes only what is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stepscope import records
from stepscope.atomic import write_json
from stepscope.jobs.members import Member
from stepscope.jobs.plan import Receipt, input_stamps, parse_batch_name
from stepscope.provenance import package_versions

ERROR_FILE = "error.json"
FIGURES_MARKER = "figures.json"
FAULT_ENV = "STEPSCOPE_FAULT_ONCE"


# ----- shared helpers --------------------------------------------------------------------------


def read_json(path: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_error(folder: str | Path, error: BaseException, fingerprint: str, stage: str) -> dict[str, Any]:
    """Record why a member failed, beside where its outputs would be."""
    details = {
        "stage": stage,
        "error": f"{type(error).__name__}: {error}",
        "traceback": traceback.format_exception(error)[-6:],
        "fingerprint": fingerprint,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(Path(folder) / ERROR_FILE, details)
    return details


def clear_error(folder: str | Path) -> None:
    (Path(folder) / ERROR_FILE).unlink(missing_ok=True)


def upstream_failure(folder: str | Path) -> dict[str, str]:
    """Why an earlier stage left a member without input: its error.json, if it wrote one."""
    details = read_json(Path(folder) / ERROR_FILE)
    if details is None:
        return {"failed_stage": "unknown", "error": f"{folder} holds no complete output"}
    return {"failed_stage": details.get("stage", "unknown"), "error": details["error"]}


def remove_stale(*paths: str | None) -> None:
    """Drop a member's earlier outputs once its input is gone: they no longer describe anything."""
    for path in paths:
        if path is None:
            continue
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.unlink(path)


def link_file(source: str | Path, target: str | Path) -> None:
    """Hard-link `source` to `target` (atomic replace; a copy across file systems)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def inject_fault_once() -> None:
    """Test hook: when STEPSCOPE_FAULT_ONCE names a file that does not exist yet, create it and fail
    the job, so that tests can watch the scheduler retry a job that fails once."""
    marker = os.environ.get(FAULT_ENV)
    if marker and not os.path.exists(marker):
        Path(marker).parent.mkdir(parents=True, exist_ok=True)
        Path(marker).write_text("fault injected once\n")
        raise RuntimeError(f"injected fault ({FAULT_ENV}={marker}); a retry of this job succeeds")


class Members:
    """Collects member outcomes for the receipt and prints one line per member to the log."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.rows: list[dict[str, Any]] = []

    def add(self, member: Member, status: str, **extra: Any) -> None:
        row = {"key": member.key, "fingerprint": member.fingerprint, "status": status, **extra}
        inputs = getattr(member, "inputs", None)  # the files a member's stage stamps, if any
        if inputs is not None:
            row["inputs"] = input_stamps(inputs)
        self.rows.append(row)
        note = f" ({extra['error']})" if extra.get("error") else ""
        print(f"[{self.stage}] {member.key}: {status}{note}", flush=True)

    def fail(self, member: Member, folder: str | Path, error: BaseException, seconds: float = 0.0) -> None:
        details = write_error(folder, error, member.fingerprint, self.stage)
        self.add(member, "failed", failed_stage=self.stage, error=details["error"], seconds=seconds)

    @contextlib.contextmanager
    def attempt(self, member: Member, folder: str | Path) -> Iterator[dict[str, Any]]:
        """Run one member's work: failures are recorded (error.json, receipt) and swallowed."""
        outcome: dict[str, Any] = {}
        started = time.perf_counter()
        try:
            yield outcome
        except Exception as error:  # one member's failure must not cost the others their results
            self.fail(member, folder, error, time.perf_counter() - started)
            _release_accelerator_memory()
            return
        clear_error(folder)
        self.add(member, "done", seconds=time.perf_counter() - started, **outcome)


def _release_accelerator_memory() -> None:
    torch = sys.modules.get("torch")  # a job that never imported torch holds no accelerator memory
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def write_receipt(path: str, stage: str, variant: str, members: Members, **extra: Any) -> Receipt:
    receipt = Receipt(
        stage=stage,
        variant=variant,
        batch=Path(path).stem,
        members=members.rows,
        extra={"versions": package_versions(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra},
    )
    write_json(path, receipt.to_json())
    prune_older_generations(path)
    failed = receipt.failed
    print(
        f"[{stage}] batch {receipt.batch}: {len(receipt.members) - len(failed)} of "
        f"{len(receipt.members)} members done"
        + (f"; failed: {[m['key'] for m in failed]}" if failed else ""),
        flush=True,
    )
    return receipt


def prune_older_generations(path: str | Path) -> None:
    """Remove the earlier generations beside a batch output (``bNNNN.rG.json`` or a ``bNNNN.rG``
    folder): they describe outputs that have since been redone."""
    path = Path(path)
    suffix = path.suffix if path.suffix == ".json" else ""
    try:
        index, generation = parse_batch_name(path.name[: len(path.name) - len(suffix)])
    except ValueError:
        return  # not named like a batch output: nothing to prune
    for older in path.parent.glob(f"b{index:04d}.r*{suffix}"):
        try:
            older_generation = parse_batch_name(older.name[: len(older.name) - len(suffix)])[1]
        except ValueError:
            continue
        if older_generation < generation:
            remove_stale(str(older))


class LazyLoader:
    """Loads the model on first use, so a batch with nothing to do never loads it."""

    def __init__(self, load: Callable[[], Any]) -> None:
        self._load = load
        self.value: Any = None
        self.load_s = 0.0

    def get(self) -> Any:
        if self.value is None:
            started = time.perf_counter()
            self.value = self._load()  # a failure here fails the job: no member can get past it
            self.load_s = time.perf_counter() - started
            print(f"model loaded in {self.load_s:.1f} s", flush=True)
        return self.value


def decoded_files(out_dir: str | Path, summary: dict[str, Any]) -> list[Path]:
    """The files a decoding summary stands for (a deleted one makes the decoding stale)."""
    out = Path(out_dir)
    return [out / "steps" / f"step_{int(step):04d}.mp4" for step in summary.get("steps", [])] + [
        out / records.CONTACT_SHEET
    ]
