"""A reference DB's ``manifest.json`` as typed records: models, probe sets, platforms, build runs
and the platforms a run noted (failed, not repeatable, batch-dependent). Schema: docs/db.md.

The file is hostile input. :meth:`Manifest.from_json` reads schema 1 and 2, checks every key
and type it reads and raises one :class:`~hspi_onnx.errors.BadManifestError` naming what is
wrong (``manifest of 'DB' is malformed: runs['...'].pid is a string, not an integer``), never a
KeyError. :meth:`Manifest.to_json` writes what the code before these records wrote for the same
content: the same keys (an optional key stays absent until set), sorted, indented by one, and
keys this version does not know kept where they were, so a manifest read and written back is
the same text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hspi_onnx.errors import BadManifestError

SCHEMA_VERSION = 2  # written; schema 2 names every output of a model (docs/db.md)
READABLE_SCHEMAS = (1, 2)  # schema 1: one output per model, no output_name column

JSON = dict[str, Any]
T = TypeVar("T")


# -- checks: each takes (value, where it sits) and returns the value or raises ---------------------
def _what(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _wrong(value: object, at: str, expected: str) -> BadManifestError:
    return BadManifestError(f"{at} is {_what(value)}, not {expected}")


def _key(key: str) -> str:
    return repr(key if len(key) <= 24 else key[:24] + "...")


def _str(value: object, at: str) -> str:
    if not isinstance(value, str):
        raise _wrong(value, at, "a string")
    return value


def _str_or_null(value: object, at: str) -> str | None:
    return None if value is None else _str(value, at)


def _int(value: object, at: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong(value, at, "an integer")
    return value


def _object(value: object, at: str) -> JSON:
    if not isinstance(value, dict):
        raise _wrong(value, at, "an object")
    return value


def _array(value: object, at: str) -> list:
    if not isinstance(value, list):
        raise _wrong(value, at, "an array")
    return value


def _list_of(check: Callable[[object, str], T]) -> Callable[[object, str], list[T]]:
    return lambda value, at: [check(v, f"{at}[{i}]") for i, v in enumerate(_array(value, at))]


def _map_of(check: Callable[[object, str], T]) -> Callable[[object, str], dict[str, T]]:
    return lambda value, at: {k: check(v, f"{at}[{_key(k)}]") for k, v in _object(value, at).items()}


_strs = _list_of(_str)
_ints = _list_of(_int)
_objects = _list_of(_object)


def _int_or_null(value: object, at: str) -> int | None:
    return None if value is None else _int(value, at)


def _output_record(value: object, at: str) -> JSON:
    """One output as ``OutputSpec.as_dict`` writes it: name, dtype, shape (null: a dynamic axis)."""
    rec = _object(value, at)
    fields = _Fields(rec, at)
    fields.take("name", _str)
    fields.take("dtype", _str)
    fields.take("shape", _list_of(_int_or_null))
    return rec


class _Fields:
    """The keys of one JSON object, read with checks; what is not read is ``rest()``."""

    def __init__(self, value: object, at: str) -> None:
        self.data, self.at = _object(value, at or "the manifest"), at
        self.read: set[str] = set()

    def take(self, key: str, check: Callable[[object, str], T]) -> T:
        if key not in self.data:
            raise BadManifestError(f"{self.at} lacks {key!r}" if self.at else f"lacks {key!r}")
        self.read.add(key)
        return check(self.data[key], f"{self.at}.{key}" if self.at else key)

    def maybe(self, key: str, check: Callable[[object, str], T]) -> T | None:
        """The value, or None when the key is absent (and stays absent when written back)."""
        return self.take(key, check) if key in self.data else None

    def rest(self) -> JSON:
        return {k: v for k, v in self.data.items() if k not in self.read}


def _with(known: JSON, optional: JSON, extra: JSON) -> JSON:
    """A record's keys: unknown ones as read, the known ones, and optional ones that are set."""
    return {**extra, **known, **{k: v for k, v in optional.items() if v is not None}}


