"""PNG plots of an ``hspi eval`` report: accuracy against the number of queries (ours, the
svm-bits baseline, the bit-identity ceiling and the majority rate on the same axes) for every
protocol case, and a confusion matrix per target (ours, random probe split)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from hspi_onnx.learn.results import EvalReport


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _case_name(protocol: str, holdout: str, form: str) -> str:
    return protocol + ("" if holdout == "-" else f"-{holdout}") + ("" if form == "raw" else f"-{form}")


def accuracy_plots(report: EvalReport, outdir: Path) -> list[Path]:
    plt = _plt()
    by_case: dict[tuple, dict] = defaultdict(lambda: defaultdict(list))
    for r in report.records:
        by_case[(r.protocol, r.holdout, r.form)][r.target].append(r)
    paths = []
    for (protocol, holdout, form), targets in by_case.items():
        k = len(targets)
        cols = min(4, k)
        rows = math.ceil(k / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
        for ax, (target, recs) in zip(axes.flat, sorted(targets.items())):
            for method, style in (("catboost", "o-"), ("svm-bits", "s--")):
                pts = sorted((r.n, r.accuracy) for r in recs if r.method == method and r.accuracy is not None)
                if pts:
                    ax.plot(*zip(*pts), style, label="ours (CatBoost)" if method == "catboost" else "svm-bits (paper)")
            ax.axhline(recs[0].ceiling, color="0.4", ls=":", lw=1, label="bit-identity ceiling")
            if recs[0].majority is not None:
                ax.axhline(recs[0].majority, color="0.75", lw=1, label="majority class")
            ax.set_xscale("log", base=2)
            ax.set_ylim(0, 1.02)
            ax.set_title(target, fontsize=9)
            ax.set_xlabel("queries n", fontsize=8)
            ax.tick_params(labelsize=7)
        for ax in list(axes.flat)[k:]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=6, loc="lower right")
        name = _case_name(protocol, holdout, form)
        fig.suptitle(f"accuracy vs queries: {name}", fontsize=10)
        paths.append(_save(plt, fig, outdir / f"accuracy-{name}.png"))
    return paths


def _short(label: str, width: int = 38) -> str:
    parts = label.split("/")
    text = "/".join([parts[0].split("@")[0], *parts[2:]]) if len(parts) == 4 else label
    return text if len(text) <= width else text[: width - 1] + "…"


def confusion_plots(report: EvalReport, outdir: Path) -> list[Path]:
    import numpy as np

    plt = _plt()
    paths = []
    for target, conf in report.confusion.items():
        m = np.array(conf["matrix"], dtype=float)
        labels = conf["labels"]
        if target == "platform":  # class keys list every member; name a class by its first member
            labels = [
                f"{_short(lab.split(' | ')[0])}" + (f" (+{lab.count(' | ')})" if " | " in lab else "") for lab in labels
            ]
        size = max(3.5, 0.28 * len(labels) + 2.5)
        fig, ax = plt.subplots(figsize=(size + 1.5, size))
        norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{target}: ours, random probe split, n={report.confusion_n}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.04)
        paths.append(_save(plt, fig, outdir / f"confusion-{target}.png"))
    return paths


def write_plots(report: EvalReport, outdir: str | Path) -> list[Path]:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    return accuracy_plots(report, outdir) + confusion_plots(report, outdir)
