"""``hspi demo``: the whole product on one machine, end to end.

Build the default reference DB (zoo models on every available CPU platform), train the
classifier, evaluate it (plots), then play black-box services over HTTP: ``hspi serve`` runs a
platform chosen at random with its label hidden, ``hspi query`` asks it some probes over
localhost, its answers are the suspect file, matched against the DB, and one true and one
false claim about it are verified. The first box speaks KServe v2 (any model); the second is
the language model behind the OpenAI-compatible completions endpoint, whose per-token top-k
log-probabilities are the suspect. Last, where the language-model extra is installed, an LLM
audit: ``hspi serve`` runs SmolLM2 on llama.cpp Q4_K_M behind the OpenAI chat API while the
provider claims transformers bf16 with SDPA attention; ``hspi audit``'s loop asks it the chats,
names the served stack and writes the HTML report, then checks the true claim.
"""

from __future__ import annotations

import functools
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hspi_onnx.errors import HspiError


@dataclass
class DemoConfig:
    out: Path
    models: tuple[str, ...] = ("resnet", "lm")
    probes: int = 300
    queries: int = 32
    seed: int | None = None
    rows_per_platform: int = 100
    iterations: int = 100
    eval_queries: tuple[int, ...] = (1, 2, 4, 8, 16)
    eval_groups: int = 20  # test query groups per platform and n
    platforms: dict[str, list[str]] | None = None  # model -> platform globs (default: every platform)

    @classmethod
    def quick(cls, out: Path, seed: int | None = None) -> DemoConfig:
        # the LM on a few ONNX Runtime platforms only: enough for the OpenAI black box
        return cls(
            out,
            models=("digits", "lm"),
            probes=120,
            queries=16,
            seed=seed,
            rows_per_platform=60,
            iterations=60,
            eval_queries=(1, 8),
            eval_groups=10,
            platforms={"lm": ["onnxruntime/*/*/bs=1,opt=all,*threads=1"]},
        )


def build_db(cfg: DemoConfig, on_event) -> tuple:
    """The reference DB under ``cfg.out/db`` (resumable: finished shards are kept)."""
    from hspi_onnx.db.build import build
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.inputs.probes import generate

    db = ReferenceDB(cfg.out / "db", create=True)
    built = []
    for name in cfg.models:
        info = resolve_model(name)
        probes = generate(info, None, n=cfg.probes, seed=0)
        summary = build(
            db,
            info,
            probes,
            (cfg.platforms or {}).get(name),
            on_event=functools.partial(on_event, name),
        )
        built.append((info, probes, summary))
    return db, built


def train_classifier(db, cfg: DemoConfig, on_platform, on_target):
    from hspi_onnx.db.store import db_digest
    from hspi_onnx.learn.classify import load_classifier
    from hspi_onnx.learn.training import fit_and_save

    path = cfg.out / "classifier"
    try:
        clf = load_classifier(path)
        if clf.meta.get("db_digest") == db_digest(db):
            return clf, path, False
    except HspiError:
        pass
    stage = {"name": ""}
    fit_and_save(
        db,
        path,
        iterations=cfg.iterations,
        rows_per_platform=cfg.rows_per_platform,
        seed=0,
        on_stage=lambda name, total: stage.update(name=name),
        on_step=lambda: on_platform() if stage["name"].startswith("features") else on_target("", 0.0),
    )
    return load_classifier(path), path, True


def evaluate_for_plots(db, cfg: DemoConfig, on_step):
    from hspi_onnx.learn.classify import CatBoostParams
    from hspi_onnx.learn.evaluate import EvalConfig, evaluate
    from hspi_onnx.learn.plots import write_plots

    ecfg = EvalConfig(
        queries=cfg.eval_queries,
        protocols=("split",),
        max_groups_per_unit=cfg.eval_groups,
        params=CatBoostParams(iterations=cfg.iterations, max_rows_per_unit=cfg.rows_per_platform),
    )
    report = evaluate(db, ecfg, None, on_step)
    plots = write_plots(report, cfg.out / "plots")
    (cfg.out / "eval.json").write_text(json.dumps(report.as_dict(), indent=1, sort_keys=True), "utf-8")
    return report, plots


@dataclass
class BlackBox:
    label: str  # hidden from the matcher; revealed at the end
    suspect: Path
    true_claim: str
    false_claim: str
    model: str = ""
    protocol: str = "kserve-v2"


def language_models(built) -> list:
    """The built models ``hspi serve`` can answer for over the OpenAI-compatible endpoint."""
    from hspi_onnx.serve.openai_api import byte_lm

    return [b for b in built if byte_lm(b[0]) is not None]