# -- the records ----------------------------------------------------------------------------------
@dataclass
class ModelEntry:
    """A model as ``ModelInfo.describe()`` records it (``models``, by sha256)."""

    name: str
    path: str
    sha256: str
    zoo: str | None
    input: JSON  # the primary input, as InputSpec.as_dict writes it
    output: str  # the first output's name; schema 1: the model's only output
    inputs: list[JSON] | None = None  # every input; absent in schema 1 (and after `db upgrade`)
    outputs: list[JSON] | None = None  # every output {name, dtype, shape}, in graph order; schema 2
    extra: JSON = field(default_factory=dict)

    @property
    def output_names(self) -> list[str]:
        """In graph order; schema 1: the one ``output`` ([] when the entry names none)."""
        return [str(o["name"]) for o in self.outputs or []] or ([self.output] if self.output else [])

    @classmethod
    def from_dict(cls, data: object, at: str = "model", schema: int = SCHEMA_VERSION) -> ModelEntry:
        f = _Fields(data, at)
        entry = cls(
            name=f.take("name", _str),
            path=f.take("path", _str),
            sha256=f.take("sha256", _str),
            zoo=f.take("zoo", _str_or_null),
            input=f.take("input", _object),
            output=f.take("output", _str),
            inputs=f.maybe("inputs", _objects),
            outputs=(f.take if schema >= 2 else f.maybe)("outputs", _list_of(_output_record)),
        )
        entry.extra = f.rest()
        return entry

    def as_dict(self) -> JSON:
        known = {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "zoo": self.zoo,
            "input": self.input,
            "output": self.output,
        }
        return _with(known, {"inputs": self.inputs, "outputs": self.outputs}, self.extra)


@dataclass
class ProbeSetEntry:
    """A probe set as ``ProbeSet.meta()`` records it (``probe_sets``, by content sha256): enough to
    generate it again (kind, n, seed, split, dims)."""

    name: str
    kind: str
    seed: int
    split: str
    n: int
    shape: list[int]  # the first input's, without the batch axis
    dtype: str
    sha256: str
    inputs: JSON | None = None  # input name -> {shape, dtype}; absent in schema 1
    input_names: list[str] | None = None  # absent in schema 1
    dims: dict[str, int] | None = None  # sizes given to dynamic axes; absent in schema 1
    provenance: JSON | None = None  # how a crafted set was made (border probes); absent otherwise
    extra: JSON = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: object, at: str = "probe set") -> ProbeSetEntry:
        f = _Fields(data, at)
        entry = cls(
            name=f.take("name", _str),
            kind=f.take("kind", _str),
            seed=f.take("seed", _int),
            split=f.take("split", _str),
            n=f.take("n", _int),
            shape=f.take("shape", _ints),
            dtype=f.take("dtype", _str),
            sha256=f.take("sha256", _str),
            inputs=f.maybe("inputs", _map_of(_object)),
            input_names=f.maybe("input_names", _strs),
            dims=f.maybe("dims", _map_of(_int)),
            provenance=f.maybe("provenance", _object),
        )
        entry.extra = f.rest()
        return entry

    def as_dict(self) -> JSON:
        known = {
            "name": self.name,
            "kind": self.kind,
            "seed": self.seed,
            "split": self.split,
            "n": self.n,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "sha256": self.sha256,
        }
        optional = {
            "inputs": self.inputs,
            "input_names": self.input_names,
            "dims": self.dims,
            "provenance": self.provenance,
        }
        return _with(known, optional, self.extra)


