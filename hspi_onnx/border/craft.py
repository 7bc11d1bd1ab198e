"""Crafting border probes: white-box PGD to a decision boundary, then bisection on the real runtimes.

For label-only services every platform returns the same label on random probes. Near a
decision boundary the two top logits are almost equal, and the low bits that tell platforms
apart decide the label. The recipe:

1. **The classes.** The DB's equivalence classes of the model (platforms bit-identical on its
   probes), one representative each that this machine can run (bs=1 preferred), each opened
   once as a real runtime session.
2. **PGD** (white box, the model in PyTorch at fp32 through :func:`build_torch_module`): from a
   seeded noise probe, signed-gradient steps on the margin between the two top logits until
   the label flips. The last step crosses the boundary: a segment ``[x_a, x_b]`` whose ends
   have different labels (the gradient cannot say where each platform's boundary lies: its
   low bits are not the reference's).
3. **Bisection on the real runtimes.** Along the segment each representative's label is
   bisected to the float32 resolution of the points, in a few dozen runtime calls: each class
   gets the bracket where its own label flips. Classes whose brackets do not overlap are
   separated by the points between them: the ends of every bracket are the candidates.
4. **Verification.** Every representative labels every candidate twice; a candidate is kept
   when its labels split the classes, the same way both times, and only if it separates a
   pair that no kept probe separates yet.

The border set is a probe set (kind ``border``) whose meta record carries its provenance: per
probe the seed, the segment's labels, the classes on each side; the method; the runtime
versions it was crafted on.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hspi_onnx.errors import HspiError
from hspi_onnx.forms import top_indices
from hspi_onnx.inputs.model import ModelInfo
from hspi_onnx.inputs.probes import BORDER_KIND, ProbeSet, generate
from hspi_onnx.labels import Platform
from hspi_onnx.run.adapter import Adapter, Session
from hspi_onnx.run.runner import batches

MAX_BISECT = 60  # halvings of the segment: float32 points stop changing well before


@dataclass
class Rep:
    """One equivalence class, run through one of its platforms."""

    key: str  # the class key (its platforms joined by " | ")
    label: str  # the platform that runs it
    bs: int
    adapter: Adapter
    platform: Platform
    session: Session | None = None  # open while open_sessions() runs
    calls: int = 0

    def labels(self, model: ModelInfo, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Top-1 label of the model's first output for each row of ``feeds``, run in batches of
        ``bs`` exactly as a build runs them (the last batch wraps around)."""
        n = len(next(iter(feeds.values())))
        out = np.empty(n, dtype=np.int64)
        assert self.session is not None  # called inside open_sessions()
        for idx in batches(n, self.bs):
            got = self.session.run({k: np.ascontiguousarray(v[idx]) for k, v in feeds.items()})
            self.calls += 1
            first = np.asarray(got[model.output_names[0]], np.float64).reshape(len(idx), -1)
            out[idx] = top_indices(first, 1)[:, 0]
        return out


@dataclass
class BorderResult:
    probes: ProbeSet
    classes: list[str]  # class keys, in the order of the label vectors
    labels: np.ndarray  # (n probes, n classes): each representative's label on each kept probe
    separated: set = field(default_factory=set)  # pairs (i, j) of class indices some probe separates
    seeds_tried: int = 0
    candidates: int = 0
    runtime_calls: int = 0
    seconds: float = 0.0
    unrunnable: dict[str, str] = field(default_factory=dict)  # class key -> why no member runs here

    @property
    def pairs(self) -> int:
        c = len(self.classes)
        return c * (c - 1) // 2

    def as_dict(self) -> dict:
        return {
            "probes": len(self.probes),
            "sha256": self.probes.sha256,
            "classes": len(self.classes),
            "pairs": self.pairs,
            "separated_pairs": len(self.separated),
            "separable_fraction": round(len(self.separated) / self.pairs, 4) if self.pairs else None,
            "seeds_tried": self.seeds_tried,
            "candidates": self.candidates,
            "runtime_calls": self.runtime_calls,
            "seconds": round(self.seconds, 1),
            "unrunnable_classes": self.unrunnable,
        }


