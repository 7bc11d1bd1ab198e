"""``hspi match`` and ``hspi verify``: identify the platform behind a suspect file."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import JSON, QUIET, console, emit_json, progress

SUSPECT = typer.Argument(..., help="Suspect outputs: .npz (hspi run), KServe v2 JSON/JSONL, or hspi-suspect/1 JSON.")
DB = typer.Option(..., "--db", help="Reference DB directory.")
CLASSIFIER = typer.Option(None, "--classifier", "-c", help="Classifier directory (hspi train); needed for attributes of unknown platforms and degraded outputs.")


def run_match(suspect_path: Path, db: Path, classifier: Path | None, quiet: bool) -> tuple[dict, list[str]]:
    """The match report and the DB platforms of the suspect's model."""
    from hspi_onnx.learn.classify import load_classifier
    from hspi_onnx.db.index import load_index
    from hspi_onnx.errors import HspiError
    from hspi_onnx.match.identify import match, resolve
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.match.suspect import load_suspect

    suspect = load_suspect(suspect_path)
    ref = ReferenceDB(db)
    err = console(stderr=True)
    try:
        index = load_index(ref, rebuild=False)
    except HspiError:
        with progress(quiet) as bar:
            task = bar.add_task("digest index", total=len(ref.shards()))
            index = load_index(ref, on_shard=lambda: bar.advance(task))
    clf = load_classifier(classifier) if classifier else None
    resolved = resolve(index, suspect)
    report = match(suspect, ref, clf, warn=lambda m: err.print(f"warning: {m}"), index=index, resolved=resolved)
    if classifier:
        report["classifier"]["path"] = str(classifier)
    return report, resolved.platforms


def match_cmd(suspect: Path = SUSPECT, db: Path = DB, classifier: Path = CLASSIFIER,
              quiet: bool = QUIET, as_json: bool = JSON) -> None:
    """Which platform produced SUSPECT: exact digest lookup first, the classifier second."""
    report, _ = run_match(suspect, db, classifier, quiet or as_json)
    if as_json:
        emit_json(report)
    else:
        print_match(report)


def verify_cmd(suspect: Path = SUSPECT, db: Path = DB,
               claim: str = typer.Option(..., "--claim", help='What the provider claims, e.g. "precision=fp16,runtime=onnxruntime".'),
               classifier: Path = CLASSIFIER, quiet: bool = QUIET, as_json: bool = JSON) -> None:
    """Is SUSPECT consistent with CLAIM? Exit 0 CONSISTENT, 1 INCONSISTENT, 3 INCONCLUSIVE."""
    from hspi_onnx.match.claims import parse_claim, verify

    wanted = parse_claim(claim)
    report, platforms = run_match(suspect, db, classifier, quiet or as_json)
    result = verify(report, wanted, platforms)
    if as_json:
        emit_json({**result, "match": report})
    else:
        print_match(report)
        print_verify(result)
    raise typer.Exit(result["exit_code"])


def print_match(report: dict) -> None:
    out = console()
    s, v = report["suspect"], report["verdict"]
    out.print(f"suspect {s['path']}: {s['queries']} queries, {s['form']} ({s['format']}, {s['dtype']}), "
              f"model {s['model']}, probe set {s['probe_set']}", highlight=False, soft_wrap=True)
    ex = report["exact"]
    out.print(f"exact ({ex['kind']}): {ex['matched_queries']}/{ex['queries']} queries match DB platforms; "
              f"{len(ex['common'])} platform(s) match all", highlight=False)
    out.print(f"[bold]verdict: {v['status']}[/bold] ({v['strength']} evidence)", highlight=False)
    for p in v["platforms"][:12]:
        out.print(f"  {p}", highlight=False, soft_wrap=True)
    if len(v["platforms"]) > 12:
        out.print(f"  ... and {len(v['platforms']) - 12} more", highlight=False)
    if v["attributes"]:
        out.print("  shared by all: " + ", ".join(f"{k}={val}" for k, val in v["attributes"].items()), highlight=False)
    for e in v["evidence"]:
        out.print(f"  - {e}", highlight=False, soft_wrap=True)
    if "classifier" in report:
        out.print("classifier (calibrated probabilities for all queries together):", highlight=False)
        for t, info in report["classifier"]["targets"].items():
            if t == "platform":
                continue
            tops = ", ".join(f"{val} {p:.3f}" for val, p in info["top"])
            flag = "" if info["confident"] else f"   ({info.get('note', 'not confident')})"
            out.print(f"  {t:<10} {tops}{flag}", highlight=False)
    for near in report.get("nearest", [])[:3]:
        out.print(f"  near: {near['platform']}  distance {near['distance']}", highlight=False, soft_wrap=True)


def print_verify(result: dict) -> None:
    out = console()
    claim = ",".join(f"{k}={v}" for k, v in result["claim"].items())
    out.print(f"[bold]claim {claim}: {result['verdict']}[/bold]", highlight=False)
    for e in result["evidence"]:
        out.print(f"  - {e}", highlight=False, soft_wrap=True)
