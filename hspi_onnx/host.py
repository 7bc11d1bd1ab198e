"""Facts about the host: CPU model, instruction-set level, core count, OS, installed versions."""

from __future__ import annotations

import functools
import os
import platform as _pyplatform
import re

# Highest level first: the device label names the best ISA the CPU reports.
_X86_LEVELS = [
    ("amx", {"amx_tile"}),
    ("avx512vnni", {"avx512_vnni"}),
    ("avx512", {"avx512f"}),
    ("avx2", {"avx2", "fma"}),
    ("avx", {"avx"}),
    ("sse4", {"sse4_2"}),
]
_ARM_LEVELS = [("sve", {"sve"}), ("neon", {"asimd"})]


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set[str]()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "CPU part") and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model or _pyplatform.processor() or _pyplatform.machine(), flags


@functools.cache
def dist_version(distribution: str) -> str | None:
    """The installed version of a Python distribution, or None; reading metadata is slow, so once."""
    import importlib.metadata as md

    try:
        return md.version(distribution)
    except (md.PackageNotFoundError, ValueError):
        return None


def slug(text: str) -> str:
    s = re.sub(r"\((r|tm)\)", "", text.lower())
    s = re.sub(r"\b(cpu|processor|\d+-core)\b", "", s)
    s = re.sub(r"[^a-z0-9.]+", "-", s).strip("-.")
    return s or "unknown"


@functools.lru_cache(maxsize=1)
def cpu_facts() -> dict:
    model, flags = _cpuinfo()
    levels = _ARM_LEVELS if _pyplatform.machine().lower() in ("aarch64", "arm64") else _X86_LEVELS
    isa = next((name for name, need in levels if need <= flags), _pyplatform.machine().lower())
    return {
        "cpu_model": model,
        "isa": isa,
        "isa_flags": sorted(f for f in flags if re.match(r"(avx|amx|sse4|fma|f16c|sve|asimd)", f)),
        "cores": os.cpu_count() or 1,
        "machine": _pyplatform.machine(),
        "os": f"{_pyplatform.system()} {_pyplatform.release()}",
        "python": _pyplatform.python_version(),
    }


def cpu_device(isa: str | None = None) -> str:
    """Device segment of a CPU platform label, e.g. ``cpu:avx2:amd-epyc``."""
    facts = cpu_facts()
    return f"cpu:{isa or facts['isa']}:{slug(facts['cpu_model'])}"


# Instruction-set caps one x86 machine can emulate: (device ISA, PyTorch's ATEN_CPU_CAPABILITY,
# oneDNN's ONEDNN_MAX_CPU_ISA). oneDNN serves PyTorch's mkldnn kernels and OpenVINO's CPU plugin;
# ONNX Runtime's MLAS has no such switch. Highest first; only those below the host's level apply.
ISA_CAPS = [("avx512", "avx512", "AVX512_CORE"), ("avx2", "avx2", "AVX2")]
_RANK = {name: i for i, (name, _) in enumerate(_X86_LEVELS)}


def _caps_below(isa: str) -> list[tuple[str, str, str]]:
    if isa not in _RANK:
        return []
    return [cap for cap in ISA_CAPS if _RANK[cap[0]] > _RANK[isa]]


def node_isa_cap() -> str | None:
    """The instruction-set cap this machine was started under (``HSPI_ISA_CAP=avx2``): every
    runtime with a cap switch (oneDNN's, ATen's) runs capped and labels its device so, as a
    machine with that CPU would; runtimes without one (ONNX Runtime's MLAS) keep the host's ISA.
    A cap at or above the host's level changes nothing."""
    value = os.environ.get("HSPI_ISA_CAP", "").strip().lower()
    if not value:
        return None
    if value not in _RANK:
        from hspi_onnx.errors import HspiError

        raise HspiError(f"HSPI_ISA_CAP={value!r} is no instruction-set level; one of {', '.join(_RANK)}")
    return value if any(cap[0] == value for cap in _caps_below(cpu_facts()["isa"])) else None


def capped_cpu_device() -> str:
    """Device segment of runtimes that honour an instruction-set cap (:func:`node_isa_cap`)."""
    return cpu_device(node_isa_cap())


def isa_cap_for(device: str) -> tuple[str, str, str] | None:
    """The cap (isa, ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA) a capped device label stands for."""
    return next((cap for cap in _caps_below(cpu_facts()["isa"]) if device == cpu_device(cap[0])), None)


def isa_caps() -> list[tuple[str, str, str]]:
    """The caps below this machine's level (its cap's, when started under one; none on ARM or
    unknown CPUs): what the opt-in capped variants emulate."""
    return _caps_below(node_isa_cap() or cpu_facts()["isa"])


@functools.lru_cache(maxsize=1)
def gpu_names() -> tuple[str, ...]:
    """NVIDIA GPU names from ``nvidia-smi`` (empty without a driver), independent of any
    framework's CUDA build."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if not smi:
        return ()
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in out.stdout.splitlines() if line.strip()) if out.returncode == 0 else ()


def gpu_device(index: int = 0) -> str:
    """Device segment of a CUDA platform label, e.g. ``cuda:nvidia-h100-80gb-hbm3``."""
    names = gpu_names()
    return f"cuda:{slug(names[index]) if index < len(names) else 'unknown'}"
