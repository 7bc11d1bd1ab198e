"""The reference DB: a directory with ``manifest.json`` and Parquet shards.

One shard per (model, probe set, platform, run), one row per (output, probe), self-describing
(every row carries the model, probe set, output name and platform), written to a temporary name and renamed into
place. A build registers its models, probe sets, platforms and run in the manifest *before*
writing shards, so every shard on disk is described by the manifest whenever the build is
killed. Manifest updates take an exclusive lock on ``DB/.lock``, so concurrent builds into one
directory both land; the manifest's records are :mod:`hspi_onnx.db.manifest`. Schema: docs/db.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from hspi_onnx.db.manifest import SCHEMA_VERSION, Manifest
from hspi_onnx.errors import BadManifestError, HspiError

MANIFEST = "manifest.json"

COLUMNS = [
    ("model_sha256", "string"),
    ("model_name", "string"),
    ("probes_sha256", "string"),
    ("probes_name", "string"),
    ("probe_id", "int64"),
    ("output_name", "string"),
    ("platform", "string"),
    ("runtime", "string"),
    ("runtime_version", "string"),
    ("device", "string"),
    ("precision", "string"),
    ("knobs", "string"),
    ("dtype", "string"),
    ("shape", "list<int64>"),
    ("output", "binary"),
    ("digest", "digest16"),
    ("run_id", "string"),
    ("deterministic", "bool"),
    ("host", "string"),
]
COLUMNS_V1 = [c for c in COLUMNS if c[0] != "output_name"]


def arrow_schema(version: int = SCHEMA_VERSION):
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "int64": pa.int64(),
        "binary": pa.binary(),
        "bool": pa.bool_(),
        "list<int64>": pa.list_(pa.int64()),
        "digest16": pa.binary(16),
    }
    return pa.schema([(name, types[t]) for name, t in (COLUMNS if version >= 2 else COLUMNS_V1)])


def platform_key(label: str) -> str:
    return hashlib.blake2b(label.encode(), digest_size=8).hexdigest()


class ReferenceDB:
    def __init__(self, root: str | Path, create: bool = False) -> None:
        self.root = Path(root)
        self._schema: int | None = None
        self._v1_names: dict[str, str] | None = None
        if create:
            (self.root / "shards").mkdir(parents=True, exist_ok=True)
            with self.locked():
                if not self.manifest_path.exists():
                    self._write_manifest(Manifest())
        elif not self.manifest_path.is_file():
            raise HspiError(f"{str(self.root)!r} is not a reference DB (no {MANIFEST})")

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    # -- manifest -------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def manifest(self) -> Manifest:
        """The manifest as it is on disk now, checked (:class:`BadManifestError` names what is wrong)."""
        where = f"manifest of {str(self.root)!r}"
        try:
            text = self.manifest_path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BadManifestError(f"{where} is unreadable ({type(exc).__name__})") from None
        return Manifest.from_json(text, where)

    @property
    def schema(self) -> int:
        if self._schema is None:
            self._schema = self.manifest().schema
        return self._schema

    def require_writable(self) -> None:
        """Builds and merges write schema-2 shards; a schema-1 DB must be upgraded first."""
        if self.schema != SCHEMA_VERSION:
            raise HspiError(
                f"the reference DB {str(self.root)!r} is schema {self.schema} (one output per model); "
                f"run `hspi db upgrade --db {self.root}` to rewrite it as schema {SCHEMA_VERSION} first"
            )

    def v1_output_names(self) -> dict[str, str]:
        """Schema 1: model sha256 -> the name of its one stored output (the manifest's ``output``)."""
        if self._v1_names is None:
            self._v1_names = {sha: m.output or "output" for sha, m in self.manifest().models.items()}
        return self._v1_names

    def read_shard(self, path: Path, columns: list[str] | None = None, filters=None):
        """One shard as a pyarrow table in the current schema (schema-1 shards get their
        ``output_name`` from the manifest)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.schema >= 2:
            return pq.read_table(path, columns=columns, filters=filters)
        want = columns or [c for c, _ in COLUMNS]
        base = [c for c in want if c != "output_name"]
        need = base if "model_sha256" in base else base + ["model_sha256"]
        t = pq.read_table(path, columns=need, filters=filters)
        if "output_name" in want:
            names = self.v1_output_names()
            shas = t.column("model_sha256").to_pylist()
            t = t.append_column("output_name", pa.array([names.get(s, "output") for s in shas], pa.string()))
        return t.select(want)

    def _write_manifest(self, manifest: Manifest) -> None:
        tmp = self.root / f".{MANIFEST}.{os.getpid()}.tmp"
        tmp.write_text(manifest.to_json(), "utf-8")
        os.replace(tmp, self.manifest_path)
        self._schema, self._v1_names = manifest.schema, None

    def update(self, change: Callable[[Manifest], object]) -> Manifest:
        """Apply ``change(manifest)`` (it changes the records in place) under the lock and write
        the result atomically."""
        with self.locked():
            manifest = self.manifest()
            change(manifest)
            self._write_manifest(manifest)
            return manifest

    # -- shards ---------------------------------------------------------------------------
    def shard_dir(self, model_sha: str, probes_sha: str) -> Path:
        return self.root / "shards" / model_sha[:16] / probes_sha[:16]

    def shard_path(self, model_sha: str, probes_sha: str, label: str, run_id: str) -> Path:
        return self.shard_dir(model_sha, probes_sha) / f"{platform_key(label)}.{run_id}.parquet"

    def existing_shards(self, model_sha: str, probes_sha: str, label: str) -> list[Path]:
        return sorted(self.shard_dir(model_sha, probes_sha).glob(f"{platform_key(label)}.*.parquet"))

    def shards(self) -> list[Path]:
        return sorted(p for p in (self.root / "shards").glob("*/*/*.parquet") if not p.name.startswith("."))

    def write_shard(self, path: Path, table) -> None:
        import pyarrow.parquet as pq

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def clean_stale_temporaries(self) -> int:
        """Remove temporaries left by builds that died (their pid is gone)."""
        removed = 0
        for tmp in (self.root / "shards").glob("*/*/.*.tmp"):
            pid = tmp.name.rsplit(".", 2)[-2]
            if pid.isdigit() and not _alive(int(pid)):
                tmp.unlink(missing_ok=True)
                removed += 1
        return removed

    def glob(self) -> str:
        return str(self.root / "shards" / "*" / "*" / "*.parquet")

    def connect(self):
        """A DuckDB connection with the view ``outputs`` over every shard."""
        import duckdb

        con = duckdb.connect()
        if self.shards() and self.schema >= 2:
            con.execute(f"CREATE VIEW outputs AS SELECT * FROM read_parquet('{_sql_str(self.glob())}')")
        elif self.shards():  # schema 1: the one output of each model is named by the manifest
            cases = " ".join(f"WHEN '{_sql_str(s)}' THEN '{_sql_str(n)}'" for s, n in self.v1_output_names().items())
            cols = ", ".join(
                c if c != "output_name" else f"CASE model_sha256 {cases} ELSE 'output' END AS output_name"
                for c, _ in COLUMNS
            )
            con.execute(f"CREATE VIEW outputs AS SELECT {cols} FROM read_parquet('{_sql_str(self.glob())}')")
        else:
            cols = ", ".join(f"NULL::{_duck(t)} AS {n}" for n, t in COLUMNS)
            con.execute(f"CREATE VIEW outputs AS SELECT {cols} WHERE false")
        return con


def db_digest(db) -> str:
    """A digest of a reference DB's shard set (names and sizes): which data a classifier saw."""
    h = hashlib.blake2b(digest_size=16)
    for p in db.shards():
        h.update(f"{p.relative_to(db.root)}:{p.stat().st_size}\n".encode())
    return h.hexdigest()


def _duck(t: str) -> str:
    return {
        "string": "VARCHAR",
        "int64": "BIGINT",
        "binary": "BLOB",
        "bool": "BOOLEAN",
        "list<int64>": "BIGINT[]",
        "digest16": "BLOB",
    }[t]


def _sql_str(s: str) -> str:
    return s.replace("'", "''")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
