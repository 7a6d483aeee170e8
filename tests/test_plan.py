"""The batched plan: grouping runs into batches, fingerprints, and which receipts still hold."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stepscope.jobs.plan import (
    Layout,
    Plan,
    Receipt,
    ReceiptIndex,
    StagePlan,
    Unit,
    fingerprint,
    input_stamps,
    make_batches,
    parse_batch_name,
    receipt_holds,
)


def units(variant="v", inputs=5, runs=("seed1", "seed2")):
    return [
        Unit(variant, "In", f"task{index // 2}", f"{index % 2:05d}", run)
        for index in range(inputs)
        for run in runs
    ]


def test_batches_keep_all_runs_of_an_input_together_in_plan_order():
    plan_units = units(inputs=5) + units(variant="w", inputs=2)
    batches = make_batches(plan_units, inputs_per_batch=2)
    assert [len(b.units) for b in batches["v"]] == [4, 4, 2]  # 2 inputs x 2 seeds, ..., the rest
    assert [len(b.units) for b in batches["w"]] == [4]
    flattened = [unit for batch in batches["v"] for unit in batch.units]
    assert flattened == [unit for unit in plan_units if unit.variant == "v"]
    for batch in batches["v"]:
        for key in batch.inputs:
            assert {u.run for u in batch.units if u.input_key == key} == {"seed1", "seed2"}
    assert batches["v"][2].name(3) == "b0002.r3" and parse_batch_name("b0002.r3") == (2, 3)
    with pytest.raises(ValueError):
        make_batches(plan_units, inputs_per_batch=0)
    with pytest.raises(ValueError):
        parse_batch_name("b2.r3")


def test_fingerprint_ignores_key_order_and_sees_every_value():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1, "b": [1, 2]}) != fingerprint({"a": 1, "b": [2, 1]})
    assert fingerprint({"cfg": 5.0}) != fingerprint({"cfg": 5.5})


def write_receipt(folder: Path, name: str, members, **extra) -> Path:
    path = folder / f"{name}.json"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(Receipt("sample", "v", name, members, extra).to_json()))
    return path


def test_receipt_holds_only_while_members_fingerprints_inputs_and_outputs_hold(tmp_path):
    output = tmp_path / "out" / "meta.json"
    output.parent.mkdir()
    output.write_text("{}")
    image = tmp_path / "first_frame.png"
    image.write_bytes(b"png")
    members = [
        {"key": "a", "fingerprint": "f1", "status": "done", "inputs": input_stamps([str(image)])},
        {"key": "b", "fingerprint": "f2", "status": "skipped", "inputs": {}},
    ]
    receipt = Receipt("sample", "v", "b0000.r0", members)
    expected = {"a": "f1", "b": "f2"}
    outputs = lambda: [str(output)]  # noqa: E731
    inputs = {"a": [str(image)], "b": []}.__getitem__
    assert receipt_holds(receipt, expected, outputs, inputs)
    assert not receipt_holds(receipt, {"a": "f1", "b": "changed"}, outputs, inputs)  # config changed
    assert not receipt_holds(receipt, {"a": "f1"}, outputs, inputs)  # the plan dropped a member
    assert not receipt_holds(receipt, {**expected, "c": "f3"}, outputs, inputs)  # ... or gained one
    failed = Receipt("sample", "v", "b0000.r0", [members[0], {**members[1], "status": "failed"}])
    assert not receipt_holds(failed, expected, outputs, inputs)  # failed members are retried
    os.utime(image, ns=(1, 1))
    assert not receipt_holds(receipt, expected, outputs, inputs)  # an input file changed
    members[0]["inputs"] = input_stamps([str(image)])
    assert receipt_holds(receipt, expected, outputs, inputs)
    output.unlink()
    assert not receipt_holds(receipt, expected, outputs, inputs)  # an output was deleted


def test_generation_stays_while_the_newest_receipt_holds_and_moves_on_when_it_does_not(tmp_path):
    folder = tmp_path / "batches"
    index = ReceiptIndex()
    assert index.current(str(folder), 0, lambda r: True) == 0  # nothing on disk yet
    write_receipt(folder, "b0000.r0", [])
    write_receipt(folder, "b0000.r2", [])
    write_receipt(folder, "b0001.r0", [])
    (folder / "notes.txt").write_text("ignored")
    index = ReceiptIndex()
    assert index.generations(str(folder), 0) == [0, 2]
    assert index.current(str(folder), 0, lambda r: True) == 2
    assert index.current(str(folder), 0, lambda r: False) == 3
    (folder / "b0001.r0.json").write_text("{ not json")
    assert ReceiptIndex().current(str(folder), 1, lambda r: True) == 1  # unreadable: redo


def test_plan_names_receipts_from_disk_and_job_processes_take_them_as_they_are(tmp_path):
    layout = Layout(str(tmp_path / "results"))
    plan_units = units(inputs=2, runs=("seed1",))
    batches = make_batches(plan_units, inputs_per_batch=2)
    stage = StagePlan(
        "sample",
        {unit: fingerprint(unit.key) for unit in plan_units},
        lambda unit: [f"{layout.run_dir(unit)}/meta.json"],
    )
    plan = Plan(layout, batches, {"sample": stage})
    batch = plan.batch("v", "b0000.r0")
    assert plan.receipt("sample", batch).endswith("batches/sample/v/b0000.r0.json")
    # A receipt for this batch exists but its runs' records do not: the plan asks for generation 1.
    members = [{"key": u.key, "fingerprint": stage.fingerprints[u], "status": "done"} for u in batch.units]
    write_receipt(Path(layout.receipt_dir("sample", "v")), "b0000.r0", members)
    assert Plan(layout, batches, {"sample": stage}).receipt("sample", batch).endswith("b0000.r1.json")
    # With the records on disk, generation 0 holds.
    for unit in batch.units:
        Path(layout.run_dir(unit)).mkdir(parents=True)
        Path(layout.run_dir(unit), "meta.json").write_text("{}")
    assert Plan(layout, batches, {"sample": stage}).receipt("sample", batch).endswith("b0000.r0.json")
    # A job process (check_disk off) names what is there, whatever it holds.
    for unit in batch.units:
        Path(layout.run_dir(unit), "meta.json").unlink()
    remote = Plan(layout, batches, {"sample": stage}, check_disk=False)
    assert remote.receipt("sample", batch).endswith("b0000.r0.json")
    with pytest.raises(ValueError, match="no batch"):
        plan.batch("v", "b0009.r0")
