"""Real model families the zoo lacks, as a user would bring them (issue 30): exported with torch's
own exporter (``torch.onnx.export(..., dynamo=True)``, which needs onnxscript) at opsets 17 and 23,
and built with every runtime family present. A check, not a target: which families build each
model, and why the others refuse.

* ``unet``: convolutions, max pooling, a transposed convolution, a bilinear resize, a skip
  concatenation;
* ``decoder``: token embedding, RMSNorm, rotary position embedding, causal scaled-dot-product
  attention (at opset 23 the exporter writes RMSNormalization and Attention ops);
* ``detector``: a convolutional box and score head, TopK over the scores and a Gather of the top
  boxes, with NonMaxSuppression appended after export (torch has no NMS of its own without
  torchvision, which this project does not install; exports from torchvision append it the same
  way). Its ``selected`` output is one list for the whole batch (batch index in its first column):
  every family computes it, the DB stores the boxes and scores and names ``selected`` as not
  stored.

    python bench/model_families.py [--work DIR] [-n 4]
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import tempfile
import time
import warnings
from pathlib import Path


def _families():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down = nn.Conv2d(3, 8, 3, padding=1)
            self.mid = nn.Conv2d(8, 16, 3, padding=1)
            self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
            self.out = nn.Conv2d(16, 2, 1)

        def forward(self, x):
            a = F.relu(self.down(x))
            b = F.relu(self.mid(F.max_pool2d(a, 2)))
            c = F.interpolate(self.up(b), size=a.shape[-2:], mode="bilinear", align_corners=False)
            return self.out(torch.cat([a, c], 1))

    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(64, 32)
            self.norm = nn.RMSNorm(32)
            self.qkv = nn.Linear(32, 96)
            self.head = nn.Linear(32, 64)

        def forward(self, ids):
            x = self.norm(self.embed(ids))
            b, t, _ = x.shape
            q, k, v = self.qkv(x).reshape(b, t, 3, 4, 8).permute(2, 0, 3, 1, 4)
            pos = torch.arange(t, dtype=torch.float32)[:, None] * torch.exp(-torch.arange(4, dtype=torch.float32))[None]
            cos, sin = pos.cos(), pos.sin()

            def rotate(z):
                z1, z2 = z[..., :4], z[..., 4:]
                return torch.cat([z1 * cos - z2 * sin, z1 * sin + z2 * cos], -1)

            y = F.scaled_dot_product_attention(rotate(q), rotate(k), v, is_causal=True)
            return self.head(y.transpose(1, 2).reshape(b, t, 32))

    class Detector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Conv2d(3, 8, 3, padding=1, stride=2)
            self.boxes = nn.Conv2d(8, 4, 1)
            self.scores = nn.Conv2d(8, 1, 1)

        def forward(self, x):
            h = F.relu(self.body(x))
            boxes = self.boxes(h).flatten(2).transpose(1, 2).sigmoid()  # (1, anchors, 4)
            scores = self.scores(h).flatten(1).sigmoid()  # (1, anchors)
            top, idx = torch.topk(scores, 16, dim=1)
            return torch.gather(boxes, 1, idx[..., None].expand(-1, -1, 4)), top[:, None, :]

    torch.manual_seed(0)
    return {
        "unet": (UNet().eval(), (torch.randn(1, 3, 16, 16),)),
        "decoder": (Decoder().eval(), (torch.randint(0, 64, (1, 8)),)),
        "detector": (Detector().eval(), (torch.randn(1, 3, 16, 16),)),
    }


def _append_nms(model):
    """The detector's (boxes, scores) outputs fed to NonMaxSuppression (max 8 boxes, IoU 0.5)."""
    from onnx import TensorProto, helper

    g = model.graph
    boxes, scores = g.output[0].name, g.output[1].name
    consts = [
        helper.make_tensor("nms_max", TensorProto.INT64, [1], [8]),
        helper.make_tensor("nms_iou", TensorProto.FLOAT, [1], [0.5]),
    ]
    g.initializer.extend(consts)
    g.node.append(helper.make_node("NonMaxSuppression", [boxes, scores, "nms_max", "nms_iou"], ["selected"]))
    g.output.append(helper.make_tensor_value_info("selected", TensorProto.INT64, ["n", 3]))
    return model


def export(work: Path) -> dict[str, Path]:
    import onnx
    import torch

    out = {}
    for name, (module, args) in _families().items():
        for opset in (17, 23):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                proto = torch.onnx.export(module, args, dynamo=True, opset_version=opset, verbose=False).model_proto
            if name == "detector":
                proto = _append_nms(proto)
            onnx.checker.check_model(proto)
            path = work / f"{name}-opset{opset}.onnx"
            onnx.save(proto, path)
            out[f"{name}-opset{opset}"] = path
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("-n", type=int, default=4)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="hspi-families-"))
    work.mkdir(parents=True, exist_ok=True)
    import onnx

    from corpus_coverage import build_command  # bench/: the same `hspi db build` line as the corpus

    print("| model | ops | built, per family | failed, per family: first reason | outputs not stored |")
    print("| --- | --- | --- | --- | --- |")
    for name, path in export(work).items():
        ops = sorted({n.op_type for n in onnx.load(path).graph.node})
        t0 = time.perf_counter()
        run = subprocess.run(build_command(path, work / f"db-{name}", args.n), capture_output=True, text=True)
        if run.returncode not in (0, 3):
            print(f"| {name} | {', '.join(ops)} | build failed: {run.stderr.strip()[-200:]} | |")
            continue
        doc = json.loads(run.stdout)
        built = collections.Counter(p.split("@")[0] for p in doc["built"])
        failed = collections.Counter(p.split("@")[0] for p in doc["failed"])
        reasons = {}
        for p, why in doc["failed"].items():
            reasons.setdefault(p.split("@")[0], f"{p.split('/')[2]}: {why.splitlines()[0][:110]}")
        print(
            f"| {name} | {', '.join(ops)} | "
            + ", ".join(f"{k} {v}" for k, v in sorted(built.items()))
            + f" ({time.perf_counter() - t0:.0f} s) | "
            + "; ".join(f"{k} {v}: {reasons[k]}" for k, v in sorted(failed.items()))
            + " | "
            + "; ".join(f"{k}: {why}" for k, why in doc.get("not_stored", {}).items())
            + " |"
        )


if __name__ == "__main__":
    main()
