"""The exact-lookup index of a reference DB: every output digest, sorted, with its platform,
probe and (model, probe set), so a suspect output is found by binary search, not by a scan.

Stored in ``DB/index/`` as plain ``.npy`` arrays (memory-mapped when read, never pickled) and
``index.json`` (platform labels, groups, and the digest of the shard set it was built from).
It is rebuilt automatically when the shard set changes: the index records the modification
times of the shard directories (a shard written, renamed into place or deleted changes its
directory's), so checking freshness costs one ``stat`` per (model, probe set), not per shard.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.errors import HspiError

FORMAT = "hspi-index/3"
ARRAYS = ("digest", "platform", "probe", "group", "output")


@dataclass
class IndexGroup:
    model_sha256: str
    model_name: str
    probes_sha256: str
    probes_name: str
    outputs: list[str]  # output names, in the model's order
    shapes: list[list[int]]  # per output, one probe's shape
    dtypes: list[list[str]]  # per output, the dtypes DB platforms returned
    ids: list[int]  # probe ids of the group, sorted
    platforms: list[str]  # labels with outputs in the group, sorted

    def output_index(self, name: str) -> int:
        return self.outputs.index(name)


@dataclass
class DigestIndex:
    platforms: list[str]
    groups: list[IndexGroup]
    digest: np.ndarray  # (N,) S16, sorted
    platform: np.ndarray  # (N,) int32 into platforms
    probe: np.ndarray  # (N,) int64
    group: np.ndarray  # (N,) int32 into groups
    output: np.ndarray  # (N,) int32 into the group's outputs

    def lookup(self, group: int, probe_id: int, digest_hex: str, output: int = 0) -> set[str]:
        """Labels of the platforms whose output ``output`` (an index into the group's outputs)
        on ``probe_id`` of ``group`` has this digest."""
        key = np.frombuffer(bytes.fromhex(digest_hex), dtype="S16")[0]
        lo = int(np.searchsorted(self.digest, key, side="left"))
        hi = int(np.searchsorted(self.digest, key, side="right"))
        if lo == hi:
            return set()
        sel = slice(lo, hi)
        ok = (self.group[sel] == group) & (self.probe[sel] == probe_id) & (self.output[sel] == output)
        return {self.platforms[int(p)] for p in self.platform[sel][ok]}

    def platforms_of(self, group: int) -> list[str]:
        return self.groups[group].platforms


def _dir(db: ReferenceDB) -> Path:
    return db.root / "index"


def shard_dirs_signature(db: ReferenceDB) -> str:
    """Modification times of the DB's shard directories: changes whenever a shard comes or goes."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for d in sorted(db.root.glob("shards/*/*")):
        if d.is_dir():
            h.update(f"{d.relative_to(db.root)}:{d.stat().st_mtime_ns}\n".encode())
    return h.hexdigest()


def build_index(db: ReferenceDB, on_shard=lambda: None) -> None:
    """Read the digest column of every shard and write the sorted index."""
    signature = shard_dirs_signature(db)
    manifest = db.manifest()
    labels: dict[str, int] = {}
    groups: dict[tuple[str, str], int] = {}
    ginfo: list[IndexGroup] = []
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ARRAYS}
    ids_of: dict[int, set[int]] = {}
    labels_of: dict[int, set[str]] = {}
    for path in db.shards():
        t = db.read_shard(
            path,
            columns=[
                "model_sha256",
                "model_name",
                "probes_sha256",
                "probes_name",
                "probe_id",
                "output_name",
                "platform",
                "dtype",
                "shape",
                "digest",
            ],
        )
        on_shard()
        if t.num_rows == 0:
            continue
        first = {
            c: t.column(c)[0].as_py()
            for c in ("model_sha256", "model_name", "probes_sha256", "probes_name", "platform")
        }
        key = (first["model_sha256"], first["probes_sha256"])
        if key not in groups:
            groups[key] = len(ginfo)
            names = manifest.output_names(key[0])
            ginfo.append(
                IndexGroup(
                    key[0],
                    first["model_name"],
                    key[1],
                    first["probes_name"],
                    names,
                    [[] for _ in names],
                    [[] for _ in names],
                    [],
                    [],
                )
            )
        k = groups[key]
        g = ginfo[k]
        enc = t.column("output_name").combine_chunks().dictionary_encode()
        codes = enc.indices.to_numpy(zero_copy_only=False)
        remap = np.empty(len(enc.dictionary), dtype=np.int32)
        for code, name in enumerate(enc.dictionary.to_pylist()):
            if name not in g.outputs:  # a model the manifest lists no outputs for
                g.outputs.append(name)
                g.shapes.append([])
                g.dtypes.append([])
            j = remap[code] = g.outputs.index(name)
            row = int(np.flatnonzero(codes == code)[0])
            dtype = t.column("dtype")[row].as_py()
            if dtype not in g.dtypes[j]:
                g.dtypes[j].append(dtype)
            if not g.shapes[j]:
                g.shapes[j] = list(t.column("shape")[row].as_py())
        out_idx = remap[codes]
        ids = t.column("probe_id").to_numpy()
        ids_of.setdefault(k, set()).update(int(i) for i in ids)
        labels_of.setdefault(k, set()).add(first["platform"])
        pid = labels.setdefault(first["platform"], len(labels))
        parts["digest"].append(np.array(t.column("digest").to_pylist(), dtype="S16"))
        parts["probe"].append(ids.astype(np.int64))
        parts["platform"].append(np.full(t.num_rows, pid, dtype=np.int32))
        parts["group"].append(np.full(t.num_rows, k, dtype=np.int32))
        parts["output"].append(out_idx)
    if not ginfo:
        raise HspiError(f"the reference DB {str(db.root)!r} holds no shards; run `hspi db build` first")
    for k, g in enumerate(ginfo):
        g.ids, g.platforms = sorted(ids_of[k]), sorted(labels_of[k])
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    # repeated runs of one platform add identical rows: keep one
    order = np.lexsort((arrays["platform"], arrays["output"], arrays["probe"], arrays["group"], arrays["digest"]))
    arrays = {k: v[order] for k, v in arrays.items()}
    same = np.ones(len(order), dtype=bool)
    for col in ARRAYS:
        same[1:] &= arrays[col][1:] == arrays[col][:-1]
    same[0] = False
    arrays = {k: v[~same] for k, v in arrays.items()}
    out = _dir(db)
    out.mkdir(exist_ok=True)
    tag = f"{os.getpid()}"
    for col, v in arrays.items():
        tmp = out / f".{col}.{tag}.npy"
        np.save(tmp, v, allow_pickle=False)
        os.replace(tmp, out / f"{col}.npy")
    meta = {
        "format": FORMAT,
        "shards": signature,
        "platforms": list(labels),
        "groups": [vars(g) for g in ginfo],
        "rows": int(len(arrays["digest"])),
    }
    tmp = out / f".index.json.{tag}"
    tmp.write_text(json.dumps(meta), "utf-8")
    os.replace(tmp, out / "index.json")


