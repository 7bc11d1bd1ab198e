"""RNN, GRU and LSTM layers."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F

from hspi_onnx.errors import UnsupportedError

from .registry import registrar

_, register = registrar(__name__)

# --------------------------------------------------------------------------- recurrent layers


def _activation(name: str, alpha, beta):
    """An ONNX RNN activation (by name) with its alpha/beta (None: the op's default)."""
    n = name.lower()
    a = lambda default: default if alpha is None else alpha  # noqa: E731
    b = lambda default: default if beta is None else beta  # noqa: E731
    table = {
        "sigmoid": (0, lambda x: torch.sigmoid(x)),
        "tanh": (0, lambda x: torch.tanh(x)),
        "relu": (0, lambda x: torch.relu(x)),
        "softsign": (0, lambda x: x / (1 + torch.abs(x))),
        "softplus": (0, lambda x: F.softplus(x)),
        "affine": (2, lambda x: a(1.0) * x + b(0.0)),
        "leakyrelu": (1, lambda x: F.leaky_relu(x, a(0.01))),
        "thresholdedrelu": (1, lambda x: torch.where(x > a(1.0), x, torch.zeros_like(x))),
        "scaledtanh": (2, lambda x: a(1.0) * torch.tanh(b(1.0) * x)),
        "hardsigmoid": (2, lambda x: torch.clamp(a(0.2) * x + b(0.5), 0, 1)),
        "elu": (1, lambda x: F.elu(x, a(1.0))),
    }
    if n not in table:
        raise UnsupportedError(f"RNN activation {name} is not covered")
    return table[n]


def _activations(kind: str, a: dict, dirs: int) -> list:
    """Per direction, the list of activation functions (f, g[, h]) of an RNN/GRU/LSTM node."""
    defaults = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}[kind]
    names = list(a.get("activations") or [])
    if not names:
        names = defaults * dirs
    elif len(names) == len(defaults) and dirs == 2:
        names = names * 2
    if len(names) != len(defaults) * dirs:
        raise UnsupportedError(f"{kind} with {len(names)} activations for {dirs} direction(s) is not covered")
    alphas, betas = list(a.get("activation_alpha") or []), list(a.get("activation_beta") or [])
    funcs = []
    for name in names:  # alphas and betas are consumed in order by the activations that take them
        n_params = _activation(name, None, None)[0]
        alpha = alphas.pop(0) if n_params >= 1 and alphas else None
        beta = betas.pop(0) if n_params >= 2 and betas else None
        funcs.append(_activation(name, alpha, beta)[1])
    per = len(defaults)
    return [funcs[d * per : (d + 1) * per] for d in range(dirs)]