def class_representatives(db, model: ModelInfo) -> tuple[list[Rep], dict[str, str]]:
    """One runnable platform per equivalence class of ``model`` in the DB (bs=1 and fewest
    threads first), and the classes with no member this machine runs."""
    from hspi_onnx.db.dataset import load_groups
    from hspi_onnx.inputs.probes import default_kind
    from hspi_onnx.labels import Platform
    from hspi_onnx.run.adapter import Offered

    groups = [g for g in load_groups(db) if g.model_sha256 == model.sha256]
    if not groups:
        raise HspiError(f"the DB holds no outputs of {model.name}: build it first (hspi db build)")
    group = max(groups, key=lambda g: len(g.platforms))
    members: dict[str, list[str]] = {}
    for label, key in group.classes().items():
        members.setdefault(key, []).append(label)
    offered = Offered(model, default_kind(model))

    def cost(label: str) -> tuple:
        knob = Platform.parse(label).knob
        return int(knob.get("bs", "1")), int(knob.get("threads", "1")), label

    reps, unrunnable = [], {}
    for key, labels in sorted(members.items()):
        runnable = next(
            ((label, pair) for label in sorted(labels, key=cost) if (pair := offered.get(label)) is not None), None
        )
        if runnable is None:
            unrunnable[key] = "no member of the class runs on this machine"
        else:
            label, (adapter, platform) = runnable
            reps.append(Rep(key, label, int(platform.knob.get("bs", "1")), adapter, platform))
    return reps, unrunnable


@contextlib.contextmanager
def open_sessions(model: ModelInfo, reps: list[Rep]):
    """Every representative's runtime session, open together in this process."""
    with contextlib.ExitStack() as stack:
        for rep in reps:
            rep.session = stack.enter_context(rep.adapter.prepare(model, rep.platform))
        yield reps


class Reference:
    """The model at fp32 in PyTorch, for gradients with respect to its primary input."""

    def __init__(self, model: ModelInfo) -> None:
        from hspi_onnx.graph.torch_module import build_torch_module, has_module

        self.model = model
        self.module = build_torch_module(model, "module" if has_module(model) else "onnx", "fp32").eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def margin_step(self, feeds: dict[str, np.ndarray], top2: tuple[int, int]):
        """(the first output's row, the gradient of logit[top1] - logit[top2] w.r.t. the primary input)."""
        import torch

        args = []
        primary = self.model.primary.name
        for spec in self.model.inputs:
            t = torch.from_numpy(np.ascontiguousarray(feeds[spec.name]))
            if spec.name == primary:
                t = t.to(torch.float32).requires_grad_(True)
                x = t
            args.append(t)
        out = self.module(*args)
        out = out[0] if isinstance(out, (tuple, list)) else out
        row = out.reshape(1, -1)
        margin = row[0, top2[0]] - row[0, top2[1]]
        margin.backward()
        assert x.grad is not None  # backward() filled it
        return row.detach().numpy()[0].astype(np.float64), x.grad.detach().numpy()


