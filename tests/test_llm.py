"""SmolLM2 end to end on real runtimes: its conversions, chat probes through its chat template,
a DB built over llama.cpp, transformers and ONNX Runtime with whole generations recorded, and the
classes report's pairs. Two chats, 16 tokens each, on 2 cores."""

import json

import numpy as np
import pytest

from conftest import hspi

pytest.importorskip("llama_cpp")
pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

PLATFORMS = [
    "llamacpp/*/q8_0/*fa=off,*threads=1,*",
    "llamacpp/*/q8_0/*fa=on,*threads=1,*",
    "transformers/*/fp32/*attn=eager*threads=1",
    "onnxruntime/*/fp32/bs=1,opt=all,threads=1",
    "onnxruntime/*/int4/*quant=mnb-acc4*",
]


@pytest.fixture(scope="module")
def smollm2():
    from hspi_onnx.inputs.model import resolve_model

    return resolve_model("smollm2")


def test_reference_weights_equal_transformers_gguf_loader(smollm2):
    pytest.importorskip("accelerate")
    import torch
    from transformers import AutoModelForCausalLM

    from hspi_onnx.models import smollm2 as src

    state, config = src.reference_state()
    gguf = src.source_gguf()
    theirs = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    sd = theirs.state_dict()
    assert config["num_hidden_layers"] == 30 and config["vocab_size"] == 49152
    assert all(np.array_equal(state[k], sd[k].numpy()) for k in state), "dequantized weights differ"


def test_export_describes_a_generating_decoder(smollm2):
    import onnx

    spec = smollm2.generation
    assert spec is not None and spec.layers == 30 and spec.kv_heads == 3 and spec.head_dim == 64
    assert smollm2.input_names == ["input_ids", "attention_mask"]
    assert smollm2.output_names == ["tokens", "topk_ids", "topk_logits", "topk_logprobs"]
    graph = onnx.load(smollm2.path, load_external_data=False).graph
    assert [i.name for i in graph.input if i.name in ("input_ids", "past_key", "past_value")] == [
        "input_ids",
        "past_key",
        "past_value",
    ]
    assert spec.extra["opset"] == 17 and "TorchScript" in spec.extra["exporter"]