def _rnn_common(kind: str, ctx, x, w, r, b, seq_lens, h0, c0, p, a: dict, n_out: int):
    """ONNX RNN, GRU and LSTM (opset 7-22 semantics): returns [Y, Y_h(, Y_c)]."""
    direction = a.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise UnsupportedError(f"{kind} direction={direction} is not covered")
    dirs = 2 if direction == "bidirectional" else 1
    layout = int(a.get("layout", 0))
    clip = a.get("clip")
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[kind]
    hidden = int(a.get("hidden_size", r.shape[-1]))
    if w.shape[0] != dirs or w.shape[1] != gates * hidden:
        raise UnsupportedError(
            f"{kind} weights of shape {tuple(w.shape)} do not fit direction={direction}, hidden_size={hidden}"
        )
    funcs = _activations(kind, a, dirs)
    if layout:
        x = x.transpose(0, 1)  # (seq, batch, input)
        h0 = None if h0 is None else h0.transpose(0, 1)
        c0 = None if c0 is None else c0.transpose(0, 1)
    steps, batch = x.shape[0], x.shape[1]
    zeros = torch.zeros((dirs, batch, hidden), dtype=x.dtype, device=x.device)
    h0 = zeros if h0 is None else h0
    c0 = zeros if c0 is None else c0
    if seq_lens is not None:
        lens = seq_lens.to(device=x.device, dtype=torch.int64).view(1, batch, 1)
        valid = torch.arange(steps, device=x.device).view(steps, 1, 1) < lens  # (seq, batch, 1)
    else:
        valid = None

    def clipped(v):
        return v if clip is None else torch.clamp(v, -clip, clip)

    ys, hs, cs = [], [], []
    for d in range(dirs):
        f_, g_, h_ = (funcs[d] + [None, None])[:3]
        wd, rd = w[d], r[d]
        wb, rb = b[d].split(gates * hidden) if b is not None else (None, None)
        xw = torch.matmul(x, wd.t())  # (seq, batch, gates*hidden)
        if wb is not None:
            xw = xw + wb
        if kind == "LSTM" and p is not None:
            p_i, p_o, p_f = p[d].split(hidden)
        else:
            p_i = p_o = p_f = None
        h, c = h0[d], c0[d]
        out: list[torch.Tensor | None] = [None] * steps
        order = (
            range(steps)
            if (direction == "forward" or (direction == "bidirectional" and d == 0))
            else range(steps - 1, -1, -1)
        )
        for t in order:
            hr = torch.matmul(h, rd.t())
            if kind == "RNN":
                h_new = f_(clipped(xw[t] + hr + (rb if rb is not None else 0)))
                c_new = c
            elif kind == "GRU":
                if rb is not None:
                    rbz, rbr, rbh = rb.split(hidden)
                else:
                    rbz = rbr = rbh = 0
                xz, xr, xh = xw[t].split(hidden, dim=-1)
                hz, hr_, hh = hr.split(hidden, dim=-1)
                z = f_(clipped(xz + hz + rbz))
                rt = f_(clipped(xr + hr_ + rbr))
                if int(a.get("linear_before_reset", 0)):
                    n = g_(clipped(xh + rt * (hh + rbh)))
                else:
                    rh = rd.split(hidden)[2]
                    n = g_(clipped(xh + torch.matmul(rt * h, rh.t()) + rbh))
                h_new = (1 - z) * n + z * h
                c_new = c
            else:
                gsum = xw[t] + hr + (rb if rb is not None else 0)
                gi, go, gf, gc = gsum.split(hidden, dim=-1)
                if p_i is not None:
                    gi, gf = gi + p_i * c, gf + p_f * c
                i = f_(clipped(gi))
                fg = 1 - i if int(a.get("input_forget", 0)) else f_(clipped(gf))
                c_new = fg * c + i * g_(clipped(gc))
                if p_o is not None:
                    go = go + p_o * c_new
                o = f_(clipped(go))
                h_new = o * h_(c_new)
            if valid is not None:
                h_new = torch.where(valid[t], h_new, h)
                c_new = torch.where(valid[t], c_new, c)
                out[t] = torch.where(valid[t], h_new, torch.zeros_like(h_new))
            else:
                out[t] = h_new
            h, c = h_new, c_new
        ys.append(torch.stack(cast(list[torch.Tensor], out), 0))  # (seq, batch, hidden); every step filled
        hs.append(h)
        cs.append(c)
    y = torch.stack(ys, 1)  # (seq, dirs, batch, hidden)
    y_h, y_c = torch.stack(hs, 0), torch.stack(cs, 0)  # (dirs, batch, hidden)
    if layout:
        y, y_h, y_c = y.permute(2, 0, 1, 3), y_h.transpose(0, 1), y_c.transpose(0, 1)
    outs = [y, y_h] + ([y_c] if kind == "LSTM" else [])
    return outs[:n_out]


def _rnn(kind: str):
    def run(ctx, x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None, _n=1, **a):
        if kind != "LSTM" and (c0 is not None or p is not None):
            raise UnsupportedError(f"{kind} takes at most 6 inputs")
        return _rnn_common(kind, ctx, x, w, r, b, seq_lens, h0, c0, p, a, _n)

    return run


# before 7 the recurrence multiplies by R, not its transpose
for _kind in ("RNN", "GRU", "LSTM"):
    register(_kind, _rnn(_kind), since=7, count_outputs=True, notes="activations outside the ONNX list are refused")