def pgd_segment(
    ref: Reference, model: ModelInfo, feeds: dict[str, np.ndarray], steps: int, step: float, spread: float = 0.01
):
    """(x_a, x_b): the last two PGD iterates, on either side of the reference's boundary between
    its two top labels; None when ``steps`` do not flip the label. Each signed-gradient step is
    sized by the linear estimate of the margin it removes (1.5 times what the margin needs,
    at most ``step`` of the input range), so a model with wide margins gets there in a few dozen
    steps and a near one does not jump far past the boundary."""
    spec = model.primary
    x = feeds[spec.name].astype(np.float32)
    row, _ = ref.margin_step(feeds, (0, 1))
    order = np.argsort(-row, kind="stable")
    top2 = (int(order[0]), int(order[1]))
    most = step * (spec.high - spec.low)
    for _ in range(steps):
        row, grad = ref.margin_step({**feeds, spec.name: x}, top2)
        margin = row[top2[0]] - row[top2[1]]
        if margin < 0:
            return None
        slope = float(np.abs(grad).sum())
        size = most if slope == 0 else min(most, 1.5 * margin / slope + 1e-7 * (spec.high - spec.low))
        nxt = np.clip(x - size * np.sign(grad), spec.low, spec.high).astype(np.float32)
        after, _ = ref.margin_step({**feeds, spec.name: nxt}, top2)
        if int(np.argmax(after)) != top2[0]:
            # widen the crossing to where the reference margin is +-spread of the top logit:
            # platforms' boundaries lie that far apart (fp16, int8), not a float32 step
            delta = spread * max(abs(row[top2[0]]), 1e-3)
            half = delta / slope if slope else size
            wide = (
                np.clip(x + half * np.sign(grad), spec.low, spec.high).astype(np.float32),
                np.clip(x - half * np.sign(grad), spec.low, spec.high).astype(np.float32),
            )
            ends = [int(np.argmax(ref.margin_step({**feeds, spec.name: w}, top2)[0])) for w in wide]
            return wide if ends[0] != ends[1] else (x, nxt)  # the estimate is linear: keep a true crossing
        if np.array_equal(nxt, x):
            return None
        x = nxt
    return None


def _point(xa: np.ndarray, xb: np.ndarray, t: float) -> np.ndarray:
    return (xa.astype(np.float64) + t * (xb.astype(np.float64) - xa.astype(np.float64))).astype(np.float32)


def flip_bracket(rep: Rep, model: ModelInfo, feeds: dict, xa: np.ndarray, xb: np.ndarray) -> tuple[float, float] | None:
    """(lo, hi): adjacent points of the segment (float32 resolution) where ``rep``'s label
    changes; None when its labels at both ends agree."""
    name = model.primary.name

    def label(t: float) -> int:
        return int(rep.labels(model, {**feeds, name: _point(xa, xb, t)})[0])

    lo, hi = 0.0, 1.0
    at_lo, at_hi = label(lo), label(hi)
    if at_lo == at_hi:
        return None
    for _ in range(MAX_BISECT):
        mid = (lo + hi) / 2
        p_mid = _point(xa, xb, mid)
        if np.array_equal(p_mid, _point(xa, xb, lo)) or np.array_equal(p_mid, _point(xa, xb, hi)):
            break
        if label(mid) == at_lo:
            lo = mid
        else:
            hi = mid
    return lo, hi


class Keeper:
    """The border set being gathered: a candidate is kept when every representative labels it
    the same way twice, the labels split the classes, and it splits some class pair that fewer
    than ``redundancy`` kept probes split (so that a random sample of the set still separates
    most pairs)."""

    def __init__(self, model: ModelInfo, reps: list[Rep], redundancy: int) -> None:
        self.model, self.reps, self.redundancy = model, reps, redundancy
        self.pairs = set(itertools.combinations(range(len(reps)), 2))
        self.inputs: list[dict[str, np.ndarray]] = []
        self.labels: list[np.ndarray] = []
        self.provenance: list[dict] = []
        self.separated: set = set()
        self.cover: dict = {}  # pair -> how many kept probes split it
        self.candidates = 0

    @property
    def done(self) -> bool:
        return all(self.cover.get(p, 0) >= self.redundancy for p in self.pairs)

    def consider(self, feeds: dict[str, np.ndarray], origin: dict) -> bool:
        self.candidates += 1
        first = np.array([r.labels(self.model, feeds)[0] for r in self.reps])
        if len(set(first.tolist())) < 2:
            return False
        again = np.array([r.labels(self.model, feeds)[0] for r in self.reps])
        if not np.array_equal(first, again):
            return False  # not repeatable
        split = {(i, j) for i, j in self.pairs if first[i] != first[j]}
        if not any(self.cover.get(pair, 0) < self.redundancy for pair in split):
            return False  # every pair it splits is split often enough already
        new = split - self.separated
        self.separated |= new
        for pair in split:
            self.cover[pair] = self.cover.get(pair, 0) + 1
        self.inputs.append(feeds)
        self.labels.append(first)
        self.provenance.append(
            {**origin, "labels": [int(v) for v in first], "new_pairs": len(new), "pairs": len(split)}
        )
        return True


