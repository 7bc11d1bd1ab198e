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
from hspi_onnx.db.manifest import Manifest
from hspi_onnx.errors import HspiError
from hspi_onnx.safenpz import read_npz, save_npz

CACHE_FORMAT = "hspi-reference/2"


def _cache_path(model_sha: str, probes_sha: str) -> Path:
    return cache_dir("reference") / f"{model_sha[:16]}-{probes_sha[:16]}.npz"


def recover_inputs(manifest: Manifest, model_sha: str, probes_sha: str):
    """(ModelInfo, ProbeSet) matching the DB's hashes, or raise HspiError saying why not."""
    from hspi_onnx.inputs.model import model_at_hand
    from hspi_onnx.inputs.probes import generate

    m = manifest.models.get(model_sha)
    p = manifest.probe_sets.get(probes_sha)
    if m is None or p is None:
        raise HspiError("the manifest does not describe this model or probe set")
    info = model_at_hand(m.path, m.zoo, model_sha)
    if info is None:
        raise HspiError(f"model {m.name!r} with sha256 {model_sha[:12]} is not at hand")
    try:
        probes = generate(info, p.kind, n=p.n, seed=p.seed, split=p.split, dims=dict(p.dims or {}))
    except (HspiError, KeyError, TypeError, ValueError):
        probes = None
    if probes is None or probes.sha256 != probes_sha:
        raise HspiError(f"probe set {p.name!r} cannot be regenerated (read from a file?)")
    return info, probes


def float64_outputs(manifest: Manifest, model_sha: str, probes_sha: str, output: str) -> tuple[np.ndarray, np.ndarray]:
    """(probe ids, float64 values of ``output``) of the DB's model on its probe set; every
    output is computed at once and cached."""
    path = _cache_path(model_sha, probes_sha)
    if path.is_file():
        arrays, meta = read_npz(path, {"ids"}, "cached reference", pattern=r"output_\d{1,2}")
        names = meta.get("outputs", [])
        if (
            meta.get("format") == CACHE_FORMAT
            and meta.get("model_sha256") == model_sha
            and meta.get("probes_sha256") == probes_sha
            and output in names
        ):
            return arrays["ids"], arrays[f"output_{names.index(output)}"]
    info, probes = recover_inputs(manifest, model_sha, probes_sha)
    if output not in info.output_names:
        raise HspiError(f"model {info.name} has no output {output!r}")
    from hspi_onnx.graph.float64 import compute_float64

    ref, source = compute_float64(info, probes.inputs)
    save_npz(
        path,
        {
            "format": CACHE_FORMAT,
            "model_sha256": model_sha,
            "probes_sha256": probes_sha,
            "source": source,
            "outputs": list(ref),
        },
        ids=probes.ids,
        **{f"output_{i}": v for i, v in enumerate(ref.values())},
    )
    return probes.ids, ref[output]


def reference_for(
    manifest: Manifest, model_sha: str, probes_sha: str, ids: np.ndarray, output: str, warn=lambda msg: None
) -> np.ndarray | None:
    """float64 values of ``output`` for ``ids`` or None (with a warning) when they cannot be computed."""
    try:
        ref_ids, ref = float64_outputs(manifest, model_sha, probes_sha, output)
    except HspiError as exc:
        warn(f"no float64 reference ({exc}); features that need it are left out")
        return None
    pos = {int(i): k for k, i in enumerate(ref_ids)}
    if any(int(i) not in pos for i in ids):
        warn("float64 reference lacks some probe ids; features that need it are left out")
        return None
    return ref[[pos[int(i)] for i in ids]]
