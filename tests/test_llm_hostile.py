"""Hostile language-model decoders: an ONNX file whose ``hspi.generation`` metadata marks it as a
decoder with a KV cache is untrusted input like any other. Bad metadata, metadata the graph
contradicts and truncated files are one BadModelError when the model is opened; outputs a runtime
returns with the wrong shape fail that platform (UnsupportedError), NaN logits are recorded. The
decoder here is tiny (2 layers, 2 KV heads, head_dim 4, vocabulary 32), built with onnx.helper."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import hspi
from hspi_onnx.errors import BadModelError, HspiError, UnsupportedError
from hspi_onnx.generation import GENERATION_META_KEY, MAX_META_CHARS, GenerationSpec
from hspi_onnx.inputs.model import open_model
from hspi_onnx.run.decode import GenerationSession, OnnxDecoder, generate, sample, top_k

L, H, D, V = 2, 2, 4, 32
SPEC = {
    "source": "tiny",
    "layers": L,
    "kv_heads": H,
    "head_dim": D,
    "vocab": V,
    "bos": 1,
    "pad": 0,
    "stop": [2],
    "new_tokens": 4,
    "top_k": 5,
    "context": 64,
    "extra": {"exporter": "onnx.helper"},
}
CACHE = [L, "batch", H, "past", D]


def decoder(
    meta=None, weights=None, double_cache=False, logits_dims=("batch", "seq", V), cache=CACHE
) -> onnx.ModelProto:
    """A working decoder with the zoo's interface: embeddings as keys and values, logits from
    the embedding plus the sum of the whole cache (so the cache matters). ``weights``: the output
    projection [D, vocab columns]; ``double_cache``: present_key holds every layer twice at run
    time (the declared layout stays ``cache``); ``meta``: the hspi.generation text (a dict: as JSON)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((D, V)).astype(np.float32) if weights is None else weights
    inits = [
        numpy_helper.from_array(rng.standard_normal((V, D)).astype(np.float32), "emb"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array([0, 2], np.int64), "ax02"),
        numpy_helper.from_array(np.array([L, 1, H, 1, 1], np.int64), "fan"),
        numpy_helper.from_array(np.array([0, 2, 3], np.int64), "ax023"),
        numpy_helper.from_array(np.array([1], np.int64), "ax1"),
    ]
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["x"]),  # [b, s, D]
        helper.make_node("Unsqueeze", ["x", "ax02"], ["x5"]),  # [1, b, 1, s, D]
        helper.make_node("Expand", ["x5", "fan"], ["kv"]),  # [layers, b, H, s, D]
        helper.make_node("Concat", ["past_key", "kv"], ["key"], axis=3),
        helper.make_node("Concat", ["key", "key"] if double_cache else ["key"], ["present_key"], axis=0),
        helper.make_node("Concat", ["past_value", "kv"], ["present_value"], axis=3),
        helper.make_node("ReduceSum", ["present_key", "ax023"], ["ctx"], keepdims=0),  # [b, D]
        helper.make_node("Unsqueeze", ["ctx", "ax1"], ["ctx3"]),
        helper.make_node("Add", ["x", "ctx3"], ["h"]),
        helper.make_node("MatMul", ["h", "w"], ["logits"]),
    ]
    present = ["total" if d == "past" else d for d in cache]
    graph = helper.make_graph(
        nodes,
        "tiny-decoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("past_key", TensorProto.FLOAT, cache),
            helper.make_tensor_value_info("past_value", TensorProto.FLOAT, cache),
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, list(logits_dims)),
            helper.make_tensor_value_info("present_key", TensorProto.FLOAT, present),
            helper.make_tensor_value_info("present_value", TensorProto.FLOAT, present),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = SPEC if meta is None else meta
    model.metadata_props.add(key=GENERATION_META_KEY, value=meta if isinstance(meta, str) else json.dumps(meta))
    return model


def save(model: onnx.ModelProto, path) -> str:
    onnx.checker.check_model(model)  # every hostile file here is one ONNX itself accepts
    path.write_bytes(model.SerializeToString())
    return str(path)


