"""Child-process isolation: platforms that need their own environment run in a child, and a
runtime that segfaults fails its platform while the build goes on."""

import numpy as np
import pytest

from hspi_onnx.run.adapter import registry, selected_variants
from hspi_onnx.db.build import build
from hspi_onnx.run.execute import run_platform
from hspi_onnx.host import isa_caps
from hspi_onnx.run.isolate import PlatformCrashed
from hspi_onnx.inputs.probes import generate
from hspi_onnx.db.store import ReferenceDB

ORT = "onnxruntime/*/fp32/bs=1,opt=all,threads=1"
TORCH = "pytorch/*/fp32/bs=1,layout=nchw,src=module,threads=1"

# Loaded by every Python started with this directory on PYTHONPATH: when asked, it makes ONNX
# Runtime's first inference dereference a null pointer, a real SIGSEGV inside the runtime call.
SITECUSTOMIZE = '''
import os
if os.environ.get("HSPI_TEST_SEGFAULT") == "1":
    import ctypes
    import onnxruntime

    def _crash(self, *args, **kwargs):
        return ctypes.string_at(0)

    onnxruntime.InferenceSession.run = _crash
'''


@pytest.fixture
def segfaulting_children(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setenv("HSPI_TEST_SEGFAULT", "1")


def test_a_child_run_equals_the_in_process_run(zoo):
    info = zoo["digits"]
    probes = generate(info.spec, n=12)
    (a, p), = selected_variants(info, probes.kind, [ORT])
    here = run_platform(a, info, p, probes, isolate=False, repeat=4)
    child = run_platform(a, info, p, probes, isolate=True, repeat=4)
    assert child.outputs.tobytes() == here.outputs.tobytes() and child.repeats is True
    assert child.digests() == here.digests()


def test_segfault_fails_the_platform_not_the_build(zoo, tmp_path, segfaulting_children, monkeypatch):
    info = zoo["digits"]
    probes = generate(info.spec, n=8)
    (a, p), = selected_variants(info, probes.kind, [ORT])
    with pytest.raises(PlatformCrashed, match="SIGSEGV"):
        run_platform(a, info, p, probes, isolate=True)
    monkeypatch.setattr(registry()["onnxruntime"], "isolated", True)  # every ORT platform in a child
    db = ReferenceDB(tmp_path / "db", create=True)
    summary = build(db, info, probes, [ORT, TORCH])
    assert summary.built == [str(selected_variants(info, probes.kind, [TORCH])[0][1])]
    (reason,) = summary.failed.values()
    assert "crashed (killed by SIGSEGV)" in reason
    assert db.manifest()["failures"][0]["platform"] == str(p)


@pytest.mark.skipif(not isa_caps(), reason="this CPU has no lower instruction-set level to cap to")
def test_isa_capped_variants_run_in_a_child_with_their_switch(zoo, tmp_path):
    info = zoo["digits"]
    probes = generate(info.spec, n=8)
    isa = isa_caps()[-1][0]
    pairs = selected_variants(info, probes.kind, [f"pytorch/cpu:{isa}:*/fp32/*"], extra=True)
    assert len(pairs) == 1
    adapter, plat = pairs[0]
    env = adapter.environment(plat)
    assert env["ONEDNN_MAX_CPU_ISA"] and env["ATEN_CPU_CAPABILITY"] == isa
    assert not selected_variants(info, probes.kind, ["pytorch/*"]) or all(
        str(p).split("/")[1] != plat.device for _, p in selected_variants(info, probes.kind, ["pytorch/*"]))
    db = ReferenceDB(tmp_path / "db", create=True)
    summary = build(db, info, probes, [str(plat)], extra=True)
    assert summary.built == [str(plat)] and not summary.nondeterministic
    out = run_platform(adapter, info, plat, probes).outputs
    assert np.isfinite(out.astype(np.float64)).all()
