"""An hspi-onnx adapter in its own package (see docs/adapters.md, "Writing a plugin").

ONNX Runtime on the CPU with ``session.set_denormal_as_zero``: subnormal intermediate values
are flushed to zero, a setting some services turn on for speed. Precision fp32; knobs: batch
size and flush on/off (off is plain ONNX Runtime, useful as the control).
"""

from __future__ import annotations

import contextlib

import numpy as np

from hspi_onnx.host import cpu_device
from hspi_onnx.run.adapter import Adapter, batch_sizes, named_outputs


class _Session:
    def __init__(self, sess, model) -> None:
        self.sess, self.model = sess, model

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return named_outputs(self.model, self.sess.run(None, feeds))


class OrtDazAdapter(Adapter):
    name = "ortdaz"  # the runtime segment of its platform labels
    distribution = "onnxruntime"  # labels carry this distribution's version
    requires = ("onnxruntime",)  # imported lazily when availability is first asked
    summary = "example plugin: ONNX Runtime CPU with denormals flushed to zero"

    def variants(self, model, probe_kind):
        return self.grid(cpu_device(), [("fp32", {})], daz=("on", "off"), bs=batch_sizes(model))

    @contextlib.contextmanager
    def prepare(self, model, platform):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.add_session_config_entry("session.set_denormal_as_zero", "1" if platform.knob["daz"] == "on" else "0")
        sess = ort.InferenceSession(model.load().SerializeToString(), opts, providers=["CPUExecutionProvider"])
        yield _Session(sess, model)
