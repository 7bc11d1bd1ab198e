"""OpenVINO on the CPU.

Precisions are OpenVINO's inference precision hint: fp32 (``f32``), bf16 and fp16 where the
CPU reports them in ``OPTIMIZATION_CAPABILITIES`` (an unsupported hint is reported, not
silently run in f32). The hint is set explicitly: OpenVINO's default on CPUs with AMX or
AVX512-BF16 is bf16, so a service that sets nothing computes in bf16 there. Knobs: batch size
and inference threads, which users set. On the development machine (Xeon with AMX, OpenVINO
2026.4.1) neither they nor the performance hint (LATENCY / THROUGHPUT) nor dynamic
quantization changed a single output bit for the zoo's CNN and LM (`docs/adapters.md`), so
the performance hint is not a knob.

A model OpenVINO cannot read or compile fails its platforms with the informative lines of
OpenVINO's exception (the operator, node and check that failed; :func:`error_message`). The
model is compiled as read, never rewritten around an OpenVINO bug: a service running OpenVINO
would meet the same failure (e.g. the corpus's ``gru``, `docs/corpus.md`).
"""

from __future__ import annotations

import contextlib
import functools
import re

import numpy as np

from hspi_onnx.errors import UnsupportedError
from hspi_onnx.host import capped_cpu_device, cpu_device, isa_cap_for, isa_caps, node_isa_cap
from hspi_onnx.inputs.model import ModelInfo
from hspi_onnx.labels import Platform
from hspi_onnx.run.adapter import THREADS, Adapter, Availability, batch_sizes, named_outputs
from hspi_onnx.run.decode import GenerationSession, OnnxDecoder
from hspi_onnx.run.kernels import LabelMismatch, onednn_isa_token, onednn_limit, token

HINTS = {"fp32": ("f32", "FP32"), "bf16": ("bf16", "BF16"), "fp16": ("f16", "FP16")}


def _core():
    import openvino as ov

    return ov.Core()


# x86 instruction sets (as compiled_isa names them) on which oneDNN has no bf16 kernels: under
# ONEDNN_MAX_CPU_ISA=AVX2 on a bf16 CPU the plugin still reports BF16 but returned no outputs
_NO_BF16 = {"sse41", "avx", "avx2", "avx2-vnni", "avx512-core", "avx512-core-vnni"}


def supported_precisions() -> dict[str, str]:
    """precision -> "" when the CPU supports it, else the reason it does not."""
    caps = set(_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    out = {
        p: "" if cap in caps else f"the CPU plugin does not report {cap} (capabilities: {', '.join(sorted(caps))})"
        for p, (_, cap) in HINTS.items()
    }
    if not out["bf16"] and process_isa() in _NO_BF16:
        out["bf16"] = (
            f"OpenVINO compiles for {process_isa()} in this process (ONEDNN_MAX_CPU_ISA), which has no bf16 kernels"
        )
    return out


def _value(prop) -> str:
    """A compiled model's property as a token (an element type by its short name: f32, bf16)."""
    name = getattr(prop, "get_type_name", None)
    return token(name() if callable(name) else str(prop).rsplit(".", 1)[-1])


def compiled_isa(compiled) -> str:
    """The instruction set a compiled model runs, from its ``RUNTIME_REQUIREMENTS`` (``isa=...``)."""
    try:
        text = str(compiled.get_property("RUNTIME_REQUIREMENTS"))
    except Exception:  # an older OpenVINO without the property
        return "unknown"
    fields = dict(part.split("=", 1) for part in text.split(";") if "=" in part)
    return onednn_isa_token(fields.get("isa", "unknown"))


@functools.lru_cache(maxsize=1)
def process_isa() -> str:
    """The ISA a model compiled in this process runs (a one-node model, compiled once)."""
    import numpy as np
    import openvino.opset13 as ops

    import openvino as ov

    x = ops.parameter([1, 8], np.float32, name="x")
    tiny = ov.Model([ops.relu(x)], [x], "isa-probe")
    return compiled_isa(_core().compile_model(tiny, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}))


class _OvSession:
    def __init__(self, compiled, model: ModelInfo) -> None:
        self.compiled, self.model = compiled, model
        self.native = compiled  # what measure() reads, as under a GenerationSession
        self.request = compiled.create_infer_request()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self.request.infer({k: np.ascontiguousarray(v) for k, v in feeds.items()})
        return named_outputs(
            self.model, [np.array(result[self.compiled.output(name)], copy=True) for name in self.model.output_names]
        )