def _setup(db, model: ModelInfo) -> tuple[list[Rep], dict[str, str]]:
    reps, unrunnable = class_representatives(db, model)
    if len(reps) < 2:
        raise HspiError(
            f"border probes separate classes: this machine runs {len(reps)} of the DB's classes of {model.name}"
        )
    return reps, unrunnable


def _result(
    model: ModelInfo, keeper: Keeper, seed: int, tried: int, t0: float, unrunnable: dict, method: str, **params
) -> BorderResult:
    from hspi_onnx.run.adapter import tool_versions

    if not keeper.inputs:
        raise HspiError(
            f"no border probe separated any of the {len(keeper.reps)} classes in {tried} seeds "
            "(try more --seeds or a larger --steps)"
        )
    inputs = {name: np.concatenate([f[name] for f in keeper.inputs]) for name in model.input_names}
    ids = np.arange(len(keeper.inputs), dtype=np.int64)
    probes = ProbeSet("border", BORDER_KIND, seed, "probe", inputs, ids)
    probes.name = f"border-{model.name}-{probes.sha256[:8]}"
    reps = keeper.reps
    probes.provenance = {
        "method": method,
        "reference": "pytorch fp32",
        "classes": [r.key for r in reps],
        "representatives": [r.label for r in reps],
        "probes": keeper.provenance,
        "versions": tool_versions(),
        **params,
    }
    return BorderResult(
        probes,
        [r.key for r in reps],
        np.stack(keeper.labels),
        keeper.separated,
        tried,
        keeper.candidates,
        sum(r.calls for r in reps),
        time.perf_counter() - t0,
        unrunnable,
    )


def _search(
    db,
    model: ModelInfo,
    target: int,
    max_seeds: int,
    seed: int,
    redundancy: int,
    on_progress,
    candidates,
    method: str,
    **params,
) -> BorderResult:
    """The loop both searches share: per seed, ``candidates(ref, reps, seed)`` yields
    (feeds, origin) pairs that :class:`Keeper` judges, until the set is full or every pair is
    split ``redundancy`` times."""
    t0 = time.perf_counter()
    reps, unrunnable = _setup(db, model)
    ref = Reference(model)
    keeper = Keeper(model, reps, redundancy)
    tried = 0
    with open_sessions(model, reps):
        for s in range(seed, seed + max_seeds):
            if len(keeper.inputs) >= target or keeper.done:
                break
            tried += 1
            for feeds, origin in candidates(ref, reps, s):
                if keeper.consider(feeds, origin):
                    on_progress(
                        {
                            "kept": len(keeper.inputs),
                            "separated": len(keeper.separated),
                            "pairs": len(keeper.pairs),
                            "seeds": tried,
                        }
                    )
                if len(keeper.inputs) >= target:
                    break
    return _result(model, keeper, seed, tried, t0, unrunnable, method, **params)


