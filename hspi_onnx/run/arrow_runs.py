"""A platform's run as an Arrow IPC stream, the bytes a cluster node sends its driver: probe
ids, one fixed-width binary column per output (each row the raw bytes of its values, bfloat16 as
its storage integers), the run's facts as JSON in the schema metadata. Reading checks ids,
output names, widths and dtypes; anything unreadable is an :class:`HspiError`.
"""

from __future__ import annotations

import json

import numpy as np

from hspi_onnx.errors import HspiError
from hspi_onnx.outputs import STORAGE, RunResult, from_storage, to_storage


def result_stream(result: RunResult | None, node: str, error: str | None = None) -> bytes:
    """A run's outputs as an Arrow IPC stream: probe ids, one fixed-width binary column per
    output (each row the raw bytes of its values), the rest in the schema's metadata."""
    import pyarrow as pa

    meta: dict = {"node": node, "error": error}
    cols = {}
    if result is not None:
        meta |= {
            "platform": result.platform,
            "seconds": result.seconds,
            "host": result.host,
            "repeats": result.repeats,
            "batch_independent": result.batch_independent,
            "outputs": [],
        }
        n = len(result.ids)
        cols["probe_id"] = pa.array(np.asarray(result.ids, dtype=np.int64))
        for i, (name, values) in enumerate(result.outputs.items()):
            stored = to_storage(values)
            width = stored.nbytes // n if n else 0
            meta["outputs"].append({"name": name, "dtype": str(values.dtype), "shape": list(values.shape[1:])})
            cols[f"output_{i}"] = pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(width), n, [None, pa.py_buffer(stored.tobytes())]
            )
    table = pa.table(cols).replace_schema_metadata({"hspi": json.dumps(meta)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def read_result(blob: bytes, model, probes) -> tuple[dict, RunResult | None]:
    """(metadata, RunResult or None for an error record) from :func:`result_stream`'s bytes,
    checked against the model's outputs and the probe ids."""
    import pyarrow as pa

    try:
        return _decode(pa.ipc.open_stream(blob).read_all(), model, probes)
    except HspiError:
        raise
    except (pa.ArrowException, OSError, KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise HspiError(f"a node sent an unreadable result ({type(exc).__name__}: {str(exc)[:200]})") from None


def _decode(table, model, probes) -> tuple[dict, RunResult | None]:
    meta = json.loads(table.schema.metadata[b"hspi"])
    if meta.get("error"):
        return meta, None
    ids = table.column("probe_id").to_numpy()
    if not np.array_equal(ids, probes.ids):
        raise HspiError(f"{meta.get('platform')}: the node returned other probe ids")
    outputs = {}
    specs = meta["outputs"]
    if [s["name"] for s in specs] != model.output_names:
        raise HspiError(f"{meta.get('platform')}: the node returned outputs {[s['name'] for s in specs]}")
    for i, spec in enumerate(specs):
        col = table.column(f"output_{i}").combine_chunks()
        shape = tuple(int(x) for x in spec["shape"])
        storage = np.dtype(STORAGE.get(spec["dtype"], spec["dtype"]))
        count = len(ids) * int(np.prod(shape, dtype=np.int64))
        width = col.type.byte_width
        if width != storage.itemsize * int(np.prod(shape, dtype=np.int64)) or len(col) != len(ids):
            raise HspiError(
                f"{meta.get('platform')}: output {spec['name']!r} rows of {width} bytes do not fit "
                f"{spec['dtype']} {shape} ({len(ids)} probes, {len(col)} rows)"
            )
        raw = np.frombuffer(col.buffers()[1], dtype=storage, count=count, offset=col.offset * width)
        outputs[spec["name"]] = from_storage(raw.reshape((len(ids), *shape)).copy(), spec["dtype"])
    result = RunResult(
        str(meta["platform"]),
        model.sha256,
        model.name,
        probes.name,
        probes.sha256,
        probes.ids.copy(),
        outputs,
        float(meta["seconds"]),
        dict(meta["host"], ray_node=meta["node"]),
        repeats=meta["repeats"],
        batch_independent=meta["batch_independent"],
    )
    return meta, result