def test_chat_probes_use_the_chat_template(smollm2):
    from transformers import AutoTokenizer

    from hspi_onnx.inputs.probes import generate
    from hspi_onnx.models.smollm2 import hf_folder

    probes = generate(smollm2, n=2)
    assert probes.kind == "chat" and probes.name == "chat-v1-n2"
    tok = AutoTokenizer.from_pretrained(str(hf_folder()))
    n = int(probes.inputs["attention_mask"][0].sum())
    text = tok.decode(probes.inputs["input_ids"][0, :n].tolist())
    assert text.startswith("<|im_start|>system\n") and "Hi! How are you today?" in text
    assert text.endswith("<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def built(tmp_path_factory, smollm2):
    db = tmp_path_factory.mktemp("llm") / "db"
    args = ["db", "build", "smollm2", "--db", db, "-n", "2", "-q"]
    for p in PLATFORMS:
        args += ["-p", p]
    proc = hspi(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return db


def test_build_records_whole_generations(built, smollm2):
    from hspi_onnx.db.dataset import outputs_at
    from hspi_onnx.db.store import ReferenceDB

    db = ReferenceDB(built)
    ids = np.array([0, 1])
    got = {name: outputs_at(db, smollm2.sha256, _probes_sha(db), ids, name) for name in smollm2.output_names}
    assert len(got["tokens"]) == len(PLATFORMS)
    for label, tokens in got["tokens"].items():
        top = got["topk_ids"][label]
        lp = got["topk_logprobs"][label]
        assert tokens.shape == (2, 16) and tokens.dtype == np.int32 and top.shape == lp.shape == (2, 16, 20)
        live = tokens >= 0
        assert live[:, 0].all() and (top[..., 0][live] == tokens[live]).all()  # greedy = the top logit
        assert (np.diff(lp[live], axis=-1) <= 0).all() and (lp[live] <= 0).all()
    # logits come back in the runtime's own dtype
    dtypes = {label.split("@")[0]: str(v.dtype) for label, v in got["topk_logits"].items()}
    assert dtypes == {"llamacpp": "float32", "transformers": "float32", "onnxruntime": "float32"}


def _probes_sha(db) -> str:
    (sha,) = db.manifest().probe_sets
    return sha


def test_classes_and_where_pairs_part(built):
    proc = hspi("db", "classes", "--db", built, "--json")
    assert proc.returncode == 0, proc.stderr
    (group,) = json.loads(proc.stdout)
    assert group["n_platforms"] == len(PLATFORMS) and not any(c["nondeterministic"] for c in group["classes"])
    labels = {p: c["id"] for c in group["classes"] for p in c["platforms"]}
    fa = [cid for label, cid in labels.items() if label.startswith("llamacpp@")]
    assert len(set(fa)) == 2, "flash attention on and off gave the same bits"
    pairs = {(p["a"], p["b"]): p for p in group["pairs"]}
    assert len(pairs) == len(group["classes"]) * (len(group["classes"]) - 1) // 2
    assert all(p["first_position"] is not None and p["n_probes"] == 2 for p in pairs.values())


def _suspect_from(db_path, label_part: str, tmp_path, k: int, digits, name="s.jsonl"):
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.match.generation import as_query, generation_outputs, write_generation

    db = ReferenceDB(db_path)
    m = db.manifest()
    ((msha, model),) = m.models.items()
    ((psha, probes),) = m.probe_sets.items()
    data = generation_outputs(db, msha, psha, [0, 1])
    (label,) = [lab for lab in data if label_part in lab]
    queries = [as_query({n: v[i] for n, v in data[label].items()}, k, i, 16, digits) for i in range(2)]
    return write_generation(tmp_path / name, probes.name, queries, model.name), label


def test_one_request_with_rounded_top5_identifies_its_class(built, tmp_path):
    path, label = _suspect_from(built, "fa=on", tmp_path, 5, 4)
    proc = hspi("match", path, "--db", built, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["verdict"] == "identified" and report["evidence"] == "top_logprobs"
    assert [p for c in report["classes"] for p in c["platforms"]] == [label]
    ok = hspi("verify", path, "--db", built, "--claim", "runtime=llamacpp,fa=on", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["status"] == "CONSISTENT"
    bad = hspi("verify", path, "--db", built, "--claim", "runtime=transformers", "--json")
    assert bad.returncode == 1 and json.loads(bad.stdout)["status"] == "INCONSISTENT"


def test_text_alone_leaves_the_classes_with_the_same_text(built, tmp_path):
    path, label = _suspect_from(built, "fa=off", tmp_path, 0, None)
    proc = hspi("match", path, "--db", built, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["evidence"] == "text" and label in [p for c in report["classes"] for p in c["platforms"]]


def test_raw_generation_from_hspi_run_matches_exactly(built, tmp_path):
    out = tmp_path / "run.npz"
    proc = hspi(
        "run", "smollm2", "-p", "llamacpp/*/q8_0/*fa=off,*kv=f16,nbatch=512,*threads=1,*", "-n", "2", "-o", out, "-q"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = hspi("match", out, "--db", built, "--json")
    assert m.returncode == 0, m.stderr
    report = json.loads(m.stdout)
    assert report["verdict"]["status"] == "identified (exact)"


def test_classes_report_the_one_request_table(built):
    proc = hspi("db", "classes", "--db", built, "--json")
    (group,) = json.loads(proc.stdout)
    table = group["one_request"]
    assert table["modes"] == ["text", "top5", "top5@4dp", "top5@2dp", "top5-server"] and table["tokens"] == 16
    # every digit of the top-5 log-probabilities, as the DB or a server normalizes them: each class
    # is alone on every chat
    assert all(row["top5"] == row["top5-server"] == table["n_probes"] for row in table["rows"])


def test_sampled_and_teacher_forced_probe_sets(tmp_path):
    cont = tmp_path / "cont.jsonl"
    cont.write_text('{"text": "Hello! I am fine, thank you."}\n{"tokens": [19556, 665, 17]}\n')
    forced, sampled, db = tmp_path / "forced.npz", tmp_path / "sampled.npz", tmp_path / "db"
    for args in (["--continuations", cont, "-o", forced], ["--sample-seed", "7", "-o", sampled]):
        proc = hspi("probes", "make", "smollm2", "-n", "2", *args)
        assert proc.returncode == 0, proc.stderr[-2000:]
    for probes in (forced, sampled):
        proc = hspi("db", "build", "smollm2", "--db", db, "--probes", probes, "-p", PLATFORMS[0], "-q")
        assert proc.returncode == 0, proc.stderr[-2000:]
    from hspi_onnx.db.dataset import outputs_at
    from hspi_onnx.db.store import ReferenceDB

    store = ReferenceDB(db)
    m = store.manifest()
    ((msha, _),) = m.models.items()
    by_name = {p.name: sha for sha, p in m.probe_sets.items()}
    assert set(by_name) == {"chat-v1-n2-forced", "chat-v1-n2-sampled-s7"}
    (tokens,) = outputs_at(store, msha, by_name["chat-v1-n2-forced"], np.array([0, 1]), "tokens").values()
    assert tokens[1, :3].tolist() == [19556, 665, 17] and (tokens[1, 3:] == -1).all()
    (sampled_tokens,) = outputs_at(store, msha, by_name["chat-v1-n2-sampled-s7"], np.array([0, 1]), "tokens").values()
    assert (sampled_tokens[:, 0] >= 0).all()
    bad = hspi("probes", "make", "digits", "--sample-seed", "1", "-o", tmp_path / "x.npz")
    assert bad.returncode == 2 and "language models" in bad.stderr


def test_weight_quantizers_are_labelled_distinct_stacks(tmp_path):
    """NNCF-compressed decoders under OpenVINO (the dynamic-quantization group is a knob: it moves
    the bits) and transformers' CPU weight quantizers: each its own class, its state measured."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    pytest.importorskip("optimum.quanto")
    pytest.importorskip("hqq")
    from hspi_onnx.db.store import ReferenceDB

    db = tmp_path / "db"
    globs = [
        "openvino/*/int4/*dq=32,*quant=nncf-int4-sym-g64*",
        "openvino/*/int4/*dq=0,*quant=nncf-int4-sym-g64*",
        "transformers/*/int4/*quant=quanto-int4*",
        "transformers/*/int4/*quant=hqq-4b-g64*",
    ]
    proc = hspi(
        "db",
        "build",
        "smollm2",
        "--db",
        db,
        "-n",
        "1",
        "-q",
        "--extra-variants",
        *[x for g in globs for x in ("-p", g)],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    import pyarrow.dataset as ds

    assert len(ReferenceDB(db).manifest().platforms) == 4
    rows = ds.dataset(db / "shards", format="parquet").to_table(columns=["platform", "host"]).to_pylist()
    measured = {r["platform"]: json.loads(r["host"])["kernels"] for r in rows}
    linear = {label.split("quant=")[1].split(",")[0]: state.get("linear") for label, state in measured.items()}
    assert linear["quanto-int4"].startswith("QLinear/") and linear["hqq-4b-g64"].startswith("HQQLinear/")
    groups = {state["dynamic_quantization_group_size"] for label, state in measured.items() if "openvino" in label}
    assert groups == {"0", "32"}
    proc = hspi("db", "classes", "--db", db, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(json.loads(proc.stdout)[0]["classes"]) == 4


def test_onnxruntime_genai_builds_its_own_models(tmp_path):
    """ONNX Runtime GenAI's model builder from the Hugging Face folder, its generator under the
    shared loop: fp32 and int4 are two classes, the builder's command line is measured."""
    pytest.importorskip("onnxruntime_genai")
    db = tmp_path / "db"
    globs = ["onnxruntime-genai/*/fp32/*threads=1", "onnxruntime-genai/*/int4/*quant=mnb-acc4*"]
    proc = hspi("db", "build", "smollm2", "--db", db, "-n", "1", "-q", *[x for g in globs for x in ("-p", g)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    import pyarrow.dataset as ds

    rows = ds.dataset(db / "shards", format="parquet").to_table(columns=["platform", "host"]).to_pylist()
    builders = {r["platform"].split("/")[2]: json.loads(r["host"])["kernels"]["builder"] for r in rows}
    assert "-p fp32 -e cpu" in builders["fp32"] and "-p int4 -e cpu" in builders["int4"]
    assert "accuracy_level=4" in builders["int4"]
    proc = hspi("db", "classes", "--db", db, "--json")
    assert len(json.loads(proc.stdout)[0]["classes"]) == 2


def test_full_logits_variant_records_every_logit(tmp_path):
    """smollm2-logits: the same decoder and conversions, every logit of every position recorded;
    the top-k outputs are the top of those rows, the log-probabilities their log-softmax."""
    from hspi_onnx.db.dataset import outputs_at
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.inputs.model import resolve_model

    model = resolve_model("smollm2-logits")
    assert model.generation.full_logits and model.output_names[-1] == "logits"
    assert model.conversions() is not None  # a variant of the zoo's export: llama.cpp serves it
    db = tmp_path / "db"
    proc = hspi("db", "build", "smollm2-logits", "--db", db, "-n", "1", "-q", "-p", PLATFORMS[0])
    assert proc.returncode == 0, proc.stderr[-2000:]
    store = ReferenceDB(db)
    m = store.manifest()
    ((msha, entry),) = m.models.items()
    ((psha, _),) = m.probe_sets.items()
    got = {
        name: next(iter(outputs_at(store, msha, psha, np.array([0]), name).values()))[0] for name in entry.output_names
    }
    full, ids, top, lps = got["logits"], got["topk_ids"], got["topk_logits"], got["topk_logprobs"]
    assert full.shape == (16, 49152) and full.dtype == np.float32
    live = got["tokens"] >= 0
    assert np.array_equal(np.take_along_axis(full, ids.astype(np.int64), axis=1)[live], top[live])
    wide = full[live].astype(np.float64)
    lse = wide.max(axis=1, keepdims=True) + np.log(np.exp(wide - wide.max(axis=1, keepdims=True)).sum(1, keepdims=True))
    want = np.take_along_axis(wide - lse, ids[live].astype(np.int64), axis=1).astype(np.float32)
    assert np.array_equal(want, lps[live])
    assert hspi("db", "verify", "--db", db).returncode == 0