@dataclass
class PlatformEntry:
    """A platform label and its fields as ``Platform.as_dict()`` records it (``platforms``, by label)."""

    label: str
    runtime: str
    version: str
    device: str
    precision: str
    knobs: dict[str, str]
    extra: JSON = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: object, at: str = "platform") -> PlatformEntry:
        f = _Fields(data, at)
        entry = cls(
            label=f.take("label", _str),
            runtime=f.take("runtime", _str),
            version=f.take("version", _str),
            device=f.take("device", _str),
            precision=f.take("precision", _str),
            knobs=f.take("knobs", _map_of(_str)),
        )
        entry.extra = f.rest()
        return entry

    def as_dict(self) -> JSON:
        known = {
            "label": self.label,
            "runtime": self.runtime,
            "version": self.version,
            "device": self.device,
            "precision": self.precision,
            "knobs": dict(self.knobs),
        }
        return _with(known, {}, self.extra)


@dataclass
class RunEntry:
    """One ``db build`` (``runs``, by run id): registered before its first shard, finished at its end."""

    started: str
    finished: str | None  # null while the build runs, or when it was killed
    host: JSON  # cpu_facts() of the machine that ran it
    versions: JSON  # tool_versions(): hspi-onnx's and every runtime's
    argv: list[str]
    pid: int
    model_sha256: str
    probes_sha256: str
    platforms: list[str]  # every label planned, built or not
    built: int | None = None  # the counts, absent until the run finished
    skipped: int | None = None
    failed: int | None = None
    extra: JSON = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: object, at: str = "run") -> RunEntry:
        f = _Fields(data, at)
        entry = cls(
            started=f.take("started", _str),
            finished=f.take("finished", _str_or_null),
            host=f.take("host", _object),
            versions=f.take("versions", _object),
            argv=f.take("argv", _strs),
            pid=f.take("pid", _int),
            model_sha256=f.take("model_sha256", _str),
            probes_sha256=f.take("probes_sha256", _str),
            platforms=f.take("platforms", _strs),
            built=f.maybe("built", _int),
            skipped=f.maybe("skipped", _int),
            failed=f.maybe("failed", _int),
        )
        entry.extra = f.rest()
        return entry

    def as_dict(self) -> JSON:
        known = {
            "started": self.started,
            "finished": self.finished,
            "host": self.host,
            "versions": self.versions,
            "argv": list(self.argv),
            "pid": self.pid,
            "model_sha256": self.model_sha256,
            "probes_sha256": self.probes_sha256,
            "platforms": list(self.platforms),
        }
        return _with(known, {"built": self.built, "skipped": self.skipped, "failed": self.failed}, self.extra)


@dataclass
class PlatformNote:
    """A platform of a run noted in ``failures`` (with ``at``), ``nondeterministic`` or
    ``batch_dependent``; a merge's note names several runs in ``run_id``, comma-separated."""

    run_id: str
    model_sha256: str
    probes_sha256: str
    platform: str
    reason: str
    at: str | None = None  # when it failed (failures only)
    extra: JSON = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: object, at: str = "note", timed: bool = False) -> PlatformNote:
        f = _Fields(data, at)
        entry = cls(
            run_id=f.take("run_id", _str),
            model_sha256=f.take("model_sha256", _str),
            probes_sha256=f.take("probes_sha256", _str),
            platform=f.take("platform", _str),
            reason=f.take("reason", _str),
            at=(f.take if timed else f.maybe)("at", _str),
        )
        entry.extra = f.rest()
        return entry

    def as_dict(self) -> JSON:
        known = {
            "run_id": self.run_id,
            "model_sha256": self.model_sha256,
            "probes_sha256": self.probes_sha256,
            "platform": self.platform,
            "reason": self.reason,
        }
        return _with(known, {"at": self.at}, self.extra)


