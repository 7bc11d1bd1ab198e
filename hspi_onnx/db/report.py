"""Reports over a reference DB: info, equivalence classes, verification."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np

from hspi_onnx.db.generations import is_generation, pairwise
from hspi_onnx.db.store import ReferenceDB, arrow_schema, platform_key
from hspi_onnx.outputs import digest


def info(db: ReferenceDB) -> dict:
    manifest = db.manifest()
    con = db.connect()
    rows = con.execute("""
        SELECT model_name, model_sha256, probes_name, probes_sha256, count(DISTINCT platform) AS platforms,
               count(*) AS rows, sum(octet_length(output)) AS output_bytes, list(DISTINCT output_name ORDER BY output_name)
        FROM outputs GROUP BY ALL ORDER BY model_name, probes_name""").fetchall()
    shards = db.shards()
    return {
        "db": str(db.root),
        "schema": manifest.schema,
        "groups": [
            dict(
                zip(
                    (
                        "model",
                        "model_sha256",
                        "probes",
                        "probes_sha256",
                        "platforms",
                        "rows",
                        "output_bytes",
                        "outputs",
                    ),
                    r,
                )
            )
            for r in rows
        ],
        "models": len(manifest.models),
        "probe_sets": len(manifest.probe_sets),
        "platforms": len({p for g in _platforms_by_group(con).values() for p in g}),
        "rows": sum(r[5] for r in rows),
        "shards": len(shards),
        "bytes_on_disk": sum(p.stat().st_size for p in shards) + db.manifest_path.stat().st_size,
        "runs": len(manifest.runs),
        "failures": len(manifest.failures),
        "nondeterministic": len(manifest.nondeterministic),
    }


def _platforms_by_group(con) -> dict:
    out = defaultdict(set)
    for m, p, plat in con.execute("SELECT DISTINCT model_sha256, probes_sha256, platform FROM outputs").fetchall():
        out[(m, p)].add(plat)
    return out


def classes(db: ReferenceDB) -> list[dict]:
    """Per (model, probe set): platforms grouped by bit-identical outputs on every probe, and
    for each pair of classes the fraction of probes whose outputs differ. A platform is marked
    not repeatable where its runs in the DB differ or the manifest records it so (its repeat
    sample, or another machine, gave other bits)."""
    con = db.connect()
    data = con.execute("""
        SELECT model_name, model_sha256, probes_name, probes_sha256, platform, probe_id, output_name,
               hex(min(digest)), count(DISTINCT digest)
        FROM outputs GROUP BY ALL ORDER BY model_sha256, probes_sha256, platform, probe_id, output_name""").fetchall()
    groups: dict[tuple, dict] = {}
    for model, msha, probes, psha, plat, pid, out, dig, ndig in data:
        g = groups.setdefault(
            (msha, psha),
            {
                "model": model,
                "model_sha256": msha,
                "probes": probes,
                "probes_sha256": psha,
                "rows": defaultdict(dict),
                "unstable": set(),
                "outputs": set(),
            },
        )
        g["rows"][plat][(pid, out)] = dig
        g["outputs"].add(out)
        if ndig > 1:
            g["unstable"].add(plat)
    for e in db.manifest().nondeterministic:  # a repeat or another machine that gave other bits
        found = groups.get((e.model_sha256, e.probes_sha256))
        if found is not None and e.platform in found["rows"]:
            found["unstable"].add(e.platform)
    out = []
    for g in groups.values():
        platforms = sorted(g["rows"])
        ids = sorted({pid for r in g["rows"].values() for pid in r})
        codes: dict[str, int] = {}
        mat = np.array([[codes.setdefault(g["rows"][p].get(i, ""), len(codes)) for i in ids] for p in platforms])
        keys, inverse = np.unique(mat, axis=0, return_inverse=True)
        members = defaultdict(list)
        for p, k in zip(platforms, inverse.reshape(-1)):
            members[int(k)].append(p)
        order = sorted(members, key=lambda k: (-len(members[k]), members[k][0]))
        sep = [[float(np.mean(keys[a] != keys[b])) for b in order] for a in order]
        extra = {}
        if is_generation(g["outputs"]):  # a language model: where each pair of classes parts
            probe_ids = sorted({pid for pid, _ in ids})
            extra["pairs"] = pairwise(db, g["model_sha256"], g["probes_sha256"], probe_ids, [members[k] for k in order])
        out.append(
            {k: g[k] for k in ("model", "model_sha256", "probes", "probes_sha256")}
            | {
                "n_probes": len({pid for pid, _ in ids}),
                "outputs": sorted(g["outputs"]),
                "n_platforms": len(platforms),
                "classes": [
                    {"id": i, "platforms": members[k], "nondeterministic": sorted(set(members[k]) & g["unstable"])}
                    for i, k in enumerate(order)
                ],
                "separation": sep,
            }
            | extra
        )
    return out


def unmeasured_knobs(label: str) -> list[str]:
    """The measured knobs ``label``'s adapter puts in labels today that ``label`` lacks: a DB built
    before labels carried measured kernel state (its outputs stay valid; its labels say less)."""
    from hspi_onnx.labels import Platform
    from hspi_onnx.run.adapter import registry

    plat = Platform.parse(label)
    adapter = registry().get(plat.runtime)
    return [k for k in (adapter.labelled_for(plat) if adapter is not None else ()) if k not in plat.knob]


def measured_state_problems(label: str, hosts: set[str]) -> list[str]:
    """What is wrong between a shard's label and the kernel state its run measured (recorded in
    the rows' host facts): a measured knob whose value the run did not measure."""
    from hspi_onnx.labels import Platform
    from hspi_onnx.run.adapter import registry

    if len(hosts) != 1:
        return ["rows of one run record several hosts"]
    try:
        host = json.loads(next(iter(hosts)))
    except ValueError:
        return ["host facts are not JSON"]
    plat = Platform.parse(label)
    adapter = registry().get(plat.runtime)
    names = adapter.labelled_for(plat) if adapter is not None else ()
    measured = host.get("kernels", {}) if isinstance(host, dict) else {}
    wrong = [
        f"{k}={plat.knob[k]} but the run measured {measured.get(k, 'nothing')}"
        for k in names
        if k in plat.knob and measured.get(k) != plat.knob[k]
    ]
    return [f"label says {'; '.join(wrong)}"] if wrong else []


