"""The DB manifest's typed records (hspi_onnx/db/manifest.py): every readable schema read, the
current one written as the dict-based code wrote it, hostile files refused with one line."""

import copy
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hspi_onnx.db.manifest import READABLE_SCHEMAS, SCHEMA_VERSION, Manifest, PlatformNote, RunEntry
from hspi_onnx.db.merge import _merge_manifest
from hspi_onnx.db.report import verify
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.errors import BadManifestError, HspiError

DATA = Path(__file__).parent / "data"
V1_TEXT = (DATA / "db-v1" / "manifest.json").read_text("utf-8")
MODEL, PROBES, RUN = "a" * 64, "b" * 64, "20261204T101010-0123abcd"
LABEL = "onnxruntime@1.20.0/cpu:avx2:amd-epyc/fp32/bs=1,opt=all,threads=1"


def schema_2() -> dict:
    """A schema-2 manifest as db build writes it: every record kind, optional keys set."""
    note = {"run_id": RUN, "model_sha256": MODEL, "probes_sha256": PROBES, "platform": LABEL}
    spec = {"name": "x", "kind": "image", "shape": [1, 8, 8], "dtype": "float32", "low": 0.0, "high": 1.0}
    spec |= {"vocab": 256, "fixed_batch": None, "dims": ["", "", ""]}
    return {
        "schema": 2,
        "models": {
            MODEL: {
                "name": "digits",
                "path": "/cache/zoo/digits.onnx",
                "sha256": MODEL,
                "zoo": "digits",
                "input": spec,
                "output": "logits",
                "inputs": [spec],
                "outputs": [
                    {"name": "logits", "dtype": "float32", "shape": [10]},
                    {"name": "h", "dtype": "", "shape": [None]},
                ],
            }
        },
        "probe_sets": {
            PROBES: {
                "name": "noise-s0-n8",
                "kind": "noise",
                "seed": 0,
                "split": "probe",
                "n": 8,
                "shape": [1, 8, 8],
                "dtype": "float32",
                "inputs": {"x": {"shape": [1, 8, 8], "dtype": "float32"}},
                "input_names": ["x"],
                "dims": {},
                "sha256": PROBES,
                "provenance": {"method": "border", "steps": 3},
            }
        },
        "platforms": {
            LABEL: {
                "label": LABEL,
                "runtime": "onnxruntime",
                "version": "1.20.0",
                "device": "cpu:avx2:amd-epyc",
                "precision": "fp32",
                "knobs": {"bs": "1", "opt": "all", "threads": "1"},
            }
        },
        "runs": {
            RUN: {
                "started": "2026-12-04T10:10:10+00:00",
                "finished": "2026-12-04T10:10:12+00:00",
                "host": {"cpu_model": "AMD EPYC", "cores": 2, "isa_flags": ["avx2"]},
                "versions": {"hspi-onnx": "0.1.0", "onnxruntime": "1.20.0"},
                "argv": ["db", "build", "digits"],
                "pid": 4242,
                "model_sha256": MODEL,
                "probes_sha256": PROBES,
                "platforms": [LABEL],
                "built": 1,
                "skipped": 0,
                "failed": 0,
            },
            "20261204T101011-unfinished": {
                "started": "2026-12-04T10:10:11+00:00",
                "finished": None,
                "host": {},
                "versions": {},
                "argv": [],
                "pid": 1,
                "model_sha256": MODEL,
                "probes_sha256": PROBES,
                "platforms": [],
            },
        },
        "failures": [note | {"reason": "crashed (killed by SIGSEGV)", "at": "2026-12-04T10:10:11+00:00"}],
        "nondeterministic": [note | {"reason": "second run differed on the repeat sample"}],
        "batch_dependent": [note | {"reason": "the first probe alone in its batch gave other bits"}],
    }


def written(data: dict) -> str:
    """What the code before the typed records wrote for ``data``."""
    return json.dumps(data, indent=1, sort_keys=True)


# -- every readable schema, written back as it was ----------------------------------------------------
def test_a_schema_1_manifest_reads_and_writes_back_the_same_text():
    assert written(json.loads(V1_TEXT)) == V1_TEXT  # the file in tests/data is the old code's output
    m = Manifest.from_json(V1_TEXT)
    assert m.schema == 1 and READABLE_SCHEMAS == (1, 2) and SCHEMA_VERSION == 2
    (model,) = m.models.values()
    assert model.outputs is None and model.inputs is None and model.output_names == ["logits"]
    assert len(m.platforms) == 2 and all(r.finished for r in m.runs.values()) and m.batch_dependent is None
    assert m.to_json() == V1_TEXT


