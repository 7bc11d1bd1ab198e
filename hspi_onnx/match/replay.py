"""``hspi match --replay``: run the candidate platforms on the suspect's own inputs.

A suspect that carries the inputs it answered (an ``.npz`` with inputs, a KServe payload log of
requests with their responses, ``hspi-logprobs/1`` lines with their prompts) needs no probe set.
Its inputs become a probe set of their own (kind ``replay``, named by its content hash); every
platform the DB holds for the model that this machine can run is built over them into the DB,
one more group with the same manifest, atomicity and resume rules as ``hspi db build`` (a second
replay of the same inputs runs nothing); then the suspect is matched against that group exactly
as against DB probes. (The classifier's float64 reference regenerates probe sets from their
seed, which a replay group has not: its features go without it, with a warning.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.errors import BadProbesError, HspiError
from hspi_onnx.inputs.model import ModelInfo
from hspi_onnx.inputs.probes import REPLAY_KIND, ProbeSet, default_kind
from hspi_onnx.match.suspect import BadSuspectError, Suspect

if TYPE_CHECKING:  # for the annotation only: no import at run time
    from hspi_onnx.db.build import BuildSummary


@dataclass
class ReplayPlan:
    model: ModelInfo
    probes: ProbeSet
    plan: list[tuple] = field(default_factory=list)  # (adapter, platform) to run here
    missing: dict[str, str] = field(default_factory=dict)  # DB platforms this machine cannot run, with why
    from_db: bool = True  # candidates are the DB's platforms of the model (else: all available here)
    summary: BuildSummary | None = None  # the BuildSummary of running them

    def as_dict(self) -> dict:
        return {
            "model": self.model.name,
            "model_sha256": self.model.sha256,
            "probe_set": self.probes.name,
            "probes_sha256": self.probes.sha256,
            "inputs": len(self.probes),
            "platforms": [str(p) for _, p in self.plan],
            "not_replayed": self.missing,
            "candidates": "db" if self.from_db else "available here",
            **({"build": self.summary.as_dict()} if self.summary is not None else {}),
        }


def replay_probes(suspect: Suspect, model: ModelInfo) -> ProbeSet:
    """The suspect's inputs as a probe set for ``model`` (ids: the suspect's), checked to fit it."""
    if not suspect.inputs:
        raise BadSuspectError(
            f"suspect file {suspect.path!r} holds no inputs to replay: give an .npz with an "
            "inputs array, a KServe log of requests with their responses, or logprobs lines "
            "with their prompts"
        )
    raw = ProbeSet("replay", REPLAY_KIND, 0, "probe", dict(suspect.inputs), suspect.ids.copy())
    named = ProbeSet(f"replay-{raw.sha256[:12]}", REPLAY_KIND, 0, "probe", raw.inputs, raw.ids)
    try:
        return named.bind(model)
    except BadProbesError as exc:
        raise BadSuspectError(f"the suspect's inputs do not fit model {model.name}: {exc}") from None


def resolve_replay_model(db: ReferenceDB, suspect: Suspect, model: str | None) -> ModelInfo:
    """The model to replay: ``model`` (a zoo name or an ONNX file) when given, else the one the
    suspect names or the DB's only model, found where the DB's manifest says it is."""
    from hspi_onnx.inputs.model import model_at_hand, resolve_model

    if model:
        return resolve_model(model)
    models = db.manifest().models if db.manifest_path.is_file() else {}
    if suspect.model:
        wanted = {sha: m for sha, m in models.items() if suspect.model in (sha, m.name)}
    else:
        wanted = models
    if len(wanted) != 1:
        if suspect.model and not wanted:
            return resolve_model(suspect.model)  # a zoo name the DB does not hold yet
        raise HspiError(
            "name the model to replay with --model (a zoo name or an ONNX file): "
            + ("the suspect names none and the DB holds " + (f"{len(models)} models" if models else "none"))
        )
    sha, m = next(iter(wanted.items()))
    info = model_at_hand(m.path, m.zoo, sha)
    if info is not None:
        return info
    raise HspiError(f"model {m.name!r} (sha256 {sha[:12]}) of the DB is not at hand: give it with --model")


def plan_replay(
    db: ReferenceDB,
    suspect: Suspect | None,
    model: ModelInfo,
    patterns: list[str] | None,
    probes: ProbeSet | None = None,
) -> ReplayPlan:
    """Which platforms to run on the suspect's inputs (or on ``probes``, a replay probe set made
    otherwise: a chat log's forced chats): every DB platform of ``model`` (any probe set) that
    this machine offers, selected by ``patterns``; with none in the DB, every platform available
    here. Static int8 platforms keep the calibration kind their label names."""
    from hspi_onnx.labels import Platform, select
    from hspi_onnx.run.adapter import Offered, selected_variants

    if probes is None:
        assert suspect is not None
        probes = replay_probes(suspect, model)
    labels: list[str] = []
    if db.manifest_path.is_file() and db.shards():
        from hspi_onnx.db.index import load_index

        index = load_index(db)
        for k, g in enumerate(index.groups):
            if g.model_sha256 == model.sha256:
                labels += [p for p in index.platforms_of(k) if p not in labels]
    out = ReplayPlan(model, probes, from_db=bool(labels))
    if not labels:
        out.plan = selected_variants(model, default_kind(model), patterns)
        return out
    chosen = {str(p) for p in select([Platform.parse(lab) for lab in labels], patterns)} if patterns else set(labels)
    offered = Offered(model, default_kind(model))
    for label in labels:
        if label not in chosen:
            continue
        pair = offered.get(label)
        if pair is not None:
            out.plan.append(pair)
        else:
            out.missing[label] = offered.why_not(label)
    if not out.plan:
        raise HspiError(
            f"none of the DB's {len(chosen)} platforms of {model.name} runs on this machine "
            f"(e.g. {next(iter(out.missing.items()))[1]})"
        )
    return out


def replayed_suspect(suspect: Suspect, plan: ReplayPlan) -> Suspect:
    """The suspect, now naming the replay group's probe set and model."""
    return dataclasses.replace(suspect, probes=plan.probes.sha256, model=plan.model.sha256)
