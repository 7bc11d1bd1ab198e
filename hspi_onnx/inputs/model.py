"""Models: an ONNX file, identified by the sha256 of its bytes, plus what its input takes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hspi_onnx.errors import BadModelError
from hspi_onnx.inputs.onnxfile import load_onnx, sha256_file

INPUT_META_KEY = "hspi.input"
ZOO_META_KEY = "hspi.zoo"
WEIGHTS_META_KEY = "hspi.weights_sha256"


@dataclass(frozen=True)
class InputSpec:
    """What one probe is: the model input without its batch axis."""

    name: str
    kind: str  # "image" (C,H,W floats), "tensor" (other floats) or "tokens" (integer ids)
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name of the input
    low: float = 0.0  # value range for float inputs
    high: float = 1.0
    vocab: int = 256  # token ids lie in [0, vocab)
    fixed_batch: int | None = None  # when the model's batch axis is static

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        try:
            spec = cls(
                name=str(d["name"]), kind=str(d["kind"]),
                shape=tuple(int(x) for x in d["shape"]), dtype=str(d["dtype"]),
                low=float(d.get("low", 0.0)), high=float(d.get("high", 1.0)),
                vocab=int(d.get("vocab", 256)),
                fixed_batch=None if d.get("fixed_batch") is None else int(d["fixed_batch"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadModelError(f"bad input description in model metadata: {exc}")
        if spec.kind not in ("image", "tensor", "tokens") or any(s <= 0 for s in spec.shape):
            raise BadModelError(f"bad input description in model metadata: {d!r}")
        if not spec.low < spec.high or spec.vocab < 1:
            raise BadModelError(f"bad input range in model metadata: {d!r}")
        return spec


_ONNX_TO_NUMPY = {1: "float32", 10: "float16", 11: "float64", 6: "int32", 7: "int64"}


def infer_input_spec(model) -> InputSpec:
    """Input description from the graph itself, or from ``hspi.input`` metadata when present."""
    init_names = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init_names]
    if len(inputs) != 1:
        raise BadModelError(f"model has {len(inputs)} graph inputs; hspi supports exactly one")
    meta = {p.key: p.value for p in model.metadata_props}
    if INPUT_META_KEY in meta:
        try:
            d = json.loads(meta[INPUT_META_KEY])
        except (ValueError, RecursionError):
            raise BadModelError("model metadata hspi.input is not valid JSON")
        if not isinstance(d, dict):
            raise BadModelError("model metadata hspi.input is not a JSON object")
        return InputSpec.from_dict(d)
    inp = inputs[0]
    ttype = inp.type.tensor_type
    elem = _ONNX_TO_NUMPY.get(ttype.elem_type)
    if elem is None:
        raise BadModelError(f"input {inp.name!r} has an unsupported element type {ttype.elem_type}")
    dims = list(ttype.shape.dim)
    if not dims:
        raise BadModelError(f"input {inp.name!r} has no batch axis")
    rest = []
    for d in dims[1:]:
        if not d.HasField("dim_value") or d.dim_value <= 0:
            raise BadModelError(
                f"input {inp.name!r} has a dynamic non-batch axis; hspi needs a fixed probe shape"
            )
        rest.append(int(d.dim_value))
    fixed = int(dims[0].dim_value) if dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    if elem.startswith("int"):
        kind = "tokens"
    else:
        kind = "image" if len(rest) == 3 else "tensor"
    return InputSpec(name=inp.name, kind=kind, shape=tuple(rest), dtype=elem, fixed_batch=fixed)


@dataclass
class ModelInfo:
    path: Path
    sha256: str
    spec: InputSpec
    output_name: str
    zoo: str | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.zoo or self.path.stem

    def weights_path(self) -> Path:
        return self.path.with_suffix(".weights.npz")

    def load(self):
        return load_onnx(self.path)

    def describe(self) -> dict:
        return {"name": self.name, "path": str(self.path), "sha256": self.sha256,
                "zoo": self.zoo, "input": asdict(self.spec), "output": self.output_name}


def open_model(path: str | Path) -> ModelInfo:
    path = Path(path)
    model = load_onnx(path)
    meta = {p.key: p.value for p in model.metadata_props}
    spec = infer_input_spec(model)
    return ModelInfo(
        path=path, sha256=sha256_file(path), spec=spec, output_name=model.graph.output[0].name,
        zoo=meta.get(ZOO_META_KEY), metadata=meta,
    )


def resolve_model(ref: str | Path) -> ModelInfo:
    """A zoo name (exported on first use into the cache) or a path to any ONNX file."""
    ref_s = str(ref)
    path = Path(ref_s)
    if path.suffix.lower() == ".onnx" or path.exists() or "/" in ref_s:
        return open_model(path)
    from hspi_onnx.models import ZOO, ensure_exported

    if ref_s not in ZOO:
        import difflib

        close = difflib.get_close_matches(ref_s, list(ZOO), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; zoo models: {', '.join(ZOO)}"
        raise BadModelError(f"{ref_s!r} is neither an ONNX file nor a zoo model{hint}")
    return open_model(ensure_exported(ref_s))
