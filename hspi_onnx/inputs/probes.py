"""Probe sets: named, seeded, hashed inputs for one model's input description.

Kinds: ``noise`` (uniform in the input range, the paper's choice), ``images`` (real images:
scikit-learn's sample photos for 3 channels, its digits for 1 channel, resized), ``tokens``
(uniform token ids) and ``text`` (real English text as bytes). Each kind also has a
calibration split, disjoint from the probes, for static quantization.

Files are ``.npz`` with arrays ``inputs``, ``ids`` and ``meta`` (JSON as uint8); loading never
unpickles and recomputes the content hash.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hspi_onnx.errors import BadProbesError
from hspi_onnx.inputs.model import InputSpec
from hspi_onnx.safenpz import read_npz, save_npz

KINDS = {"image": ("noise", "images"), "tensor": ("noise",), "tokens": ("tokens", "text")}
SPLITS = ("probe", "calib")


def default_kind(spec: InputSpec) -> str:
    return KINDS[spec.kind][0]


@dataclass
class ProbeSet:
    name: str
    kind: str
    seed: int
    split: str
    inputs: np.ndarray  # (n, *shape)
    ids: np.ndarray  # (n,) int64

    @functools.cached_property
    def sha256(self) -> str:
        """Content hash, computed once: a probe set's arrays are not changed after creation."""
        return content_hash(self.kind, self.split, self.inputs, self.ids)

    @property
    def short_id(self) -> str:
        return f"{self.name}@{self.sha256[:12]}"

    def __len__(self) -> int:
        return len(self.inputs)

    def meta(self) -> dict:
        return {"name": self.name, "kind": self.kind, "seed": self.seed, "split": self.split,
                "n": len(self), "shape": list(self.inputs.shape[1:]),
                "dtype": str(self.inputs.dtype), "sha256": self.sha256}

    def save(self, path: str | Path) -> Path:
        return save_npz(path, self.meta(), inputs=self.inputs, ids=self.ids)

    def check_fits(self, spec: InputSpec) -> None:
        if tuple(self.inputs.shape[1:]) != tuple(spec.shape):
            raise BadProbesError(
                f"probe set {self.name!r} has probes of shape {tuple(self.inputs.shape[1:])}, "
                f"the model's input {spec.name!r} takes {tuple(spec.shape)}"
            )
        if str(self.inputs.dtype) != spec.dtype:
            raise BadProbesError(
                f"probe set {self.name!r} holds {self.inputs.dtype}, the model takes {spec.dtype}"
            )
        if spec.kind == "tokens" and len(self) and (self.inputs.min() < 0 or self.inputs.max() >= spec.vocab):
            raise BadProbesError(f"probe set {self.name!r} has token ids outside [0, {spec.vocab})")


def content_hash(kind: str, split: str, inputs: np.ndarray, ids: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([kind, split, str(inputs.dtype), list(inputs.shape)]).encode())
    h.update(np.ascontiguousarray(inputs).tobytes())
    h.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    return h.hexdigest()


def _rng(seed: int, split: str) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split)])


def _portion(n_items: int, split: str) -> slice:
    """Real-data pools are cut 75/25 so probes and calibration never share a source item."""
    cut = int(n_items * 0.75)
    return slice(0, cut) if split == "probe" else slice(cut, n_items)


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    if img.ndim == 2:
        return np.asarray(Image.fromarray(img.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
    chans = [_resize(img[..., c], h, w) for c in range(img.shape[-1])]
    return np.stack(chans, axis=0)


def _real_images(spec: InputSpec, n: int, rng: np.random.Generator, seed: int, split: str) -> np.ndarray:
    c, h, w = spec.shape
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
            out[i] = _resize(photo[y:y + side, x:x + side], h, w)
    else:
        raise BadProbesError(f"real images need 1 or 3 channels; the model takes {c}")
    return np.clip(out, 0.0, 1.0)


def _text_corpus() -> bytes:
    import sklearn.datasets

    descr = Path(sklearn.datasets.__file__).parent / "descr"
    return b"\n".join(p.read_bytes() for p in sorted(descr.glob("*.rst")))


def generate(spec: InputSpec, kind: str | None = None, n: int = 64, seed: int = 0,
             split: str = "probe", name: str | None = None) -> ProbeSet:
    kind = kind or default_kind(spec)
    if kind not in KINDS[spec.kind]:
        raise BadProbesError(
            f"probe kind {kind!r} does not fit a {spec.kind} input; use one of {', '.join(KINDS[spec.kind])}"
        )
    if split not in SPLITS:
        raise BadProbesError(f"split must be one of {', '.join(SPLITS)}")
    if n < 1:
        raise BadProbesError("a probe set needs at least one probe")
    rng = _rng(seed, split)
    shape = (n, *spec.shape)
    if kind == "noise":
        x = rng.uniform(spec.low, spec.high, size=shape)
    elif kind == "images":
        x = spec.low + (spec.high - spec.low) * _real_images(spec, n, rng, seed, split)
    elif kind == "tokens":
        x = rng.integers(0, spec.vocab, size=shape)
    else:  # text
        corpus = np.frombuffer(_text_corpus(), dtype=np.uint8)
        pool = corpus[_portion(len(corpus), split)]
        width = int(np.prod(spec.shape))
        starts = rng.integers(0, len(pool) - width, size=n)
        x = np.stack([pool[s:s + width] for s in starts]).reshape(shape).astype(np.int64) % spec.vocab
    inputs = np.ascontiguousarray(x.astype(spec.dtype))
    ids = np.arange(n, dtype=np.int64)
    suffix = "" if split == "probe" else "-calib"
    return ProbeSet(name or f"{kind}-s{seed}-n{n}{suffix}", kind, seed, split, inputs, ids)


_ALLOWED_DTYPES = {"float32", "float16", "float64", "int32", "int64"}


def load_probes(path: str | Path) -> ProbeSet:
    """Read a probe-set file written by :meth:`ProbeSet.save`, checking everything."""
    arrays, meta = read_npz(path, {"inputs", "ids"}, "probe set", BadProbesError)
    inputs, ids = arrays["inputs"], arrays["ids"]
    try:
        name, kind, seed, split, want = (meta["name"], meta["kind"], int(meta["seed"]),
                                         meta["split"], meta["sha256"])
    except (ValueError, KeyError, TypeError):
        raise BadProbesError(f"probe set {str(path)!r} has a malformed meta record")
    if str(inputs.dtype) not in _ALLOWED_DTYPES or inputs.ndim < 2:
        raise BadProbesError(f"probe set {str(path)!r} holds inputs of unsupported type {inputs.dtype}")
    if ids.dtype != np.int64 or ids.shape != (len(inputs),) or len(np.unique(ids)) != len(ids):
        raise BadProbesError(f"probe set {str(path)!r} has missing, malformed or duplicate ids")
    if str(kind) not in {k for ks in KINDS.values() for k in ks} or split not in SPLITS:
        raise BadProbesError(f"probe set {str(path)!r} names an unknown kind or split")
    probes = ProbeSet(str(name), str(kind), seed, str(split), np.ascontiguousarray(inputs), ids)
    if probes.sha256 != want:
        raise BadProbesError(f"probe set {str(path)!r} fails its content hash (altered or corrupt)")
    return probes
