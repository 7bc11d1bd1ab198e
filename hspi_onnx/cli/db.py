"""``hspi db``: build and inspect reference databases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hspi_onnx.errors import HspiError

from .common import (
    DbOpt,
    DimOpt,
    ExtraOpt,
    InProcessOpt,
    JsonOpt,
    KindOpt,
    ModelArg,
    NProbesOpt,
    PlatformsOpt,
    ProbesOpt,
    QuietOpt,
    SeedOpt,
    console,
    emit_json,
    label_shortener,
    load_probe_arg,
    progress,
    short_label,
)
from .estimates import DEFAULT_REFERENCE

app = typer.Typer(help="Reference databases: build, inspect, verify, query.", no_args_is_help=True)
RemoteOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--remote",
        metavar="URL",
        help="Build the platform that `hspi serve MODEL -p PLATFORM --reveal-platform` serves at URL, on that machine's hardware (repeatable).",
        show_default=False,
    ),
]
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="ADDRESS",
        help="Build over a Ray cluster (HOST:PORT, ray://HOST:PORT or auto): every node runs the platforms it offers; needs the [ray] extra (docs/scale.md).",
        show_default=False,
    ),
]
CrossCheckOpt = Annotated[
    int,
    typer.Option(
        "--cross-check",
        metavar="N",
        min=0,
        help="With --ray: run each platform that a second node offers there too, on its first N probes (whole batches), and flag differing bits (0: never).",
    ),
]
AuthEnvOpt = Annotated[
    str | None,
    typer.Option(
        "--auth-env",
        metavar="VAR",
        help="With --remote: environment variable holding the Authorization header's value.",
        show_default=False,
    ),
]
EXIT_PARTIAL = 3


@app.command("build")
def build(
    model: ModelArg,
    db: DbOpt,
    platforms: PlatformsOpt = None,
    probes: ProbesOpt = None,
    kind: KindOpt = None,
    n: NProbesOpt = 64,
    seed: SeedOpt = 0,
    dim: DimOpt = None,
    extra: ExtraOpt = False,
    in_process: InProcessOpt = False,
    remote: RemoteOpt = None,
    auth_env: AuthEnvOpt = None,
    ray: RayOpt = None,
    cross_check: CrossCheckOpt = 8,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run every selected platform over the probes into DB, each in a worker process of its
    runtime family (resumable; a platform that fails or crashes is recorded; exit 3 if partial).
    With --remote, the platform another machine serves (hspi serve --reveal-platform) instead;
    with --ray, the platforms every node of a Ray cluster offers, each on a node that offers it."""
    from contextlib import ExitStack

    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.run.runner import Runner

    info = resolve_model(model)
    probe_set = load_probe_arg(info, probes, kind, n, seed, dim)
    ref = ReferenceDB(db, create=True)
    out = console(stderr=True)
    unstored = {o.name: o.whole_batch for o in info.graph_outputs if o.whole_batch}
    if not as_json:
        for name, why in unstored.items():
            out.print(f"output {name!r} is computed but not stored: {why}", highlight=False)
    if remote and (platforms or in_process or extra or ray):
        raise HspiError(
            "--remote builds the platform the remote server serves: drop -p, --in-process, --extra-variants and --ray"
        )
    if ray and in_process:
        raise HspiError("--ray runs platforms on the cluster's nodes: drop --in-process")
    cluster = None
    with ExitStack() as stack:
        summaries = []
        if ray:
            from hspi_onnx.run.cluster import RayRunner

            cluster = stack.enter_context(
                RayRunner(ray, cross_check, on_note=lambda line: out.print(line, highlight=False, soft_wrap=True))
            )
            plan = cluster.plan(info, probe_set, platforms, extra)
            if not (quiet or as_json):
                for node in cluster.report()["nodes"]:
                    if not node.get("error"):
                        cap = f", capped at {node['isa_cap']}" if node.get("isa_cap") else ""
                        out.print(
                            f"node {node['node'][:12]} ({node['address']}, {node['isa']}{cap}): "
                            f"{node['platforms']} platforms",
                            highlight=False,
                        )
            summaries.append(build_with_bars(ref, info, probe_set, None, extra, cluster, quiet, as_json, out, plan))
        elif remote:
            from hspi_onnx.cli.query import authorization
            from hspi_onnx.query.remote import RemoteRunner

            for url in remote:
                remote_runner = stack.enter_context(RemoteRunner(url, authorization(auth_env)))
                label, _ = remote_runner.served(info)
                summaries.append(
                    build_with_bars(
                        ref, info, probe_set, None, extra, remote_runner, quiet, as_json, out, [(None, label)]
                    )
                )
        else:
            runner = stack.enter_context(Runner(in_process=in_process))
            summaries.append(build_with_bars(ref, info, probe_set, platforms, extra, runner, quiet, as_json, out, None))
    if as_json:
        docs = [
            s.as_dict() | ({"not_stored": unstored} if unstored else {}) | (cluster.report() if cluster else {})
            for s in summaries
        ]
        emit_json(docs[0] if len(docs) == 1 else docs)
    else:
        for summary in summaries:
            console().print(
                f"run {summary.run_id}: {len(summary.built)} built, {len(summary.skipped)} already there, "
                f"{len(summary.failed)} failed, {len(summary.nondeterministic)} not repeatable -> {db}"
            )
            if quiet:  # without bars the failures were not shown as they happened
                for label, reason in summary.failed.items():
                    out.print(f"failed {label}: {reason}", highlight=False, soft_wrap=True)
    if any(s.partial for s in summaries):
        raise typer.Exit(EXIT_PARTIAL)


