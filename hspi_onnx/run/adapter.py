"""The adapter protocol and the registry of runtimes.

An adapter (one module per runtime family) reports availability with a reason, enumerates
the platform variants it supports on this machine for a model, prepares a model for one
variant as a context manager, and runs numpy batches. Built-in adapters are found through the
entry-point group ``hspi_onnx.runtimes``, exactly as a third-party package adds one.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata as md
import itertools
import os
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hspi_onnx.errors import HspiError, UnknownPlatformError
from hspi_onnx.host import dist_version
from hspi_onnx.inputs.model import ModelInfo
from hspi_onnx.labels import Platform, no_match_message

ENTRY_POINT_GROUP = "hspi_onnx.runtimes"
BATCH_SIZES = (1, 8)
THREADS = (1, 2)


def _dist_version(distribution: str) -> str:
    """Installed version of a distribution, as a label token ("0" when not installed)."""
    return (dist_version(distribution) or "0").replace("+", "-")


class Session(Protocol):
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output for one batch (input name -> array), by output name in the model's
        output order, each in the dtype the runtime returned."""


def named_outputs(model: ModelInfo, values) -> dict[str, np.ndarray]:
    """A runtime's list of every graph output (graph order) as the session protocol's dict of
    the outputs runs store (a whole-batch output is computed, then left out)."""
    values = list(values)
    if len(values) != len(model.graph_outputs):
        raise HspiError(f"the runtime returned {len(values)} outputs, {model.name} has {len(model.graph_outputs)}")
    return {o.name: np.asarray(v) for o, v in zip(model.graph_outputs, values) if not o.whole_batch}


def runtimes_allowed() -> set[str] | None:
    """The runtime families this machine offers when ``HSPI_RUNTIMES`` names them (comma-separated;
    e.g. a cluster node started without OpenVINO); None: every available one."""
    value = os.environ.get("HSPI_RUNTIMES", "").strip()
    return {v.strip() for v in value.split(",") if v.strip()} if value else None


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""


class Adapter:
    """Base class: subclasses set the class attributes and implement variants and prepare."""

    name: str = ""  # runtime segment of platform labels
    entry_point: str = ""  # module:Class it was registered as (set by the registry)
    distribution: str = ""  # the pip distribution whose version labels carry
    requires: tuple[str, ...] = ()  # modules that must import for the adapter to work
    summary: str = ""
    # measured facts (:meth:`measure`) that change bits: knobs of every CPU label, checked before a run
    labelled: tuple[str, ...] = ()
    # settings the adapter fixes in prepare() whatever the runtime's default (docs/labels.md); the
    # knob survey overrides them one at a time in a process of its own to show what they would move
    pins: dict = {}

    def version(self) -> str:
        return _dist_version(self.distribution)

    @functools.cached_property
    def _availability(self) -> Availability:
        chosen = runtimes_allowed()
        if chosen is not None and self.name not in chosen:
            return Availability(False, f"left out by HSPI_RUNTIMES={','.join(sorted(chosen))}")
        for mod in self.requires:
            try:
                importlib.import_module(mod)
            except Exception as exc:  # a broken install can raise anything
                return Availability(False, f"cannot import {mod}: {type(exc).__name__}: {exc}")
        return self.check()

    def available(self) -> Availability:
        return self._availability

    def check(self) -> Availability:
        """Extra availability checks beyond imports (devices, licences, ...)."""
        return Availability(True)

    def serves(self, model: ModelInfo) -> bool:
        """Whether the adapter runs ``model`` at all: by default graphs that map inputs to outputs,
        not language models that generate (``model.generation``), which need a decode loop."""
        return model.generation is None

    def variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        raise NotImplementedError

    def extra_variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        """Opt-in variants, listed only when asked for (``--extra-variants``) because they are
        slow to run: instruction-set caps through the runtime's documented environment switch
        (device label names the capped ISA; see hostinfo.ISA_CAPS), compiled modes."""
        return []

    def environment(self, platform: Platform) -> dict[str, str]:
        """Environment variables the platform needs at process start (e.g. an instruction-set
        cap); platforms with the same answer share a worker process of their own
        (:mod:`hspi_onnx.run.runner`), also under ``--in-process``."""
        return {}

    def measure(self, platform: Platform, session: Session) -> dict[str, str]:
        """The state of this process that decides the platform's kernels, read from the runtime
        after ``prepare`` loaded it (``session`` is what prepare gave): the :attr:`labelled` facts,
        which must equal the label's knobs of those names (:func:`hspi_onnx.run.kernels.check`),
        and any others worth recording beside the outputs (thread counts, pinned settings)."""
        return {}

    def labelled_for(self, platform: Platform) -> tuple[str, ...]:
        """The measured facts ``platform``'s label carries (CPU platforms: :attr:`labelled`)."""
        return self.labelled if platform.device_kind == "cpu" else ()

    def limitations(self) -> dict[str, str]:
        """What this adapter offers elsewhere but not on this machine (e.g. a precision), with why."""
        return {}

    def prepare(self, model: ModelInfo, platform: Platform) -> AbstractContextManager[Session]:
        raise NotImplementedError

    def platform(self, device: str, precision: str, **knobs) -> Platform:
        return Platform.make(self.name, self.version(), device, precision, **knobs)

    def grid(self, device: str, precisions: Iterable[tuple[str, dict]], **axes: Iterable) -> list[Platform]:
        """Every combination of (precision, fixed knobs) with the given knob axes."""
        keys = list(axes)
        out = []
        for precision, fixed in precisions:
            for values in itertools.product(*(axes[k] for k in keys)):
                out.append(self.platform(device, precision, **fixed, **dict(zip(keys, values))))
        return out


