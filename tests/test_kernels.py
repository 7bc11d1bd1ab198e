"""Measured labels: the state that decides a runtime's kernels is read from the process that runs
it, is in the label when it changes bits, and a run in a process whose state its label does not
name is refused. The builds here run in processes of their own under different kernel settings,
as two machines (or two Ray nodes) with different environments would.
"""

from __future__ import annotations

import json
import os
import platform as _pyplatform
import subprocess
import sys
from pathlib import Path

import pytest

from hspi_onnx.db.report import measured_state_problems, unmeasured_knobs
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.inputs.model import resolve_model
from hspi_onnx.inputs.probes import generate
from hspi_onnx.labels import Platform
from hspi_onnx.run import kernels
from hspi_onnx.run.adapter import Offered, registry, selected_variants
from hspi_onnx.run.knobs import Variation, run_child, verdict
from hspi_onnx.run.runner import PlatformFailed, Runner

X86 = _pyplatform.machine().lower() in ("x86_64", "amd64")
ONNXREF = "onnxref/*/fp32/*bs=8*"


def _measured_blas(env: dict) -> str:
    code = "from hspi_onnx.run.kernels import numpy_state; print(numpy_state()['blas'])"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()


def _two_kernels() -> tuple[dict, dict]:
    """Two environments in which OpenBLAS selects different kernels on this CPU."""
    base = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    names = ["Sandybridge", "Haswell", "SkylakeX"] if X86 else ["ARMV8", "NEOVERSEN1", "CORTEXA57"]
    seen: dict[str, dict] = {}
    for name in names:
        env = {**base, "OPENBLAS_CORETYPE": name}
        seen.setdefault(_measured_blas(env), env)
        if len(seen) == 2:
            return tuple(seen.values())
    pytest.skip(f"OpenBLAS selects one kernel here whatever OPENBLAS_CORETYPE says ({', '.join(seen)})")


