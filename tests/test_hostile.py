"""Hostile suspect files: every malformed input is one HspiError, never a crash, never code run,
never an allocation the file merely declares."""

import io
import json
import os
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import hspi
from hspi_onnx.db.build import build
from hspi_onnx.db.index import load_index
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.errors import HspiError
from hspi_onnx.forms import degrade
from hspi_onnx.inputs.probes import generate
from hspi_onnx.match.identify import match
from hspi_onnx.match.suspect import BadSuspectError, load_suspect, write_kserve, write_logprobs, write_npz, write_plain

PLATFORMS = ["onnxruntime/*/fp32/bs=1,opt=all,threads=1", "pytorch/*/bf16/bs=1,layout=nchw,src=module,threads=1"]
SETTINGS = dict(
    max_examples=int(os.environ.get("HOSTILE_EXAMPLES", 130)),
    deadline=None,
    derandomize=not os.environ.get("HOSTILE_EXAMPLES"),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def env(tmp_path_factory, zoo):
    root = tmp_path_factory.mktemp("hostile")
    db = ReferenceDB(root / "db", create=True)
    model = zoo["digits"]
    probes = generate(model, n=24)
    build(db, model, probes, PLATFORMS)
    from hspi_onnx.db.dataset import load_groups

    g = load_groups(db)[0]
    label = g.platforms[0]
    outs, ids = g.outputs[label][:6], g.ids[:6]
    seeds = {
        "raw.npz": write_npz(root / "raw.npz", probes.sha256, model.sha256, ids, outs).read_bytes(),
        "r.jsonl": write_kserve(root / "r.jsonl", probes.sha256, "digits", ids, outs, batch=2).read_bytes(),
        "top5.json": write_plain(
            root / "t.json", probes.name, "digits", "top5", ids, degrade(outs, "top5")
        ).read_bytes(),
        "argmax.json": write_plain(
            root / "a.json", probes.name, None, "argmax", ids, degrade(outs, "argmax")
        ).read_bytes(),
        "lp.jsonl": write_logprobs(root / "lp.jsonl", probes.sha256, ids, outs, k=3).read_bytes(),
        "log.jsonl": _kserve_log(probes, model, ids, outs),
        "inputs.npz": _npz_with_inputs(root / "i.npz", probes, ids, outs),
    }
    return {
        "root": root,
        "db": db,
        "index": load_index(db),
        "seeds": seeds,
        "probes": probes,
        "model": model,
        "tried": [],
    }


def _kserve_log(probes, model, ids, outs) -> bytes:
    """A payload log: KServe v2 requests (the probes' inputs) and their responses, by id."""
    x = probes.inputs[model.inputs[0].name][ids]
    reqs, resps = [], []
    for k in range(0, len(ids), 2):
        reqs.append(
            json.dumps(
                {
                    "id": f"r{k}",
                    "inputs": [
                        {
                            "name": model.inputs[0].name,
                            "datatype": "FP32",
                            "shape": list(x[k : k + 2].shape),
                            "data": x[k : k + 2].ravel().tolist(),
                        }
                    ],
                }
            )
        )
        resps.append(
            json.dumps(
                {
                    "id": f"r{k}",
                    "parameters": {"probe_set": probes.sha256, "probe_ids": [int(i) for i in ids[k : k + 2]]},
                    "outputs": [
                        {
                            "name": "logits",
                            "datatype": "FP32",
                            "shape": list(outs[k : k + 2].shape),
                            "data": outs[k : k + 2].astype(np.float64).ravel().tolist(),
                        }
                    ],
                }
            )
        )
    return ("\n".join(reqs[::-1] + resps) + "\n").encode()


def _npz_with_inputs(path, probes, ids, outs) -> bytes:
    from hspi_onnx.safenpz import save_npz

    x = next(iter(probes.inputs.values()))[ids]
    return save_npz(path, {"probes_sha256": probes.sha256}, ids=ids, outputs=outs, inputs=x).read_bytes()


def check(env, data: bytes, name: str = "s.bin") -> None:
    """Load and match ``data`` (and bind its inputs, if any, for a replay): success or
    HspiError, nothing else."""
    from hspi_onnx.match.replay import replay_probes

    path = env["root"] / name
    path.write_bytes(data)
    env["tried"].append(name)
    try:
        s = load_suspect(path)
        if s.inputs:
            replay_probes(s, env["model"])
        match(s, env["db"], index=env["index"])
    except HspiError as exc:
        assert str(exc) and "\n" not in str(exc)


def test_seed_files_match(env):
    for name, data in env["seeds"].items():
        path = env["root"] / name
        path.write_bytes(data)
        rep = match(load_suspect(path), env["db"], index=env["index"])
        assert rep.evidence.exact.matched_queries == 6, name


@settings(**SETTINGS)
@given(data=st.data())
def mutated_files(env, data):
    name = data.draw(st.sampled_from(sorted(env["seeds"])))
    raw = bytearray(env["seeds"][name])
    op = data.draw(st.sampled_from(["truncate", "flip", "insert", "splice"]))
    pos = data.draw(st.integers(0, len(raw) - 1))
    if op == "truncate":
        raw = raw[:pos]
    elif op == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            p = data.draw(st.integers(0, len(raw) - 1))
            raw[p] ^= data.draw(st.integers(1, 255))
    elif op == "insert":
        raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=64))
    else:
        raw[pos : pos + data.draw(st.integers(1, 200))] = data.draw(st.binary(max_size=16))
    check(env, bytes(raw), name)


