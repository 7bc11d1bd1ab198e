"""What the command modules share: one ``Annotated`` option per meaning, choice enums, output.

Short flags have one meaning across every command: ``-n`` a number of probes, ``-p`` platform
globs (or one label), ``-m`` a model, ``-t`` a target, ``-o`` where to write, ``-c`` a
classifier directory, ``-q`` no progress bars. Query counts have no short flag (``--queries``).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hspi_onnx import choices
from hspi_onnx.choices import cli_choices

# choices built from the library's enums (hspi_onnx/choices.py): the forms a classifier learns
# from (every form but the LM's logprobs), the methods, the evaluation protocols
if TYPE_CHECKING:  # built at run time, so to mypy each is an Enum (members looked up by name)
    Form = Enum
    Method = Enum
    Protocol = Enum
else:
    Form = cli_choices("Form", [f for f in choices.Form if f is not choices.Form.LOGPROBS])
    Method = cli_choices("Method", choices.Method)
    Protocol = cli_choices("Protocol", choices.EvalProtocol)


class ProbeKind(str, Enum):
    noise = "noise"
    images = "images"
    tokens = "tokens"
    text = "text"


class Split(str, Enum):
    probe = "probe"
    calib = "calib"


def values(items) -> list[str] | None:
    """Enum members (or plain strings) as their values; None stays None."""
    return None if items is None else [getattr(i, "value", i) for i in items]


ModelArg = Annotated[
    str,
    typer.Argument(
        metavar="MODEL", help="Zoo model name (see `hspi models list`) or path to any ONNX file.", show_default=False
    ),
]
DbOpt = Annotated[Path, typer.Option("--db", metavar="DIR", help="Reference DB directory.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON report instead of tables.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
PlatformsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--platforms",
        "-p",
        metavar="GLOB",
        help="Platform glob(s), e.g. 'onnxruntime/*/fp16/*'; repeatable. Default: every available variant.",
        show_default=False,
    ),
]
ProbesOpt = Annotated[
    Path | None,
    typer.Option(
        "--probes", metavar="FILE", help="Probe-set .npz (hspi probes make). Default: generate one.", show_default=False
    ),
]
KindOpt = Annotated[
    ProbeKind | None,
    typer.Option(
        "--kind",
        help="Probe kind when generating (default: noise for images and tensors, tokens for ids).",
        show_default=False,
    ),
]
NProbesOpt = Annotated[int, typer.Option("-n", metavar="N", min=1, help="Number of probes to generate.")]
SeedOpt = Annotated[int, typer.Option("--seed", metavar="INT", help="Seed when generating probes.")]
DimOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--dim",
        metavar="SYMBOL=SIZE",
        help="Size of a dynamic input axis by its symbol, e.g. sequence=32; repeatable (default 16).",
        show_default=False,
    ),
]
ExtraOpt = Annotated[
    bool, typer.Option("--extra-variants", help="Also the opt-in variants: instruction-set caps and torch.compile.")
]
InProcessOpt = Annotated[
    bool,
    typer.Option(
        "--in-process",
        help="Run platforms in this process instead of worker processes (debugging: a crashing runtime takes the command with it).",
    ),
]
ModelsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model", "-m", metavar="MODEL", help="Only this model (name or sha256); repeatable.", show_default=False
    ),
]
TargetsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        "-t",
        metavar="TARGET",
        help="Only this target (platform, runtime, precision, a knob); repeatable.",
        show_default=False,
    ),
]
OutputNameOpt = Annotated[
    str | None,
    typer.Option(
        "--output-name",
        metavar="NAME",
        help="The model output to learn from or compare (default: each model's first).",
        show_default=False,
    ),
]
ClassifierOpt = Annotated[
    Path | None,
    typer.Option(
        "--classifier",
        "-c",
        metavar="DIR",
        help="Classifier directory (hspi train); needed for attributes of unknown platforms and degraded outputs.",
        show_default=False,
    ),
]
SuspectArg = Annotated[
    Path,
    typer.Argument(
        metavar="SUSPECT",
        help="Suspect outputs: .npz (hspi run), KServe v2 JSON/JSONL, or hspi-suspect/1 JSON.",
        show_default=False,
    ),
]
QueriesOpt = Annotated[
    list[int] | None,
    typer.Option("--queries", metavar="N", min=1, help="Query counts n; repeatable.", show_default=False),
]


def parse_dims(items: list[str] | None) -> dict[str, int]:
    """``--dim sequence=32`` options as a dict."""
    from hspi_onnx.errors import HspiError

    out: dict[str, int] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name or not value.isdigit():
            raise HspiError(f"--dim {item!r} must read SYMBOL=SIZE, e.g. sequence=32")
        out[name] = int(value)
    return out


def console(stderr: bool = False):
    from rich.console import Console

    # Piped output keeps whole labels on one line instead of rich's 80-column default.
    return Console(stderr=stderr, width=max(shutil.get_terminal_size((160, 24)).columns, 120))


def emit_json(data) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def progress(quiet: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console(stderr=True),
        disable=quiet,
        transient=False,
    )


def load_probe_arg(model, probes_path, kind, n, seed, dims=None):
    """A probe set from a file (checked against the model), or generated for it."""
    from hspi_onnx.inputs.probes import generate, load_probes

    if probes_path:
        return load_probes(probes_path).bind(model)
    return generate(model, getattr(kind, "value", kind), n=n, seed=seed, dims=parse_dims(dims))


def short_label(label: str) -> str:
    """runtime/precision/knobs: the version and device are the same for every row of one machine."""
    return label_shortener([label])(label)


def label_shortener(labels) -> Callable[[str], str]:
    """Labels as short as they stay distinct among ``labels``: the device only where several
    devices appear (a DB built over several machines), the version only where one runtime
    appears in several versions."""
    parts = [lab.split("/") for lab in labels]
    devices = {p[1] for p in parts}
    runtimes = {p[0] for p in parts}
    versions = len(runtimes) > len({r.split("@")[0] for r in runtimes})

    def short(label: str) -> str:
        runtime, device, precision, knobs = label.split("/")
        head = [runtime if versions else runtime.split("@")[0]] + ([device] if len(devices) > 1 else [])
        return "/".join(head + [precision, knobs])

    return short
