"""The reference DB: a directory with ``manifest.json`` and Parquet shards.

One shard per (model, probe set, platform, run), one row per probe, self-describing (every
row carries the model, probe set and platform), written to a temporary name and renamed into
place. A build registers its models, probe sets, platforms and run in the manifest *before*
writing shards, so every shard on disk is described by the manifest whenever the build is
killed. Manifest updates take an exclusive lock on ``DB/.lock``, so concurrent builds into one
directory both land. Schema: docs/db.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path

from hspi_onnx.errors import HspiError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"

COLUMNS = [
    ("model_sha256", "string"), ("model_name", "string"), ("probes_sha256", "string"),
    ("probes_name", "string"), ("probe_id", "int64"), ("platform", "string"), ("runtime", "string"),
    ("runtime_version", "string"), ("device", "string"), ("precision", "string"), ("knobs", "string"),
    ("dtype", "string"), ("shape", "list<int64>"), ("output", "binary"), ("digest", "digest16"),
    ("run_id", "string"), ("deterministic", "bool"), ("host", "string"),
]


def arrow_schema():
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "binary": pa.binary(), "bool": pa.bool_(),
             "list<int64>": pa.list_(pa.int64()), "digest16": pa.binary(16)}
    return pa.schema([(name, types[t]) for name, t in COLUMNS])


def platform_key(label: str) -> str:
    return hashlib.blake2b(label.encode(), digest_size=8).hexdigest()


class ReferenceDB:
    def __init__(self, root: str | Path, create: bool = False) -> None:
        self.root = Path(root)
        if create:
            (self.root / "shards").mkdir(parents=True, exist_ok=True)
            with self.locked():
                if not self.manifest_path.exists():
                    self._write_manifest(empty_manifest())
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

    def manifest(self) -> dict:
        try:
            data = json.loads(self.manifest_path.read_text("utf-8"))
        except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise HspiError(f"manifest of {str(self.root)!r} is unreadable ({type(exc).__name__})")
        if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
            raise HspiError(f"manifest of {str(self.root)!r} is not schema version {SCHEMA_VERSION}")
        return data

    def _write_manifest(self, data: dict) -> None:
        tmp = self.root / f".{MANIFEST}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), "utf-8")
        os.replace(tmp, self.manifest_path)

    def update(self, change) -> dict:
        """Apply ``change(manifest)`` under the lock and write the result atomically."""
        with self.locked():
            data = self.manifest()
            change(data)
            self._write_manifest(data)
            return data

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
        if self.shards():
            con.execute(f"CREATE VIEW outputs AS SELECT * FROM read_parquet('{_sql_str(self.glob())}')")
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
    return {"string": "VARCHAR", "int64": "BIGINT", "binary": "BLOB", "bool": "BOOLEAN",
            "list<int64>": "BIGINT[]", "digest16": "BLOB"}[t]


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


def empty_manifest() -> dict:
    return {"schema": SCHEMA_VERSION, "models": {}, "probe_sets": {}, "platforms": {}, "runs": {},
            "failures": [], "nondeterministic": []}