def build_with_bars(ref, info, probe_set, platforms, extra, runner, quiet, as_json, out, plan):
    from hspi_onnx.db.build import build as run_build

    with progress(quiet or as_json) as bar:
        overall = bar.add_task("all platforms", total=None)
        running: dict[str, int] = {}  # a bar per platform running (several at once on a cluster)

        def on_event(kind: str, data: dict) -> None:
            if kind == "plan":
                bar.update(overall, total=data["total"])
            elif kind == "start":
                where = f" @{data['node'][:8]}" if data.get("node") else ""
                running[data["platform"]] = bar.add_task(short_label(data["platform"]) + where, total=data["n"])
            elif kind == "advance" and running:
                bar.advance(list(running.values())[-1], data["k"])
            elif kind in ("built", "failed", "skipped"):
                if data["platform"] in running:
                    bar.remove_task(running.pop(data["platform"]))
                bar.advance(overall)
                if kind == "failed" and not quiet:
                    out.print(
                        f"[red]failed[/red] {data['platform']}: {data['reason']}", highlight=False, soft_wrap=True
                    )
            elif kind == "note":
                out.print(f"[yellow]note[/yellow] {data['line']}", highlight=False, soft_wrap=True)

        return run_build(ref, info, probe_set, platforms, on_event, extra=extra, runner=runner, plan=plan)


@app.command("upgrade")
def upgrade(db: DbOpt, quiet: QuietOpt = False, as_json: JsonOpt = False) -> None:
    """Rewrite a schema-1 DB (one output per model, written before several outputs) as schema 2."""
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.db.upgrade import upgrade as run_upgrade

    ref = ReferenceDB(db)
    with progress(quiet or as_json) as bar:
        task = bar.add_task("shards", total=len(ref.shards()))
        report = run_upgrade(ref, on_shard=lambda: bar.advance(task))
    if as_json:
        emit_json(report)
    else:
        console().print(
            f"{db}: schema {report['from']} -> {report['to']}, {report['shards_rewritten']} shards rewritten",
            highlight=False,
        )


