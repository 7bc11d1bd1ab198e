"""Which DB group a suspect belongs to, and which of the group's outputs each of its outputs is."""

from __future__ import annotations

import numpy as np

from hspi_onnx.db.index import DigestIndex, IndexGroup
from hspi_onnx.forms import top_k
from hspi_onnx.match.suspect import BadSuspectError, Suspect

from .results import Resolved


# -- resolving the suspect against the DB ----------------------------------------------------------
def _width(shape) -> int:
    return int(np.prod(shape)) if shape else 1


def resolve(index: DigestIndex, suspect: Suspect) -> Resolved:
    """The DB's (model, probe set) the suspect belongs to, with its outputs, ids and shapes checked."""
    if not suspect.probes:
        raise BadSuspectError(
            f"suspect file {suspect.path!r} names no probe set"
            + (": it carries its own inputs, match it with --replay" if suspect.inputs else "")
        )
    by_probes = [k for k, g in enumerate(index.groups) if suspect.probes in (g.probes_sha256, g.probes_name)]
    if not by_probes:
        known = sorted({g.probes_name for g in index.groups})
        raise BadSuspectError(
            f"the suspect's probe set {suspect.probes[:64]!r} is not in the DB (it holds {', '.join(known)})"
        )
    cands = by_probes
    if suspect.model:
        cands = [k for k in by_probes if suspect.model in (index.groups[k].model_sha256, index.groups[k].model_name)]
        if not cands:
            raise BadSuspectError(
                f"the DB holds no outputs of model {suspect.model[:64]!r} on probe set {suspect.probes[:64]!r}"
            )
    fits, last = {}, BadSuspectError("the suspect fits no model of the DB")
    for k in cands:
        try:
            fits[k] = _map_outputs(index.groups[k], suspect)
        except BadSuspectError as exc:
            last = exc
    if not fits:
        if len(cands) == 1:
            raise last
        shapes = ", ".join(f"{index.groups[k].model_name} {index.groups[k].shapes}" for k in cands)
        raise BadSuspectError(f"the suspect's outputs fit no model on this probe set ({shapes})")
    fit = list(fits)
    if len(fit) > 1 and suspect.form == "raw":  # the exact bits may tell which model it was
        key = next(iter(suspect.outputs))
        digests = suspect.digests(key)
        hit = [
            k
            for k in fit
            if any(
                index.lookup(k, int(p), d, index.groups[k].output_index(fits[k][key]))
                for p, d in zip(suspect.ids, digests)
            )
        ]
        fit = hit if len(hit) == 1 else fit
    if len(fit) > 1:
        names = ", ".join(index.groups[k].model_name for k in fit)
        raise BadSuspectError(f"several models of the DB fit this suspect ({names}); name the model in the file")
    k = fit[0]
    g = index.groups[k]
    unknown = suspect.ids[~np.isin(suspect.ids, np.asarray(g.ids, dtype=np.int64))]
    if len(unknown):
        raise BadSuspectError(
            f"probe id {int(unknown[0])} is not in probe set {g.probes_name} as the DB holds it "
            f"({len(unknown)} unknown ids)"
        )
    return Resolved(k, g, index.platforms_of(k), fits[k])


def _map_outputs(g: IndexGroup, suspect: Suspect) -> dict[str, str]:
    """Suspect output key -> group output name; an unnamed output is the one its shape fits
    (the model's first when several fit)."""
    keys = list(suspect.outputs) or [suspect.output]
    out = {}
    for key in keys:
        if key:
            if key not in g.outputs:
                raise BadSuspectError(
                    f"the suspect's output {key[:60]!r} is not an output of {g.model_name} ({', '.join(g.outputs)})"
                )
            name = key
        else:
            values = suspect.outputs.get(key)
            fitting = [o for o, s in zip(g.outputs, g.shapes) if values is None or _fits(values, s, suspect.form)]
            if not fitting:
                assert values is not None  # every output fits when there are no values to rule one out
                raise BadSuspectError(
                    f"the suspect's outputs ({_width(values.shape[1:])} values each) fit no output "
                    f"of {g.model_name} ({', '.join(f'{o} {s}' for o, s in zip(g.outputs, g.shapes))})"
                )
            name = fitting[0]
        out[key] = name
        shape = g.shapes[g.output_index(name)]
        values = suspect.outputs.get(key)
        if values is not None and not _fits(values, shape, suspect.form):
            raise BadSuspectError(
                f"the suspect's output shape {list(values.shape[1:])} differs from the DB's {shape} for output {name}"
            )
        if suspect.index is not None and (suspect.index >= _width(shape)).any():
            raise BadSuspectError(f"the suspect holds indices beyond the model's {_width(shape)} outputs")
    return out


def _fits(values: np.ndarray, shape, form: str) -> bool:
    if form == "raw":
        return tuple(values.shape[1:]) == tuple(shape)
    width = _width(values.shape[1:])
    partial = form in ("logprobs", "softmax") or top_k(form) is not None  # top-k of the values
    return width == _width(shape) or (partial and width <= _width(shape))
