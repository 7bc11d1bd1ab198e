"""Models: an ONNX file, identified by the sha256 of its bytes, with its named inputs and outputs.

Every graph input that is not an initializer is an input of the model; its first axis is the
batch axis. What a probe for it is (its *kind*) comes from ``hspi.inputs`` / ``hspi.input``
metadata when the file has it (the zoo writes it), else from the graph:

* float inputs: ``image`` for (C, H, W), ``tensor`` otherwise; values uniform in [low, high);
* integer or bool inputs: ``mask`` when the name says attention/padding mask, ``segments``
  for token-type (segment) ids, ``positions`` for position ids, ``tokens`` otherwise; the
  vocabulary of ids is the row count of the embedding table a Gather reads with them.

Axes other than the batch axis may be dynamic (``None``, with the symbol the graph names them
by); a probe set fixes their sizes, the same size for every axis of one symbol.
"""

from __future__ import annotations

import functools
import importlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hspi_onnx.errors import BadModelError, HspiError
from hspi_onnx.generation import DECODER_INPUTS, DECODER_OUTPUTS, MAX_SIZES, GenerationSpec
from hspi_onnx.inputs.onnxfile import load_onnx, sha256_file

INPUT_META_KEY = "hspi.input"  # one input (the zoo's models)
INPUTS_META_KEY = "hspi.inputs"  # a list of inputs, for any model
ZOO_META_KEY = "hspi.zoo"
WEIGHTS_META_KEY = "hspi.weights_sha256"

INPUT_KINDS = ("image", "tensor", "tokens", "mask", "segments", "positions")
ID_KINDS = ("tokens", "segments", "positions")  # integer ids below a vocabulary size
_ONNX_TO_NUMPY = {1: "float32", 10: "float16", 11: "float64", 6: "int32", 7: "int64", 9: "bool"}
_MASK_WORDS = ("mask",)
_SEGMENT_WORDS = ("token_type", "segment", "type_ids")
_POSITION_WORDS = ("position",)


