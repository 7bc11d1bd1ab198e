"""What one machine offers (HSPI_RUNTIMES, HSPI_ISA_CAP) and the bytes a cluster node sends
back (Arrow IPC runs, wire frames): no Ray needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from hspi_onnx.errors import HspiError
from hspi_onnx.host import cpu_facts, isa_caps
from hspi_onnx.inputs.model import resolve_model
from hspi_onnx.inputs.probes import ProbeSet, generate
from hspi_onnx.outputs import RunResult
from hspi_onnx.run import wire
from hspi_onnx.run.arrow_runs import read_result, result_stream


def _variants(env: dict, *patterns: str) -> list[str]:
    args = [a for p in patterns for a in ("-p", p)]
    proc = subprocess.run(
        [sys.executable, "-m", "hspi_onnx.cli", "runtimes", "variants", "digits", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_hspi_runtimes_leaves_the_other_families_out():
    labels = _variants({"HSPI_RUNTIMES": "onnxref"})
    assert labels and {lab.split("@")[0] for lab in labels} == {"onnxref"}
    proc = subprocess.run(
        [sys.executable, "-m", "hspi_onnx.cli", "runtimes", "resources"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HSPI_RUNTIMES": "onnxref,pytorch"},
    )
    assert json.loads(proc.stdout) == {"hspi:cpu": 1.0, "hspi:onnxref": 1.0, "hspi:pytorch": 1.0}


@pytest.mark.skipif(not any(c[0] == "avx2" for c in isa_caps()), reason="the CPU is not above AVX2")
def test_isa_cap_relabels_the_runtimes_that_honour_it():
    pattern = ["pytorch/*/fp32/*bs=1*src=onnx,threads=1", "onnxruntime/*/fp32/bs=1,opt=all,threads=1"]
    plain, capped = _variants({}, *pattern), _variants({"HSPI_ISA_CAP": "avx2"}, *pattern)
    host = cpu_facts()["isa"]
    assert all(f"/cpu:{host}:" in lab for lab in plain)
    assert all("/cpu:avx2:" in lab for lab in capped if lab.startswith("pytorch"))
    assert all(f"/cpu:{host}:" in lab for lab in capped if lab.startswith("onnxruntime"))  # MLAS has no switch
    bad = subprocess.run(
        [sys.executable, "-m", "hspi_onnx.cli", "runtimes", "variants", "digits"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HSPI_ISA_CAP": "avx9000"},
    )
    assert bad.returncode == 2 and "HSPI_ISA_CAP" in bad.stderr and "Traceback" not in bad.stderr


def _result(model, probes) -> RunResult:
    n = len(probes)
    rng = np.random.default_rng(0)
    outputs = {model.output_names[0]: rng.standard_normal((n, 10)).astype(ml_dtypes.bfloat16)}
    return RunResult(
        "x@1/cpu:avx2:y/bf16/bs=1",
        model.sha256,
        model.name,
        probes.name,
        probes.sha256,
        probes.ids.copy(),
        outputs,
        1.5,
        {"cpu_model": "y"},
        repeats=True,
    )


def test_a_nodes_run_comes_back_exactly_and_bad_bytes_are_refused():
    model = resolve_model("digits")
    probes = generate(model, n=12).bind(model)
    sent = _result(model, probes)
    meta, got = read_result(result_stream(sent, "node-a"), model, probes)
    name = model.output_names[0]
    assert got.outputs[name].dtype == sent.outputs[name].dtype
    assert got.outputs[name].tobytes() == sent.outputs[name].tobytes()
    assert got.host["ray_node"] == "node-a" and got.repeats is True
    meta, none = read_result(result_stream(None, "node-a", "PlatformFailed: boom"), model, probes)
    assert none is None and meta["error"] == "PlatformFailed: boom"
    blob = result_stream(sent, "node-a")
    for bad in (blob[: len(blob) // 2], b"\x00" * 64, blob[:40] + b"\xff" * 40 + blob[80:]):
        with pytest.raises(HspiError):
            read_result(bad, model, probes)
    other = generate(model, n=12, seed=1).bind(model)
    other.ids = other.ids + 100
    with pytest.raises(HspiError, match="probe ids"):
        read_result(blob, model, other)


def test_probe_sets_cross_as_one_frame_under_their_hash():
    model = resolve_model("digits")
    probes = generate(model, n=5).bind(model)
    back = ProbeSet.from_wire(*wire.unpack(wire.pack(*probes.to_wire())))
    assert back.sha256 == probes.sha256 and back.ids.tolist() == probes.ids.tolist()
    assert all(back.inputs[k].tobytes() == v.tobytes() for k, v in probes.inputs.items())
    frame = wire.pack(*probes.to_wire())
    for bad in (frame[:-1], frame + b"x", b""):
        with pytest.raises(HspiError):
            wire.unpack(bad)


class _TwoMachines:
    """A runner whose stream gives each platform's run from this machine, cross-checked against a
    second run of it whose bits are changed on one probe (as a machine that disagrees would)."""

    def prestart(self, *args) -> None:
        pass

    def stream(self, jobs, model, probes, repeat, on_event):
        from hspi_onnx.run.runner import Runner
        from hspi_onnx.run.schedule import cross_compare

        with Runner(in_process=True) as runner:
            for adapter, plat in jobs:
                main = runner.run(adapter, model, plat, probes, repeat=repeat)
                other = runner.run(adapter, model, plat, probes.sample(np.arange(4)))
                name = model.output_names[0]
                other.outputs[name] = other.outputs[name].copy()
                other.outputs[name].view(np.uint8)[2, 0] ^= 1  # one bit of probe 2
                record = cross_compare(main, other, "other-node-id")
                assert record["differing"] == 1 and record["probes"] == 4
                yield adapter, plat, main


def test_a_platform_two_machines_disagree_on_is_flagged_as_merge_flags_it(tmp_path):
    from hspi_onnx.db.build import build
    from hspi_onnx.db.report import classes
    from hspi_onnx.db.store import ReferenceDB

    db = ReferenceDB(tmp_path / "db", create=True)
    model = resolve_model("digits")
    summary = build(db, model, generate(model, n=8), ["onnxref/*/fp32/bs=1"], runner=_TwoMachines())
    assert summary.built and summary.nondeterministic == summary.built
    entries = db.manifest().nondeterministic
    assert entries and all(
        "another machine (node other-node" in e.reason and "1 of the first 4" in e.reason for e in entries
    )
    groups = classes(db)
    assert any(c["nondeterministic"] for g in groups for c in g["classes"])


def test_external_data_that_travels_with_a_model_is_what_onnx_saved_and_stays_inside(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from hspi_onnx.errors import BadModelError
    from hspi_onnx.inputs.onnxfile import external_data_files

    w = numpy_helper.from_array(np.ones((16, 16), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 16])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(
        model, tmp_path / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=0
    )  # onnx's own writer
    assert external_data_files(tmp_path / "m.onnx") == ["w.bin"]
    proto = onnx.load_model(tmp_path / "m.onnx", load_external_data=False)
    for entry in proto.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../../etc/passwd"
    (tmp_path / "bad.onnx").write_bytes(proto.SerializeToString())
    with pytest.raises(BadModelError, match="outside"):
        external_data_files(tmp_path / "bad.onnx")