def test_a_schema_2_manifest_round_trips_with_every_record_kind():
    data = schema_2()
    m = Manifest.from_dict(copy.deepcopy(data))
    assert m.output_names(MODEL) == ["logits", "h"] and m.output_names("c" * 64) == []
    assert m.probe_sets[PROBES].n == 8 and m.probe_sets[PROBES].dims == {}
    assert m.platforms[LABEL].knobs["bs"] == "1" and m.runs[RUN].built == 1
    assert m.runs["20261204T101011-unfinished"].finished is None and m.runs["20261204T101011-unfinished"].built is None
    assert m.failures[0].at and m.nondeterministic[0].at is None and m.batch_dependent
    assert m.as_dict() == data and m.to_json() == written(data)
    assert Manifest.from_json(m.to_json()) == m


def test_optional_keys_stay_absent_and_unknown_keys_are_kept():
    data = schema_2()
    del data["batch_dependent"], data["probe_sets"][PROBES]["provenance"], data["models"][MODEL]["inputs"]
    data["from_the_future"] = {"x": [1]}
    data["models"][MODEL]["license"] = "MIT"
    data["runs"][RUN]["ray_nodes"] = 3
    data["failures"][0]["exit"] = -11
    data["models"][MODEL]["outputs"][0]["layout"] = "nc"  # nested records are kept as they are
    m = Manifest.from_dict(copy.deepcopy(data))
    assert m.batch_dependent is None and m.extra == {"from_the_future": {"x": [1]}}
    assert m.models[MODEL].extra == {"license": "MIT"} and m.runs[RUN].extra == {"ray_nodes": 3}
    assert m.to_json() == written(data)
    m.batch_dependent_list().append(PlatformNote(RUN, MODEL, PROBES, LABEL, "batch"))
    assert json.loads(m.to_json())["batch_dependent"][0]["reason"] == "batch"


def test_a_new_dbs_manifest_is_the_one_written_before():
    empty = {"schema": 2, "models": {}, "probe_sets": {}, "platforms": {}, "runs": {}, "failures": []}
    assert Manifest().to_json() == written(empty | {"nondeterministic": []})


def test_update_writes_the_changed_records(tmp_path):
    db = ReferenceDB(tmp_path / "db", create=True)
    run = RunEntry("now", None, {}, {}, ["db"], 7, MODEL, PROBES, [LABEL])
    db.update(lambda m: m.runs.__setitem__(RUN, run))
    db.update(lambda m: setattr(m.runs[RUN], "finished", "later"))
    text = db.manifest_path.read_text("utf-8")
    assert json.loads(text)["runs"][RUN]["finished"] == "later" and db.manifest().to_json() == text


def test_upgrade_and_merge_write_what_the_dict_code_wrote(tmp_path):
    """Expected texts from the dict-based code's rules (hspi_onnx/db/upgrade.py, merge.py before)."""
    from hspi_onnx.db.upgrade import upgrade

    db = ReferenceDB(shutil.copytree(DATA / "db-v1", tmp_path / "v1"))
    expected = json.loads(V1_TEXT)
    for model in expected["models"].values():
        model["outputs"] = [{"name": model["output"], "dtype": "", "shape": []}]
    expected["schema"] = 2
    upgrade(db)
    assert db.manifest_path.read_text("utf-8") == written(expected)

    dst, src = schema_2(), json.loads(written(expected))
    src["batch_dependent"] = dst["batch_dependent"] + [dict(dst["failures"][0], reason="other")]
    del dst["batch_dependent"]
    merged = copy.deepcopy(dst)
    for table in ("models", "probe_sets", "platforms", "runs"):
        for key, value in src[table].items():
            merged[table].setdefault(key, value)
    for table in ("failures", "nondeterministic", "batch_dependent"):
        for entry in src.get(table, []):
            if entry not in merged.setdefault(table, []):
                merged[table].append(entry)
    m = Manifest.from_dict(dst)
    _merge_manifest(m, Manifest.from_dict(src))
    assert m.to_json() == written(merged)


# -- hostile files: one BadManifestError (an HspiError), one line, naming the key ------------------------
def _set(path: str, value):
    """A change of the key at ``path`` (keys joined by |) to ``value``; KeyError deletes it."""

    def change(d: dict) -> None:
        *parents, last = path.split("|")
        for p in parents:
            d = d[int(p)] if isinstance(d, list) else d[p]
        if value is KeyError:
            del d[last]
        elif isinstance(d, list):
            d[int(last)] = value
        else:
            d[last] = value

    return change


