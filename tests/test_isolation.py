"""The execution layer: every platform runs in a worker process by default, and a runtime that
dies there (SIGSEGV, SIGABRT, SIGKILL as the OOM killer sends it), hangs, or floods stderr
fails that platform alone while the build goes on."""

import numpy as np
import pytest

from hspi_onnx.db.build import build
from hspi_onnx.db.store import ReferenceDB
from hspi_onnx.host import isa_caps
from hspi_onnx.inputs.probes import generate
from hspi_onnx.run.adapter import selected_variants
from hspi_onnx.run.runner import PlatformCrashed, Runner, execute

ORT = "onnxruntime/*/fp32/bs=1,opt=all,threads=1"
TORCH = "pytorch/*/fp32/bs=1,layout=nchw,src=module,threads=1"

# Loaded by every Python started with this directory on PYTHONPATH (the workers): it makes ONNX
# Runtime's inference fail the way HSPI_TEST_FAULT says, inside the real runtime call.
SITECUSTOMIZE = """
import os
fault = os.environ.get("HSPI_TEST_FAULT", "")
if fault:
    import onnxruntime

    real_run = onnxruntime.InferenceSession.run

    def _faulty(self, *args, **kwargs):
        import ctypes, signal, sys, time
        if fault == "segv":
            ctypes.string_at(0)  # a null dereference: a real SIGSEGV
        elif fault == "abort":
            os.abort()
        elif fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault == "hang":
            time.sleep(600)
        elif fault == "flood":  # far more than a pipe buffer, on every call
            sys.stderr.write("runtime log line\\n" * 200_000)
            sys.stderr.flush()
        elif fault.startswith("segv-once:"):
            marker = fault.split(":", 1)[1]
            if not os.path.exists(marker):
                open(marker, "w").close()
                ctypes.string_at(0)
        return real_run(self, *args, **kwargs)

    onnxruntime.InferenceSession.run = _faulty
"""


@pytest.fixture
def fault(tmp_path, monkeypatch):
    """Set the fault the next workers meet."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", str(site))
    return lambda kind: monkeypatch.setenv("HSPI_TEST_FAULT", kind)


@pytest.fixture
def digits(zoo):
    info = zoo["digits"]
    probes = generate(info, n=8)
    ((a, p),) = selected_variants(info, probes.kind, [ORT])
    return info, probes, a, p


def test_a_worker_run_equals_the_in_process_run(zoo):
    info = zoo["digits"]
    probes = generate(info, n=12)
    ((a, p),) = selected_variants(info, probes.kind, [ORT])
    here = execute(a, info, p, probes, repeat=4)
    with Runner() as runner:
        worker = runner.run(a, info, p, probes, repeat=4)
        again = runner.run(a, info, p, probes)  # the same long-lived worker, probes cached there
        assert len(runner.workers) == 1
    assert worker.repeats is True and again.repeats is None
    for res in (worker, again):
        assert list(res.outputs) == info.output_names
        assert res.first.dtype == here.first.dtype and res.first.tobytes() == here.first.tobytes()
        assert res.digests() == here.digests()


def test_a_worker_is_sent_each_probe_set_it_no_longer_holds(zoo):
    info = zoo["digits"]
    a_set, b_set = generate(info, n=4, seed=1), generate(info, n=4, seed=2)
    ((a, p),) = selected_variants(info, a_set.kind, [ORT])
    with Runner() as runner:
        first, _, again = (runner.run(a, info, p, s) for s in (a_set, b_set, a_set))  # A, B, A
    assert again.first.tobytes() == first.first.tobytes()


def test_segfault_in_the_default_path_fails_the_platform_not_the_build(digits, tmp_path, fault):
    info, probes, _, p = digits
    fault("segv")
    db = ReferenceDB(tmp_path / "db", create=True)
    summary = build(db, info, probes, [ORT, TORCH])  # no option: the default runner
    assert summary.built == [str(selected_variants(info, probes.kind, [TORCH])[0][1])]
    assert list(summary.failed) == [str(p)]
    assert "crashed (killed by SIGSEGV)" in summary.failed[str(p)]
    assert db.manifest().failures[0].platform == str(p)


def test_the_cli_build_goes_on_past_a_segfault_and_exits_3(digits, tmp_path, fault, capsys):
    from hspi_onnx.cli import main

    fault("segv")
    with pytest.raises(SystemExit) as exit_:
        main(["db", "build", "digits", "--db", str(tmp_path / "db"), "-n", "4", "-q", "-p", ORT, "-p", TORCH])
    assert exit_.value.code == 3
    out = capsys.readouterr()
    assert "SIGSEGV" in out.out + out.err and "1 built" in out.out + out.err


@pytest.mark.parametrize(
    "kind,words", [("abort", "killed by SIGABRT"), ("kill", "killed by SIGKILL) (the kernel's OOM killer")]
)
def test_abort_and_kill_are_named(digits, fault, kind, words):
    info, probes, a, p = digits
    fault(kind)
    with Runner() as runner, pytest.raises(PlatformCrashed) as exc:
        runner.run(a, info, p, probes)
    assert words in str(exc.value)


def test_a_crashed_worker_is_restarted_for_the_next_platform(digits, fault, tmp_path):
    info, probes, a, p = digits
    fault(f"segv-once:{tmp_path / 'crashed-once'}")
    with Runner() as runner:
        with pytest.raises(PlatformCrashed, match="SIGSEGV"):
            runner.run(a, info, p, probes)
        res = runner.run(a, info, p, probes)  # a fresh worker of the same family
    assert res.first.shape == (8, 10) and np.isfinite(res.first).all()


def test_a_hanging_platform_is_killed_at_its_time_limit(digits, fault):
    info, probes, a, p = digits
    fault("hang")
    with Runner(timeout=3) as runner, pytest.raises(PlatformCrashed, match="did not finish within 3 s"):
        runner.run(a, info, p, probes)


def test_a_runtime_flooding_stderr_cannot_block_its_worker(digits, fault):
    info, probes, a, p = digits
    fault("flood")
    with Runner(timeout=120) as runner:
        res = runner.run(a, info, p, probes)
    assert res.first.shape == (8, 10)


@pytest.mark.skipif(not isa_caps(), reason="this CPU has no lower instruction-set level to cap to")
def test_isa_capped_variants_run_in_a_worker_with_their_switch(zoo, tmp_path):
    info = zoo["digits"]
    probes = generate(info, n=8)
    isa = isa_caps()[-1][0]
    pairs = selected_variants(info, probes.kind, [f"pytorch/cpu:{isa}:*/fp32/*"], extra=True)
    assert len(pairs) == 1
    adapter, plat = pairs[0]
    env = adapter.environment(plat)
    assert env["ONEDNN_MAX_CPU_ISA"] and env["ATEN_CPU_CAPABILITY"] == isa
    assert not selected_variants(info, probes.kind, ["pytorch/*"]) or all(
        str(p).split("/")[1] != plat.device for _, p in selected_variants(info, probes.kind, ["pytorch/*"])
    )
    db = ReferenceDB(tmp_path / "db", create=True)
    summary = build(db, info, probes, [str(plat)], extra=True)
    assert summary.built == [str(plat)] and not summary.nondeterministic
    with Runner(in_process=True) as runner:  # an environment of its own: a worker even so
        out = runner.run(adapter, info, plat, probes).first
        assert len(runner.workers) == 1
    assert np.isfinite(out.astype(np.float64)).all()
