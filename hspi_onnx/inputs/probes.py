"""Probe sets: named, seeded, hashed inputs for a model, one array per model input.

The probe set's *kind* says how the primary input (the first image, tensor or token input) is
filled: ``noise`` (uniform in the input range, the paper's choice), ``images`` (real images:
scikit-learn's sample photos for 3 channels, its digits for 1 channel, resized), ``tokens``
(uniform token ids) and ``text`` (real English text as bytes). The other inputs follow their
own kind: attention masks are ones over a random length from half the sequence up (padding
after it, where the ids are 0), segment ids split that length in two, position ids count up,
further images and tensors are noise. Dynamic axes take the sizes in ``dims`` (by the axis'
symbol), else 16 (32 for image sides). Each kind has a calibration split disjoint from the
probes, for static quantization.

Files are ``.npz`` with ``ids``, ``meta`` (JSON as uint8) and the inputs: ``inputs`` when the
model has one input (the format of every earlier version), ``input_0`` ... otherwise, named in
the meta record. Loading never unpickles and recomputes the content hash.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from hspi_onnx.errors import BadProbesError
from hspi_onnx.inputs.model import ID_KINDS, InputSpec, ModelInfo
from hspi_onnx.safenpz import read_npz, save_npz

KINDS = {
    "image": ("noise", "images"),
    "tensor": ("noise",),
    "tokens": ("tokens", "text"),
    "mask": ("mask",),
    "segments": ("segments",),
    "positions": ("positions",),
}
PROBE_KINDS = tuple(dict.fromkeys(k for ks in KINDS.values() for k in ks))
BORDER_KIND, REPLAY_KIND = "border", "replay"
CRAFTED_KINDS = (BORDER_KIND, REPLAY_KIND)  # inputs made elsewhere than generate(): read from files only
SPLITS = ("probe", "calib")
DEFAULT_DIM = 16
DEFAULT_IMAGE_SIDE = 32
MAX_INPUTS = 16


CHAT_KIND = "chat"  # conversations through a language model's chat template (inputs/chats.py)
# what a chat probe set may add to a language model's prompt inputs (run/decode.py reads them)
GENERATION_MODES = ("sample_seed", "forced_ids", "forced_mask")


def default_kind(model: ModelInfo) -> str:
    return CHAT_KIND if model.generation is not None else KINDS[model.primary.kind][0]


def calibration_kind(model: ModelInfo, kind: str) -> str:
    """The probe kind static quantization calibrates on for probes of ``kind``: the kind itself
    when it can be generated, else (border, replay: inputs from elsewhere) the model's default."""
    return kind if kind in KINDS[model.primary.kind] else default_kind(model)