RUN_ = f"runs|{RUN}"
HOSTILE = [
    (_set("schema", 3), "is schema version 3; this version reads 1, 2"),
    (_set("schema", "2"), "is schema version '2'; this version reads 1, 2"),
    (_set("schema", True), "is schema version True"),
    (_set("schema", 2.0), "is schema version 2.0"),
    (_set("models", KeyError), "lacks 'models'"),
    (_set("models", []), "malformed: models is an array, not an object"),
    (_set(f"models|{MODEL}", "digits"), "models['aaaaaaaaaaaaaaaaaaaaaaaa...'] is a string, not an object"),
    (_set(f"models|{MODEL}|name", KeyError), "models['aaaaaaaaaaaaaaaaaaaaaaaa...'] lacks 'name'"),
    (_set(f"models|{MODEL}|outputs", KeyError), "lacks 'outputs'"),  # schema 2 names every output
    (_set(f"models|{MODEL}|outputs|0|name", 3), ".outputs[0].name is an integer, not a string"),
    (_set(f"models|{MODEL}|outputs|1|shape", [1.5]), ".outputs[1].shape[0] is a number, not an integer"),
    (_set(f"models|{MODEL}|zoo", 1), ".zoo is an integer, not a string"),
    (_set(f"probe_sets|{PROBES}|n", "8"), ".n is a string, not an integer"),
    (_set(f"probe_sets|{PROBES}|seed", None), ".seed is null, not an integer"),
    (_set(f"probe_sets|{PROBES}|dims", {"seq": "32"}), ".dims['seq'] is a string, not an integer"),
    (_set(f"probe_sets|{PROBES}|provenance", None), ".provenance is null, not an object"),
    (_set(f"platforms|{LABEL}|knobs", {"bs": 1}), ".knobs['bs'] is an integer, not a string"),
    (_set(f"{RUN_}|pid", "4242"), f"runs['{RUN}'].pid is a string, not an integer"),
    (_set(f"{RUN_}|pid", False), ".pid is a boolean, not an integer"),
    (_set(f"{RUN_}|argv", ["db", 1]), ".argv[1] is an integer, not a string"),
    (_set(f"{RUN_}|finished", KeyError), "lacks 'finished'"),
    (_set(f"{RUN_}|finished", 5), ".finished is an integer, not a string"),
    (_set(f"{RUN_}|host", "x"), ".host is a string, not an object"),
    (_set("failures|0|at", KeyError), "failures[0] lacks 'at'"),
    (_set("nondeterministic|0", "x"), "nondeterministic[0] is a string, not an object"),
    (_set("nondeterministic|0|platform", None), "nondeterministic[0].platform is null, not a string"),
    (_set("batch_dependent", {}), "batch_dependent is an object, not an array"),
    (_set("runs", {"\n" * 50: {}}), "runs['\\n\\n\\n"),
]


@pytest.mark.parametrize("change,message", HOSTILE, ids=[m for _, m in HOSTILE])
def test_a_malformed_manifest_is_refused_naming_what_is_wrong(change, message):
    data = schema_2()
    change(data)
    with pytest.raises(BadManifestError) as exc:
        Manifest.from_json(json.dumps(data), "manifest of 'DB'")
    text = str(exc.value)
    assert message in text and text.startswith("manifest of 'DB' ") and "\n" not in text
    assert isinstance(exc.value, HspiError)


def test_a_schema_1_model_needs_no_outputs_and_anything_else_is_refused():
    data = json.loads(V1_TEXT)
    assert Manifest.from_dict(data).schema == 1
    for text, message in (
        ("{", "is unreadable (JSONDecodeError)"),
        ("[" * 100_000 + "]" * 100_000, "is unreadable (RecursionError)"),
        ("[]", "is schema version None"),
        ("null", "is schema version None"),
    ):
        with pytest.raises(BadManifestError, match=message.replace("(", r"\(").replace(")", r"\)")):
            Manifest.from_json(text, "manifest of 'DB'")


def test_a_db_with_a_malformed_manifest_says_so(tmp_path):
    db_dir = shutil.copytree(DATA / "db-v1", tmp_path / "bad")
    data = json.loads(V1_TEXT)
    next(iter(data["runs"].values()))["platforms"] = "all"
    (db_dir / "manifest.json").write_text(json.dumps(data))
    report = verify(ReferenceDB(db_dir))
    assert not report["ok"] and report["problems"] == [
        f"manifest of {str(db_dir)!r} is malformed: runs['20261124T161846-414ab088'].platforms is a string, not an array"
    ]
    (db_dir / "manifest.json").write_bytes(b"\xff\xfe")
    with pytest.raises(BadManifestError, match=r"is unreadable \(UnicodeDecodeError\)"):
        ReferenceDB(db_dir).manifest()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


ALL_PATHS = list(_paths(schema_2()))[1:]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ALL_PATHS), JSON_VALUES, st.booleans())
def test_any_value_anywhere_reads_or_is_refused_with_one_line(path, value, delete):
    data = schema_2()
    parent = data
    for p in path[:-1]:
        parent = parent[p]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    try:
        m = Manifest.from_json(json.dumps(data), "manifest of 'DB'")
    except BadManifestError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("manifest of 'DB' ")
    else:  # what reads is written back as it was
        assert m.to_json() == written(data)
