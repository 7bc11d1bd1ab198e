"""Spectral ops: DFT and STFT, with torch.fft in the input's precision (complex64 for float32,
as numpy's pocketfft computes the reference)."""

from __future__ import annotations

import torch

from hspi_onnx.errors import UnsupportedError

from .registry import registrar

op, register = registrar(__name__)


def _complex(x: torch.Tensor) -> torch.Tensor:
    """The trailing [re] or [re, im] axis as one complex value (float64: complex128, else complex64)."""
    x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    if x.shape[-1] == 1:
        return torch.complex(x[..., 0], torch.zeros_like(x[..., 0]))
    if x.shape[-1] == 2:
        return torch.complex(x[..., 0], x[..., 1])
    raise UnsupportedError(f"a signal's last axis must be 1 (real) or 2 (complex), not {x.shape[-1]}")


def _pairs(z: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.stack([z.real, z.imag], dim=-1).to(dtype)


@op("DFT", since=17, notes="axis an attribute (17) or an input (20)")
def _dft(ctx, x, dft_length=None, axis=None, inverse=0, onesided=0):
    if isinstance(axis, torch.Tensor):
        ax = int(axis.reshape(-1)[0])
    else:
        ax = int(axis) if axis is not None else (1 if ctx.opset < 20 else -2)
    ax = ax % x.dim()
    if ax == x.dim() - 1:
        raise UnsupportedError("DFT along the real/imaginary axis is not covered")
    if dft_length is not None and dft_length.numel():
        n = int(dft_length.reshape(-1)[0])
    else:
        n = 2 * (x.shape[ax] - 1) if inverse and onesided else x.shape[ax]
    z = _complex(x)
    if inverse:
        if onesided:
            return torch.fft.irfft(z, n=n, dim=ax).unsqueeze(-1).to(x.dtype)
        return _pairs(torch.fft.ifft(z, n=n, dim=ax), x.dtype)
    out = torch.fft.fft(z, n=n, dim=ax)
    if onesided:
        out = out.narrow(ax, 0, out.shape[ax] // 2 + 1)
    return _pairs(out, x.dtype)


@op("STFT", since=17)
def _stft(ctx, signal, frame_step, window=None, frame_length=None, onesided=1):
    step = int(frame_step.reshape(-1)[0])
    if frame_length is not None and frame_length.numel():
        length = int(frame_length.reshape(-1)[0])
    elif window is not None:
        length = window.shape[0]
    else:
        raise UnsupportedError("STFT needs a window or a frame_length")
    z = _complex(signal)  # (batch, samples)
    frames = z.unfold(1, length, step)  # (batch, frames, length)
    if window is not None:
        frames = frames * window.to(frames.real.dtype)
    out = torch.fft.fft(frames, dim=-1)
    if onesided:
        out = out[..., : length // 2 + 1]
    return _pairs(out, signal.dtype)
