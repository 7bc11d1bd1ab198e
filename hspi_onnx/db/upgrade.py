"""``hspi db upgrade``: rewrite a schema-1 reference DB (one output per model) as schema 2.

Every shard gains the ``output_name`` column (the model's one output, as the manifest names
it), written to a temporary name and renamed over the old shard; the manifest's models gain
their ``outputs`` and the schema number changes last, under the DB's lock. Digests do not
change (they never covered the name), so an index or a classifier built before stays valid.
A run that is killed part-way leaves a DB whose rewritten shards are read as schema 2 once the
upgrade is run again to the end.
"""

from __future__ import annotations

import os

from hspi_onnx.db.manifest import Manifest
from hspi_onnx.db.store import SCHEMA_VERSION, ReferenceDB, arrow_schema


def upgrade(db: ReferenceDB, on_shard=lambda: None) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = db.manifest()
    if manifest.schema == SCHEMA_VERSION:
        return {"db": str(db.root), "from": SCHEMA_VERSION, "to": SCHEMA_VERSION, "shards_rewritten": 0}
    names = {sha: m.output or "output" for sha, m in manifest.models.items()}
    target = arrow_schema(SCHEMA_VERSION)
    rewritten = 0
    with db.locked():
        for path in db.shards():
            table = pq.read_table(path)
            if "output_name" not in table.column_names:
                shas = table.column("model_sha256").to_pylist()
                table = table.append_column(
                    "output_name", pa.array([names.get(s, "output") for s in shas], pa.string())
                )
                table = table.select(target.names).cast(target)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                pq.write_table(table, tmp, compression="zstd")
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
                rewritten += 1
            on_shard()

    def bump(m: Manifest) -> None:
        for sha, model in m.models.items():
            if model.outputs is None:
                model.outputs = [{"name": names.get(sha, "output"), "dtype": "", "shape": []}]
        m.schema = SCHEMA_VERSION

    db.update(bump)
    return {"db": str(db.root), "from": manifest.schema, "to": SCHEMA_VERSION, "shards_rewritten": rewritten}