@dataclass
class ProbeSet:
    name: str
    kind: str
    seed: int
    split: str
    inputs: dict[str, np.ndarray]  # input name -> (n, *shape); "" for an unnamed single input
    ids: np.ndarray  # (n,) int64
    dims: dict[str, int] = field(default_factory=dict)  # sizes given to dynamic axes, by symbol
    provenance: dict = field(default_factory=dict)  # how a crafted set was made (border probes)

    @functools.cached_property
    def sha256(self) -> str:
        """Content hash, computed once: a probe set's arrays are not changed after creation."""
        return content_hash(self.kind, self.split, self.inputs, self.ids)

    @property
    def short_id(self) -> str:
        return f"{self.name}@{self.sha256[:12]}"

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def primary(self) -> np.ndarray:
        return next(iter(self.inputs.values()))

    def batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(v[idx]) for k, v in self.inputs.items()}

    def sample(self, idx: np.ndarray) -> ProbeSet:
        """The probes at positions ``idx``, still named and hashed as this whole set: what a
        client that asks a service only some probes of a DB's set refers to."""
        part = ProbeSet(
            self.name,
            self.kind,
            self.seed,
            self.split,
            self.batch(idx),
            self.ids[idx].copy(),
            dict(self.dims),
            self.provenance,
        )
        part.__dict__["sha256"] = self.sha256
        return part

    def meta(self) -> dict:
        first = self.primary
        return {
            "name": self.name,
            "kind": self.kind,
            "seed": self.seed,
            "split": self.split,
            "n": len(self),
            "shape": list(first.shape[1:]),
            "dtype": str(first.dtype),
            "inputs": {k: {"shape": list(v.shape[1:]), "dtype": str(v.dtype)} for k, v in self.inputs.items()},
            "input_names": list(self.inputs),
            "dims": dict(self.dims),
            "sha256": self.sha256,
            **({"provenance": self.provenance} if self.provenance else {}),
        }

    def save(self, path: str | Path) -> Path:
        if len(self.inputs) == 1:
            return save_npz(path, self.meta(), inputs=self.primary, ids=self.ids)
        arrays = {f"input_{i}": v for i, v in enumerate(self.inputs.values())}
        return save_npz(path, self.meta(), ids=self.ids, **arrays)

    def to_wire(self) -> tuple[dict, list[np.ndarray]]:
        """A JSON header and the arrays (ids first) for another process (:mod:`hspi_onnx.run.wire`)."""
        return (
            {
                "sha256": self.sha256,
                "name": self.name,
                "kind": self.kind,
                "seed": self.seed,
                "split": self.split,
                "names": list(self.inputs),
                "dims": dict(self.dims),
            },
            [self.ids, *self.inputs.values()],
        )

    @classmethod
    def from_wire(cls, header: dict, arrays: list[np.ndarray]) -> ProbeSet:
        """The probe set :meth:`to_wire` described, under the same sha256."""
        names = list(header["names"])
        if len(arrays) != len(names) + 1:
            raise BadProbesError(f"probe set {header.get('name')!r}: {len(arrays)} arrays for {len(names)} inputs")
        probes = cls(
            str(header["name"]),
            str(header["kind"]),
            int(header["seed"]),
            str(header["split"]),
            dict(zip(names, arrays[1:])),
            arrays[0],
            {str(k): int(v) for k, v in dict(header["dims"]).items()},
        )
        probes.__dict__["sha256"] = str(header["sha256"])
        return probes

    def bind(self, model: ModelInfo) -> ProbeSet:
        """This probe set with its inputs named as ``model``'s, checked to fit it: a file of an
        earlier version holds one unnamed array, which goes to a single-input model's input."""
        if list(self.inputs) == [""] and len(model.inputs) == 1:
            bound = ProbeSet(
                self.name,
                self.kind,
                self.seed,
                self.split,
                {model.inputs[0].name: self.primary},
                self.ids,
                dict(self.dims),
                self.provenance,
            )
            bound.__dict__["sha256"] = self.sha256  # the legacy hash does not name the input
        else:
            bound = self
        bound.check_fits(model)
        return bound

    def check_fits(self, model: ModelInfo) -> None:
        extra = set(self.inputs) - set(model.input_names)
        if model.generation is not None and extra <= set(GENERATION_MODES):  # sampled or forced chats
            for key in extra:
                x = self.inputs[key]
                if x.dtype != np.int64 or x.ndim != 2 or len(x) != len(self):
                    raise BadProbesError(f"probe set {self.name!r}: {key} must be int64 of shape (n, width)")
            if "forced_ids" in extra and (
                "forced_mask" not in extra
                or self.inputs["forced_ids"].shape != self.inputs["forced_mask"].shape
                or (self.inputs["forced_ids"] < 0).any()
                or (self.inputs["forced_ids"] >= model.generation.vocab).any()
            ):
                raise BadProbesError(
                    f"probe set {self.name!r}: forced_ids needs a forced_mask and ids in the vocabulary"
                )
            extra = set()
        if extra or set(model.input_names) - set(self.inputs):
            raise BadProbesError(
                f"probe set {self.name!r} holds inputs {sorted(self.inputs)}, the model takes {model.input_names}"
            )
        sizes: dict[str, int] = {}
        for spec in model.inputs:
            x = self.inputs[spec.name]
            shape = tuple(x.shape[1:])
            ok = len(shape) == len(spec.shape) and all(w is None or w == s for w, s in zip(spec.shape, shape))
            if not ok:
                raise BadProbesError(
                    f"probe set {self.name!r} has probes of shape {shape} for input {spec.name!r}, "
                    f"which takes {_show(spec.shape)}"
                )
            for sym, want, got in zip(spec.dims, spec.shape, shape):
                if want is None and sym:
                    if sizes.setdefault(sym, got) != got:
                        raise BadProbesError(
                            f"probe set {self.name!r} gives axis {sym!r} two sizes ({sizes[sym]}, {got})"
                        )
            if str(x.dtype) != spec.dtype:
                raise BadProbesError(
                    f"probe set {self.name!r} holds {x.dtype} for input {spec.name!r}, which takes {spec.dtype}"
                )
            if spec.kind in ID_KINDS and len(self) and (x.min() < 0 or x.max() >= spec.vocab):
                raise BadProbesError(
                    f"probe set {self.name!r} has ids of input {spec.name!r} outside [0, {spec.vocab})"
                )


