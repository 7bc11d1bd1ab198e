"""``hspi match --replay``: a suspect that carries its own inputs (in no probe set) is matched by
running the DB's platforms on exactly those inputs. The suspect files here are written with
numpy's and Python's own writers (``np.savez``, ``json.dumps``), as a user's logs would be."""

import json

import numpy as np
import pytest

from hspi_onnx.cli import main
from hspi_onnx.db.build import build
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.forms import log_softmax
from hspi_onnx.inputs.probes import ProbeSet, generate
from hspi_onnx.run.adapter import resolve_platform
from hspi_onnx.run.runner import execute

DIGITS = [
    "onnxruntime/*/fp32/bs=1,opt=all,threads=1",
    "onnxruntime/*/fp16/bs=1,opt=all,threads=1",
    "onnxruntime/*/int8/bs=1,opt=all,quant=dynamic,threads=1",
]


def run_cli(args, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def outputs_of(model, label: str, inputs: dict) -> np.ndarray:
    """What a service on ``label`` answers for ``inputs`` (the model's first output)."""
    adapter, platform = resolve_platform(label, model, "noise")
    n = len(next(iter(inputs.values())))
    ps = ProbeSet("traffic", "replay", 0, "probe", inputs, np.arange(n)).bind(model)
    return next(iter(execute(adapter, model, platform, ps).outputs.values()))


@pytest.fixture(scope="module")
def digits(tmp_path_factory, zoo):
    root = tmp_path_factory.mktemp("replay")
    model = zoo["digits"]
    db = ReferenceDB(root / "db", create=True)
    build(db, model, generate(model, n=16), DIGITS)
    return root, model, db


def test_npz_of_inputs_and_outputs_is_identified_exactly(digits, capsys):
    """np.savez(inputs=..., outputs=...) with no meta record: the platform is named exactly,
    a second replay runs nothing (cached), and without --replay the error says to use it."""
    root, model, db = digits
    x = np.random.default_rng(5).beta(2, 2, size=(10, *model.inputs[0].shape)).astype(np.float32)
    true = "onnxruntime/*/fp16/bs=1,opt=all,threads=1"
    np.savez(root / "log.npz", inputs=x, outputs=outputs_of(model, true, {model.inputs[0].name: x}))
    code, out, _ = run_cli(["match", str(root / "log.npz"), "--db", str(db.root), "--replay", "--json"], capsys)
    rep = json.loads(out)
    assert code == 0 and rep["verdict"]["status"] == "identified (exact)"
    assert len(rep["verdict"]["platforms"]) == 1 and "/fp16/" in rep["verdict"]["platforms"][0]
    assert rep["replay"]["candidates"] == "db" and len(rep["replay"]["build"]["built"]) == len(DIGITS)
    assert rep["suspect"]["probe_set"].startswith("replay-")
    code, out, _ = run_cli(["match", str(root / "log.npz"), "--db", str(db.root), "--replay", "--json"], capsys)
    again = json.loads(out)
    assert again["replay"]["build"]["built"] == [] and len(again["replay"]["build"]["skipped"]) == len(DIGITS)
    assert again["verdict"] == rep["verdict"]
    code, _, err = run_cli(["match", str(root / "log.npz"), "--db", str(db.root)], capsys)
    assert code == 2 and "--replay" in err
    code, _, err = run_cli(
        ["verify", str(root / "log.npz"), "--db", str(db.root), "--replay", "--claim", "precision=fp32", "-q"], capsys
    )
    assert code == 1  # INCONSISTENT: the replayed fp32 platform gave other bits


def test_replay_refuses_inputs_that_do_not_fit(digits, capsys):
    root, model, db = digits
    np.savez(root / "bad.npz", inputs=np.zeros((3, 5), np.float32), outputs=np.zeros((3, 10), np.float32))
    code, _, err = run_cli(["match", str(root / "bad.npz"), "--db", str(db.root), "--replay"], capsys)
    assert code == 2 and "do not fit model digits" in err and len(err.strip().splitlines()) == 1
    np.savez(root / "noinputs.npz", ids=np.arange(3), outputs=np.zeros((3, 10), np.float32))
    code, _, err = run_cli(["match", str(root / "noinputs.npz"), "--db", str(db.root), "--replay"], capsys)
    assert code == 2 and "probe set" in err  # no inputs, no probe set: nothing to match on
    code, _, err = run_cli(["match", str(root / "bad.npz"), "--db", str(db.root), "--model", "digits"], capsys)
    assert code == 2 and "--replay" in err


def test_lm_prompts_with_logprobs_are_replayed(tmp_path, zoo, capsys):
    """An LLM API log: prompts (token ids) with the top-5 log-probabilities of the first token,
    printed by json.dumps; replay over the LM's platforms keeps the served one."""
    model = zoo["lm"]
    db = ReferenceDB(tmp_path / "db", create=True)
    build(
        db,
        model,
        generate(model, n=8),
        ["onnxruntime/*/fp32/bs=1,opt=all,threads=1", "onnxruntime/*/int8/bs=1,opt=all,quant=dynamic,threads=1"],
    )
    spec = model.inputs[0]
    prompts = np.random.default_rng(3).integers(0, spec.vocab, size=(8, *spec.shape)).astype(spec.dtype)
    true = "onnxruntime/*/int8/bs=1,opt=all,quant=dynamic,threads=1"
    logits = outputs_of(model, true, {spec.name: prompts}).reshape(len(prompts), -1, spec.vocab)[:, -1]
    lines = []
    for p, row in zip(prompts, log_softmax(logits.astype(np.float64))):
        top = np.argsort(-row, kind="stable")[:5]
        lines.append(
            json.dumps(
                {
                    "format": "hspi-logprobs/1",
                    "parameters": {},
                    "prompt": p.tolist(),
                    "tokens": [{"top": [[int(i), float(row[i])] for i in top]}],
                }
            )
        )
    (tmp_path / "chat.jsonl").write_text("\n".join(lines) + "\n")
    code, out, err = run_cli(
        ["match", str(tmp_path / "chat.jsonl"), "--db", str(db.root), "--replay", "--json", "--model", "lm"], capsys
    )
    assert code == 0, err
    rep = json.loads(out)
    assert rep["suspect"]["form"] == "logprobs" and rep["suspect"]["queries"] == 8
    assert rep["verdict"]["status"] == "consistent (degraded outputs)"
    assert [("/int8/" in p) for p in rep["verdict"]["platforms"]] == [True], rep["verdict"]


def test_input_counts_that_are_no_multiple_of_the_batch_repeat(zoo):
    """10 inputs at bs=8: the last batch wraps around to the first probes. On a platform whose
    output depends on its batch-mates (ONNX Runtime int8 dynamic), the determinism check must
    compare each probe with the batch its output was stored from, or every replay of an odd
    count reads as 'not repeatable'."""
    model = zoo["digits"]
    adapter, platform = resolve_platform("onnxruntime/*/int8/bs=8,opt=all,quant=dynamic,threads=1", model, "noise")
    ps = generate(model, n=10, seed=4)
    result = execute(adapter, model, platform, ps, repeat=16)
    assert result.repeats is True
    assert result.batch_independent is False  # the check that does see its batch dependence