def load_index(db: ReferenceDB, rebuild: bool = True, on_shard=lambda: None) -> DigestIndex:
    """The DB's index, (re)built first when missing or stale."""
    meta = _read_meta(db)
    if meta is None or meta.get("shards") != shard_dirs_signature(db):
        if not rebuild:
            raise HspiError("the DB's digest index is missing or stale; run `hspi db index`")
        with db.locked():
            meta = _read_meta(db)
            if meta is None or meta.get("shards") != shard_dirs_signature(db):
                build_index(db, on_shard)
                meta = _read_meta(db)
    if meta is None:  # written just now, yet unreadable
        raise HspiError(f"the DB's digest index is unreadable; delete {_dir(db)} to rebuild it")
    try:
        arrays = {k: np.load(_dir(db) / f"{k}.npy", mmap_mode="r", allow_pickle=False) for k in ARRAYS}
    except (OSError, ValueError) as exc:
        raise HspiError(f"the DB's digest index is unreadable ({type(exc).__name__}); delete {_dir(db)} to rebuild it")
    if len({len(a) for a in arrays.values()}) != 1 or len(arrays["digest"]) != meta.get("rows"):
        raise HspiError(f"the DB's digest index is inconsistent; delete {_dir(db)} to rebuild it")
    groups = [IndexGroup(**g) for g in meta["groups"]]
    return DigestIndex(list(meta["platforms"]), groups, **arrays)


def _read_meta(db: ReferenceDB) -> dict | None:
    path = _dir(db) / "index.json"
    try:
        meta = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None