def _build(db: Path, env: dict) -> dict[str, str]:
    """label -> digest of its outputs, from a build in a process of its own."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hspi_onnx.cli",
            "db",
            "build",
            "digits",
            "--db",
            str(db),
            "-n",
            "16",
            "-q",
            "-p",
            ONNXREF,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    con = ReferenceDB(db).connect()
    rows = con.execute(
        "SELECT platform, string_agg(hex(digest), ',' ORDER BY probe_id) FROM outputs GROUP BY platform"
    ).fetchall()
    return dict(rows)


@pytest.mark.slow
def test_labels_differ_exactly_when_the_bits_do_across_blas_kernels(tmp_path):
    first, second = _two_kernels()
    builds = {
        "a": _build(tmp_path / "a", first),
        "b": _build(tmp_path / "b", second),
        # the first kernel again with other BLAS thread settings, as a Ray worker starts:
        # the adapter pins one BLAS thread, so label and bits stay
        "a-threads": _build(tmp_path / "c", {**first, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "2"}),
    }
    for x, y in [("a", "b"), ("a", "a-threads"), ("b", "a-threads")]:
        ((lx, dx),) = builds[x].items()
        ((ly, dy),) = builds[y].items()
        assert (lx != ly) == (dx != dy), (x, y, lx, ly)
    assert builds["a"] == builds["a-threads"]
    ((la, _),) = builds["a"].items()
    ((lb, _),) = builds["b"].items()
    assert la != lb and Platform.parse(la).knob["blas"] != Platform.parse(lb).knob["blas"]
    assert kernels.differences({"a": [la], "b": [lb]})[0]["fact"] == "blas"
    # the second kernel's build into the first one's DB: a platform of its own, and it says why
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hspi_onnx.cli",
            "db",
            "build",
            "digits",
            "--db",
            str(tmp_path / "a"),
            "-n",
            "16",
            "-q",
            "-p",
            ONNXREF,
        ],
        env=second,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "differ in measured state: onnxref blas differs" in proc.stderr, proc.stderr
    assert sorted(_build(tmp_path / "a", first)) == sorted([la, lb])  # nothing left to build, both kept


def test_a_worker_whose_kernels_differ_from_the_label_is_refused(tmp_path, monkeypatch):
    first, second = _two_kernels()
    model = resolve_model("digits")
    probes = generate(model, n=8)
    adapter, plat = selected_variants(model, probes.kind, [ONNXREF])[0]
    other = (
        second["OPENBLAS_CORETYPE"]
        if Platform.parse(str(plat)).knob["blas"] != _measured_blas(second)
        else first["OPENBLAS_CORETYPE"]
    )
    monkeypatch.setattr(type(adapter), "environment", lambda self, p: {"OPENBLAS_CORETYPE": other})
    with Runner() as runner, pytest.raises(PlatformFailed) as err:
        runner.run(adapter, model, plat, probes)
    assert err.value.kind == "LabelMismatch"
    assert f"blas={plat.knob['blas']}" in str(err.value) and "measures blas=" in str(err.value)
    assert f"OPENBLAS_CORETYPE={other}" in str(err.value)


def test_knob_survey_rows_on_real_runtimes():
    """A few rows of `hspi survey knobs`, each in a fresh process: a BLAS kernel is labelled,
    thread variables do nothing to the pinned reference, MKL's branch is labelled for PyTorch."""
    model = resolve_model("lm")
    probes = generate(model, n=8)
    ref = str(selected_variants(model, probes.kind, ["onnxref/*/fp32/*bs=8*"])[0][1])
    base = run_child("lm", 8, 0, ref, None)
    assert "error" not in base and base["label"] == ref
    other = next(c for c in (["Sandybridge", "SkylakeX"] if X86 else ["ARMV8", "NEOVERSEN1"]) if c.lower() not in ref)
    rows = {
        v.name: verdict(v, base, run_child("lm", 8, 0, ref, v))
        for v in (Variation("env", "OPENBLAS_CORETYPE", other), Variation("env", "OMP_NUM_THREADS", 1))
    }
    # labelled where OpenBLAS takes the kernel (every x86 CPU here); never bits without the label
    assert rows[f"OPENBLAS_CORETYPE={other}"] in (
        ("labelled", "label only") if X86 else ("labelled", "label only", "no effect")
    )
    assert rows["OMP_NUM_THREADS=1"] == "no effect"
    torch_base = str(selected_variants(model, probes.kind, ["pytorch/*/fp32/*bs=8*src=module*threads=1"])[0][1])
    if Platform.parse(torch_base).knob["mkl"] == "none":
        return  # a torch without MKL (Arm)
    base = run_child("lm", 8, 0, torch_base, None)
    v = Variation("env", "MKL_CBWR", "COMPATIBLE")
    got = run_child("lm", 8, 0, torch_base, v)
    assert Platform.parse(got["label"]).knob["mkl"] == "compatible" and got["state"]["mkl"] == "compatible"
    assert verdict(v, base, got) in ("labelled", "label only")


def test_measured_knobs_are_in_every_cpu_label_and_recorded_with_the_rows(tmp_path):
    model = resolve_model("digits")
    probes = generate(model, n=4)
    for adapter, plat in selected_variants(model, probes.kind, ["onnxref", "pytorch/*/fp32/*bs=1*", "openvino"]):
        assert set(adapter.labelled) <= set(plat.knob), plat
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hspi_onnx.cli",
            "db",
            "build",
            "digits",
            "--db",
            str(tmp_path / "db"),
            "-n",
            "4",
            "-q",
            "-p",
            "onnxref/*/fp64/*bs=1*",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    ((label, host),) = (
        ReferenceDB(tmp_path / "db").connect().execute("SELECT DISTINCT platform, host FROM outputs").fetchall()
    )
    measured = json.loads(host)["kernels"]
    assert measured["blas"] == Platform.parse(label).knob["blas"] and measured["blas_threads"] == "1"
    assert not measured_state_problems(label, {host})


