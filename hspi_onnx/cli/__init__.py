"""The ``hspi`` command line. Heavy runtimes are imported inside commands, never here."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from . import audit, classify, db, demo, match, models, probes, query, run, runtimes, serve, survey

app = typer.Typer(
    name="hspi",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no type column, docstrings wrapped as paragraphs
    help="Hardware and software platform inference for ONNX models: run models on many "
    "runtimes and settings, and tell platforms apart by the bits of their outputs.",
)
app.add_typer(models.app, name="models")
app.add_typer(probes.app, name="probes")
app.add_typer(runtimes.app, name="runtimes")
app.add_typer(db.app, name="db")
app.command("run")(run.run)
app.command("survey")(survey.survey)
app.command("train")(classify.train)
app.command("eval")(classify.eval_cmd)
app.command("match")(match.match_cmd)
app.command("verify")(match.verify_cmd)
app.command("demo")(demo.demo)
app.command("serve")(serve.serve)
app.command("query")(query.query)
app.command("audit")(audit.audit)

_STATE = {"debug": False}


@app.callback()
def _root(
    ctx: typer.Context, debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False
) -> None:
    """Options for every command."""
    ctx.obj = {"debug": debug}
    _STATE["debug"] = debug


def main(argv: list[str] | None = None) -> None:
    """Entry point: usage errors exit 2 (typer), errors of our family print one line and exit 2
    (with ``--debug``, given before the command, the traceback instead)."""
    from hspi_onnx.errors import HspiError

    args = list(sys.argv[1:] if argv is None else argv)
    _STATE["debug"] = False
    try:
        app(args=args, prog_name="hspi")
    except HspiError as exc:
        if _STATE["debug"]:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
