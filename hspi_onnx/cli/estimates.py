"""Estimates for a language-model stack the DB does not hold (issue 29): ``hspi db estimator``
trains one from a DB's generations; ``hspi match``/``verify``/``audit`` use it on a suspect that
no DB class fits. Both teacher-force a reference stack on the tokens to compare (the DB's
platforms' answers, or the suspect's) and build those rows into the DB as a forced probe set, so
a second run computes nothing again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hspi_onnx.errors import HspiError

from .common import console

if TYPE_CHECKING:  # annotations only (numpy stays off the CLI's start path: `hspi db --help` imports this)
    import numpy as np

    from hspi_onnx.inputs.model import ModelInfo
    from hspi_onnx.inputs.probes import ProbeSet

DEFAULT_REFERENCE = "transformers/*/fp32/*attn=eager,*threads=1"


def forced_reference(db, info, probes, items: list[tuple[int, list[int]]], pattern: str, quiet: bool):
    """(the reference platform's label, its top-k rows per item): each item (probe id, tokens) of
    the greedy chat probe set ``probes`` teacher-forced on the one platform of this machine that
    ``pattern`` selects, built into ``db``."""
    import numpy as np

    from hspi_onnx.db.generations import generation_outputs
    from hspi_onnx.inputs.probes import forced_probe_set
    from hspi_onnx.run.adapter import selected_variants
    from hspi_onnx.run.runner import Runner

    from .db import build_with_bars

    where = {int(p): k for k, p in enumerate(probes.ids)}
    missing = [p for p, _ in items if p not in where]
    if missing:
        raise HspiError(f"probe id {missing[0]} is not in probe set {probes.name!r}: give the chats the answers are to")
    forced = forced_probe_set(info, probes, [where[p] for p, _ in items], [list(t) for _, t in items])
    plan = selected_variants(info, "chat", [pattern])
    if not plan:
        raise HspiError(f"no platform here matches the reference {pattern!r}")
    plan = plan[:1]
    label = str(plan[0][1])
    with Runner() as runner:
        summary = build_with_bars(db, info, forced, None, False, runner, quiet, quiet, console(stderr=True), plan)
    if summary.failed:
        raise HspiError(f"the reference {label} failed on the forced chats: {next(iter(summary.failed.values()))}")
    rows = generation_outputs(db, info.sha256, forced.sha256, np.arange(len(items))).get(label)
    if rows is None:
        raise HspiError(f"the reference {label} left no rows in the DB")
    return label, [{name: v[k] for name, v in rows.items()} for k in range(len(items))]


def chat_probes(info, probes_path: Path | None, n: int = 64):
    """The greedy chat probe set the answers are to: a file, or the model's first ``n`` built-in
    chats."""
    from .common import load_probe_arg

    probes = load_probe_arg(info, probes_path, None, n, 0)
    if probes.kind != "chat" or {"forced_ids", "sample_seed"} & set(probes.inputs):
        raise HspiError(f"probe set {probes.name!r} is not a greedy chat probe set")
    return probes


def _chat_groups(ref, model_sha: str | None = None) -> list[dict]:
    """The DB's (model, probe set) groups from its digest index (cheap: no classes computed),
    those of ``model_sha`` when given."""
    from hspi_onnx.db.index import load_index

    return [
        {
            "model": g.model_name,
            "model_sha256": g.model_sha256,
            "probes": g.probes_name,
            "probes_sha256": g.probes_sha256,
            "n_probes": len(g.ids),
        }
        for g in load_index(ref).groups
        if model_sha is None or g.model_sha256 == model_sha
    ]


def _db_chats(groups: list[dict], info, probes_path: Path | None):
    """(the probe set, its DB group): the file's, or the built-in chats of a DB group's size."""
    if probes_path is not None:
        probes = chat_probes(info, probes_path)
        return probes, next((g for g in groups if g["probes_sha256"] == probes.sha256), None)
    for g in groups:
        probes = chat_probes(info, None, g["n_probes"])
        if probes.sha256 == g["probes_sha256"]:
            return probes, g
    return chat_probes(info, None), None


@dataclass
class DbEvidence:
    """A DB's LLM platforms' answers against the reference: what an estimator trains on."""

    info: ModelInfo
    probes: ProbeSet  # the greedy chat probe set
    labels: list[str]
    data: dict  # label -> generation outputs on the chats
    x: np.ndarray  # (platforms, chats, features)
    reference: str  # the reference platform's label
    answers_forced: int
    gguf_weights: dict[str, str]  # GGUF type -> the weight class its file holds (gguffile.dominant_bits)


def db_evidence(db_dir: Path, model: str | None, probes_path: Path | None, reference: str, quiet: bool) -> DbEvidence:
    """Every DB platform's answers (with known attributes) to a greedy chat probe set, each
    distinct answer teacher-forced on the reference (built into the DB), and their features."""
    import numpy as np

    from hspi_onnx.db.generations import generation_outputs
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.learn.llm_attributes import llm_attributes
    from hspi_onnx.learn.llm_evidence import platform_features

    ref = ReferenceDB(db_dir)
    groups = [g for g in _chat_groups(ref) if model is None or model in (g["model"], g["model_sha256"])]
    names = sorted({g["model"] for g in groups})
    if len(names) != 1:
        raise HspiError(
            "name the language model with --model: the DB holds " + (", ".join(names) if names else "no model")
        )
    info = resolve_model(names[0])
    if info.generation is None:
        raise HspiError(f"{info.name} is not a language model: estimates are for language-model stacks")
    probes, group = _db_chats(groups, info, probes_path)
    if group is None:
        raise HspiError(
            f"the DB holds no generations of {info.name} on probe set {probes.name!r}: give the chats it was "
            "built with (--probes)"
        )
    everything = generation_outputs(ref, info.sha256, probes.sha256, probes.ids)
    data = {lab: rows for lab, rows in sorted(everything.items()) if llm_attributes(lab) is not None}
    labels = list(data)

    def answer(lab: str, c: int, pid) -> tuple[int, tuple[int, ...]]:
        return int(pid), tuple(int(t) for t in data[lab]["tokens"][c] if t >= 0)

    seqs: dict[tuple[int, tuple[int, ...]], int] = {}
    for lab in labels:
        for c, pid in enumerate(probes.ids):
            seqs.setdefault(answer(lab, c, pid), len(seqs))
    items = [(p, list(t)) for p, t in seqs]
    if not quiet:
        console(stderr=True).print(
            f"{len(labels)} platforms, {len(probes)} chats: {len(items)} distinct answers to teacher-force on the reference"
        )
    ref_label, ref_rows = forced_reference(ref, info, probes, items, reference, quiet)
    index = np.array([[seqs[answer(lab, c, pid)] for c, pid in enumerate(probes.ids)] for lab in labels])
    x = platform_features(data, labels, index, ref_rows)
    return DbEvidence(info, probes, labels, data, x, ref_label, len(items), gguf_weight_classes(info, labels))


def gguf_weight_classes(info, labels: list[str]) -> dict[str, str]:
    """The weight class each llama.cpp label's GGUF file holds, read from the file's tensor types
    (where the model's conversions make the file here)."""
    from hspi_onnx.gguffile import dominant_bits, read_gguf
    from hspi_onnx.labels import Platform
    from hspi_onnx.learn.llm_attributes import weight_class

    source = info.conversions()
    out: dict[str, str] = {}
    if source is None:
        return out
    for prec in sorted({Platform.parse(lab).precision for lab in labels if Platform.parse(lab).runtime == "llamacpp"}):
        bits = dominant_bits(read_gguf(source.gguf_path(prec.upper())))
        if bits is not None:
            out[prec] = weight_class(bits)
    return out


def train_estimator(
    db_dir: Path, model: str | None, probes_path: Path | None, reference: str, out: Path | None, quiet: bool
) -> dict:
    """``hspi db estimator``: the estimator fitted on :func:`db_evidence` and saved; returns its
    summary with the leave-one-stack-out accuracy."""
    from hspi_onnx.learn.llm_estimator import estimator_path, fit_estimator, loso_accuracy

    ev = db_evidence(db_dir, model, probes_path, reference, quiet)
    info, probes = ev.info, ev.probes
    est, loso = fit_estimator(
        ev.x,
        ev.labels,
        info.sha256,
        ev.reference,
        trained_on={"probes": probes.name, "reference_pattern": reference},
        gguf_weights=ev.gguf_weights,
    )
    path = est.save(out or estimator_path(db_dir, info.sha256))
    return {
        "estimator": str(path),
        "model": info.name,
        "reference": ev.reference,
        "platforms": len(ev.labels),
        "stacks": est.trained_on["stacks"],
        "chats": len(probes),
        "answers_forced": ev.answers_forced,
        "temperatures": {name: m.temperature for name, m in est.attributes.items()},
        "gguf_weights": ev.gguf_weights,
        "leave_one_stack_out": loso_accuracy(loso),
    }


def print_training(summary: dict) -> None:
    out = console()
    out.print(
        f"estimator {summary['estimator']}: {summary['model']}, {summary['platforms']} platforms in "
        f"{summary['stacks']} stacks, {summary['chats']} chats ({summary['answers_forced']} answers forced on "
        f"{summary['reference']})",
        highlight=False,
        soft_wrap=True,
    )
    out.print("leave-one-stack-out accuracy (a stack's attributes from its answers, trained without it):")
    for name, per_n in summary["leave_one_stack_out"].items():
        cells = ", ".join(f"{n} requests {acc:.0%}" for n, acc in per_n.items())
        out.print(f"  {name:8} {cells} (temperature {summary['temperatures'][name]:.2f})", highlight=False)


def estimate_suspect(db_dir: Path, report: dict, suspect, probes, quiet: bool) -> dict | None:
    """Estimates for a language-model suspect no DB class fits, when the DB has an estimator for
    its model and the suspect has top-k log-probabilities; the report's ``estimates``. ``probes``:
    the chats answered (a probe set, a file, or None for the model's built-in chats)."""
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.inputs.probes import ProbeSet
    from hspi_onnx.learn.llm_estimator import estimator_path, load_estimator
    from hspi_onnx.match.estimates import query_features, suspect_items

    if report.get("verdict") != "not in the DB" or not suspect.queries:
        return None
    if any(q.top_ids is None for q in suspect.queries):
        return {"status": "no estimate: the answers carry no top-k log-probabilities"}
    ref = ReferenceDB(db_dir)
    sha = next((sha for sha, m in ref.manifest().models.items() if report["model"] in (sha, m.name)), None)
    path = estimator_path(ref.root, sha) if sha else None
    if path is None or not path.is_file():
        return {
            "status": f"no estimate: the DB has no estimator for {report['model']} (hspi db estimator --db {db_dir})"
        }
    est = load_estimator(path)
    info = resolve_model(report["model"])
    if not isinstance(probes, ProbeSet):
        groups = [g for g in _chat_groups(ref, sha) if report["probes"] in (g["probes"], g["probes_sha256"])]
        probes, _ = _db_chats(groups, info, probes)
    elif "forced_ids" in probes.inputs:  # a replayed chat log: its chats, greedy
        chats = {k: v for k, v in probes.inputs.items() if k not in ("forced_ids", "forced_mask")}
        probes = ProbeSet(probes.name, probes.kind, 0, probes.split, chats, probes.ids, dict(probes.dims))
    pattern = str(est.trained_on.get("reference_pattern", DEFAULT_REFERENCE))
    label, rows = forced_reference(ref, info, probes, suspect_items(suspect), pattern, quiet)
    x = query_features(suspect, rows, est.top_k)
    doc = {"status": "estimated", "estimator": str(path), "reference": label, **est.estimate(x)}
    if label != est.reference:
        doc["note"] = f"the reference here ({label}) is not the one the estimator was trained with ({est.reference})"
    return doc
