"""ONNX Runtime GenAI on the CPU: Microsoft's generation library over ONNX Runtime, with its own
model builder (what Foundry Local, AI Toolkit and Olive ship to CPUs).

It runs language models (zoo models with ``hspi.generation``) from ONNX models that the GenAI
model builder makes, at build time, from the Hugging Face folder of the reference weights
(``hf_folder``): fused GroupQueryAttention, SkipSimplifiedLayerNormalization and, for int8 and
int4, ``MatMulNBits`` weights (blocks of 32, symmetric). Cached by the folder's digest, the
precision and the GenAI version. Label segments: precision fp32, int8 or int4; knobs ``quant``
(int8/int4: ``mnb-acc4``, the builder's default for CPUs, quantizing activations to int8 inside
MatMulNBits, or ``mnb-acc0``, float activations; the same names as the onnxruntime adapter's
4-bit decoders), ``ort`` (the ONNX Runtime the library loads, whose kernels compute), ``threads``
(intra-op, set in the session options), ``bs=1``.

GenAI keeps the KV cache in one buffer of ``max_length`` positions shared by past and present
(``past_present_share_buffer``); ``max_length`` is pinned to the spec's context. The logits of
each position come from the generator (``get_logits``, float32); the shared decode loop picks
tokens and ranks the top k. Not here: fp16 (the built CPU model fails at its second decode step
with "Shape mismatch attempting to re-use buffer", GenAI 0.18.0 on ONNX Runtime 1.32.0) and bf16
(ONNX Runtime's CPU provider has no bf16 ``Where``): measured, both refused with that reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np

from hspi_onnx.cache import cache_dir
from hspi_onnx.errors import UnsupportedError
from hspi_onnx.host import cpu_device, dist_version
from hspi_onnx.inputs.model import ModelInfo
from hspi_onnx.labels import Platform
from hspi_onnx.run.adapter import Adapter
from hspi_onnx.run.decode import GenerationSession, conversions

PRECISIONS = ("fp32", "int8", "int4")  # the builder's --precision
ACCURACY = {"mnb-acc4": 4, "mnb-acc0": 0}  # quant knob -> the builder's int4_accuracy_level
REFUSED = {
    "fp16": "the GenAI model builder's fp16 CPU model fails at its second decode step "
    "(Shape mismatch attempting to re-use buffer; GenAI 0.18.0, ONNX Runtime 1.32.0)",
    "bf16": "ONNX Runtime's CPU provider has no bf16 Where, which the builder's bf16 model needs",
}
BUILD_TIMEOUT_S = 900
PROVENANCE = "hspi-build.json"  # beside the builder's output: its command line and the input's digest


class _Stepper:
    """One GenAI generator per sequence; tokens are appended one at a time and the logits of the
    last position read back."""

    def __init__(self, model, max_length: int) -> None:
        self.model, self.max_length = model, max_length
        self.generator = None

    def _logits(self) -> np.ndarray:
        assert self.generator is not None
        return np.array(self.generator.get_logits(), copy=True).reshape(-1)

    def start(self, prompt: np.ndarray) -> np.ndarray:
        import onnxruntime_genai as og

        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=self.max_length, do_sample=False, past_present_share_buffer=True)
        generator = og.Generator(self.model, params)
        generator.append_tokens(np.ascontiguousarray(prompt, dtype=np.int32))
        self.generator = generator
        return self._logits()

    def step(self, token: int) -> np.ndarray:
        assert self.generator is not None
        self.generator.append_tokens(np.array([token], dtype=np.int32))
        return self._logits()


class OnnxRuntimeGenAIAdapter(Adapter):
    name = "onnxruntime-genai"
    distribution = "onnxruntime-genai"
    requires = ("onnxruntime_genai",)
    summary = "ONNX Runtime GenAI (CPU): language models from its model builder, fp32/int8/int4"

    def serves(self, model: ModelInfo) -> bool:
        return model.conversions() is not None  # runs the zoo's conversions, so only the zoo's export

    def _grid(self, precisions: list[tuple[str, dict]], threads: int) -> list[Platform]:
        ort = {"ort": dist_version("onnxruntime") or "0"}
        return self.grid(cpu_device(), [(p, ort | k) for p, k in precisions], bs=(1,), threads=(threads,))

    def variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        """fp32, and the builder's int8 and int4 (int8 activations in MatMulNBits, its CPU default)."""
        return self._grid([("fp32", {})] + [(p, {"quant": "mnb-acc4"}) for p in ("int8", "int4")], 1)

    def extra_variants(self, model: ModelInfo, probe_kind: str) -> list[Platform]:
        """Float activations in the 8- and 4-bit MatMulNBits; two threads at fp32."""
        return self._grid([(p, {"quant": "mnb-acc0"}) for p in ("int8", "int4")], 1) + self._grid([("fp32", {})], 2)

    def limitations(self) -> dict[str, str]:
        return dict(REFUSED)

    def measure(self, platform: Platform, session) -> dict[str, str]:
        model, folder = session.native
        config = json.loads((folder / "genai_config.json").read_text())
        options = config["model"]["decoder"]["session_options"]
        return {
            "intra_op_threads": str(options.get("intra_op_num_threads", "")),
            "max_length": str(session.stepper.max_length),
            "model_type": type(model).__name__,
            "builder": json.loads((folder / PROVENANCE).read_text())["builder"],
        }

    @contextlib.contextmanager
    def prepare(self, model: ModelInfo, platform: Platform):
        import onnxruntime_genai as og

        spec, source = conversions(model, self.name)
        if platform.precision not in PRECISIONS:
            reason = REFUSED.get(platform.precision, "not offered")
            raise UnsupportedError(f"onnxruntime-genai adapter has no precision {platform.precision!r}: {reason}")
        ort = dist_version("onnxruntime")
        if ort != platform.knob.get("ort"):
            raise UnsupportedError(f"{platform} needs ONNX Runtime {platform.knob.get('ort')}, this one is {ort}")
        folder = built_model(source.hf_folder(), platform, self.version())
        config = og.Config(str(folder))
        threads = int(platform.knob["threads"])
        config.overlay(
            json.dumps(
                {
                    "model": {
                        "decoder": {"session_options": {"intra_op_num_threads": threads, "inter_op_num_threads": 1}}
                    }
                }
            )
        )
        try:
            lm = og.Model(config)
        except Exception as exc:
            raise UnsupportedError(f"onnxruntime-genai cannot load the {platform.precision} model: {exc}")
        stepper = _Stepper(lm, spec.context)
        yield GenerationSession(stepper, spec, native=(lm, folder))