def batch_sizes(model: ModelInfo) -> tuple[int, ...]:
    return (model.fixed_batch,) if model.fixed_batch else BATCH_SIZES


class BrokenAdapter(Adapter):
    """Stands in for a plugin whose entry point fails to load."""

    def __init__(self, name: str, reason: str) -> None:
        self.name, self._reason = name, reason

    def version(self) -> str:
        return "0"

    def available(self) -> Availability:
        return Availability(False, self._reason)

    def variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        return []


@functools.lru_cache(maxsize=1)
def registry() -> dict[str, Adapter]:
    """Every adapter registered under the entry-point group, by runtime name."""
    found: dict[str, Adapter] = {}
    for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            adapter = ep.load()()
            adapter.entry_point = ep.value
        except Exception as exc:
            adapter = BrokenAdapter(ep.name, f"plugin failed to load: {type(exc).__name__}: {exc}")
        found[adapter.name or ep.name] = adapter
    return found


def tool_versions() -> dict:
    """hspi-onnx's version and every registered runtime's, as builds and nodes record them."""
    from hspi_onnx import __version__

    versions = {"hspi-onnx": __version__}
    for name, adapter in registry().items():
        versions[adapter.distribution or name] = adapter.version()
    return versions


def load_adapter(name: str, entry_point: str = "") -> Adapter:
    """The adapter registered as ``name``; with its entry point's ``module:Class`` (what a worker
    is started with) it is imported directly, without reading every installed distribution's
    entry points (tens of milliseconds at each worker start)."""
    if entry_point and ":" in entry_point:
        module, _, attr = entry_point.partition(":")
        try:
            adapter = getattr(importlib.import_module(module), attr)()
        except Exception:  # let the registry say what is wrong
            return registry()[name]
        adapter.entry_point = entry_point
        if adapter.name == name:
            return adapter
    return registry()[name]


def _runtime_globs(patterns: list[str] | None) -> list[str] | None:
    """The runtime segment of each label glob (before ``@`` or ``/``); None when any may match
    every runtime (no patterns, or one whose runtime segment is itself a wildcard)."""
    if not patterns:
        return None
    out = []
    for pattern in patterns:
        runtime = pattern.split("/", 1)[0].split("@", 1)[0]
        if not runtime or runtime == "*":
            return None
        out.append(runtime)
    return out


def available_variants(
    model: ModelInfo, probe_kind: str, extra: bool = False, runtimes: list[str] | None = None
) -> list[tuple[Adapter, Platform]]:
    """Every available (adapter, platform); with ``extra`` the opt-in variants too (instruction-set
    caps, torch.compile); with ``runtimes`` (globs of the runtime name) only those adapters are
    asked, so the others are not even imported."""
    import fnmatch

    out = []
    for name, adapter in registry().items():
        if runtimes is not None and not any(fnmatch.fnmatchcase(name, g) for g in runtimes):
            continue
        if adapter.available().ok and adapter.serves(model):
            out += [(adapter, p) for p in adapter.variants(model, probe_kind)]
            if extra:
                out += [(adapter, p) for p in adapter.extra_variants(model, probe_kind)]
    return out