def _show(shape) -> str:
    return "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"


def content_hash(kind: str, split: str, inputs: dict[str, np.ndarray], ids: np.ndarray) -> str:
    """sha256 of the probe set's content. A single input is hashed as every earlier version
    did (without its name), so probe sets and DBs built before several inputs keep their ids."""
    h = hashlib.sha256()
    if len(inputs) == 1:
        x = next(iter(inputs.values()))
        h.update(json.dumps([kind, split, str(x.dtype), list(x.shape)]).encode())
        h.update(np.ascontiguousarray(x).tobytes())
    else:
        h.update(json.dumps([kind, split, [[k, str(v.dtype), list(v.shape)] for k, v in inputs.items()]]).encode())
        for v in inputs.values():
            h.update(np.ascontiguousarray(v).tobytes())
    h.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    return h.hexdigest()


def _rng(seed: int, split: str, k: int = 0) -> np.random.Generator:
    """The generator of input ``k``: input 0 draws exactly as single-input probe sets always did."""
    return np.random.default_rng([seed, SPLITS.index(split)] + ([k] if k else []))


def _portion(n_items: int, split: str) -> slice:
    """Real-data pools are cut 75/25 so probes and calibration never share a source item."""
    cut = int(n_items * 0.75)
    return slice(0, cut) if split == "probe" else slice(cut, n_items)


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    if img.ndim == 2:
        return np.asarray(Image.fromarray(img.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BILINEAR))
    chans = [_resize(img[..., c], h, w) for c in range(img.shape[-1])]
    return np.stack(chans, axis=0)


def _real_images(shape: tuple[int, ...], n: int, rng: np.random.Generator, seed: int, split: str) -> np.ndarray:
    c, h, w = shape
    out = np.empty((n, c, h, w), dtype=np.float32)
    if c == 1:
        from sklearn.datasets import load_digits

        imgs = load_digits().images.astype(np.float32) / 16.0
        order = np.random.default_rng(seed).permutation(len(imgs))  # same for both splits
        pool = order[_portion(len(imgs), split)]
        for i in range(n):
            out[i, 0] = _resize(imgs[pool[i % len(pool)]], h, w)
    elif c == 3:
        from sklearn.datasets import load_sample_images

        photos = [p.astype(np.float32) / 255.0 for p in load_sample_images().images]
        for i in range(n):
            photo = photos[int(rng.integers(len(photos)))]
            rows = np.arange(photo.shape[0])[_portion(photo.shape[0], split)]
            side = int(rng.integers(max(h, 32), min(len(rows), photo.shape[1], 256) + 1))
            y = int(rng.integers(rows[0], rows[-1] - side + 2))
            x = int(rng.integers(0, photo.shape[1] - side + 1))
            out[i] = _resize(photo[y : y + side, x : x + side], h, w)
    else:
        raise BadProbesError(f"real images need 1 or 3 channels; the model takes {c}")
    return np.clip(out, 0.0, 1.0)


def _text_corpus() -> bytes:
    import sklearn.datasets

    descr = Path(sklearn.datasets.__file__).parent / "descr"
    return b"\n".join(p.read_bytes() for p in sorted(descr.glob("*.rst")))


