"""Estimates end to end on SmolLM2 and real runtimes (issue 29): `hspi db estimator` trains on a DB
of five stacks, a llama.cpp Q4_0 stack the DB does not hold answers two chats, and `hspi match` /
`hspi verify` estimate and judge it from its top-5 log-probabilities. Two chats, 16 tokens each."""

import json

import numpy as np
import pytest

from conftest import hspi

pytest.importorskip("llama_cpp")
pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

IN_DB = [
    "llamacpp/*/q8_0/*fa=off,*kv=f16,nbatch=512,*threads=1,*",
    "llamacpp/*/f16/*fa=off,*kv=f16,nbatch=512,*threads=1,*",
    "transformers/*/fp32/*attn=eager*threads=1",
    "onnxruntime/*/fp32/bs=1,opt=all,threads=1",
    "onnxruntime/*/int4/*quant=mnb-acc4*",
]
OUTSIDE = "llamacpp/*/q4_0/*fa=off,*kv=f16,nbatch=512,*threads=1,*"


def _build(db, globs):
    args = ["db", "build", "smollm2", "--db", db, "-n", "2", "-q"]
    for g in globs:
        args += ["-p", g]
    proc = hspi(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _suspect(db_path, out, label_part=""):
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.match.generation import as_query, generation_outputs, write_generation

    db = ReferenceDB(db_path)
    m = db.manifest()
    ((msha, model),) = m.models.items()
    (psha,) = [sha for sha, p in m.probe_sets.items() if p.name.startswith("chat-")]
    data = generation_outputs(db, msha, psha, [0, 1])
    label = next(lab for lab in data if label_part in lab)
    queries = [as_query({n: v[i] for n, v in data[label].items()}, 5, i, 16, None) for i in range(2)]
    return write_generation(out, m.probe_sets[psha].name, queries, model.name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("estimates")
    _build(root / "db", IN_DB)
    proc = hspi("db", "estimator", "--db", root / "db", "-q", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    _build(root / "other", [OUTSIDE])
    return root, json.loads(proc.stdout)


def test_estimator_trains_on_the_db(trained):
    root, summary = trained
    assert summary["platforms"] == 5 and summary["stacks"] == 5 and summary["chats"] == 2
    assert "/fp32/" in summary["reference"] and "attn=eager" in summary["reference"]
    assert set(summary["leave_one_stack_out"]) == {"weights", "compute", "kv"}
    assert (root / "db" / "estimators").is_dir() and summary["estimator"].endswith(".json")


def test_a_stack_outside_the_db_is_estimated_and_a_claim_judged(trained, tmp_path):
    root, _ = trained
    suspect = _suspect(root / "other", tmp_path / "q4.jsonl")
    proc = hspi("match", suspect, "--db", root / "db", "-q", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["verdict"] == "not in the DB"
    est = report["estimates"]
    assert est["status"] == "estimated" and est["requests"] == 2
    for probs in est["attributes"].values():
        assert abs(sum(probs.values()) - 1) < 1e-3
    assert est["nearest"] and set(est["logits"]) == {"bf16", "fp16"}
    text = hspi("match", suspect, "--db", root / "db", "-q")
    assert "estimated from 2 answers: weights" in text.stdout and "nearest DB platform" in text.stdout

    verdict = hspi("verify", suspect, "--db", root / "db", "--claim", "precision=fp32", "-q", "--json")
    checked = json.loads(verdict.stdout)
    assert verdict.returncode in (1, 3) and checked["status"] in ("INCONSISTENT", "INCONCLUSIVE")
    assert checked["reason"].startswith("not in the DB; estimated P(weights 32-bit)")
    bad = hspi("verify", suspect, "--db", root / "db", "--claim", "weights=3-bit", "-q")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "one of" in bad.stderr


def test_a_stack_in_the_db_is_identified_without_estimates(trained, tmp_path):
    root, _ = trained
    suspect = _suspect(root / "db", tmp_path / "q8.jsonl", "/q8_0/")
    report = json.loads(hspi("match", suspect, "--db", root / "db", "-q", "--json").stdout)
    assert report["verdict"] == "identified" and "estimates" not in report


def test_a_corrupt_estimator_is_one_clear_error(trained, tmp_path):
    root, summary = trained
    suspect = _suspect(root / "other", tmp_path / "q4.jsonl")
    db = tmp_path / "db"
    import shutil

    shutil.copytree(root / "db", db)
    (db / "estimators" / summary["estimator"].rsplit("/", 1)[1]).write_text('{"format": "hspi-llm-estimator/1"')
    proc = hspi("match", suspect, "--db", db, "-q")
    assert proc.returncode == 2 and "estimator" in proc.stderr and "not JSON" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_forced_chats_from_a_probe_set_equal_those_made_from_the_chats():
    from hspi_onnx.errors import BadProbesError
    from hspi_onnx.inputs.chats import builtin_chats
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.inputs.probes import chat_probe_set, forced_probe_set, generate

    info = resolve_model("smollm2")
    probes = generate(info, n=3)
    conts = [[1, 2, 3], [4, 5]]
    forced = forced_probe_set(info, probes, [2, 0], conts)
    chats = builtin_chats()[:3]
    direct = chat_probe_set(info, [chats[2], chats[0]], "x", continuations=conts)
    assert np.array_equal(forced.inputs["forced_ids"], direct.inputs["forced_ids"])
    assert forced.name.startswith("forced-") and len(forced) == 2
    with pytest.raises(BadProbesError, match="rows"):
        forced_probe_set(info, probes, [3], [[1]])
    with pytest.raises(BadProbesError, match="vocabulary"):
        forced_probe_set(info, probes, [0], [[10**9]])
    with pytest.raises(BadProbesError, match="not a greedy chat set"):
        forced_probe_set(info, forced, [0], [[1]])


def test_audit_of_a_real_server_outside_the_db_reports_estimates(trained, tmp_path):
    """llama-cpp-python's OpenAI-compatible server on F32 (not in the DB): the audit estimates."""
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python's [server] extra is not installed")
    import os
    import sys

    from hspi_onnx.models.smollm2 import gguf_path
    from test_llm_audit import _start, _stop

    root, _ = trained
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path("F32")), "--model_alias", "smollm2"]
    argv += ["--n_ctx", "2048", "--n_threads", "1", "--n_threads_batch", "1", "--flash_attn", "false"]
    proc, url = _start(argv + ["--host", "127.0.0.1"], tmp_path / "server.log", "llama_cpp.server", os.environ)
    try:
        probes = tmp_path / "chats.npz"
        assert hspi("probes", "make", "smollm2", "-n", "2", "-o", probes).returncode == 0
        report = tmp_path / "audit.html"
        args = ["audit", url, "--db", root / "db", "--probes", probes, "--claim", "precision=fp32", "-o", report]
        run = hspi(*args, "-q", "--json")
    finally:
        _stop(proc)
    assert run.returncode in (0, 1, 3), run.stderr[-2000:]
    doc = json.loads(run.stdout)
    assert doc["match"]["verdict"] == "not in the DB"
    est = doc["match"]["estimates"]
    assert est["status"] == "estimated" and est["requests"] == 2
    assert doc["reason"].startswith("not in the DB; estimated")
    html = report.read_text()
    assert "Estimates for a stack outside the DB" in html and "teacher-forced" in html


def test_gguf_files_are_classed_by_the_types_they_hold():
    """SmolLM2's 576 columns are no multiple of 256: llama.cpp's k-quant files fall back to other
    types, and the weight class follows what the file holds, not its name."""
    from hspi_onnx.cli.estimates import gguf_weight_classes
    from hspi_onnx.inputs.model import resolve_model

    labels = [f"llamacpp@0.3.36/cpu/{t}/bs=1,fa=off,kv=f16,threads=1" for t in ("q6_k", "q4_k_m", "q4_0", "f16")]
    got = gguf_weight_classes(resolve_model("smollm2"), labels)
    assert got == {"q6_k": "8-bit", "q4_k_m": "5-6-bit", "q4_0": "<=4-bit", "f16": "16-bit"}