def play_black_box(db, built, cfg: DemoConfig, rng: np.random.Generator, protocol: str = "kserve-v2") -> BlackBox:
    """A black-box service over HTTP: ``hspi serve`` runs a random platform of a random model
    in a child process; ``cfg.queries`` random probes of the DB's probe set are sent to it with
    ``hspi query`` over localhost, and its answers are the suspect file: KServe v2 responses, or
    with ``protocol="openai"`` a language model's top-5 log-probabilities of the next token. The
    label never leaves the server process (the parent knows it only to reveal it at the end)."""
    from hspi_onnx.labels import Platform
    from hspi_onnx.query import QueryOptions, query
    from hspi_onnx.serve.process import ServerProcess

    choices = language_models(built) if protocol == "openai" else built
    if not choices:
        raise HspiError("no language model was built to answer over the OpenAI-compatible endpoint")
    info, probes, _ = choices[int(rng.integers(len(choices)))]
    manifest = db.manifest()
    labels = sorted(
        {r for run in manifest.runs.values() if run.model_sha256 == info.sha256 for r in run.platforms}
        - {f.platform for f in manifest.failures}
    )
    if not labels:
        raise HspiError(f"the DB holds no platform of {info.name} to play the black box")
    label = labels[int(rng.integers(len(labels)))]
    plat = Platform.parse(label)
    pick = np.sort(rng.choice(len(probes), size=min(cfg.queries, len(probes)), replace=False))
    path = cfg.out / ("suspect.jsonl" if protocol == "kserve-v2" else "suspect-openai.jsonl")
    path.unlink(missing_ok=True)
    with ServerProcess(str(info.path), label) as server:
        # one probe per request, as an auditor who cannot know the service's batching would send them
        query(
            probes.sample(pick),
            path,
            QueryOptions(server.url, model=info.name, protocol=protocol, batch=1, concurrency=2, top_logprobs=5),
        )
    # a false claim the DB can refute: a precision this runtime has in the DB, but not this one
    others = sorted(
        {Platform.parse(lab).precision for lab in labels if Platform.parse(lab).runtime == plat.runtime}
        - {plat.precision}
    )
    false_precision = others[int(rng.integers(len(others)))] if others else "fp64"
    return BlackBox(
        label,
        path,
        f"runtime={plat.runtime},precision={plat.precision}",
        f"runtime={plat.runtime},precision={false_precision}",
        info.name,
        protocol,
    )


# the LLM audit: what the black box serves, what its provider claims, and the DB's neighbours
LLM_SERVED = "llamacpp/*/q4_k_m/*fa=off,*kv=f16,nbatch=512,*threads=1,*"
LLM_PLATFORMS = (
    LLM_SERVED,
    "llamacpp/*/q4_k_m/*fa=on,*kv=f16,nbatch=512,*threads=1,*",
    "llamacpp/*/q8_0/*fa=off,*kv=f16,nbatch=512,*threads=1,*",
    "transformers/*/bf16/*attn=sdpa*threads=1",
    "transformers/*/fp32/*attn=sdpa*threads=1",
)
LLM_FALSE_CLAIM = "runtime=transformers,precision=bf16,attn=sdpa"
LLM_TRUE_CLAIM = "runtime=llamacpp,precision=q4_k_m,fa=off"
LLM_CHATS = 2


def llm_available() -> str | None:
    """Why the LLM audit cannot run here (None: it can)."""
    import importlib.util

    for module, extra in (("llama_cpp", "llm"), ("transformers", "llm"), ("fastapi", "serve")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (the [{extra}] extra)"
    try:
        from hspi_onnx.inputs.model import resolve_model

        resolve_model("smollm2")
    except HspiError as exc:
        return str(exc)
    return None


def play_llm_audit(cfg: DemoConfig, on_event) -> tuple[str, list[dict]]:
    """Build SmolLM2's DB on a few stacks (``cfg.out/llm-db``, resumable), serve the llama.cpp
    Q4_K_M one behind ``hspi serve``'s OpenAI chat API (label hidden), audit it against the false
    and the true claim. (the served label, the two audit documents)."""
    from hspi_onnx.db.build import build
    from hspi_onnx.db.store import ReferenceDB
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.inputs.probes import generate
    from hspi_onnx.match.claims import parse_claim
    from hspi_onnx.query import QueryOptions
    from hspi_onnx.query.audit import audit_endpoint
    from hspi_onnx.query.chat import plan_for
    from hspi_onnx.serve.process import ServerProcess

    db = ReferenceDB(cfg.out / "llm-db", create=True)
    info = resolve_model("smollm2")
    probes = generate(info, None, n=LLM_CHATS, seed=0)
    summary = build(db, info, probes, list(LLM_PLATFORMS), on_event=on_event)
    if summary.failed:
        raise HspiError(f"the LLM demo's DB: {len(summary.failed)} platform(s) failed: {next(iter(summary.failed))}")
    served = next(label for label in [*summary.built, *summary.skipped] if "/q4_k_m/" in label and "fa=off" in label)
    docs = []
    answers = cfg.out / "llm-audit.answers.jsonl"
    answers.unlink(missing_ok=True)
    with ServerProcess(str(info.path), served) as server:
        opts = QueryOptions(server.url, "smollm2", "openai", top_logprobs=5)
        opts.chat = plan_for(probes, "openai", "smollm2", None, None)
        opts.endpoint = "chat"
        for name, claim in (("false", LLM_FALSE_CLAIM), ("true", LLM_TRUE_CLAIM)):
            report = cfg.out / f"llm-audit-{name}-claim.html"
            docs.append(audit_endpoint(db, probes, opts, parse_claim(claim), report, answers, ["hspi", "demo"]))
    return served, docs


def new_seed() -> int:
    return secrets.randbelow(1 << 31)