class OpenVinoAdapter(Adapter):
    name = "openvino"
    distribution = "openvino"
    requires = ("openvino",)
    summary = "OpenVINO, CPU plugin (inference precision hint f32 / bf16 / f16)"
    labelled = ("onednn",)
    pins = {
        "CPU_DENORMALS_OPTIMIZATION": False,
        "EXECUTION_MODE_HINT": "PERFORMANCE",
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }

    def _isa(self, device: str) -> dict[str, str]:
        cap = isa_cap_for(device)
        return {"onednn": onednn_limit({"ONEDNN_MAX_CPU_ISA": cap[2]}) if cap else process_isa()}

    def check(self) -> Availability:
        try:
            devices = _core().available_devices
        except Exception as exc:  # a broken plugin install raises its own errors
            return Availability(False, f"OpenVINO core failed: {type(exc).__name__}: {exc}")
        if "CPU" not in devices:
            return Availability(False, f"OpenVINO lists no CPU device (devices: {', '.join(devices) or 'none'})")
        return Availability(True)

    def serves(self, model: ModelInfo) -> bool:
        return True  # graphs, and language models' decoders under the shared decode loop

    def variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        if model.generation is not None:  # one sequence at a time, through the decode loop
            ok = [(p, self._isa(cpu_device())) for p, reason in supported_precisions().items() if not reason]
            return self.grid(cpu_device(), ok, bs=(1,), threads=(1,))
        if node_isa_cap():  # capped, as the opt-in capped variants: fp32 only (see below)
            device = capped_cpu_device()
            return self.grid(device, [("fp32", self._isa(device))], bs=batch_sizes(model), threads=THREADS)
        ok = [(p, self._isa(cpu_device())) for p, reason in supported_precisions().items() if not reason]
        return self.grid(cpu_device(), ok, bs=batch_sizes(model), threads=THREADS)

    def extra_variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        if model.generation is not None:
            return []
        # bf16 under a cap below AVX512_CORE_BF16 returned no outputs at all (OpenVINO 2026.4.1),
        # so capped variants are fp32 only
        return [
            p
            for isa, _, _ in isa_caps()
            for p in self.grid(
                cpu_device(isa), [("fp32", self._isa(cpu_device(isa)))], bs=batch_sizes(model)[-1:], threads=(1,)
            )
        ]

    def environment(self, platform: Platform) -> dict[str, str]:
        cap = isa_cap_for(platform.device)
        return {"ONEDNN_MAX_CPU_ISA": cap[2]} if cap else {}

    def limitations(self) -> dict[str, str]:
        return {p: r for p, r in supported_precisions().items() if r}

    def measure(self, platform: Platform, session) -> dict[str, str]:
        compiled = session.native
        hint = _value(compiled.get_property("INFERENCE_PRECISION_HINT"))
        want = HINTS[platform.precision][0]
        if hint != want:  # OpenVINO chose another precision than the label's
            raise LabelMismatch(f"{platform}: OpenVINO compiled it with inference precision {hint}, not {want}")
        state = {"onednn": compiled_isa(compiled), "inference_precision": hint}
        for name in (
            "EXECUTION_MODE_HINT",
            "CPU_DENORMALS_OPTIMIZATION",
            "INFERENCE_NUM_THREADS",
            "NUM_STREAMS",
            "DYNAMIC_QUANTIZATION_GROUP_SIZE",
            "KV_CACHE_PRECISION",
        ):
            try:
                state[name.lower()] = _value(compiled.get_property(name))
            except Exception:  # a property this OpenVINO lacks
                pass
        return state

    @contextlib.contextmanager
    def prepare(self, model: ModelInfo, platform: Platform):
        reason = supported_precisions().get(platform.precision)
        if reason is None:
            raise UnsupportedError(f"openvino adapter has no precision {platform.precision!r}")
        if reason:
            raise UnsupportedError(f"OpenVINO cannot run {platform.precision} here: {reason}")
        core = _core()
        config = {
            **self.pins,
            "INFERENCE_PRECISION_HINT": HINTS[platform.precision][0],
            "INFERENCE_NUM_THREADS": int(platform.knob["threads"]),
        }
        try:
            ov_model = core.read_model(str(model.path))
        except Exception as exc:  # the ONNX frontend raises plain errors, e.g. for unconverted ops
            raise UnsupportedError(f"OpenVINO cannot read {model.name}: {error_message(exc)}")
        try:
            compiled = core.compile_model(ov_model, "CPU", config)
        except Exception as exc:
            raise UnsupportedError(f"OpenVINO cannot compile {model.name} for {platform}: {error_message(exc)}")
        if model.generation is not None:
            yield _generation_session(compiled, model)
        else:
            yield _OvSession(compiled, model)


def _generation_session(compiled, model: ModelInfo) -> GenerationSession:
    """A language model's decoder under the shared decode loop (one infer request; the cache
    goes out and back in float32, as the graph's inputs and outputs are)."""
    request = compiled.create_infer_request()
    outputs = [compiled.output(name) for name in ("logits", "present_key", "present_value")]

    def run(ids, key, value):
        result = request.infer({"input_ids": ids, "past_key": key, "past_value": value})
        return [np.array(result[o], copy=True) for o in outputs]

    def empty(shape):
        return np.zeros(shape, dtype=np.float32)

    spec = model.generation
    assert spec is not None  # only a language model (model.generation set) comes here
    return GenerationSession(OnnxDecoder(run, spec, empty), spec, native=compiled)


# the lines of OpenVINO's exceptions that only say where in its sources a check failed
_WHERE = re.compile(r"^(Exception from \S+:\d+:|Check '.*' failed at \S+:\d+:)$")
_NODE = re.compile(r"While validating node '(\w+)::(\w+) .*' with friendly_name '(.*)':$")
_DOCS_LINK = "To facilitate the conversion"


def error_message(exc: Exception, limit: int = 400) -> str:
    """The informative part of an OpenVINO exception on one line: its text without the
    source-location lines that head each nested level ("Exception from src/...:", "Check '...'
    failed at src/...:"), a validated node named by type, opset and name rather than by its
    whole signature, and without the pointer to the extension docs."""
    lines = []
    for line in str(exc).splitlines():
        line = line.strip()
        if not line or _WHERE.match(line) or line.startswith(_DOCS_LINK):
            continue
        node = _NODE.match(line)
        lines.append(f"{node[2]} node {node[3]!r} ({node[1]}):" if node else line)
    text = " ".join(lines) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