def _value(model, name: str):
    return next(v for v in [*model.graph.input, *model.graph.output] if v.name == name)


def _rename(model, old: str, new: str):
    for node in model.graph.node:
        node.input[:] = [new if x == old else x for x in node.input]
        node.output[:] = [new if x == old else x for x in node.output]
    _value(model, old).name = new
    return model


def _retype(model, name: str, elem: int):
    _value(model, name).type.tensor_type.elem_type = elem
    return model


def _redim(model, name: str, axis: int, size):
    dim = _value(model, name).type.tensor_type.shape.dim[axis]
    if isinstance(size, int):
        dim.dim_value = size
    else:
        dim.dim_param = size
    return model


def _drop_axis(model, name: str):
    del _value(model, name).type.tensor_type.shape.dim[-1]
    return model


def _extra_input(model):
    model.graph.input.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]))
    return model


def _drop_output(model, name: str):
    outs = [o for o in model.graph.output if o.name != name]
    del model.graph.output[:]
    model.graph.output.extend(outs)
    return model


def _swap_outputs(model):
    outs = list(model.graph.output)
    del model.graph.output[:]
    model.graph.output.extend([outs[1], outs[0], outs[2]])
    return model


def test_the_tiny_decoder_opens(tmp_path):
    info = open_model(save(decoder(), tmp_path / "tiny.onnx"))
    assert info.generation == GenerationSpec.from_dict(SPEC)
    assert info.input_names == ["input_ids", "attention_mask"] and info.output_names[0] == "tokens"
    assert info.conversions() is None  # "tiny" is no zoo language model: no GGUF or Hugging Face conversions


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# (change to the metadata: a dict of keys to set, None to delete; or the whole text), message
METADATA = {
    "not JSON": ("{layers: 2", "not valid JSON"),
    "deeply nested JSON": (_nested(100_000 // 2 // 2), "not valid JSON"),
    "array, not object": ("[1, 2]", "not a JSON object"),
    "NaN constant": (json.dumps(SPEC).replace('"layers": 2', '"layers": NaN'), "not valid JSON"),
    "Infinity constant": (json.dumps(SPEC).replace('"context": 64', '"context": Infinity'), "not valid JSON"),
    "huge text": ({"extra": {"note": "x" * MAX_META_CHARS}}, f"at most {MAX_META_CHARS} characters"),
    "layers 10**12": ({"layers": 10**12}, "layers is 1000000000000, outside 1..1024"),
    "layers 0": ({"layers": 0}, "layers is 0"),
    "kv_heads negative": ({"kv_heads": -3}, "kv_heads is -3"),
    "head_dim huge": ({"head_dim": 1 << 40}, "head_dim is 1099511627776"),
    "vocab 10**12": ({"vocab": 10**12}, "vocab is 1000000000000"),
    "a 2000-digit number": ({"vocab": 10**2000}, r"vocab is 100000000000\.\.\. \(2001 characters\)"),
    "context absurd": ({"context": 10**9}, "context is 1000000000"),
    "cache beyond memory": (
        {"layers": 1024, "kv_heads": 64, "head_dim": 256, "context": 1 << 20, "vocab": 1 << 20},
        "KV cache of .* GiB",
    ),
    "new_tokens 0": ({"new_tokens": 0}, "new_tokens is 0"),
    "new_tokens beyond limit": ({"new_tokens": 10**6, "context": 1 << 20}, "new_tokens is 1000000, outside 1..4096"),
    "new_tokens fill the context": ({"new_tokens": 64}, "new_tokens is 64, outside 1..63"),
    "top_k 0": ({"top_k": 0}, "top_k is 0"),
    "top_k 21": ({"top_k": 21}, "top_k is 21, outside 1..20"),
    "top_k above vocab": ({"vocab": 8, "top_k": 9, "stop": [2]}, "top_k is 9, outside 1..8"),
    "stop negative": ({"stop": [-1]}, "stop is -1"),
    "stop huge": ({"stop": [10**30]}, r"stop is 100000000000\.\.\. \(31 characters\)"),
    "stop at vocab": ({"stop": [V]}, f"stop is {V}, outside 0..{V - 1}"),
    "stop not a list": ({"stop": 2}, "stop must be a list"),
    "stop list too long": ({"stop": [2] * 65}, "stop must be a list of at most 64"),
    "bos outside vocab": ({"bos": V}, "bos is 32"),
    "pad negative": ({"pad": -1}, "pad is -1"),
    "layers a string": ({"layers": "2"}, "layers must be an integer, not str"),
    "layers a float": ({"layers": 2.0}, "layers must be an integer, not float"),
    "layers a bool": ({"layers": True}, "layers must be an integer, not bool"),
    "stop id a float": ({"stop": [2.5]}, "stop must be an integer"),
    "vocab missing": ({"vocab": None}, "vocab is missing"),
    "source missing": ({"source": None}, "source must be a module name"),
    "source a path": ({"source": "../../tmp/evil"}, "source must be a module name"),
    "source a number": ({"source": 7}, "source must be a module name"),
    "extra a string": ({"extra": "abc"}, "extra must be a JSON object"),
    "extra a list": ({"extra": [1, 2]}, "extra must be a JSON object"),
    "extra nested deep": ({"extra": json.loads('{"a": ' * 50 + "{}" + "}" * 50)}, "nested at most 8"),
    "unknown key": ({"layer": 2}, "unknown keys layer"),
}


def _meta(change):
    if isinstance(change, str):
        return change
    meta = {k: v for k, v in (SPEC | change).items() if change.get(k, 0) is not None}
    return meta


@pytest.mark.parametrize(("change", "message"), list(METADATA.values()), ids=list(METADATA))
def test_bad_metadata_is_one_clear_error(tmp_path, change, message):
    path = save(decoder(meta=_meta(change)), tmp_path / "bad.onnx")
    with pytest.raises(BadModelError, match=message) as caught:
        open_model(path)
    assert "\n" not in str(caught.value) and len(str(caught.value)) <= 300
    assert type(caught.value) is BadModelError


# (how the graph contradicts the metadata, or the metadata the graph), message
GRAPH = {
    "no past_value input": (
        lambda m: _rename(m, "past_value", "past_v"),
        "graph inputs .* has input_ids, past_key, past_v",
    ),
    "an extra input": (_extra_input, "has input_ids, past_key, past_value, attention_mask"),
    "no logits output": (lambda m: _rename(m, "logits", "scores"), "graph outputs .* has scores, present_key"),
    "no present_key output": (lambda m: _drop_output(m, "present_key"), "has logits, present_value"),
    "no present_value output": (lambda m: _drop_output(m, "present_value"), "has logits, present_key$"),
    "outputs in another order": (_swap_outputs, "has present_key, logits, present_value"),
    "input_ids float": (lambda m: _retype(m, "input_ids", TensorProto.FLOAT), "'input_ids' is float32.*needs int64"),
    "past_key float16": (lambda m: _retype(m, "past_key", TensorProto.FLOAT16), "'past_key' is float16.*needs float32"),
    "logits bfloat16": (lambda m: _retype(m, "logits", TensorProto.BFLOAT16), "'logits' is of ONNX element type 16"),
    "present_value int64": (lambda m: _retype(m, "present_value", TensorProto.INT64), "'present_value' is int64"),
    "past_key rank 4": (lambda m: _drop_axis(m, "past_key"), "'past_key' has rank 4.*needs rank 5"),
    "logits rank 2": (lambda m: _drop_axis(m, "logits"), "'logits' has rank 2.*needs rank 3"),
    "cache layers": (lambda m: _redim(m, "past_key", 0, 3), r"'past_key': axis 0 \(layers\) is 3; .* says 2"),
    "cache kv_heads": (lambda m: _redim(m, "present_key", 2, 1), r"'present_key': axis 2 \(kv_heads\) is 1"),
    "cache head_dim": (lambda m: _redim(m, "present_value", 4, 8), r"axis 4 \(head_dim\) is 8; .* says 4"),
    "cache layout swapped": (lambda m: _redim(_redim(m, "past_key", 2, "past"), "past_key", 3, H), "axis 3 is fixed"),
    "static batch 2": (lambda m: _redim(m, "input_ids", 0, 2), r"axis 0 \(batch\) is 2"),
    "static sequence": (lambda m: _redim(m, "input_ids", 1, 7), "'input_ids': axis 1 is fixed at 7"),
    "logits narrower than vocab": (lambda m: _redim(m, "logits", 2, V - 1), "31 logits per position.*vocab 32"),
    "logits absurdly wide": (lambda m: _redim(m, "logits", 2, 1 << 40), "1099511627776 logits per position"),
}


@pytest.mark.parametrize(("mutate", "message"), list(GRAPH.values()), ids=list(GRAPH))
def test_graph_contradicting_metadata_is_one_clear_error(tmp_path, mutate, message):
    path = save(mutate(decoder()), tmp_path / "bad.onnx")
    with pytest.raises(BadModelError, match=message) as caught:
        open_model(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"vocab": V + 8, "top_k": 5}, "32 logits per position.*vocab 40"), ({"layers": 3}, r"axis 0 \(layers\) is 2")],
    ids=["metadata vocab larger", "metadata layers"],
)
def test_metadata_contradicting_graph_is_one_clear_error(tmp_path, change, message):
    with pytest.raises(BadModelError, match=message):
        open_model(save(decoder(meta=SPEC | change), tmp_path / "bad.onnx"))


