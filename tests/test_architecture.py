"""The house's one rule, read from the source with ``ast``: a stage imports only stages below it
(docs/architecture.md lists the order), the core never imports a built-in adapter, and adapters
never import each other or anything above the execution layer. Lazy imports inside functions
count as much as those at the top of a module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. "base": the modules at the package root (errors, labels, host, cache, safenpz,
# outputs, forms, oip); "models": the zoo (models/, installed as hspi_onnx.models); demo.py
# plays every stage below the commands.
STAGES = ["base", "models", "inputs", "graph", "run", "db", "learn", "border", "match", "serve", "query", "demo", "cli"]
PACKAGES = {"inputs", "graph", "run", "db", "learn", "border", "match", "serve", "query", "cli"}
ADAPTERS_MAY_USE = {"base", "models", "inputs", "graph", "run"}


def _stage(module: str) -> str | None:
    """The stage of an ``hspi_onnx`` module name (None: not this project's)."""
    parts = module.split(".")
    if parts[0] != "hspi_onnx":
        return None
    if len(parts) == 1:
        return "base"
    if parts[1] in PACKAGES or parts[1] in ("models", "runtimes"):
        return parts[1]
    return "demo" if parts[1] == "demo" else "base"


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, relative ones resolved."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            out += [(node.lineno, f"{name}.{a.name}") for a in node.names if _stage(f"{name}.{a.name}") == "runtimes"]
    return out


def _modules(folder: Path, prefix: str):
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(folder).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        package = ".".join([prefix, *parts[:-1]] if path.name != "__init__.py" else [prefix, *parts])
        yield path, ".".join([prefix, *parts]), package


def test_no_stage_imports_a_stage_above_it():
    upward = []
    scanned = [*_modules(ROOT / "hspi_onnx", "hspi_onnx"), *_modules(ROOT / "models", "hspi_onnx.models")]
    for path, module, package in scanned:
        mine = _stage(module)
        for line, name in _imports(path, package):
            theirs = _stage(name)
            if theirs is None or theirs == mine:
                continue
            where = f"{path.relative_to(ROOT)}:{line} ({mine}) imports {name} ({theirs})"
            if theirs == "runtimes" or STAGES.index(theirs) > STAGES.index(mine):
                upward.append(where)
    assert not upward, "\n".join(upward)


def test_adapters_use_the_core_below_the_execution_layer_and_never_each_other():
    wrong = []
    for path, module, package in _modules(ROOT / "runtimes", "hspi_onnx.runtimes"):
        for line, name in _imports(path, package):
            theirs = _stage(name)
            if theirs is not None and theirs not in ADAPTERS_MAY_USE:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name} ({theirs})")
    assert not wrong, "\n".join(wrong)


def test_the_stage_order_is_the_one_the_docs_give():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert "stage order: " + " < ".join(STAGES) in text


def test_the_rule_catches_an_upward_import(tmp_path):
    """The checker itself: a lower stage importing a higher one is found, lazily or not."""
    (tmp_path / "db").mkdir()
    bad = tmp_path / "db" / "x.py"
    bad.write_text("def f():\n    from hspi_onnx.match import identify\n    from ..learn import features\n")
    names = [n for _, n in _imports(bad, "hspi_onnx.db")]
    assert names == ["hspi_onnx.match", "hspi_onnx.learn"]
    assert [STAGES.index(_stage(n)) > STAGES.index("db") for n in names] == [True, True]