@dataclass(frozen=True)
class InputSpec:
    """One model input without its batch axis."""

    name: str
    kind: str  # one of INPUT_KINDS
    shape: tuple[int | None, ...]  # None: a dynamic axis, sized by the probe set
    dtype: str  # numpy dtype name
    low: float = 0.0  # value range of float inputs
    high: float = 1.0
    vocab: int = 256  # ids lie in [0, vocab)
    fixed_batch: int | None = None  # when the model's batch axis is static
    dims: tuple[str, ...] = ()  # the symbol of each dynamic axis ("" when unnamed or static)

    @property
    def dynamic(self) -> bool:
        return any(s is None for s in self.shape)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["shape"], d["dims"] = list(self.shape), list(self.dims)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        if not isinstance(d, dict):
            raise BadModelError(f"bad input description in model metadata: {str(d)[:80]!r}")
        try:
            shape = tuple(None if x is None else int(x) for x in d["shape"])
            spec = cls(
                name=str(d["name"]),
                kind=str(d["kind"]),
                shape=shape,
                dtype=str(d["dtype"]),
                low=float(d.get("low", 0.0)),
                high=float(d.get("high", 1.0)),
                vocab=int(d.get("vocab", 256)),
                fixed_batch=None if d.get("fixed_batch") is None else int(d["fixed_batch"]),
                dims=tuple(str(x) for x in d.get("dims", ())) or tuple("" for _ in shape),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadModelError(f"bad input description in model metadata: {type(exc).__name__}: {exc}")
        if spec.kind not in INPUT_KINDS or any(s is not None and s <= 0 for s in spec.shape):
            raise BadModelError(f"bad input description in model metadata: {str(d)[:200]!r}")
        if not spec.low < spec.high or spec.vocab < 1 or len(spec.dims) != len(spec.shape):
            raise BadModelError(f"bad input range in model metadata: {str(d)[:200]!r}")
        if spec.dtype not in _ONNX_TO_NUMPY.values():
            raise BadModelError(f"input {spec.name!r} has unsupported dtype {spec.dtype!r}")
        return spec


@dataclass(frozen=True)
class OutputSpec:
    name: str
    dtype: str  # numpy dtype name, "" when the graph does not say
    shape: tuple[int | None, ...]  # without the batch axis
    # why this output is one value for the whole batch rather than one row per probe ("" when
    # its first axis is the batch axis): runtimes compute it, the DB cannot store it per probe
    whole_batch: str = ""

    def as_dict(self) -> dict:
        out: dict = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        return out | ({"whole_batch": self.whole_batch} if self.whole_batch else {})

    @classmethod
    def from_dict(cls, d: dict) -> OutputSpec:
        try:
            shape = tuple(None if x is None else int(x) for x in d["shape"])
            return cls(str(d["name"]), str(d["dtype"]), shape, str(d.get("whole_batch") or ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadModelError(f"bad output description: {type(exc).__name__}: {exc}")


@dataclass
class ModelInfo:
    path: Path
    sha256: str
    inputs: tuple[InputSpec, ...]
    graph_outputs: tuple[OutputSpec, ...]  # every graph output, in graph order
    zoo: str | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.zoo or self.path.stem

    @property
    def outputs(self) -> tuple[OutputSpec, ...]:
        """The outputs runs store: those with one row per probe (a whole-batch output such as
        NonMaxSuppression's list is computed by the runtimes but not stored)."""
        return tuple(o for o in self.graph_outputs if not o.whole_batch)

    @property
    def graph_output_names(self) -> list[str]:
        return [o.name for o in self.graph_outputs]

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    @property
    def primary(self) -> InputSpec:
        """The input a probe kind describes: the first image, tensor or token input."""
        return next((i for i in self.inputs if i.kind in ("image", "tensor", "tokens")), self.inputs[0])

    @property
    def fixed_batch(self) -> int | None:
        return self.inputs[0].fixed_batch

    @functools.cached_property
    def generation(self) -> GenerationSpec | None:
        """How the model generates, for a language model with a KV cache; None for the others
        (read from the metadata once: adapters ask for every model they are shown)."""
        return GenerationSpec.from_metadata(self.metadata)

    def conversions(self):
        """The module under ``hspi_onnx.models`` that makes this language model's GGUF and
        Hugging Face conversions; None for other models, for a source this install lacks, and for
        a file that is not the zoo's own export of that source: the conversions are made from the
        zoo's reference weights, so they stand for this model only when the file is that export
        (a file may copy the metadata and carry other weights)."""
        if self.generation is None:
            return None
        from hspi_onnx.models.export import exported_sha256
        from hspi_onnx.models.zoo import ZOO

        entry = ZOO.get(self.generation.source)  # a file's metadata names only the zoo's language models
        if entry is None or not entry.llm:
            return None
        exports = [e.name for e in ZOO.values() if e.llm and (e.name == entry.name or e.variant_of == entry.name)]
        if self.sha256 not in {exported_sha256(name) for name in exports}:  # the export, or a variant of it
            return None
        try:
            return importlib.import_module(f"hspi_onnx.models.{entry.module}")
        except ImportError:
            return None

    def weights_path(self) -> Path:
        return self.path.with_suffix(".weights.npz")

    def load(self):
        return load_onnx(self.path)

    def to_wire(self) -> dict:
        """Everything a worker process needs to use this model without parsing it again."""
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "zoo": self.zoo,
            "inputs": [i.as_dict() for i in self.inputs],
            "outputs": [o.as_dict() for o in self.graph_outputs],
            "metadata": self.metadata,
        }

    @classmethod
    def from_wire(cls, d: dict) -> ModelInfo:
        return cls(
            Path(d["path"]),
            str(d["sha256"]),
            tuple(InputSpec.from_dict(x) for x in d["inputs"]),
            tuple(OutputSpec.from_dict(x) for x in d["outputs"]),
            d.get("zoo"),
            dict(d.get("metadata") or {}),
        )

    def describe(self) -> dict:
        """What the manifest records: ``input``/``output`` name the primary input and the first
        output as schema-1 DBs did; ``inputs``/``outputs`` list all of them."""
        return {
            "name": self.name,
            "path": str(self.path),
            "sha256": self.sha256,
            "zoo": self.zoo,
            "input": self.primary.as_dict(),
            "output": self.outputs[0].name,
            "inputs": [i.as_dict() for i in self.inputs],
            "outputs": [o.as_dict() for o in self.outputs],
        } | ({"not_stored": [o.as_dict() for o in self.graph_outputs if o.whole_batch]} if self.whole_batch else {})

    @property
    def whole_batch(self) -> list[str]:
        """The names of the graph outputs runs compute but do not store."""
        return [o.name for o in self.graph_outputs if o.whole_batch]


def _kind(name: str, dtype: str, rank: int) -> str:
    low = name.lower()
    if dtype.startswith("float"):
        return "image" if rank == 3 else "tensor"
    if dtype == "bool" or any(w in low for w in _MASK_WORDS):
        return "mask"
    if any(w in low for w in _SEGMENT_WORDS):
        return "segments"
    if any(w in low for w in _POSITION_WORDS):
        return "positions"
    return "tokens"


_PASS_THROUGH = {"Cast", "Identity", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Expand"}


def _embedding_rows(graph, name: str) -> int | None:
    """Rows of the smallest embedding table a Gather reads with ``name`` (following casts and
    reshapes): ids must stay below it."""
    tables = {t.name: t for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    found, frontier, seen = [], [name], set()
    for _ in range(4):
        nxt = []
        for value in frontier:
            for node in consumers.get(value, []):
                if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == value:
                    table = tables.get(node.input[0])
                    if table is not None and table.dims:
                        found.append(int(table.dims[0]))
                elif node.op_type in _PASS_THROUGH and node.input[0] == value:
                    nxt += [o for o in node.output if o not in seen]
        seen.update(nxt)
        frontier = nxt
    return min(found) if found else None


def _spec_from_graph(graph, inp) -> InputSpec:
    ttype = inp.type.tensor_type
    elem = _ONNX_TO_NUMPY.get(ttype.elem_type)
    if elem is None:
        raise BadModelError(f"input {inp.name!r} has an unsupported element type {ttype.elem_type}")
    if not ttype.HasField("shape") or not ttype.shape.dim:
        raise BadModelError(f"input {inp.name!r} has no batch axis (a rank-0 or unshaped input)")
    dims = list(ttype.shape.dim)
    shape: list[int | None] = []
    symbols: list[str] = []
    for d in dims[1:]:
        if d.HasField("dim_value") and d.dim_value > 0:
            shape.append(int(d.dim_value))
            symbols.append("")
        else:
            shape.append(None)
            symbols.append(d.dim_param if d.HasField("dim_param") else "")
    fixed = int(dims[0].dim_value) if dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    kind = _kind(inp.name, elem, len(shape))
    vocab = 256
    if kind in ID_KINDS:
        rows = _embedding_rows(graph, inp.name)
        vocab = rows if rows else {"segments": 2}.get(kind, 256)
    return InputSpec(
        name=inp.name, kind=kind, shape=tuple(shape), dtype=elem, vocab=vocab, fixed_batch=fixed, dims=tuple(symbols)
    )


def _decoder_layout(spec: GenerationSpec) -> dict[str, tuple[int, tuple]]:
    """What the decode loop feeds and reads, per name: ONNX element type (7 int64, 1 float32) and
    each axis, an int (that static size), "batch" (1 or dynamic), "grows" (must be dynamic),
    "vocab" (at least the vocabulary) or "any"."""
    cache = (spec.layers, "batch", spec.kv_heads, "grows", spec.head_dim)
    return {
        "input_ids": (7, ("batch", "grows")),
        "past_key": (1, cache),
        "past_value": (1, cache),
        "logits": (1, ("batch", "any", "vocab")),
        "present_key": (1, cache),
        "present_value": (1, cache),
    }


_AXES = {0: "layers", 2: "kv_heads", 4: "head_dim"}  # of the cache tensors


def check_decoder(graph, spec: GenerationSpec) -> None:
    """A decoder's declared interface against its ``hspi.generation`` metadata, before anything
    runs: the inputs and outputs the decode loop uses (names in this order, nothing else), their
    element types and ranks, and every static axis. BadModelError names the first mismatch."""
    init_names = {t.name for t in graph.initializer}
    found = {
        "inputs": [v for v in graph.input if v.name not in init_names],
        "outputs": list(graph.output),
    }
    layout = _decoder_layout(spec)
    for side, want in (("inputs", DECODER_INPUTS), ("outputs", DECODER_OUTPUTS)):
        names = [v.name[:40] for v in found[side][:8]]
        if names != list(want):
            raise BadModelError(
                f"hspi.generation marks a decoder with graph {side} {', '.join(want)}; the graph has "
                f"{', '.join(names) or 'none'}"
            )
        for v in found[side]:
            elem, axes = layout[v.name]
            where = f"decoder {side[:-1]} {v.name!r}"
            if not v.type.HasField("tensor_type") or v.type.tensor_type.elem_type != elem:
                n = v.type.tensor_type.elem_type
                have = _ONNX_TO_NUMPY.get(n, f"of ONNX element type {n}")
                raise BadModelError(f"{where} is {have}; the decode loop needs {_ONNX_TO_NUMPY[elem]}")
            tt = v.type.tensor_type
            dims = list(tt.shape.dim) if tt.HasField("shape") else []
            if len(dims) != len(axes):
                raise BadModelError(f"{where} has rank {len(dims)}; the decode loop needs rank {len(axes)}")
            for i, (d, rule) in enumerate(zip(dims, axes)):
                size = int(d.dim_value) if d.HasField("dim_value") else None
                if size is None or rule == "any":
                    continue
                if rule == "batch" and size != 1:
                    raise BadModelError(f"{where}: axis {i} (batch) is {size}; one sequence runs at a time")
                if rule == "grows":
                    raise BadModelError(f"{where}: axis {i} is fixed at {size}; the sequence and cache axes grow")
                if rule == "vocab" and not spec.vocab <= size <= MAX_SIZES["vocab"]:
                    raise BadModelError(
                        f"{where}: {size} logits per position; hspi.generation says vocab {spec.vocab} "
                        f"(a padded vocabulary may be larger, at most {MAX_SIZES['vocab']})"
                    )
                if isinstance(rule, int) and size != rule:
                    raise BadModelError(f"{where}: axis {i} ({_AXES[i]}) is {size}; hspi.generation says {rule}")


def infer_inputs(model) -> tuple[InputSpec, ...]:
    """Input descriptions from ``hspi.inputs``/``hspi.input`` metadata when present, else from the graph."""
    init_names = {t.name for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in init_names]
    if not graph_inputs:
        raise BadModelError("model has no graph inputs")
    meta = {p.key: p.value for p in model.metadata_props}
    generation = GenerationSpec.from_metadata(meta)
    if generation is not None:  # a decoder with a KV cache: its probes are prompts, not graph inputs
        check_decoder(model.graph, generation)
        return tuple(InputSpec.from_dict(d) for d in generation.input_specs())
    described = None
    for key in (INPUTS_META_KEY, INPUT_META_KEY):
        if key in meta:
            try:
                described = json.loads(meta[key])
            except (ValueError, RecursionError):
                raise BadModelError(f"model metadata {key} is not valid JSON")
            described = described if key == INPUTS_META_KEY else [described]
            if not isinstance(described, list):
                raise BadModelError(f"model metadata {key} is not a JSON list")
            break
    if described is not None:
        specs = tuple(InputSpec.from_dict(d) for d in described)
        if sorted(s.name for s in specs) != sorted(i.name for i in graph_inputs):
            raise BadModelError("model metadata describes other inputs than the graph has")
    else:
        specs = tuple(_spec_from_graph(model.graph, i) for i in graph_inputs)
    batches = {s.fixed_batch for s in specs}
    if len(batches) > 1:
        raise BadModelError(f"model inputs disagree on a static batch size ({sorted(map(str, batches))})")
    return specs


def infer_outputs(model) -> tuple[OutputSpec, ...]:
    generation = GenerationSpec.from_metadata({p.key: p.value for p in model.metadata_props})
    if generation is not None:  # what a generation returns, whatever the runtime
        return tuple(OutputSpec.from_dict(d) for d in generation.output_specs())
    outs = []
    batch = _batch_axis(model.graph)
    collapsed = _after_batch_collapse(model.graph)
    for o in model.graph.output:
        tt = o.type.tensor_type
        dims = list(tt.shape.dim) if tt.HasField("shape") else []
        shape = tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims[1:])
        whole = _whole_batch(tt, batch, collapsed.get(o.name, ""))
        outs.append(OutputSpec(o.name, _ONNX_TO_NUMPY.get(tt.elem_type, ""), shape, whole))
    if not outs:
        raise BadModelError("model has no graph outputs")
    if len({o.name for o in outs}) != len(outs):
        raise BadModelError("model has two graph outputs of the same name")
    if all(o.whole_batch for o in outs):
        raise BadModelError(
            f"no output of the model has the probes on its first axis ({outs[0].name}: {outs[0].whole_batch}); "
            "the DB stores one row per probe"
        )
    return tuple(outs)


def _axis0(tt) -> int | str | None:
    """A tensor type's first axis: its static size, its symbol, or None (unknown)."""
    if not tt.HasField("shape") or not tt.shape.dim:
        return None
    d = tt.shape.dim[0]
    if d.HasField("dim_value") and d.dim_value > 0:
        return int(d.dim_value)
    return d.dim_param if d.HasField("dim_param") and d.dim_param else None


def _batch_axis(graph) -> int | str | None:
    init = {t.name for t in graph.initializer}
    axes = {_axis0(i.type.tensor_type) for i in graph.input if i.name not in init and i.type.HasField("tensor_type")}
    return axes.pop() if len(axes) == 1 else None


# ops whose output rows are not the input's batch rows: a list over the whole batch
_BATCH_COLLAPSING = ("NonMaxSuppression", "NonZero", "Unique", "Compress")


def _after_batch_collapse(graph) -> dict[str, str]:
    """Every value computed from the output of a batch-collapsing op (NonMaxSuppression's
    selected boxes, NonZero's indices...), with the op's name."""
    found: dict[str, str] = {}
    for node in graph.node:  # graphs are sorted: producers come first
        collapses = node.op_type in _BATCH_COLLAPSING and not (
            node.op_type == "Compress" and any(a.name == "axis" for a in node.attribute)
        )
        source = node.op_type if collapses else next((found[i] for i in node.input if i in found), "")
        if source:
            found.update({o: source for o in node.output if o})
    return found


def _whole_batch(tt, batch: int | str | None, collapsed_by: str) -> str:
    """Why an output is one value for the whole batch, not one row per probe ("" when it may be
    per probe): a scalar, or a value computed from a batch-collapsing op whose declared first
    axis is another static size or another symbol than the inputs' batch axis. Anything else,
    an output whose first axis an exporter merely named otherwise included, is taken as per
    probe, and the runner checks it has one row per probe."""
    if not tt.HasField("shape"):
        return ""
    if not tt.shape.dim:
        return "a scalar for the whole batch"
    first = _axis0(tt)
    if not collapsed_by or batch is None or first is None or first == batch:
        return ""
    if isinstance(batch, str) and isinstance(first, int):
        return ""
    what = "batch size" if isinstance(batch, int) else "batch axis"
    return f"{collapsed_by}'s list for the whole batch (first axis {first!r}, not the inputs' {what} {batch!r})"


def open_model(path: str | Path) -> ModelInfo:
    path = Path(path)
    model = load_onnx(path)
    meta = {p.key: p.value for p in model.metadata_props}
    return ModelInfo(
        path=path,
        sha256=sha256_file(path),
        inputs=infer_inputs(model),
        graph_outputs=infer_outputs(model),
        zoo=meta.get(ZOO_META_KEY),
        metadata=meta,
    )


def model_at_hand(path: str | None, zoo: str | None, sha256: str) -> ModelInfo | None:
    """The model a DB manifest's ``models`` entry describes, opened from its recorded ``path`` or
    re-exported from the ``zoo``, when its content still hashes to ``sha256``; else None."""
    for opener, ref in ((open_model, path), (resolve_model, zoo)):
        if ref and (opener is resolve_model or Path(ref).is_file()):
            try:
                info = opener(ref)
            except HspiError:
                continue
            if info.sha256 == sha256:
                return info
    return None


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