@dataclass
class Manifest:
    """The whole ``manifest.json``. ``Manifest()`` is a new DB's."""

    schema: int = SCHEMA_VERSION
    models: dict[str, ModelEntry] = field(default_factory=dict)
    probe_sets: dict[str, ProbeSetEntry] = field(default_factory=dict)
    platforms: dict[str, PlatformEntry] = field(default_factory=dict)
    runs: dict[str, RunEntry] = field(default_factory=dict)
    failures: list[PlatformNote] = field(default_factory=list)
    nondeterministic: list[PlatformNote] = field(default_factory=list)
    batch_dependent: list[PlatformNote] | None = None  # absent until a build finds one (and in older DBs)
    extra: JSON = field(default_factory=dict)

    # -- reading and writing ----------------------------------------------------------------------
    @classmethod
    def from_json(cls, text: str, where: str = "manifest") -> Manifest:
        """Parse and check a manifest file's text; ``where`` starts every error message."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise BadManifestError(f"{where} is unreadable ({type(exc).__name__})") from None
        return cls.from_dict(data, where)

    @classmethod
    def from_dict(cls, data: object, where: str = "manifest") -> Manifest:
        """Check a parsed manifest of any readable schema version."""
        found = data.get("schema") if isinstance(data, dict) else None
        if isinstance(found, bool) or not isinstance(found, int) or found not in READABLE_SCHEMAS:
            raise BadManifestError(
                f"{where} is schema version {found!r}; this version reads {', '.join(map(str, READABLE_SCHEMAS))}"
            )
        try:
            return cls._checked(data, found)
        except BadManifestError as exc:
            problem = str(exc)
            raise BadManifestError(
                f"{where} {problem}" if problem.startswith("lacks ") else f"{where} is malformed: {problem}"
            ) from None

    @classmethod
    def _checked(cls, data: object, schema: int) -> Manifest:
        f = _Fields(data, "")
        f.take("schema", _int)

        def model(value: object, at: str) -> ModelEntry:
            return ModelEntry.from_dict(value, at, schema)

        def note(value: object, at: str) -> PlatformNote:
            return PlatformNote.from_dict(value, at)

        def failure(value: object, at: str) -> PlatformNote:
            return PlatformNote.from_dict(value, at, timed=True)

        manifest = cls(
            schema=schema,
            models=f.take("models", _map_of(model)),
            probe_sets=f.take("probe_sets", _map_of(ProbeSetEntry.from_dict)),
            platforms=f.take("platforms", _map_of(PlatformEntry.from_dict)),
            runs=f.take("runs", _map_of(RunEntry.from_dict)),
            failures=f.take("failures", _list_of(failure)),
            nondeterministic=f.take("nondeterministic", _list_of(note)),
            batch_dependent=f.maybe("batch_dependent", _list_of(note)),
        )
        manifest.extra = f.rest()
        return manifest

    def as_dict(self) -> JSON:
        known = {
            "schema": self.schema,
            "models": {k: v.as_dict() for k, v in self.models.items()},
            "probe_sets": {k: v.as_dict() for k, v in self.probe_sets.items()},
            "platforms": {k: v.as_dict() for k, v in self.platforms.items()},
            "runs": {k: v.as_dict() for k, v in self.runs.items()},
            "failures": [e.as_dict() for e in self.failures],
            "nondeterministic": [e.as_dict() for e in self.nondeterministic],
        }
        optional = {
            "batch_dependent": None if self.batch_dependent is None else [e.as_dict() for e in self.batch_dependent]
        }
        return _with(known, optional, self.extra)

    def to_json(self) -> str:
        """The file's text: keys sorted, indented by one (as every version has written it)."""
        return json.dumps(self.as_dict(), indent=1, sort_keys=True)

    # -- questions and changes --------------------------------------------------------------------
    def output_names(self, model_sha: str) -> list[str]:
        """A model's output names in graph order ([] for a model the manifest does not hold)."""
        m = self.models.get(model_sha)
        return m.output_names if m is not None else []

    def batch_dependent_list(self) -> list[PlatformNote]:
        """``batch_dependent``, created (and written from now on) when absent."""
        if self.batch_dependent is None:
            self.batch_dependent = []
        return self.batch_dependent