@app.command("index")
def index(db: DbOpt, quiet: QuietOpt = False, as_json: JsonOpt = False) -> None:
    """(Re)build the digest index exact matching searches (hspi match builds it when stale)."""
    import time

    from hspi_onnx.db.index import build_index, load_index
    from hspi_onnx.db.store import ReferenceDB

    ref = ReferenceDB(db)
    t0 = time.perf_counter()
    with progress(quiet or as_json) as bar:
        task = bar.add_task("digest index", total=len(ref.shards()))
        with ref.locked():
            build_index(ref, on_shard=lambda: bar.advance(task))
    idx = load_index(ref, rebuild=False)
    report = {
        "db": str(db),
        "outputs": int(len(idx.digest)),
        "platforms": len(idx.platforms),
        "groups": len(idx.groups),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if as_json:
        emit_json(report)
    else:
        console().print(
            f"indexed {report['outputs']} outputs of {report['platforms']} platforms in "
            f"{report['groups']} (model, probe set) groups in {report['seconds']} s -> {db}/index",
            highlight=False,
        )


@app.command("info")
def info(db: DbOpt, as_json: JsonOpt = False) -> None:
    """Models, probe sets, platforms, rows and bytes on disk."""
    from hspi_onnx.db.report import info as db_info
    from hspi_onnx.db.store import ReferenceDB

    report = db_info(ReferenceDB(db))
    if as_json:
        emit_json(report)
        return
    from rich.table import Table

    table = Table(
        "model",
        "probe set",
        "outputs",
        "platforms",
        "rows",
        "output bytes",
        title=f"reference DB {db} (schema {report['schema']})",
    )
    for g in report["groups"]:
        table.add_row(
            g["model"],
            g["probes"],
            ", ".join(g["outputs"]),
            str(g["platforms"]),
            str(g["rows"]),
            str(g["output_bytes"]),
        )
    out = console()
    out.print(table)
    out.print(
        f"{report['shards']} shards, {report['bytes_on_disk']} bytes on disk, {report['runs']} build runs, "
        f"{report['failures']} failures, {report['nondeterministic']} non-repeatable platform runs"
    )


@app.command("classes")
def classes(db: DbOpt, as_json: JsonOpt = False) -> None:
    """Equivalence classes (bit-identical platforms) and how often pairs of classes differ."""
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.match.generation import classes_report

    report = classes_report(ReferenceDB(db))
    if as_json:
        emit_json(report)
        return
    from rich.table import Table

    out = console()
    for g in report:
        table = Table(
            "class",
            "size",
            title=f"{g['model']} on {g['probes']}: {g['n_platforms']} platforms, "
            f"{len(g['classes'])} classes, {g['n_probes']} probes",
            show_lines=True,
        )
        table.add_column("platforms", overflow="fold")
        table.add_column("closest class (fraction of probes that separate)")
        short = label_shortener([lab for c in g["classes"] for lab in c["platforms"]])
        for c in g["classes"]:
            sep = g["separation"][c["id"]]
            others = [(s, j) for j, s in enumerate(sep) if j != c["id"]]
            near = f"{min(others)[1]} ({min(others)[0]:.2f})" if others else "-"
            flag = " [red](not repeatable)[/red]" if c["nondeterministic"] else ""
            table.add_row(str(c["id"]), str(len(c["platforms"])), "\n".join(map(short, c["platforms"])) + flag, near)
        out.print(table)
        if "pairs" in g:
            pairs = Table(
                "classes",
                "first differing position",
                "probes differing at 0",
                "probes with other text",
                title=f"{g['model']}: where each pair of classes parts (positions from 0, over {g['n_probes']} chats)",
            )
            for p in g["pairs"]:
                first = "never" if p["first_position"] is None else str(p["first_position"])
                pairs.add_row(
                    f"{p['a']} vs {p['b']}",
                    first,
                    f"{p['probes_differing_at_0']}/{p['n_probes']}",
                    f"{p['probes_with_other_text']}/{p['n_probes']}",
                )
            out.print(pairs)
        if "one_request" in g:
            t = g["one_request"]
            ident = Table(
                "class",
                *t["modes"],
                title=f"{g['model']}: chats (of {t['n_probes']}) on which ONE request of {t['tokens']} tokens "
                "identifies the class (text alone; top log-probabilities with every digit, rounded, or normalized by the server)",
            )
            for row in t["rows"]:
                ident.add_row(str(row["class"]), *(f"{row[m]}/{t['n_probes']}" for m in t["modes"]))
            out.print(ident)


@app.command("estimator")
def estimator(
    db: DbOpt,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", metavar="NAME", help="The language model (default: the DB's only one).", show_default=False
        ),
    ] = None,
    probes: Annotated[
        Path | None,
        typer.Option(
            "--probes",
            metavar="FILE",
            help="The chat probe set the DB was built with (default: the model's built-in chats).",
            show_default=False,
        ),
    ] = None,
    reference: Annotated[
        str,
        typer.Option("--reference", metavar="GLOB", help="The high-precision stack the answers are compared with."),
    ] = DEFAULT_REFERENCE,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="FILE", help="Where to write it (default: DB/estimators/).", show_default=False
        ),
    ] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train the estimator of weight bits, compute precision and KV cache that `hspi match` uses on a
    language-model stack the DB does not hold (docs/llm-estimates.md): every DB platform's answers
    against the reference teacher-forced on the same tokens, calibrated leaving each stack out."""
    from .estimates import print_training, train_estimator

    summary = train_estimator(db, model, probes, reference, output, quiet or as_json)
    emit_json(summary) if as_json else print_training(summary)


@app.command("verify")
def verify(db: DbOpt, as_json: JsonOpt = False) -> None:
    """Check schema, manifest vs shards, every digest and the measured kernel state each run
    recorded against its label; exit 1 on any problem."""
    from hspi_onnx.db.report import verify as db_verify
    from hspi_onnx.db.store import ReferenceDB

    report = db_verify(ReferenceDB(db))
    if as_json:
        emit_json(report)
    else:
        out = console()
        for p in report["problems"]:
            out.print(f"[red]problem[/red] {p}", highlight=False, soft_wrap=True)
        if report["unmeasured"]:
            knobs = sorted({k for missing in report["unmeasured"].values() for k in missing})
            out.print(
                f"[yellow]note[/yellow] {len(report['unmeasured'])} platforms were built before labels carried "
                f"measured kernel state ({', '.join(knobs)}): their labels do not say which kernels ran; "
                f"rebuild them to compare with new builds",
                highlight=False,
                soft_wrap=True,
            )
        out.print(
            f"{'OK' if report['ok'] else 'FAILED'}: {report['shards']} shards, {report['rows']} rows checked"
            + (f"; unfinished runs: {', '.join(report['unfinished_runs'])}" if report.get("unfinished_runs") else "")
        )
    if not report["ok"]:
        raise typer.Exit(1)


@app.command("sql")
def sql(
    query: Annotated[
        str,
        typer.Argument(
            help="SQL over the view `outputs` (one row per probe, output and platform).", show_default=False
        ),
    ],
    db: DbOpt,
    as_json: JsonOpt = False,
) -> None:
    """Run DuckDB SQL over the shards (view `outputs`; schema in docs/db.md)."""
    import duckdb

    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.errors import HspiError

    con = ReferenceDB(db).connect()
    try:
        cur = con.execute(query)
        cols = [d[0] for d in cur.description] if cur.description else []
        rows = cur.fetchall()
    except duckdb.Error as exc:
        raise HspiError(f"SQL error: {str(exc).splitlines()[0]}")
    if as_json:
        emit_json([{c: (v.hex() if isinstance(v, (bytes, bytearray)) else v) for c, v in zip(cols, r)} for r in rows])
        return
    from rich.table import Table

    table = Table(*cols)
    for r in rows:
        table.add_row(*[(v.hex()[:32] + "…" if isinstance(v, (bytes, bytearray)) else str(v)) for v in r])
    console().print(table)


@app.command("merge")
def merge(
    sources: Annotated[list[Path], typer.Argument(help="Reference DBs to merge.", show_default=False)],
    out: Annotated[
        Path,
        typer.Option("-o", "--output", metavar="PATH", help="Target DB (created, or merged into).", show_default=False),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Union of DBs built on different machines; a label whose runs disagree is reported as
    non-deterministic, never overwritten."""
    from hspi_onnx.db.merge import merge as run_merge

    report = run_merge(sources, out)
    if as_json:
        emit_json(report)
        return
    con = console()
    con.print(
        f"merged {len(sources)} DBs into {out}: {report['shards_copied']} shards copied, "
        f"{report['shards_identical']} already there, {len(report['conflicts'])} conflicting labels"
    )
    for c in report["conflicts"]:
        con.print(
            f"[red]non-deterministic[/red] {c['platform']}: runs {', '.join(c['runs'])} differ on "
            f"{c['probes_differing']} probes",
            highlight=False,
            soft_wrap=True,
        )
    from hspi_onnx.run.kernels import describe_difference

    for d in report["differences"]:
        con.print(f"[yellow]measured state[/yellow] {describe_difference(d)}", highlight=False, soft_wrap=True)
