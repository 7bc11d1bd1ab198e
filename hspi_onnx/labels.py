"""Platform labels: a structured, hashable value with one canonical string form.

Grammar (see docs/labels.md)::

    label   := runtime "@" version "/" device "/" precision "/" knobs
    device  := kind [":" isa [":" cpu-model]]        e.g. cpu:avx2:amd-epyc
    knobs   := "-" | key "=" value ("," key "=" value)*   (keys sorted)

``Platform.parse(str(p)) == p`` for every platform. Globs select labels segment by segment;
see :func:`matches`.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass, field, replace

from hspi_onnx.errors import BadLabelError, UnknownPlatformError

_TOKEN = re.compile(r"^[a-z0-9][a-z0-9._+-]*$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_DEVICE = re.compile(r"^[a-z0-9][a-z0-9._+-]*(:[a-z0-9][a-z0-9._+-]*){0,2}$")


def _check(value: str, pattern: re.Pattern, what: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise BadLabelError(f"invalid {what} {value!r} in platform label")
    return value


@dataclass(frozen=True, order=True)
class Platform:
    runtime: str
    version: str
    device: str
    precision: str
    knobs: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        _check(self.runtime, _TOKEN, "runtime")
        _check(self.version, _VERSION, "runtime version")
        _check(self.device, _DEVICE, "device")
        _check(self.precision, _TOKEN, "precision")
        knobs = tuple(sorted((str(k), str(v)) for k, v in dict(self.knobs).items()))
        if len(knobs) != len(self.knobs):
            raise BadLabelError("duplicate knob in platform label")
        for k, v in knobs:
            _check(k, _TOKEN, "knob name")
            _check(v, _TOKEN, f"value of knob {k!r}")
        object.__setattr__(self, "knobs", knobs)

    @classmethod
    def make(cls, runtime: str, version: str, device: str, precision: str, **knobs) -> Platform:
        return cls(runtime, version, device, precision, tuple((k, str(v)) for k, v in knobs.items()))

    @property
    def knob(self) -> dict[str, str]:
        return dict(self.knobs)

    @property
    def device_kind(self) -> str:
        return self.device.split(":", 1)[0]

    def with_knobs(self, **knobs) -> Platform:
        merged = {**self.knob, **{k: str(v) for k, v in knobs.items()}}
        return replace(self, knobs=tuple(merged.items()))

    def knob_string(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.knobs) or "-"

    def __str__(self) -> str:
        return f"{self.runtime}@{self.version}/{self.device}/{self.precision}/{self.knob_string()}"

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().split("/")
        if len(parts) != 4 or "@" not in parts[0]:
            raise BadLabelError(f"platform label {text!r} must read runtime@version/device/precision/knobs")
        runtime, version = parts[0].split("@", 1)
        knobs: list[tuple[str, str]] = []
        if parts[3] != "-":
            for item in parts[3].split(","):
                if "=" not in item:
                    raise BadLabelError(f"knob {item!r} in {text!r} must read key=value")
                k, v = item.split("=", 1)
                knobs.append((k, v))
        platform = cls(runtime, version, parts[1], parts[2], tuple(knobs))
        if str(platform) != text.strip():
            raise BadLabelError(f"platform label {text!r} is not canonical; write {platform}")
        return platform

    def as_dict(self) -> dict:
        return {
            "label": str(self),
            "runtime": self.runtime,
            "version": self.version,
            "device": self.device,
            "precision": self.precision,
            "knobs": self.knob,
        }


def _segment_matches(pattern: str, value: str, short: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern) or fnmatch.fnmatchcase(short, pattern)


def matches(platform: Platform, pattern: str) -> bool:
    """Whether ``platform`` is selected by a glob such as ``onnxruntime/*/fp16/*``.

    Segments are compared in order and missing trailing segments match anything. A runtime
    segment without ``@`` compares the runtime name only; a device segment without ``:``
    compares the device kind (``cpu``); a knob segment without wildcards selects labels
    that have every listed ``key=value``.
    """
    segs = pattern.strip().split("/")
    if len(segs) > 4:
        return False
    segs += ["*"] * (4 - len(segs))
    rt, dev, prec, knobs = segs
    if not _segment_matches(rt, f"{platform.runtime}@{platform.version}", platform.runtime if "@" not in rt else ""):
        return False
    if not _segment_matches(dev, platform.device, platform.device_kind if ":" not in dev else ""):
        return False
    if not fnmatch.fnmatchcase(platform.precision, prec):
        return False
    if any(c in knobs for c in "*?["):
        return fnmatch.fnmatchcase(platform.knob_string(), knobs)
    if knobs == "-":
        return not platform.knobs
    wanted = [item.split("=", 1) for item in knobs.split(",") if item]
    have = platform.knob
    return all(len(w) == 2 and have.get(w[0]) == w[1] for w in wanted)


def select(platforms: list[Platform], patterns: list[str] | None) -> list[Platform]:
    """Platforms matching any of ``patterns`` (all when none); an empty match is an error."""
    if not patterns:
        return list(platforms)
    chosen = [p for p in platforms if any(matches(p, pat) for pat in patterns)]
    if not chosen:
        raise UnknownPlatformError(no_match_message(", ".join(patterns), platforms))
    return chosen


def no_match_message(asked: str, platforms: list[Platform]) -> str:
    labels = [str(p) for p in platforms]
    close = difflib.get_close_matches(asked, labels, n=3, cutoff=0.5)
    if not close:
        runtimes = sorted({p.runtime for p in platforms})
        hint = f"known runtimes: {', '.join(runtimes)}" if runtimes else "no platform is available"
        return f"no platform matches {asked!r} ({hint}; see `hspi runtimes variants`)"
    return f"no platform matches {asked!r}; close matches: {', '.join(close)}"