def test_padded_vocabulary_and_dynamic_axes_open(tmp_path):
    """What the check must not refuse: logits wider than the vocabulary (padding), every axis dynamic."""
    assert open_model(save(decoder(logits_dims=("batch", "seq", 40)), tmp_path / "pad.onnx")).generation
    dynamic = ["layers", "batch", "heads", "past", "dim"]
    assert open_model(save(decoder(logits_dims=("b", "s", "v"), cache=dynamic), tmp_path / "dyn.onnx")).generation


@pytest.mark.parametrize("cut", [1, 16, 200, 0.5, -30, -1])
def test_truncated_decoder_is_one_clear_error(tmp_path, cut):
    data = decoder().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * cut) if isinstance(cut, float) else cut])
    with pytest.raises(BadModelError, match="not a valid ONNX file|holds no ONNX graph|ONNX checker rejects"):
        open_model(path)


def test_every_truncation_of_a_decoder_is_one_clear_error(tmp_path):
    """Cut after every byte: each prefix is refused (most do not parse; the one that ends just
    before the metadata is a plain graph, refused for its inputs)."""
    data = decoder().SerializeToString()
    path = tmp_path / "cut.onnx"
    for cut in range(1, len(data)):
        path.write_bytes(data[:cut])
        with pytest.raises(BadModelError):
            open_model(path)


