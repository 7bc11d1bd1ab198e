"""The measured equivalence structure of fp32 platforms on the ResNet-style model.

Recorded on an AVX2 CPU (AMD EPYC) with ONNX Runtime 1.31 and PyTorch 2.13 by
`hspi survey -m resnet`; the test recomputes it from real outputs and fails if it changes.
"""

import pytest

from hspi_onnx.host import cpu_facts
from hspi_onnx.inputs.probes import generate
from hspi_onnx.run.adapter import available_variants
from hspi_onnx.run.runner import execute


def _partition(zoo):
    info = zoo["resnet"]
    probes = generate(info, n=8, seed=11)
    groups = {}
    for adapter, p in available_variants(info, probes.kind):
        if p.precision != "fp32":
            continue
        digests = tuple(execute(adapter, info, p, probes).digests()[info.output_names[0]])
        short = f"{p.runtime}/" + p.knob_string()
        groups.setdefault(digests, set()).add(short)
    return {frozenset(g) for g in groups.values()}


def _ort(opts, bss, threads):
    return {f"onnxruntime/bs={b},opt={o},threads={t}" for o in opts for b in bss for t in threads}


def _torch(layout, src, bs):
    return {f"pytorch/bs={bs},layout={layout},mode=eager,src={src},threads={t}" for t in (1, 2)}


@pytest.mark.skipif(cpu_facts()["isa"] != "avx2", reason="structure recorded on an AVX2 CPU only")
def test_resnet_fp32_equivalence_classes(zoo):
    low = ("disabled", "basic", "extended")
    expected = {
        # Without the NCHWc layout transform (opt < all) thread count matters only at batch 1.
        frozenset(_ort(low, [1], [1]) | _ort(low, [8], [1, 2])),
        frozenset(_ort(low, [1], [2])),
        # opt=all: one class whatever the batch size and threads, and distinct from the rest.
        frozenset(_ort(["all"], [1, 8], [1, 2])),
    }
    # PyTorch eager: threads 1 vs 2 never matter; batch size, layout and source always do.
    expected |= {frozenset(_torch(lay, s, b)) for lay in ("nchw", "nhwc") for s in ("module", "onnx") for b in (1, 8)}
    assert _partition(zoo) == expected