def verify(db: ReferenceDB) -> dict:
    """Schema, manifest vs shards, digests recomputed from the stored bytes, the measured kernel
    state each run recorded against its label."""
    import pyarrow.parquet as pq

    problems: list[str] = []
    try:
        manifest = db.manifest()
    except Exception as exc:
        return {"ok": False, "problems": [str(exc)], "shards": 0, "rows": 0}
    schema = arrow_schema(manifest.schema)
    outputs_of = {sha: m.output_names or [m.output] for sha, m in manifest.models.items()}
    rows = 0
    for path in db.shards():
        rel = path.relative_to(db.root)
        try:
            table = pq.read_table(path)
        except Exception as exc:
            problems.append(f"{rel}: unreadable Parquet ({type(exc).__name__})")
            continue
        if not table.schema.equals(schema):
            problems.append(f"{rel}: schema differs from schema version {manifest.schema}")
            continue
        d = table.to_pydict()
        rows += table.num_rows
        if table.num_rows == 0:
            problems.append(f"{rel}: empty shard")
            continue
        for col in ("model_sha256", "probes_sha256", "platform", "run_id"):
            if len(set(d[col])) != 1:
                problems.append(f"{rel}: mixes several values of {col}")
        model, probes, plat, run = d["model_sha256"][0], d["probes_sha256"][0], d["platform"][0], d["run_id"][0]
        if path.name != f"{platform_key(plat)}.{run}.parquet" or path.parent != db.shard_dir(model, probes):
            problems.append(f"{rel}: file name does not match its rows")
        described: tuple[tuple[str, str, dict], ...] = (
            ("model", model, manifest.models),
            ("probe set", probes, manifest.probe_sets),
            ("platform", plat, manifest.platforms),
            ("run", run, manifest.runs),
        )
        for what, key, table_ in described:
            if key not in table_:
                problems.append(f"{rel}: {what} {key[:40]} is not in the manifest")
        probe_set = manifest.probe_sets.get(probes)
        n_expected = probe_set.n if probe_set is not None else None
        outs = d["output_name"] if "output_name" in d else [None] * table.num_rows
        k_expected = len(outputs_of.get(model, [None]))
        if manifest.schema >= 2 and set(outs) != set(outputs_of.get(model, outs)):
            problems.append(f"{rel}: outputs {sorted(set(outs))} are not the model's {outputs_of.get(model)}")
        if len(set(zip(d["probe_id"], outs))) != table.num_rows or (
            n_expected and table.num_rows != n_expected * k_expected
        ):
            problems.append(f"{rel}: probe ids are duplicated or incomplete")
        bad = sum(digest(t, s, o) != g.hex() for t, s, o, g in zip(d["dtype"], d["shape"], d["output"], d["digest"]))
        if bad:
            problems.append(f"{rel}: {bad} of {table.num_rows} outputs fail their digests")
        problems += [f"{rel}: {p}" for p in measured_state_problems(plat, set(d["host"]))]
    unfinished = sorted(r for r, v in manifest.runs.items() if not v.finished)
    unmeasured = {label: missing for label in manifest.platforms if (missing := unmeasured_knobs(label))}
    return {
        "ok": not problems,
        "unmeasured": unmeasured,
        "problems": problems,
        "schema": manifest.schema,
        "shards": len(db.shards()),
        "rows": rows,
        "unfinished_runs": unfinished,
        "stale_temporaries": len(list((db.root / "shards").glob("*/*/.*.tmp"))),
    }