# -- at run time: ONNX Runtime in this process, on what the file could not tell -------------------


def _session(path: str, env=None):
    from hspi_onnx.run.adapter import registry

    adapter = registry()["onnxruntime"]
    if not adapter.available().ok:
        pytest.skip(adapter.available().reason)
    model = open_model(path)
    platform = next(p for p in adapter.variants(model, "chat") if p.precision == "fp32")
    return adapter.prepare(model, platform)


PROMPT = {"input_ids": np.array([[1, 5, 7, 9]], np.int64), "attention_mask": np.ones((1, 4), np.int64)}


def test_tiny_decoder_generates_on_onnxruntime(tmp_path):
    with _session(save(decoder(), tmp_path / "tiny.onnx")) as session:
        out = session.run(PROMPT)
        again = session.run(PROMPT)
    assert out["tokens"].shape == (1, 4) and out["topk_ids"].shape == (1, 4, 5)
    assert ((out["tokens"] >= 0) & (out["tokens"] < V) | (out["tokens"] == -1)).all()
    assert np.isfinite(out["topk_logprobs"][out["tokens"] >= 0]).all()
    assert all(np.array_equal(out[k], again[k], equal_nan=True) for k in out)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        # declared with dynamic axes (the file cannot tell), wrong when it runs
        (
            lambda: decoder(logits_dims=("b", "s", "v"), weights=np.ones((D, V - 4), np.float32)),
            r"logits of shape \(1, 4, 28\)",
        ),
        (
            lambda: decoder(double_cache=True, cache=["layers", "batch", H, "past", D]),
            r"present_key of shape \(4, 1, 2, 4, 4\)",
        ),
        # declared static and still wrong: ONNX Runtime only warns
        (lambda: decoder(weights=np.ones((D, V - 4), np.float32)), r"logits of shape \(1, 4, 28\)"),
    ],
    ids=["logits narrower", "an extra cache layer", "logits narrower than declared"],
)
def test_wrong_outputs_at_run_time_fail_the_platform(tmp_path, build, message):
    with _session(save(build(), tmp_path / "bad.onnx")) as session:
        with pytest.raises(UnsupportedError, match=message) as caught:
            session.run(PROMPT)
    assert "\n" not in str(caught.value)


