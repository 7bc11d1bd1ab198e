"""The float64 reference of a (model, probe set) in a reference DB, computed by the tool itself.

White-box: the tool holds the model and regenerates the probes from the probe set's recorded
kind, size and seed, checks both against the DB's hashes, and runs the ONNX graph in float64
with ONNX's reference evaluator (PyTorch in float64 where the evaluator cannot). The
result is cached under ``HSPI_CACHE/reference``. When the model or probes cannot be recovered
(a user's ONNX file moved, a probe set read from a file) the reference is absent and the
features that need it are NaN: the classifier still works on the others.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hspi_onnx.cache import cache_dir
from hspi_onnx.errors import HspiError
from hspi_onnx.safenpz import read_npz, save_npz



def _cache_path(model_sha: str, probes_sha: str) -> Path:
    return cache_dir("reference") / f"{model_sha[:16]}-{probes_sha[:16]}.npz"


def recover_inputs(manifest: dict, model_sha: str, probes_sha: str):
    """(ModelInfo, ProbeSet) matching the DB's hashes, or raise HspiError saying why not."""
    from hspi_onnx.inputs.model import open_model, resolve_model
    from hspi_onnx.inputs.probes import generate

    m = manifest["models"].get(model_sha)
    p = manifest["probe_sets"].get(probes_sha)
    if m is None or p is None:
        raise HspiError("the manifest does not describe this model or probe set")
    info = None
    for opener, ref in ((open_model, m.get("path")), (resolve_model, m.get("zoo"))):
        if info is None and ref and (opener is resolve_model or Path(ref).is_file()):
            try:
                got = opener(ref)
            except HspiError:
                continue
            info = got if got.sha256 == model_sha else None
    if info is None:
        raise HspiError(f"model {m.get('name')!r} with sha256 {model_sha[:12]} is not at hand")
    probes = generate(info.spec, p["kind"], n=int(p["n"]), seed=int(p["seed"]), split=p["split"])
    if probes.sha256 != probes_sha:
        raise HspiError(f"probe set {p.get('name')!r} cannot be regenerated (read from a file?)")
    return info, probes


def float64_outputs(manifest: dict, model_sha: str, probes_sha: str) -> tuple[np.ndarray, np.ndarray]:
    """(probe ids, float64 outputs) of the DB's model on its probe set, cached."""
    path = _cache_path(model_sha, probes_sha)
    if path.is_file():
        arrays, meta = read_npz(path, {"ids", "outputs"}, "cached reference")
        if (meta.get("model_sha256") == model_sha and meta.get("probes_sha256") == probes_sha
                and meta.get("source") in ("onnxref-fp64", "pytorch-fp64")):
            return arrays["ids"], arrays["outputs"]
    info, probes = recover_inputs(manifest, model_sha, probes_sha)
    from hspi_onnx.graph.float64 import compute_float64

    ref, source = compute_float64(info, probes.inputs)
    save_npz(path, {"model_sha256": model_sha, "probes_sha256": probes_sha, "source": source},
             ids=probes.ids, outputs=ref)
    return probes.ids, ref


def reference_for(manifest: dict, model_sha: str, probes_sha: str, ids: np.ndarray,
                  warn=lambda msg: None) -> np.ndarray | None:
    """float64 outputs for ``ids`` or None (with a warning) when they cannot be computed."""
    try:
        ref_ids, ref = float64_outputs(manifest, model_sha, probes_sha)
    except HspiError as exc:
        warn(f"no float64 reference ({exc}); features that need it are left out")
        return None
    pos = {int(i): k for k, i in enumerate(ref_ids)}
    if any(int(i) not in pos for i in ids):
        warn("float64 reference lacks some probe ids; features that need it are left out")
        return None
    return ref[[pos[int(i)] for i in ids]]
