"""How usable each low-precision graph is, on the CPU with ONNX Runtime, against fp32:
the graphs graph-typed runtimes (TensorRT 11) are given for fp16, bf16 and int8, and the
float8 Q/DQ graph ONNX Runtime's quantizer writes (why TensorRT fp8 is not offered).

    python bench/quant_graphs.py [-n PROBES]

Per zoo model and graph: top-1 agreement with fp32 and the largest error relative to the
largest fp32 output. bf16 runs through ONNX's reference evaluator (ONNX Runtime's CPU build
has no bf16 kernels for these ops); the rest through ONNX Runtime.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def _quantize(info, kind: str, workdir: Path, opset: int | None, **options) -> bytes:
    """ONNX Runtime's static Q/DQ quantizer on the calibration split (32 probes, batches of 8)."""
    import onnx
    from onnx import version_converter
    from onnxruntime import quantization as q

    from hspi_onnx.inputs.probes import generate

    src, dst = workdir / "src.onnx", workdir / "quant.onnx"
    onnx.save(info.load() if opset is None else version_converter.convert_version(info.load(), opset), src)
    calib = generate(info, kind, n=32, split="calib").primary
    feeds = iter([{info.primary.name: calib[i : i + 8]} for i in range(0, 32, 8)])

    class Reader:
        def get_next(self):
            return next(feeds, None)

    q.quantize_static(src, dst, Reader(), quant_format=q.QuantFormat.QDQ, **options)
    return dst.read_bytes()


def _fp8_graph(info, kind: str, workdir: Path) -> bytes:
    """Float8 (E4M3FN) Q/DQ: needs opset 19 and the distribution calibrator (the MinMax one
    is refused for float types)."""
    from onnxruntime import quantization as q

    return _quantize(
        info,
        kind,
        workdir,
        19,
        activation_type=q.QuantType.QFLOAT8E4M3FN,
        weight_type=q.QuantType.QFLOAT8E4M3FN,
        calibrate_method=q.CalibrationMethod.Distribution,
    )


def _sym_every_op(info, kind: str, workdir: Path) -> bytes:
    """Symmetric int8 on every op's inputs and outputs: the recipe qdq-sym replaced."""
    from onnxruntime import quantization as q

    return _quantize(
        info,
        kind,
        workdir,
        None,
        activation_type=q.QuantType.QInt8,
        weight_type=q.QuantType.QInt8,
        calibrate_method=q.CalibrationMethod.MinMax,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=64, help="probes per model")
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    from hspi_onnx.graph.lowprec import to_half
    from hspi_onnx.graph.prepared import Recipe, prepared_graph
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.inputs.probes import default_kind, generate
    from hspi_onnx.runtimes.tensorrt import TensorRtAdapter, network_graph

    trt = TensorRtAdapter()
    print("| model | graph | evaluator | top-1 agreement | max error / max output |")
    print("|---|---|---|---|---|")
    for name in ("resnet", "lm"):
        info = resolve_model(name)
        kind = default_kind(info)
        x = generate(info, kind, n=args.n).primary

        def ort_run(data: bytes) -> np.ndarray:
            return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {info.primary.name: x})[0]

        ref = ort_run(info.load().SerializeToString())
        graphs = {
            "fp16": ("onnxruntime", lambda: ort_run(to_half(info.load(), "fp16").SerializeToString())),
            "bf16": (
                "onnx.reference",
                lambda: ReferenceEvaluator(to_half(info.load(), "bf16")).run(None, {info.primary.name: x})[0],
            ),
            "int8 Q/DQ, uint8 activations (ORT CPU's)": (
                "onnxruntime",
                lambda: ort_run(prepared_graph(info, Recipe("int8", "qdq", kind))),
            ),
            "int8 Q/DQ symmetric (TensorRT's)": (
                "onnxruntime",
                lambda: ort_run(
                    network_graph(info, trt.platform("cuda:cpu-check", "int8", quant="qdq-sym", calib=kind, bs=8))
                ),
            ),
        }
        with tempfile.TemporaryDirectory() as tmp:
            graphs["int8 Q/DQ symmetric, every op (rejected recipe)"] = (
                "onnxruntime",
                lambda: ort_run(_sym_every_op(info, kind, Path(tmp))),
            )
            graphs["fp8 E4M3 Q/DQ (ORT quantizer)"] = (
                "onnxruntime",
                lambda: ort_run(_fp8_graph(info, kind, Path(tmp))),
            )
            for label, (evaluator, run) in graphs.items():
                try:
                    out = run()
                except Exception as exc:  # a quantizer or evaluator refusing the model is a result here
                    print(f"| {name} | {label} | {evaluator} | fails: {str(exc).splitlines()[0][:80]} | |")
                    continue
                agree = float((out.argmax(-1) == ref.argmax(-1)).mean())
                err = float(np.abs(out.astype(np.float64) - ref).max() / np.abs(ref).max())
                print(f"| {name} | {label} | {evaluator} | {agree:.1%} | {err:.2e} |")
    print(f"\n{args.n} probes per model; onnxruntime {ort.__version__}, onnx {onnx.__version__}")


if __name__ == "__main__":
    main()