def test_nan_logits_are_recorded_not_a_crash(tmp_path):
    """NaN logits (every one here) rank last, ties to the lower id; the position's logprobs are NaN."""
    weights = np.full((D, V), np.nan, np.float32)
    with _session(save(decoder(weights=weights), tmp_path / "nan.onnx")) as session:
        out = session.run(PROMPT)
        sampled = session.run(PROMPT | {"sample_seed": np.array([[3]], np.int64)})
    assert out["tokens"].tolist() == [[0, 0, 0, 0]] and out["topk_ids"][0, 0].tolist() == [0, 1, 2, 3, 4]
    assert np.isnan(out["topk_logits"]).all() and np.isnan(out["topk_logprobs"]).all()
    assert sampled["tokens"].tolist() == [[0, 0, 0, 0]]  # undefined softmax: greedy's choice


def test_some_nan_logits_rank_below_every_number(tmp_path):
    weights = np.random.default_rng(1).standard_normal((D, V)).astype(np.float32)
    weights[:, 3] = np.nan
    with _session(save(decoder(weights=weights), tmp_path / "nan3.onnx")) as session:
        out = session.run(PROMPT)
    assert 3 not in out["topk_ids"][0].ravel().tolist() and (out["tokens"] != 3).all()
    assert np.isnan(out["topk_logprobs"][out["tokens"] >= 0]).all()


# -- the decode loop alone: outputs no adapter here can produce, and non-finite rows ------------


def _spec():
    return GenerationSpec.from_dict(SPEC)


def _fake(logits, key_shape=None):
    """A runtime whose run returns ``logits`` and a correct cache (or one of ``key_shape``)."""

    def run(ids, key, value):
        total = key.shape[3] + ids.shape[1]
        shape = key_shape or (L, 1, H, total, D)
        return logits(ids), np.zeros(shape, np.float32), np.zeros((L, 1, H, total, D), np.float32)

    return OnnxDecoder(run, _spec(), lambda shape: np.zeros(shape, np.float32))


@pytest.mark.parametrize(
    ("stepper", "message"),
    [
        (_fake(lambda ids: np.zeros((1, V), np.float32)), r"logits of shape \(1, 32\)"),
        (_fake(lambda ids: np.zeros((), np.float32)), r"logits of shape \(\)"),
        (_fake(lambda ids: np.zeros((2, ids.shape[1], V), np.float32)), r"logits of shape \(2, 4, 32\)"),
        (_fake(lambda ids: np.zeros((1, 0, V), np.float32)), r"logits of shape \(1, 0, 32\)"),
        (_fake(lambda ids: np.zeros((1, 1, V), np.int32)), "dtype int32"),
        (_fake(lambda ids: np.zeros((1, 1, V), np.float32), key_shape=(L, 1, 1, 4, D)), "present_key of shape"),
        (OnnxDecoder(lambda i, k, v: np.zeros(3), _spec(), lambda s: np.zeros(s, np.float32)), "returned ndarray"),
    ],
    ids=["rank 2", "rank 0", "batch 2", "no positions", "integer logits", "cache layout", "one array"],
)
def test_decode_loop_refuses_malformed_outputs(stepper, message):
    with pytest.raises(UnsupportedError, match=message):
        generate(stepper, np.array([1, 5, 7, 9]), _spec())