def craft(
    db,
    model: ModelInfo,
    target: int = 64,
    max_seeds: int = 200,
    seed: int = 0,
    steps: int = 200,
    step: float = 0.01,
    redundancy: int = 3,
    on_progress: Callable[[dict], None] = lambda d: None,
) -> BorderResult:
    """Border probes for ``model`` separating the DB's equivalence classes (see :class:`Keeper`);
    seeds are tried until every pair is split ``redundancy`` times, ``target`` probes are kept or
    ``max_seeds`` run out. Token inputs go to :func:`craft_tokens`."""
    if model.primary.kind == "tokens":
        return craft_tokens(db, model, target, max_seeds, seed, steps, redundancy, on_progress)
    if model.primary.kind not in ("image", "tensor"):
        raise HspiError(f"{model.name} takes {model.primary.kind} inputs: no border search for them")

    def candidates(ref, reps, s):
        start = generate(model, "noise", n=1, seed=s).inputs
        seg = pgd_segment(ref, model, start, steps, step)
        if seg is None:
            return
        xa, xb = seg
        points = []
        for rep in reps:
            br = flip_bracket(rep, model, start, xa, xb)
            if br is not None:
                points += [br[0], br[1]]
        for t in sorted(set(points)):
            yield {**start, model.primary.name: _point(xa, xb, t)}, {"seed": s, "t": t}

    return _search(
        db,
        model,
        target,
        max_seeds,
        seed,
        redundancy,
        on_progress,
        candidates,
        "pgd-margin+runtime-bisection",
        steps=steps,
        step=step,
    )


def token_margins(ref: Reference, model: ModelInfo, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The reference's margin between its two top next-token logits, per row of ``feeds``."""
    import torch

    args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in model.inputs]
    with torch.inference_mode():
        out = ref.module(*args)
    out = out[0] if isinstance(out, (tuple, list)) else out
    rows = out.reshape(len(args[0]), -1).double().numpy()
    top = np.sort(rows, axis=1)[:, -2:]
    return top[:, 1] - top[:, 0]


def craft_tokens(
    db,
    model: ModelInfo,
    target: int = 64,
    max_seeds: int = 200,
    seed: int = 0,
    rounds: int = 200,
    redundancy: int = 3,
    on_progress: Callable[[dict], None] = lambda d: None,
    near: int = 8,
) -> BorderResult:
    """Border prompts for a model of token ids: from a seeded random prompt, greedy single-token
    substitutions (every vocabulary entry at one position per round, scored in one batch on the
    reference) drive the margin between the two top next-token logits down; the ``near`` prompts
    of smallest margin met on the way are the candidates the real runtimes label (:class:`Keeper`)."""
    spec = model.primary

    def candidates(ref, reps, s):
        rng = np.random.default_rng([s, 16])
        feeds = generate(model, "tokens", n=1, seed=s).inputs
        x = feeds[spec.name][0].copy()
        best = float(token_margins(ref, model, feeds)[0])
        seen: dict[bytes, float] = {x.tobytes(): best}
        for _ in range(rounds):
            pos = tuple(int(rng.integers(d)) for d in x.shape)
            trial = np.repeat(x[None], spec.vocab, axis=0)
            trial[(slice(None), *pos)] = np.arange(spec.vocab, dtype=x.dtype)
            m = token_margins(
                ref, model, {**{k: np.repeat(v, spec.vocab, axis=0) for k, v in feeds.items()}, spec.name: trial}
            )
            for k in np.argsort(m)[:near]:
                seen.setdefault(trial[k].tobytes(), float(m[k]))
            k = int(np.argmin(m))
            if m[k] < best:
                best, x = float(m[k]), trial[k].copy()
            if best == 0.0:
                break
        for raw, margin in sorted(seen.items(), key=lambda kv: kv[1])[:near]:
            prompt = np.frombuffer(raw, dtype=x.dtype).reshape(1, *x.shape)
            yield {**feeds, spec.name: prompt.copy()}, {"seed": s, "margin": margin}

    return _search(
        db,
        model,
        target,
        max_seeds,
        seed,
        redundancy,
        on_progress,
        candidates,
        "greedy-token-substitution",
        rounds=rounds,
        near=near,
    )