def test_verify_names_labels_without_measured_state_and_states_that_disagree(tmp_path):
    label = "onnxref@1.23.2/cpu:avx2:x/fp32/blas=openblas-0.3.31-haswell,bs=8,numpy=2.4.6-avx2"
    host = json.dumps({"kernels": {"blas": "openblas-0.3.31-skylakex", "numpy": "2.4.6-avx2"}})
    assert measured_state_problems(label, {host}) == [
        "label says blas=openblas-0.3.31-haswell but the run measured openblas-0.3.31-skylakex"
    ]
    old = "onnxref@1.23.2/cpu:avx2:x/fp32/bs=8"  # a DB built before labels carried measured state
    assert unmeasured_knobs(old) == ["blas", "numpy"] and unmeasured_knobs(label) == []
    assert measured_state_problems(old, {json.dumps({"isa": "avx2"})}) == []
    assert measured_state_problems(old, {"{}", '{"isa": 1}'}) == ["rows of one run record several hosts"]


def test_differences_say_which_measured_fact_keeps_groups_apart():
    a = "pytorch@2.13.0/cpu:avx512:x/fp32/aten=avx512,bs=8,mkl=off,onednn=default,threads=1"
    b = "pytorch@2.13.0/cpu:avx512:x/fp32/aten=avx512,bs=8,mkl=compatible,onednn=default,threads=1"
    assert kernels.differences({"node1": [a], "node2": [a]}) == []
    (d,) = kernels.differences({"node1": [a], "node2": [b]})
    assert d == {"runtime": "pytorch", "fact": "mkl", "values": {"node1": ["off"], "node2": ["compatible"]}}
    assert "stay apart" in kernels.describe_difference(d)


def test_why_not_names_this_machines_runtime_version():
    model = resolve_model("digits")
    offered = Offered(model, "noise")
    version = registry()["onnxruntime"].version()
    text = offered.why_not("onnxruntime@0.0.1/cpu:avx2:x/fp32/bs=8,opt=all,threads=1")
    assert f"this machine's onnxruntime is {version};" in text and "bound method" not in text


def test_db_verify_notes_an_old_db_without_failing_it(tmp_path):
    """tests/data/db-v1 was built before labels carried measured state: its outputs are sound,
    its PyTorch labels lack the measured knobs, which `db verify` notes."""
    import shutil

    from hspi_onnx.db.report import verify

    db = ReferenceDB(shutil.copytree(Path(__file__).parent / "data" / "db-v1", tmp_path / "v1"))
    report = verify(db)
    assert (
        report["ok"]
        and report["unmeasured"]
        and all(
            set(m) == {"aten", "mkl", "onednn"} for lab, m in report["unmeasured"].items() if lab.startswith("pytorch")
        )
    )


@pytest.mark.slow
def test_survey_knobs_command_prints_verdicts_and_fails_on_none():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hspi_onnx.cli",
            "survey",
            "knobs",
            "-m",
            "digits",
            "-n",
            "8",
            "-p",
            "onnxref/*/fp32/*bs=8*",
            "--knob",
            "OPENBLAS_NUM_THREADS",
            "--knob",
            "blas_threads",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (report,) = json.loads(proc.stdout)["models"]
    assert report["bugs"] == 0 and [b["repeats"] for b in report["bases"]] == [True]
    rows = {r["knob"]: r for r in report["rows"]}
    assert set(rows) == {"OPENBLAS_NUM_THREADS", "blas_threads"}
    assert rows["OPENBLAS_NUM_THREADS"]["verdict"] == "no effect"  # the adapter pins BLAS threads
    assert rows["blas_threads"]["kind"] == "setting" and rows["blas_threads"]["verdict"] in ("pinned", "no effect")


def test_openvino_reads_back_the_precision_it_compiled_and_the_isa():
    """OpenVINO picks bf16 by itself on CPUs with AVX512_BF16 or AMX when no hint is set: the
    adapter sets the hint, reads it back from the compiled model and stores it with the ISA."""
    from hspi_onnx.run.runner import execute

    if not registry()["openvino"].available().ok:
        pytest.skip(registry()["openvino"].available().reason)
    model = resolve_model("digits")
    probes = generate(model, n=2)
    for adapter, plat in selected_variants(model, probes.kind, ["openvino/*/*/bs=1,*threads=1"]):
        state = execute(adapter, model, plat, probes).host["kernels"]
        assert state["inference_precision"] == {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}[plat.precision]
        assert state["onednn"] == plat.knob["onednn"]
        assert state.get("cpu_denormals_optimization", "false") == "false"  # pinned (absent: not reported)