KEYS = [
    "format",
    "probe_set",
    "queries",
    "outputs",
    "data",
    "shape",
    "datatype",
    "parameters",
    "probe_ids",
    "form",
    "values",
    "index",
    "probe_id",
    "id",
    "model_name",
    "model",
    "dtype",
    "name",
    "output",
    "inputs",
    "request",
    "response",
    "prompt",
    "tokens",
    "top",
]
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(
        [
            "hspi-suspect/1",
            "FP32",
            "BF16",
            "INT8",
            "raw",
            "top5",
            "argmax",
            "round4",
            "softmax",
            "float32",
            "logits",
            "noise-s0-n24",
            "digits",
            "3",
        ]
    )
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=6),
    max_leaves=40,
)


@settings(**SETTINGS)
@given(doc=JSON_VALUES, lines=st.booleans())
def structured_json(env, doc, lines):
    text = json.dumps(doc, allow_nan=True)
    if lines and isinstance(doc, list):
        text = "\n".join(json.dumps(d, allow_nan=True) for d in doc)
    check(env, text.encode(), "s.json")


DTYPES = ["float16", "float32", "float64", "int64", "int32", "uint8", "uint16", "bool", "complex64", "object", "U3"]


@settings(**SETTINGS)
@given(data=st.data())
def structured_npz(env, data):
    names = data.draw(
        st.sets(
            st.sampled_from(["ids", "outputs", "digests", "index", "meta", "extra", "inputs", "input_0", "input_1"]),
            max_size=7,
        )
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in sorted(names):
            if name == "meta" and data.draw(st.booleans()):
                meta = data.draw(
                    st.dictionaries(
                        st.sampled_from(
                            ["probes_sha256", "probes_name", "model_sha256", "dtype", "form", "input_names"]
                        ),
                        st.sampled_from(
                            [
                                env["probes"].sha256,
                                env["model"].sha256,
                                "float32",
                                "bfloat16",
                                "raw",
                                "top5",
                                "x",
                                "noise-s0-n24",
                            ]
                        )
                        | LEAVES,
                    )
                )
                arr = np.frombuffer(json.dumps(meta).encode(), np.uint8)
            else:
                dtype = data.draw(st.sampled_from(DTYPES))
                shape = tuple(data.draw(st.lists(st.integers(0, 12), min_size=0, max_size=3)))
                count = int(np.prod(shape)) if shape else 1
                if dtype == "object":
                    arr = np.array([None] * count, dtype=object).reshape(shape)
                elif dtype == "U3":
                    arr = np.full(shape, "ab")
                else:
                    arr = np.frombuffer(
                        data.draw(
                            st.binary(
                                min_size=count * np.dtype(dtype).itemsize, max_size=count * np.dtype(dtype).itemsize
                            )
                        ),
                        dtype,
                    ).reshape(shape)
            member = io.BytesIO()
            np.lib.format.write_array(member, arr, allow_pickle=True)
            zf.writestr(name + ".npy", member.getvalue())
    check(env, buf.getvalue(), "s.npz")


@settings(**SETTINGS)
@given(blob=st.binary(max_size=512), prefix=st.sampled_from([b"", b"PK\x03\x04", b"{", b"[", b"\x93NUMPY"]))
def random_bytes(env, blob, prefix):
    check(env, prefix + blob, "s.dat")


@pytest.mark.parametrize(
    "prop", [mutated_files, structured_json, structured_npz, random_bytes], ids=lambda f: f.__name__
)
def test_malformed_files_never_crash(env, prop):
    """Each generator on its own: every file it makes loads and matches, or fails with one line
    of our error family; and it really made the files (4 x 130 = 520 by default)."""
    tried = env["tried"] = []
    prop(env)
    assert len(tried) >= SETTINGS["max_examples"], len(tried)


# -- named attacks ----------------------------------------------------------------------------
class Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickle_payload_is_never_executed(env, tmp_path):
    sentinel = tmp_path / "pwned"
    buf = io.BytesIO()
    np.savez(
        buf,
        outputs=np.array([Payload(str(sentinel))], dtype=object),
        ids=np.array([0]),
        meta=np.frombuffer(json.dumps({"probes_sha256": env["probes"].sha256}).encode(), np.uint8),
    )
    path = tmp_path / "evil.npz"
    path.write_bytes(buf.getvalue())
    with pytest.raises(BadSuspectError, match="pickled objects are never loaded"):
        load_suspect(path)
    import pickle

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Payload(str(sentinel))))
    with pytest.raises(BadSuspectError):
        load_suspect(tmp_path / "evil.pkl")
    assert not sentinel.exists()