def selected_variants(
    model: ModelInfo, probe_kind: str, patterns: list[str] | None, extra: bool = False
) -> list[tuple[Adapter, Platform]]:
    """Available (adapter, platform) pairs whose labels match any glob (all when none);
    an empty match is an error naming close labels."""
    from hspi_onnx.labels import select

    pairs = available_variants(model, probe_kind, extra, _runtime_globs(patterns))
    try:
        chosen = set(select([p for _, p in pairs], patterns))
    except UnknownPlatformError:
        _explain_unavailable(patterns or [])
        raise
    return [(a, p) for a, p in pairs if p in chosen]


def _explain_unavailable(patterns: list[str]) -> None:
    """Nothing matched: where a pattern names an unavailable runtime, say why it is unavailable."""
    for pattern in patterns:
        runtime = pattern.split("/", 1)[0].split("@", 1)[0]
        adapter = registry().get(runtime)
        if adapter is not None and not adapter.available().ok:
            raise UnknownPlatformError(f"runtime {runtime} is unavailable: {adapter.available().reason}")


class Offered:
    """Which DB labels this machine runs for ``model``: each runtime a label names is asked once
    per calibration kind (the label's ``calib`` knob, else ``default_kind``), the opt-in variants
    only for a label the regular ones lack (torch.compile's check alone takes seconds); runtimes
    no label names are never imported."""

    def __init__(self, model: ModelInfo, default_kind: str) -> None:
        self.model, self.default_kind = model, default_kind
        self.adapters = registry()
        self._offered: dict[tuple, dict[str, tuple[Adapter, Platform]]] = {}
        self._extra_asked: set[tuple] = set()

    def get(self, label: str) -> tuple[Adapter, Platform] | None:
        """(adapter, platform) of ``label`` when this machine offers it, else None."""
        plat = Platform.parse(label)
        adapter = self.adapters.get(plat.runtime)
        if adapter is None or not adapter.available().ok or not adapter.serves(self.model):
            return None
        key = (plat.runtime, plat.knob.get("calib") or self.default_kind)
        if key not in self._offered:
            self._offered[key] = {str(p): (adapter, p) for p in adapter.variants(self.model, key[1])}
        if label not in self._offered[key] and key not in self._extra_asked:
            self._extra_asked.add(key)
            self._offered[key].update({str(p): (adapter, p) for p in adapter.extra_variants(self.model, key[1])})
        return self._offered[key].get(label)

    def why_not(self, label: str) -> str:
        runtime = Platform.parse(label).runtime
        adapter = self.adapters.get(runtime)
        if adapter is None:
            return f"no adapter for runtime {runtime!r} here"
        status = adapter.available()
        if not status.ok:
            return f"runtime {runtime} is unavailable here: {status.reason}"
        return (
            f"not offered here (this machine's {runtime} is {adapter.version()}; its devices, ISA or "
            f"measured kernels may differ)"
        )


def resolve_platform(label: str, model: ModelInfo, probe_kind: str) -> tuple[Adapter, Platform]:
    """The adapter and platform for an exact label, or for a glob that selects exactly one;
    otherwise an error naming close matches."""
    if label.count("/") != 3 or "@" not in label.split("/")[0] or any(c in label for c in "*?["):
        chosen = selected_variants(model, probe_kind, [label], extra=True)
        if len(chosen) > 1:
            shown = ", ".join(str(p) for _, p in chosen[:3])
            raise UnknownPlatformError(
                f"{label!r} selects {len(chosen)} platforms ({shown}, ...); give one exact label"
            )
        return chosen[0]
    platform = Platform.parse(label)
    adapters = registry()
    adapter = adapters.get(platform.runtime)
    if adapter is None:
        raise UnknownPlatformError(
            f"no adapter for runtime {platform.runtime!r}; installed: {', '.join(adapters) or 'none'}"
        )
    status = adapter.available()
    if not status.ok:
        raise UnknownPlatformError(f"runtime {adapter.name} is unavailable: {status.reason}")
    if not adapter.serves(model):
        raise UnknownPlatformError(f"runtime {adapter.name} does not run {model.name}")
    offered = adapter.variants(model, probe_kind) + adapter.extra_variants(model, probe_kind)
    if platform not in offered:
        raise UnknownPlatformError(no_match_message(label, offered))
    return adapter, platform


def require(adapter: Adapter) -> None:
    status = adapter.available()
    if not status.ok:
        raise HspiError(f"runtime {adapter.name} is unavailable: {status.reason}")
