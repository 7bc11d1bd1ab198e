"""The converter's coverage table in docs/adapters.md, rendered from the op registry between
the markers ``<!-- ops:begin -->`` and ``<!-- ops:end -->``::

    python -m hspi_onnx.graph.to_torch.coverage                              # print the table
    python -m hspi_onnx.graph.to_torch.coverage --write docs/adapters.md     # rewrite it in place
    python -m hspi_onnx.graph.to_torch.coverage --check docs/adapters.md     # exit 1 if out of date

tests/test_to_torch_registry.py fails when the file differs from what ``--write`` would make.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BEGIN = "<!-- ops:begin -->"
END = "<!-- ops:end -->"


def table() -> str:
    """The markdown table: one row per covered op, by name."""
    from . import ops  # noqa: F401  (imports every operator family: the registry is complete)
    from .registry import REGISTRY

    rows = ["| Op | Since | Module | Notes |", "| --- | --- | --- | --- |"]
    for name in sorted(REGISTRY, key=str.lower):
        entry = REGISTRY[name]
        notes = entry.notes.replace("|", "\\|")
        rows.append(f"| {name} | {entry.since} | `{entry.family}.py` | {notes} |")
    return "\n".join(rows) + "\n"


def updated(text: str) -> str:
    """``text`` with the part between the markers replaced by :func:`table`."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start or text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"expected one {BEGIN} followed by one {END}")
    return text[: start + len(BEGIN)] + "\n" + table() + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hspi_onnx.graph.to_torch.coverage", description=__doc__.split("\n")[0]
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="FILE", type=Path, help="replace the table between the markers of FILE")
    group.add_argument("--check", metavar="FILE", type=Path, help="exit 1 when FILE's table is out of date")
    args = parser.parse_args(argv)
    if args.write is None and args.check is None:
        sys.stdout.write(table())
        return 0
    path = args.write or args.check
    text = path.read_text(encoding="utf-8")
    new = updated(text)
    if args.check is not None:
        if new != text:
            print(f"{path}: the op table is out of date; run {parser.prog} --write {path}", file=sys.stderr)
            return 1
        return 0
    if new != text:
        path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