def built_model(hf_folder, platform: Platform, version: str):
    """The GenAI model builder's output for ``platform``'s precision and accuracy level, from the
    cache or built now (in a child process, its log kept beside the output)."""
    digest = json.loads((hf_folder / "digests.json").read_text())["files"]["model.safetensors"]
    quant = platform.knob.get("quant", "")
    folder = cache_dir("prepared", "onnxruntime-genai", version, digest[:16]) / "-".join(
        p for p in (platform.precision, quant) if p
    )
    if (folder / PROVENANCE).is_file():
        return folder
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    argv = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_folder), "-o", str(tmp)]
    argv += ["-p", platform.precision, "-e", "cpu", "-c", str(tmp / ".hf-cache")]
    if quant:
        argv += ["--extra_options", f"accuracy_level={ACCURACY[quant]}"]
    log = tmp / "builder.log"
    try:
        with open(log, "wb") as out:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise UnsupportedError(f"the GenAI model builder took over {BUILD_TIMEOUT_S} s for {platform.precision}")
    if proc.returncode != 0 or not (tmp / "genai_config.json").is_file():
        tail = log.read_bytes()[-4000:].decode("utf-8", "replace").replace("\r", "\n").strip().splitlines()
        reason = next((line for line in reversed(tail) if "Error" in line), tail[-1] if tail else "no output")
        raise UnsupportedError(f"the GenAI model builder failed for {platform.precision}: {reason[:300]}")
    shutil.rmtree(tmp / ".hf-cache", ignore_errors=True)
    if quant and (got := _accuracy_level(tmp / "model.onnx")) != ACCURACY[quant]:
        raise UnsupportedError(
            f"the GenAI model builder made MatMulNBits of accuracy level {got}, not {ACCURACY[quant]}"
        )
    command = " ".join(argv[3:]).replace(str(tmp), "OUT").replace(str(hf_folder), "HF")
    (tmp / PROVENANCE).write_text(json.dumps({"builder": command, "hf_sha256": digest}, indent=1))
    try:
        os.rename(tmp, folder)
    except OSError:  # another process finished the same build first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _accuracy_level(path) -> int | None:
    """The accuracy level of the built model's MatMulNBits (0 where the attribute is absent)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            return int(attrs.get("accuracy_level", 0))
    return None
