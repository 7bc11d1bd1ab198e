"""The PyTorch CPU state that decides kernels, shared by the adapters that run torch on the CPU
(``pytorch``: zoo modules and the ONNX converter; ``transformers``: Hugging Face models):
the measured knobs of their labels and the settings they pin.

Measured knobs (:func:`cpu_kernels`): ``aten``, ATen's vectorisation level
(``torch.backends.cpu.get_cpu_capability()``, which ``ATEN_CPU_CAPABILITY`` lowers); ``onednn``,
the instruction-set limit oneDNN runs under (``ONEDNN_MAX_CPU_ISA``, ``default`` when none);
``mkl``, MKL's conditional-numerical-reproducibility branch (``MKL_CBWR``, read back from MKL).
"""

from __future__ import annotations

import contextlib
import functools
import os

from hspi_onnx.run.kernels import onednn_limit, token

# MKL's conditional-numerical-reproducibility branches (mkl_service.h), as label tokens
_CBWR = {
    1: "off",
    2: "auto",
    3: "compatible",
    4: "sse2",
    6: "ssse3",
    7: "sse4-1",
    8: "sse4-2",
    9: "avx",
    10: "avx2",
    11: "avx512-mic",
    12: "avx512",
    13: "avx512-mic-e1",
    14: "avx512-e1",
}
_CBWR_STRICT = 0x10000


@functools.lru_cache(maxsize=1)
def mkl_branch() -> str:
    """MKL's reproducibility branch in this process, read back from the MKL inside torch
    (``mkl_cbwr_get(MKL_CBWR_ALL)``); ``none`` when torch has no MKL. MKL reads ``MKL_CBWR`` once."""
    import ctypes
    import os

    import torch

    if not torch.backends.mkl.is_available():
        return "none"
    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        get = getattr(lib, "mkl_serv_cbwr_get", None) or lib.mkl_cbwr_get
    except (OSError, AttributeError):  # another build: what MKL was told, as the best we can read
        value = os.environ.get("MKL_CBWR", "")
        return f"env-{token(value)}" if value else "off"
    get.restype, get.argtypes = ctypes.c_int, [ctypes.c_int]
    code = int(get(-1))
    name = _CBWR.get(code & ~_CBWR_STRICT, f"code{code & ~_CBWR_STRICT}")
    return name + ("-strict" if code & _CBWR_STRICT else "")


def cpu_kernels(env: dict[str, str] | None = None) -> dict[str, str]:
    """The measured knobs of a CPU platform: in this process, or (``env``: the variables a
    platform's worker is started with, e.g. an instruction-set cap) as that worker will measure
    them, which :func:`hspi_onnx.run.kernels.check` confirms there before it runs."""
    import torch

    env = env or {}
    aten = env.get("ATEN_CPU_CAPABILITY") or torch.backends.cpu.get_cpu_capability()
    return {"aten": token(aten), "onednn": onednn_limit({**os.environ, **env}), "mkl": mkl_branch()}


@contextlib.contextmanager
def pinned_cpu_settings(pins: dict):
    """The CPU settings the adapter fixes (``PyTorchAdapter.pins``), restored after."""
    import torch

    saved = (torch.get_float32_matmul_precision(), torch.backends.mkldnn.enabled)
    torch.set_flush_denormal(bool(pins["flush_denormal"]))
    torch.set_float32_matmul_precision(pins["float32_matmul_precision"])
    torch.backends.mkldnn.enabled = bool(pins["mkldnn"])  # type: ignore[assignment]  # a ContextProp takes a bool
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.mkldnn.enabled = saved[1]


@contextlib.contextmanager
def torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
