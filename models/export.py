"""Build zoo models, export them to ONNX (opset 17, dynamic batch axis) and cache the files.

Each export writes ``NAME.onnx`` and ``NAME.weights.npz`` (the state dict as plain arrays,
no pickle). The ONNX metadata records the input description, the zoo name and the weights'
sha256, so the PyTorch adapter can rebuild the exact module. Every export is checked:
``onnx.checker`` passes and ONNX Runtime's output equals the module's within tolerance.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np

from hspi_onnx.errors import BadModelError

from .zoo import ZOO, ZOO_VERSION

OPSET = 17
SEED = 0


def _zoo_module(name: str):
    if name not in ZOO:
        raise BadModelError(f"unknown zoo model {name!r}; zoo models: {', '.join(ZOO)}")
    return importlib.import_module(f"hspi_onnx.models.{ZOO[name].module}")


def build_module(name: str, seed: int = SEED):
    """(torch module in eval mode, input description dict, extra metadata)."""
    module, spec, meta = _zoo_module(name).build(seed)
    spec = {"name": "tokens" if spec["kind"] == "tokens" else "input", **spec}
    return module.eval(), spec, meta


def load_module(name: str, weights: Path, expected_sha256: str | None = None):
    """Rebuild a zoo module's architecture and load its saved weights (no pickle)."""
    import torch

    data = Path(weights).read_bytes()
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise BadModelError(f"weights {str(weights)!r} do not match the ONNX model's record")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            state = {k: torch.from_numpy(npz[k].copy()) for k in npz.files}
    except Exception as exc:
        raise BadModelError(f"cannot read weights {str(weights)!r}: {exc}")
    module = _zoo_module(name).Model()
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BadModelError(f"weights {str(weights)!r} do not fit zoo model {name!r}: {exc}")
    return module.eval()


def example_input(spec: dict, batch: int = 2):
    import torch

    gen = torch.Generator().manual_seed(1234)
    if spec["kind"] == "tokens":
        return torch.randint(0, spec["vocab"], (batch, *spec["shape"]), generator=gen)
    return torch.rand((batch, *spec["shape"]), generator=gen)


def export_model(name: str, out: Path, seed: int = SEED) -> Path:
    import onnx

    out = Path(out)
    if out.is_dir():  # a folder: write NAME.onnx inside it
        out = out / f"{name}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    if ZOO[name].variant_of:  # the base model's export with other generation settings
        return export_variant(name, out)
    if ZOO[name].llm:  # a decoder with a KV cache, exported by its own module
        return _zoo_module(name).export_onnx(out)
    module, spec, meta = build_module(name, seed)
    weights = out.with_suffix(".weights.npz")
    buf = io.BytesIO()
    np.savez(buf, **{k: v.detach().cpu().numpy() for k, v in module.state_dict().items()})
    weights_bytes = buf.getvalue()

    x = example_input(spec)
    onnx_buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore")
        _export(module, x, onnx_buf, spec)
    model = onnx.load_model_from_string(onnx_buf.getvalue())
    props = {
        "hspi.zoo": name,
        "hspi.zoo_version": str(ZOO_VERSION),
        "hspi.seed": str(seed),
        "hspi.input": json.dumps(spec, sort_keys=True),
        "hspi.weights_sha256": hashlib.sha256(weights_bytes).hexdigest(),
        **meta,
    }
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    _check_against_module(data, module, spec)

    for path, payload in ((weights, weights_bytes), (out, data)):  # weights first: .onnx marks done
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, path)
    return out


def _export(module, x, buf, spec: dict) -> None:
    import torch

    torch.onnx.export(
        module,
        (x,),
        buf,
        input_names=[spec["name"]],
        output_names=["logits"],
        opset_version=OPSET,
        dynamo=False,
        do_constant_folding=True,
        dynamic_axes={spec["name"]: {0: "batch"}, "logits": {0: "batch"}},
    )


def _check_against_module(data: bytes, module, spec: dict, rtol: float = 1e-4) -> None:
    import onnxruntime as ort
    import torch

    x = example_input(spec, batch=3)
    with torch.no_grad():
        want = module(x).numpy()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = sess.run(None, {spec["name"]: x.numpy()})[0]
    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))
    if not err <= rtol:
        raise BadModelError(f"exported ONNX differs from the PyTorch module (relative error {err:.2e})")


def export_variant(name: str, out: Path) -> Path:
    """A copy of the base model's export whose metadata names this zoo entry and sets its
    ``hspi.generation`` keys (the graph and weights unchanged)."""
    import onnx

    from hspi_onnx.cache import atomic_write_bytes
    from hspi_onnx.generation import GENERATION_META_KEY

    entry = ZOO[name]
    model = onnx.load(str(ensure_exported(entry.variant_of)))
    props = {p.key: p.value for p in model.metadata_props}
    generation = json.loads(props[GENERATION_META_KEY]) | dict(entry.generation)
    props |= {"hspi.zoo": name, GENERATION_META_KEY: json.dumps(generation, sort_keys=True)}
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    atomic_write_bytes(Path(out), model.SerializeToString())
    return Path(out)


def exported_sha256(name: str) -> str | None:
    """The sha256 of zoo model ``name``'s cached export, None when it is not exported here. Kept
    in a ``.sha256`` file beside the export (rehashed when the export is newer), so that worker
    processes asking whether a file is the zoo's export do not hash hundreds of MB each."""
    from hspi_onnx.cache import atomic_write_bytes, cache_dir, sha256_file

    if name not in ZOO:
        return None
    path = cache_dir("zoo", f"v{ZOO_VERSION}") / f"{name}.onnx"
    side = path.with_name(f"{name}.onnx.sha256")
    if not path.is_file():
        return None
    if side.is_file() and side.stat().st_mtime >= path.stat().st_mtime:
        text = side.read_text(errors="replace").strip()
        if len(text) == 64:
            return text
    digest = sha256_file(path)
    atomic_write_bytes(side, digest.encode())
    return digest


def ensure_exported(name: str) -> Path:
    """Path of the cached export of zoo model ``name``, exporting it on first use."""
    from hspi_onnx.cache import cache_dir

    if name not in ZOO:  # checked without importing the module (and torch) when the export exists
        raise BadModelError(f"unknown zoo model {name!r}; zoo models: {', '.join(ZOO)}")
    path = cache_dir("zoo", f"v{ZOO_VERSION}") / f"{name}.onnx"
    if not (path.exists() and (ZOO[name].llm or path.with_suffix(".weights.npz").exists())):
        export_model(name, path)
    return path