def resolve_shape(spec: InputSpec, dims: dict[str, int]) -> tuple[int, ...]:
    """The concrete probe shape of ``spec``: dynamic axes take ``dims[symbol]``, else a default."""
    out = []
    for k, (size, sym) in enumerate(zip(spec.shape, spec.dims or ("",) * len(spec.shape))):
        if size is None:
            default = DEFAULT_IMAGE_SIDE if spec.kind == "image" and k > 0 else DEFAULT_DIM
            size = dims.get(sym, default) if sym else default
            if sym:
                dims.setdefault(sym, size)
        out.append(int(size))
    return tuple(out)


def _fill(spec: InputSpec, kind: str, shape: tuple[int, ...], n: int, rng, seed: int, split: str) -> np.ndarray:
    full = (n, *shape)
    if kind == "noise":
        x = rng.uniform(spec.low, spec.high, size=full)
    elif kind == "images":
        x = spec.low + (spec.high - spec.low) * _real_images(shape, n, rng, seed, split)
    elif kind == "tokens":
        x = rng.integers(0, spec.vocab, size=full)
    elif kind == "text":
        corpus = np.frombuffer(_text_corpus(), dtype=np.uint8)
        pool = corpus[_portion(len(corpus), split)]
        width = int(np.prod(shape))
        starts = rng.integers(0, len(pool) - width, size=n)
        x = np.stack([pool[s : s + width] for s in starts]).reshape(full).astype(np.int64) % spec.vocab
    else:  # mask, segments, positions: filled by _sequence_inputs
        x = np.zeros(full)
    return np.ascontiguousarray(x.astype(spec.dtype))


