"""OpenVINO on the CPU.

Precisions are OpenVINO's inference precision hint: fp32 (``f32``), bf16 and fp16 where the
CPU reports them in ``OPTIMIZATION_CAPABILITIES`` (an unsupported hint is reported, not
silently run in f32). The hint is set explicitly: OpenVINO's default on CPUs with AMX or
AVX512-BF16 is bf16, so a service that sets nothing computes in bf16 there. Knobs: batch size
and inference threads, which users set. On the development machine (Xeon with AMX, OpenVINO
2026.4.1) neither they nor the performance hint (LATENCY / THROUGHPUT) nor dynamic
quantization changed a single output bit for the zoo's CNN and LM (`docs/adapters.md`), so
the performance hint is not a knob.

Language models also run with weights compressed by NNCF (``nncf.compress_weights``, data-free,
what optimum-intel's export applies): precision int8 or int4, knob ``quant`` the recipe
(:data:`WEIGHT_FORMATS`), ``nncf`` its version, ``dq`` the CPU plugin's
``DYNAMIC_QUANTIZATION_GROUP_SIZE`` (with compressed weights the plugin quantizes activations
in groups of 32 by default, 0 turns that off; each value gave other bits, while on fp32 weights it
changed none). The compressed model is cached by model digest, OpenVINO and NNCF versions. Compressed
weights under the bf16 hint are not offered: every one of them died with SIGFPE at the first
inference (OpenVINO 2026.4.1, NNCF 3.4.0).

A model OpenVINO cannot read or compile fails its platforms with the informative lines of
OpenVINO's exception (the operator, node and check that failed; :func:`error_message`). The
model is compiled as read, never rewritten around an OpenVINO bug: a service running OpenVINO
would meet the same failure (e.g. the corpus's ``gru``, `docs/corpus.md`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re

import numpy as np

from hspi_onnx.cache import cache_dir
from hspi_onnx.errors import UnsupportedError
from hspi_onnx.host import capped_cpu_device, cpu_device, dist_version, isa_cap_for, isa_caps, node_isa_cap
from hspi_onnx.inputs.model import ModelInfo
from hspi_onnx.labels import Platform
from hspi_onnx.run.adapter import THREADS, Adapter, Availability, batch_sizes, named_outputs
from hspi_onnx.run.decode import GenerationSession, OnnxDecoder
from hspi_onnx.run.kernels import LabelMismatch, onednn_isa_token, onednn_limit, token

HINTS = {"fp32": ("f32", "FP32"), "bf16": ("bf16", "BF16"), "fp16": ("f16", "FP16")}
# NNCF weight compression of a language model's decoder, by recipe: precision, NNCF mode and its
# options (groups of 64: 128, optimum-intel's default, does not divide SmolLM2's 576 channels)
WEIGHT_FORMATS = {
    "nncf-int8-asym": ("int8", "INT8_ASYM", {}),
    "nncf-int8-sym": ("int8", "INT8_SYM", {}),
    "nncf-int4-sym-g64": ("int4", "INT4_SYM", {"group_size": 64, "ratio": 1.0}),
    "nncf-int4-asym-g64": ("int4", "INT4_ASYM", {"group_size": 64, "ratio": 1.0}),
}
DQ_DEFAULT, DQ_OFF = 32, 0  # DYNAMIC_QUANTIZATION_GROUP_SIZE: the plugin's default, and off


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
            self.model,
            [np.array(result[self.compiled.output(name)], copy=True) for name in self.model.graph_output_names],
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
            return self.grid(cpu_device(), ok, bs=(1,), threads=(1,)) + self._compressed(DQ_DEFAULT)
        if node_isa_cap():  # capped, as the opt-in capped variants: fp32 only (see below)
            device = capped_cpu_device()
            return self.grid(device, [("fp32", self._isa(device))], bs=batch_sizes(model), threads=THREADS)
        ok = [(p, self._isa(cpu_device())) for p, reason in supported_precisions().items() if not reason]
        return self.grid(cpu_device(), ok, bs=batch_sizes(model), threads=THREADS)

    def extra_variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        if model.generation is not None:  # two inference threads, and compressed weights without dynamic quantization
            ok = [(p, self._isa(cpu_device())) for p, reason in supported_precisions().items() if not reason]
            return self.grid(cpu_device(), ok, bs=(1,), threads=(2,)) + self._compressed(DQ_OFF)
        # bf16 under a cap below AVX512_CORE_BF16 returned no outputs at all (OpenVINO 2026.4.1),
        # so capped variants are fp32 only
        return [
            p
            for isa, _, _ in isa_caps()
            for p in self.grid(
                cpu_device(isa), [("fp32", self._isa(cpu_device(isa)))], bs=batch_sizes(model)[-1:], threads=(1,)
            )
        ]

    def _compressed(self, dq: int) -> list[Platform]:
        """A decoder with NNCF-compressed weights under the f32 hint, every recipe."""
        version = dist_version("nncf")
        if not version or supported_precisions()["fp32"]:
            return []
        formats = [(prec, {"quant": q, "nncf": version, "dq": dq}) for q, (prec, _, _) in WEIGHT_FORMATS.items()]
        return self.grid(
            cpu_device(), [(p, knobs | self._isa(cpu_device())) for p, knobs in formats], bs=(1,), threads=(1,)
        )

    def environment(self, platform: Platform) -> dict[str, str]:
        cap = isa_cap_for(platform.device)
        return {"ONEDNN_MAX_CPU_ISA": cap[2]} if cap else {}

    def limitations(self) -> dict[str, str]:
        out = {p: r for p, r in supported_precisions().items() if r}
        if not dist_version("nncf"):
            out["int8/int4 language models"] = "NNCF is not installed (the llm extra installs it)"
        return out

    def measure(self, platform: Platform, session) -> dict[str, str]:
        compiled = session.native
        hint = _value(compiled.get_property("INFERENCE_PRECISION_HINT"))
        want = HINTS["fp32" if "quant" in platform.knob else platform.precision][0]
        if hint != want:  # OpenVINO chose another precision than the label's
            raise LabelMismatch(f"{platform}: OpenVINO compiled it with inference precision {hint}, not {want}")
        state = {"onednn": compiled_isa(compiled), "inference_precision": hint}
        if "dq" in platform.knob:
            dq = _value(compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE"))
            if dq != platform.knob["dq"]:
                raise LabelMismatch(f"{platform}: OpenVINO compiled it with dynamic quantization groups {dq}")
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
        quant = platform.knob.get("quant")
        hint = "fp32" if quant else platform.precision  # compressed weights compute under the f32 hint
        reason = supported_precisions().get(hint)
        if reason is None:
            raise UnsupportedError(f"openvino adapter has no precision {platform.precision!r}")
        if reason:
            raise UnsupportedError(f"OpenVINO cannot run {hint} here: {reason}")
        core = _core()
        config = {
            **self.pins,
            "INFERENCE_PRECISION_HINT": HINTS[hint][0],
            "INFERENCE_NUM_THREADS": int(platform.knob["threads"]),
        }
        if quant:
            config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = int(platform.knob["dq"])
        try:
            ov_model = compressed_model(core, model, platform) if quant else core.read_model(str(model.path))
        except UnsupportedError:
            raise
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


def compressed_model(core, model: ModelInfo, platform: Platform):
    """The language model's decoder with its weights compressed by NNCF for the platform's recipe,
    from the cache (IR files keyed by model digest and the OpenVINO and NNCF versions) or made
    and cached now."""
    quant = platform.knob["quant"]
    if quant not in WEIGHT_FORMATS or model.generation is None:
        raise UnsupportedError(f"openvino adapter has no weight compression {quant!r} for {model.name}")
    version = dist_version("nncf")
    if version != platform.knob.get("nncf"):
        raise UnsupportedError(f"{platform} needs NNCF {platform.knob.get('nncf')}, this environment has {version}")
    folder = cache_dir("prepared", "openvino-nncf", f"{platform.version}-nncf{version}", model.sha256[:16])
    xml = folder / f"{quant}.xml"
    if not xml.exists():
        import nncf

        import openvino as ov

        precision, mode, options = WEIGHT_FORMATS[quant]
        logging.getLogger("nncf").setLevel(logging.ERROR)
        try:
            compressed = nncf.compress_weights(
                core.read_model(str(model.path)), mode=getattr(nncf.CompressWeightsMode, mode), **options
            )
        except Exception as exc:  # NNCF's own errors (e.g. a group size that divides no channel)
            raise UnsupportedError(f"NNCF cannot compress {model.name} as {quant}: {error_message(exc)}")
        tmp = folder / f".{quant}-{os.getpid()}.xml"
        ov.save_model(compressed, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))  # the weights first: the .xml marks it done
        os.replace(tmp, xml)
    return core.read_model(str(xml))


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
