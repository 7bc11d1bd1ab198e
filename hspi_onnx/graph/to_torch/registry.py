"""The op registry: every ONNX op (default domain) the converter runs, with the module that holds
its implementation, the oldest version of the op that implementation follows and the limits
worth knowing.

Each operator family module registers its own ops, with the decorator or the call that
:func:`registrar` gives it::

    op, register = registrar(__name__)

    @op("Conv", since=1)
    def _conv(ctx, x, w, b=None, ...): ...

    register("Abs", _unary(torch.abs), since=1)

``since`` is the oldest ``since_version`` of the op (``onnx.defs``) whose definition the
implementation follows: it takes every input and attribute of that version and computes what
that version says. A model whose opset resolves the op to an older version is refused
(``module.py``). A later version that only widens what is allowed (more element types,
broadcasting where equal shapes were required, negative axes, a new attribute whose default
is the old behaviour) does not move ``since``. ``notes`` name what a covered version allows
and the implementation refuses or does differently; they go into the coverage table of
docs/adapters.md (``coverage.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

# The newest opset of the default domain whose changes the since values and notes were checked
# against (onnx 1.23's schemas); a later opset may change an op in ways the notes do not name.
CHECKED_OPSET = 28

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class OpEntry:
    """One registered op: ``fn(ctx, *inputs, **attributes)`` runs it; ``fn`` is None for the
    ops the interpreter runs itself (Constant, If)."""

    name: str
    since: int
    family: str  # the module holding the implementation, e.g. "conv_pool"
    fn: Callable[..., Any] | None
    count_outputs: bool = False  # the interpreter passes _n, the number of outputs the node names
    notes: str = ""


REGISTRY: dict[str, OpEntry] = {}


def _short(module: str) -> str:
    return module.rsplit(".", 1)[-1]


def add(entry: OpEntry) -> None:
    """Record an op; registering one twice is a mistake in the family modules."""
    if entry.name in REGISTRY:
        raise ValueError(f"ONNX op {entry.name} is registered twice ({REGISTRY[entry.name].family}, {entry.family})")
    if entry.since < 1:
        raise ValueError(f"ONNX op {entry.name}: since must be an opset version, got {entry.since}")
    REGISTRY[entry.name] = entry


def registrar(module: str) -> tuple[Callable[..., Callable[[F], F]], Callable[..., Any]]:
    """``(op, register)`` for the family module named ``module`` (pass ``__name__``)."""
    family = _short(module)

    def op(name: str, *, since: int, count_outputs: bool = False, notes: str = "") -> Callable[[F], F]:
        def decorate(fn: F) -> F:
            add(OpEntry(name, since, family, fn, count_outputs, notes))
            return fn

        return decorate

    def register(
        name: str, fn: Callable[..., Any] | None, *, since: int, count_outputs: bool = False, notes: str = ""
    ) -> Callable[..., Any] | None:
        add(OpEntry(name, since, family, fn, count_outputs, notes))
        return fn

    return op, register
