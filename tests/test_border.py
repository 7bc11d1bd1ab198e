"""Border probes on the real runtimes: crafted against the DB's classes, they make the platforms
disagree on the top-1 label, repeatably across processes, so a label-only suspect tells them
apart where random probes cannot."""

import numpy as np
import pytest

from hspi_onnx.border.craft import BORDER_KIND, craft
from hspi_onnx.border.tree import identify, next_probe
from hspi_onnx.db.build import build
from hspi_onnx.db.dataset import load_groups
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.forms import degrade
from hspi_onnx.inputs.probes import generate, load_probes
from hspi_onnx.match.identify import CONSISTENT, match
from hspi_onnx.match.suspect import load_suspect, write_plain

PLATFORMS = [
    "onnxruntime/*/fp32/bs=1,opt=all,threads=1",
    "onnxruntime/*/fp16/bs=1,opt=all,threads=1",
    "onnxruntime/*/int8/bs=1,opt=all,quant=dynamic,threads=1",
    "onnxref/*/fp32/*",
]


@pytest.fixture(scope="module")
def crafted(tmp_path_factory, zoo):
    root = tmp_path_factory.mktemp("border")
    model = zoo["digits"]
    db = ReferenceDB(root / "db", create=True)
    build(db, model, generate(model, n=16), PLATFORMS)
    result = craft(db, model, target=8, max_seeds=12, steps=150)
    path = result.probes.save(root / "border.npz")
    return root, model, db, result, path


def test_border_probes_split_classes_and_keep_their_provenance(crafted):
    root, model, db, result, path = crafted
    assert len(result.classes) >= 3 and result.separated  # fp32 / fp16 / int8 at least
    assert all(len(set(row.tolist())) > 1 for row in result.labels)  # every kept probe splits the classes
    loaded = load_probes(path)
    assert loaded.kind == BORDER_KIND and loaded.sha256 == result.probes.sha256
    prov = loaded.provenance
    assert prov["method"].startswith("pgd") and len(prov["probes"]) == len(loaded)
    assert prov["classes"] == result.classes and "onnxruntime" in prov["versions"]


def test_labels_hold_in_the_db_built_on_the_border_set(crafted):
    """The build runs in worker processes, batch as the DB does: every representative returns
    the labels the crafting saw, and random probes give every platform the same labels."""
    root, model, db, result, path = crafted
    build(db, model, load_probes(path), PLATFORMS)
    groups = {g.probes_name: g for g in load_groups(db)}
    border = groups[result.probes.name]
    reps = result.probes.provenance["representatives"]
    for j, label in enumerate(reps):
        got = degrade(border.outputs[label], "argmax").index[:, 0]
        assert got.tolist() == result.labels[:, j].tolist(), label
    noise = next(g for name, g in groups.items() if name != result.probes.name)
    tops = {tuple(degrade(noise.outputs[p], "argmax").index[:, 0]) for p in noise.platforms}
    assert len(tops) == 1  # no signal in random probes' labels


def test_label_only_suspect_excludes_other_classes(crafted):
    root, model, db, result, path = crafted
    border = next(g for g in load_groups(db) if g.probes_name == result.probes.name)
    fp16 = next(p for p in border.platforms if "/fp16/" in p)
    write_plain(
        root / "labels.json", result.probes.sha256, None, "argmax", border.ids, degrade(border.outputs[fp16], "argmax")
    )
    rep = match(load_suspect(root / "labels.json"), db)
    assert rep.verdict.status == CONSISTENT and fp16 in rep.verdict.platforms
    assert len(rep.evidence.exact.ruled_out) >= 1


def test_adaptive_questions_halve_what_remains():
    table = np.array([[0, 0, 1, 1], [0, 1, 0, 1], [5, 5, 5, 5], [0, 0, 0, 1]])
    assert next_probe(table, np.ones(4, bool), set()) in (0, 1)  # 1 bit each; probe 2 tells nothing
    for truth in range(4):
        alive, asked = identify(table, lambda k: int(table[k, truth]), 4)
        assert alive.tolist() == [i == truth for i in range(4)] and len(asked) == 2


def test_label_only_service_is_asked_adaptively_and_matched(crafted, tmp_path):
    """`hspi serve --labels-only` (INT64 labels over KServe v2) on a hidden platform; `hspi query
    --adaptive DB` asks border probes one at a time until no probe splits the platforms left;
    `hspi match` on those labels names a set that holds the served platform, in fewer questions
    than the set has probes."""
    import json

    from hspi_onnx.cli import main
    from hspi_onnx.serve.process import ServerProcess

    root, model, db, result, path = crafted
    build(db, model, load_probes(path), PLATFORMS)  # (resumed when the test above built it)
    served = "onnxruntime/*/int8/bs=1,opt=all,quant=dynamic,threads=1"
    server = ServerProcess("digits", served, extra=("--labels-only",)).wait()
    try:
        out = tmp_path / "labels.jsonl"

        def ask() -> str:
            try:
                main(
                    [
                        "query",
                        server.url,
                        "-m",
                        "digits",
                        "--probes",
                        str(path),
                        "-o",
                        str(out),
                        "--adaptive",
                        str(db.root),
                        "--max-queries",
                        "8",
                        "-q",
                    ]
                )
            except SystemExit as exc:
                assert not exc.code
            return out.read_text()

        first = ask()
        assert ask() == first  # a rerun reads the answers back and has nothing left to ask
    finally:
        server.stop()
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert 1 <= len(lines) <= min(8, len(result.probes))
    assert all(o["datatype"] == "INT64" for ln in lines for o in ln["outputs"])
    s = load_suspect(out)
    assert s.form == "argmax" and len(s) == len(lines)
    rep = match(s, db)
    assert rep.verdict.status == CONSISTENT
    assert any("/int8/" in p and "quant=dynamic" in p for p in rep.verdict.platforms)
    assert not any("/fp16/" in p for p in rep.verdict.platforms)


def test_lm_prompts_by_token_substitution_split_classes(tmp_path, zoo):
    """Token inputs have no gradient to follow: greedy single-token substitutions bring the two
    top next-token logits together, and the real runtimes then disagree on the next token."""
    model = zoo["lm"]
    db = ReferenceDB(tmp_path / "db", create=True)
    build(
        db,
        model,
        generate(model, n=8),
        [
            "onnxruntime/*/fp32/bs=1,opt=all,threads=1",
            "onnxruntime/*/fp16/bs=1,opt=all,threads=1",
            "onnxruntime/*/int8/bs=1,opt=all,quant=dynamic,threads=1",
        ],
    )
    result = craft(db, model, target=4, max_seeds=4, steps=30)
    assert result.probes.provenance["method"] == "greedy-token-substitution"
    assert result.separated and all(len(set(row.tolist())) > 1 for row in result.labels)
    assert result.probes.primary.dtype == np.int64 and result.probes.primary.max() < 256


def test_label_table_of_a_border_set_and_of_a_set_the_db_lacks(crafted):
    """What `hspi query --adaptive DB` asks from (hspi_onnx.border.tree.label_table)."""
    from hspi_onnx.border.tree import label_table
    from hspi_onnx.errors import HspiError

    root, model, db, result, path = crafted
    probes = load_probes(path)
    build(db, model, probes, PLATFORMS)
    platforms, table = label_table(db, probes)
    assert table.shape == (len(probes), len(platforms)) and set(platforms) <= set(db.manifest().platforms)
    assert ((0 <= table) & (table < 10)).all()  # digit labels
    with pytest.raises(HspiError, match="holds no outputs on probe set"):
        label_table(db, generate(model, n=4, seed=99))