def _sequence_inputs(model: ModelInfo, arrays: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    """Masks, segment and position ids, consistent with each other along the last axis: a
    random valid length per probe (half the sequence up), ids of padding set to 0."""
    lengths: dict[int, np.ndarray] = {}
    for spec in model.inputs:
        if spec.kind not in ("mask", "segments", "positions"):
            continue
        x = arrays[spec.name]
        n, seq = x.shape[0], x.shape[-1] if x.ndim > 1 else 1
        if seq not in lengths:
            lengths[seq] = cast(np.ndarray, rng.integers(max(1, seq // 2), seq + 1, size=n))
        valid = np.arange(seq)[None, :] < lengths[seq][:, None]
        if spec.kind == "mask":
            values = valid
        elif spec.kind == "segments":
            cut = rng.integers(1, np.maximum(lengths[seq], 2), size=n)
            values = (np.arange(seq)[None, :] >= cut[:, None]) & valid
            values = values.astype(np.int64) % spec.vocab
        else:
            values = np.minimum(np.broadcast_to(np.arange(seq), (n, seq)), spec.vocab - 1)
        arrays[spec.name] = np.ascontiguousarray(
            np.broadcast_to(values.reshape((n,) + (1,) * (x.ndim - 2) + (seq,)), x.shape).astype(spec.dtype)
        )
    masks = [arrays[s.name] for s in model.inputs if s.kind == "mask"]
    if masks:
        for spec in model.inputs:
            x = arrays[spec.name]
            if spec.kind == "tokens" and x.shape == masks[0].shape:
                arrays[spec.name] = np.where(masks[0].astype(bool), x, 0).astype(spec.dtype)


def generate(
    model: ModelInfo,
    kind: str | None = None,
    n: int = 64,
    seed: int = 0,
    split: str = "probe",
    name: str | None = None,
    dims: dict[str, int] | None = None,
) -> ProbeSet:
    kind = kind or default_kind(model)
    if model.generation is not None or kind == CHAT_KIND:
        return _chat_probes(model, kind, n, split, name)
    primary = model.primary
    if kind not in KINDS[primary.kind]:
        raise BadProbesError(
            f"probe kind {kind!r} does not fit a {primary.kind} input; use one of {', '.join(KINDS[primary.kind])}"
        )
    if split not in SPLITS:
        raise BadProbesError(f"split must be one of {', '.join(SPLITS)}")
    if n < 1:
        raise BadProbesError("a probe set needs at least one probe")
    sizes = dict(dims or {})
    for sym, size in sizes.items():
        if not isinstance(size, int) or not 1 <= size <= 1 << 16:
            raise BadProbesError(f"axis {sym!r} needs a size between 1 and 65536, not {size!r}")
    arrays: dict[str, np.ndarray] = {}
    for k, spec in enumerate(model.inputs):
        rng = _rng(seed, split, k)
        own = kind if spec is primary else KINDS[spec.kind][0]
        arrays[spec.name] = _fill(spec, own, resolve_shape(spec, sizes), n, rng, seed, split)
    _sequence_inputs(model, arrays, _rng(seed, split, len(model.inputs)))
    ids = np.arange(n, dtype=np.int64)
    used = {s: v for s, v in sizes.items() if any(s in spec.dims for spec in model.inputs)}
    suffix = "" if split == "probe" else "-calib"
    return ProbeSet(name or f"{kind}-s{seed}-n{n}{suffix}", kind, seed, split, arrays, ids, used)


def _chat_probes(model: ModelInfo, kind: str, n: int, split: str, name: str | None) -> ProbeSet:
    """The first ``n`` chats of the built-in prompt set (all of them when it has fewer), through
    the model's chat template."""
    from hspi_onnx.inputs.chats import PROMPTS_VERSION, builtin_chats

    chats = builtin_chats()[:n]
    return chat_probe_set(model, chats, name or f"chat-v{PROMPTS_VERSION}-n{len(chats)}", kind, split)


def chat_probe_set(
    model: ModelInfo,
    chats: list,
    name: str,
    kind: str = CHAT_KIND,
    split: str = "probe",
    sample_seed: int | None = None,
    continuations: list[list[int]] | None = None,
) -> ProbeSet:
    """A probe set of conversations (a language model's prompts): ids and mask per chat; with
    ``sample_seed`` every chat is sampled with that seed (``sample_seed`` input, [n, 1]); with
    ``continuations`` (token ids, one list per chat) each is scored teacher-forced
    (``forced_ids``/``forced_mask``, right-padded). Greedy sets hold neither, so their hash is
    what it was before these modes existed."""
    from hspi_onnx.inputs.chats import encode_chats

    if model.generation is None:
        raise BadProbesError(f"chat probes need a language model; {model.name} takes {model.primary.kind} inputs")
    if kind != CHAT_KIND:
        raise BadProbesError(f"a language model's probes are chats (kind {CHAT_KIND!r}), not {kind!r}")
    if split != "probe":
        raise BadProbesError("chat probe sets have no calibration split")
    if not chats:
        raise BadProbesError("a probe set needs at least one chat")
    input_ids, mask = encode_chats(model, chats)
    arrays = {"input_ids": input_ids, "attention_mask": mask}
    spec = model.generation
    assert spec is not None
    if sample_seed is not None and continuations is not None:
        raise BadProbesError("a chat is either sampled or scored against a continuation, not both")
    if sample_seed is not None:
        if not 0 <= sample_seed < 1 << 63:
            raise BadProbesError("the sample seed must be a non-negative 64-bit integer")
        arrays["sample_seed"] = np.full((len(chats), 1), sample_seed, dtype=np.int64)
    if continuations is not None:
        arrays.update(_forced_arrays(spec, continuations, len(chats)))
    return ProbeSet(name, kind, 0, split, arrays, np.arange(len(chats), dtype=np.int64), {"prompt": input_ids.shape[1]})


def _forced_arrays(spec, continuations: list[list[int]], n: int) -> dict[str, np.ndarray]:
    """``forced_ids``/``forced_mask`` (right-padded) of one continuation per chat."""
    if len(continuations) != n or not all(len(c) for c in continuations):
        raise BadProbesError(f"{n} chats need {n} non-empty continuations, one each")
    width = max(len(c) for c in continuations)
    forced = np.full((n, width), spec.pad, dtype=np.int64)
    fmask = np.zeros((n, width), dtype=np.int64)
    for k, c in enumerate(continuations):
        if any(not 0 <= int(t) < spec.vocab for t in c):
            raise BadProbesError(f"continuation {k + 1} holds token ids outside the vocabulary")
        forced[k, : len(c)], fmask[k, : len(c)] = c, 1
    return {"forced_ids": forced, "forced_mask": fmask}


def forced_probe_set(model: ModelInfo, probes: ProbeSet, rows: list[int], continuations: list[list[int]]) -> ProbeSet:
    """The chats at positions ``rows`` of the greedy chat probe set ``probes``, each scored
    teacher-forced on its continuation: what a reference stack answers on tokens another stack
    chose. Named by content (``forced-<sha256 prefix>``), so the same request runs once."""
    spec = model.generation
    if spec is None or probes.kind != CHAT_KIND or "input_ids" not in probes.inputs:
        raise BadProbesError("forced chats come from a chat probe set of a language model")
    if {"forced_ids", "sample_seed"} & set(probes.inputs):
        raise BadProbesError(f"probe set {probes.name!r} is not a greedy chat set")
    idx = np.asarray(rows, dtype=np.int64)
    if idx.ndim != 1 or not len(idx) or idx.min() < 0 or idx.max() >= len(probes):
        raise BadProbesError(f"chat rows must lie in 0..{len(probes) - 1}")
    arrays = {k: np.ascontiguousarray(v[idx]) for k, v in probes.inputs.items()}
    arrays.update(_forced_arrays(spec, continuations, len(idx)))
    raw = ProbeSet("forced", CHAT_KIND, 0, "probe", arrays, np.arange(len(idx), dtype=np.int64), dict(probes.dims))
    return ProbeSet(f"forced-{raw.sha256[:12]}", CHAT_KIND, 0, "probe", arrays, raw.ids, dict(probes.dims))


_ALLOWED_DTYPES = {"float32", "float16", "float64", "int32", "int64", "bool"}


def load_probes(path: str | Path) -> ProbeSet:
    """Read a probe-set file written by :meth:`ProbeSet.save`, checking everything."""
    arrays, meta = read_npz(
        path, {"ids"}, "probe set", BadProbesError, optional=frozenset({"inputs"}), pattern=r"input_\d{1,2}"
    )
    ids = arrays.pop("ids")
    try:
        name, kind, seed, split, want = (meta["name"], meta["kind"], int(meta["seed"]), meta["split"], meta["sha256"])
        names = [str(x) for x in meta.get("input_names", [""])]
        dims = {str(k): int(v) for k, v in dict(meta.get("dims", {})).items()}
    except (ValueError, KeyError, TypeError):
        raise BadProbesError(f"probe set {str(path)!r} has a malformed meta record")
    if "inputs" in arrays:
        if len(arrays) != 1 or len(names) != 1:
            raise BadProbesError(f"probe set {str(path)!r} mixes one-input and several-input arrays")
        inputs = {names[0]: arrays["inputs"]}
    else:
        if (
            not 1 <= len(names) <= MAX_INPUTS
            or set(arrays) != {f"input_{i}" for i in range(len(names))}
            or len(set(names)) != len(names)
        ):
            raise BadProbesError(f"probe set {str(path)!r} does not hold one array per named input")
        inputs = {nm: arrays[f"input_{i}"] for i, nm in enumerate(names)}
    for nm, x in inputs.items():
        if str(x.dtype) not in _ALLOWED_DTYPES or x.ndim < 2 or len(x) != len(ids):
            raise BadProbesError(f"probe set {str(path)!r} holds input {nm[:40]!r} of unsupported type or size")
    if ids.dtype != np.int64 or ids.ndim != 1 or len(np.unique(ids)) != len(ids):
        raise BadProbesError(f"probe set {str(path)!r} has missing, malformed or duplicate ids")
    if str(kind) not in PROBE_KINDS + CRAFTED_KINDS + (CHAT_KIND,) or split not in SPLITS:
        raise BadProbesError(f"probe set {str(path)!r} names an unknown kind or split")
    provenance = meta.get("provenance", {})
    probes = ProbeSet(
        str(name),
        str(kind),
        seed,
        str(split),
        {k: np.ascontiguousarray(v) for k, v in inputs.items()},
        ids,
        dims,
        provenance if isinstance(provenance, dict) else {},
    )
    if probes.sha256 != want:
        raise BadProbesError(f"probe set {str(path)!r} fails its content hash (altered or corrupt)")
    return probes