def test_last_position_only_logits_are_accepted():
    out = generate(_fake(lambda ids: np.arange(V, dtype=np.float32).reshape(1, 1, V)), np.array([1, 5]), _spec())
    assert out["tokens"].tolist() == [V - 1] * 4


def test_top_k_and_sample_on_non_finite_rows():
    row = np.array([0.0, np.nan, np.inf, -np.inf, 1.0], np.float32)
    ids, logits, lp = top_k(row, 5)
    assert ids.tolist() == [2, 4, 0, 3, 1] and np.isnan(lp).all()
    assert sample(row, 7, 0) == 2  # undefined softmax: greedy's choice
    ids, _, lp = top_k(np.array([0.0, -np.inf, 1.0], np.float32), 3)
    assert ids.tolist() == [2, 0, 1] and lp[2] == -np.inf and np.isfinite(lp[:2]).all()
    assert sample(np.full(4, np.nan, np.float32), 1, 0) == 0
    assert sample(np.full(4, -np.inf, np.float32), 1, 0) == 0


def test_prompt_beyond_context_fails_the_platform():
    session = GenerationSession(_fake(lambda ids: np.zeros((1, 1, V), np.float32)), _spec())
    long = {"input_ids": np.ones((1, 61), np.int64), "attention_mask": np.ones((1, 61), np.int64)}
    with pytest.raises(UnsupportedError, match="does not fit the context of 64"):
        session.run(long)


# -- through the command line -------------------------------------------------------------------


def test_cli_prints_one_line_and_exits_2(tmp_path):
    bad = save(decoder(meta=SPEC | {"layers": 10**12}), tmp_path / "bad.onnx")
    contradicts = save(_redim(decoder(), "past_key", 0, 3), tmp_path / "contradicts.onnx")
    for path, message in ((bad, "layers is 1000000000000"), (contradicts, "axis 0 (layers) is 3")):
        r = hspi("runtimes", "variants", path)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
        assert "Traceback" not in r.stderr and not r.stdout


def test_hostile_errors_are_the_user_error_family():
    assert issubclass(BadModelError, HspiError) and issubclass(UnsupportedError, HspiError)


def test_a_build_records_the_failed_platform_and_goes_on(tmp_path):
    """A decoder whose logits are narrower than its vocabulary at run time: ONNX Runtime (in its
    worker process) fails, the build records why and returns; the other decoder builds."""
    from hspi_onnx.db.build import build
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.inputs.probes import CHAT_KIND, ProbeSet

    ids = np.array([[1, 5, 7, 9], [1, 3, 0, 0]], np.int64)
    mask = (np.arange(4) < np.array([[4], [2]])).astype(np.int64)
    probes = ProbeSet("chats-x-n2", CHAT_KIND, 0, "probe", {"input_ids": ids, "attention_mask": mask}, np.arange(2))
    db = ReferenceDB(tmp_path / "db", create=True)
    platform = ["onnxruntime/*/fp32/*opt=all*"]
    bad = open_model(save(decoder(weights=np.ones((D, V - 4), np.float32)), tmp_path / "bad.onnx"))
    summary = build(db, bad, probes, platform)
    assert not summary.built and len(summary.failed) == 1
    assert list(summary.failed.values())[0].startswith("UnsupportedError: the decoder returned logits of shape")
    good = open_model(save(decoder(), tmp_path / "good.onnx"))
    assert len(build(db, good, probes, platform).built) == 1