def _npz_with_header(shape, payload: bytes) -> bytes:
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, header)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("outputs.npy", member.getvalue() + payload)
        ids = io.BytesIO()
        np.lib.format.write_array(ids, np.array([0, 1]))
        zf.writestr("ids.npy", ids.getvalue())
        meta = io.BytesIO()
        np.lib.format.write_array(meta, np.frombuffer(b'{"probes_name": "noise-s0-n24"}', np.uint8))
        zf.writestr("meta.npy", meta.getvalue())
    return buf.getvalue()


@pytest.mark.parametrize("shape", [(10**12,), (2, 10**6, 10**6), (2, 3, 10**9)])
def test_huge_declared_shapes_are_refused_before_allocating(env, tmp_path, shape):
    path = tmp_path / "huge.npz"
    path.write_bytes(_npz_with_header(shape, b"\0" * 64))
    tracemalloc.start()
    with pytest.raises(BadSuspectError, match="over the limit"):
        load_suspect(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20


def test_huge_kserve_shape_is_refused(env, tmp_path):
    doc = {
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [1, 10**9], "data": [1.0]}],
        "parameters": {"probe_set": env["probes"].sha256, "probe_ids": [0]},
    }
    (tmp_path / "k.json").write_text(json.dumps(doc))
    with pytest.raises(BadSuspectError, match="shape|over the limit"):
        load_suspect(tmp_path / "k.json")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
        (b'\xff\xfe{"format": 1}', "UTF-8"),
        (
            b'{"format": "hspi-suspect/1", "probe_set": "noise-s0-n24", "form": "round4", "queries": [{"probe_id": 0, "values": [nan, 1]}]}',
            "valid JSON",
        ),
        (
            b'{"format": "hspi-suspect/1", "probe_set": "noise-s0-n24", "form": "raw", "dtype": "float16", "queries": [{"probe_id": 0, "values": [1e6]}]}',
            "overflow float16",
        ),
        (  # an unhashable dtype: refused, not a TypeError from the set lookup
            b'{"format": "hspi-suspect/1", "probe_set": "noise-s0-n24", "form": "raw", "dtype": [], "queries": [{"probe_id": 0, "values": [1]}]}',
            "form raw needs dtype",
        ),
        (
            b'{"format": "hspi-suspect/1", "probe_set": "noise-s0-n24", "form": "argmax", "queries": [{"probe_id": 1, "index": [2]}, {"probe_id": 1, "index": [3]}]}',
            "duplicate probe ids",
        ),
        (
            b'{"format": "hspi-suspect/1", "probe_set": "noise-s0-n24", "form": "top0", "queries": []}',
            "unknown output form",
        ),
        (b'{"format": "hspi-suspect/1", "form": "argmax", "queries": [{"probe_id": 1, "index": [2]}]}', "probe set"),
        (b"", "empty"),
        (
            b'{"format": "hspi-logprobs/1", "parameters": {"probe_set": "p", "probe_ids": [0]}, "tokens": [{"top": [[1, 0.5]]}]}',
            "above 0",
        ),
        (
            b'{"format": "hspi-logprobs/1", "parameters": {"probe_set": "p", "probe_ids": [0, 1]}, "tokens": [{"top": [[1, -1]]}]}',
            "one probe id",
        ),
        (
            b'{"format": "hspi-logprobs/1", "parameters": {"probe_set": "p", "probe_ids": [0]}, "tokens": [{"top": [[1]]}]}',
            "pairs",
        ),
        (
            b'{"format": "hspi-logprobs/1", "parameters": {"probe_set": "p", "probe_ids": [0]}, "tokens": [{"top": [[1, -1]]}]}\n'
            b'{"format": "hspi-logprobs/1", "parameters": {"probe_set": "p", "probe_ids": [1]}, "tokens": [{"top": [[1, -1], [2, -2]]}]}',
            "line 1 has 1",
        ),
    ],
)
def test_named_malformations(env, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(BadSuspectError, match=message):
        load_suspect(path)


def test_mismatches_against_the_db(env, tmp_path):
    p = env["probes"]
    ok = np.zeros((2, 10), np.float32)
    cases = [
        (write_npz(tmp_path / "a.npz", p.sha256, None, np.array([0, 999]), ok), "probe id 999 is not in"),
        (write_npz(tmp_path / "b.npz", "ab" * 32, None, np.array([0, 1]), ok), "not in the DB"),
        (
            write_npz(tmp_path / "c.npz", p.sha256, None, np.array([0, 1]), np.zeros((2, 7), np.float32)),
            "fit no output of digits",
        ),
        (write_npz(tmp_path / "d.npz", p.sha256, "lm", np.array([0, 1]), ok), "no outputs of model"),
    ]
    for path, message in cases:
        with pytest.raises(HspiError, match=message):
            match(load_suspect(path), env["db"], index=env["index"])
    nan = load_suspect(
        write_npz(tmp_path / "e.npz", p.sha256, None, np.array([0, 1]), np.full((2, 10), np.nan, np.float32))
    )
    assert match(nan, env["db"], index=env["index"]).verdict.platforms == []  # NaN is evidence, not an error


def test_cli_prints_one_line_and_exits_2(env, tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b"\x00\x01garbage")
    r = hspi("match", path, "--db", env["db"].root)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
