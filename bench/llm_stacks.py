"""Cost of the language-model path: each stack's bare generation loop against `hspi db build` of
the same platform on the same chats.

Bare: a fresh process that loads the runtime and the model with the runtime's own API and
greedily generates ``new_tokens`` tokens for every chat of the probe set (argmax only, no top-k,
no storage). Build: ``hspi db build smollm2 -p LABEL`` into an empty DB, in a fresh process
(worker start, probe set, the shared decode loop with top-k and log-softmax, the determinism
re-run of a sample, Parquet shards). Both wall clocks include loading; peak RSS is the largest
resident set of the process tree. Prints a table (or --json) with tokens/s of the bare loop and
the build/bare ratio (goal: <= 1.15).

    python bench/llm_stacks.py [-n CHATS] [--times R] [--stack NAME] [--json]

Both read one probe-set file (``hspi probes make smollm2``). Needs the llm extra; the conversions
are made on first use and cached.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

STACKS = {
    "llamacpp": "llamacpp/*/q8_0/*fa=off,*kv=f16,nbatch=512,*threads=1,*",
    "transformers": "transformers/*/fp32/*attn=sdpa*threads=1",
    "onnxruntime": "onnxruntime/*/fp32/bs=1,opt=all,threads=1",
    "openvino": "openvino/*/fp32/*",
    "pytorch": "pytorch/*/fp32/*",
}

BARE = r"""
import json, sys, time
import numpy as np
family, probes_path, onnx_path = sys.argv[1], sys.argv[2], sys.argv[3]
from hspi_onnx.inputs.probes import load_probes
from hspi_onnx.models import smollm2
cfg = json.loads((smollm2.hf_folder() / "config.json").read_text())
class spec:  # the generation settings, without opening the 540 MB ONNX file
    layers, kv_heads, head_dim = cfg["num_hidden_layers"], cfg["num_key_value_heads"], cfg["head_dim"]
    vocab, context, stop, new_tokens = cfg["vocab_size"], 2048, (cfg["eos_token_id"],), 16
probes = load_probes(probes_path)
prompts = [ids[: int(m.sum())] for ids, m in zip(probes.inputs["input_ids"], probes.inputs["attention_mask"])]
t0 = time.perf_counter()
if family == "llamacpp":
    import llama_cpp
    from hspi_onnx.runtimes.llamacpp import _extra_bufts, default_repack
    with _extra_bufts(default_repack("Q8_0") == "on"):  # as the platform loads it (AMX hosts: off)
        llm = llama_cpp.Llama(model_path=str(smollm2.gguf_path("Q8_0")), n_ctx=spec.context, n_threads=1,
                              n_threads_batch=1, flash_attn=False, verbose=False)
    def logits():
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(spec.vocab,))
    def start(p):
        llm.reset(); llm._ctx.kv_cache_clear(); llm.eval([int(t) for t in p]); return logits()
    def step(t):
        llm.eval([t]); return logits()
elif family == "transformers":
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache
    torch.set_num_threads(1)
    lm = AutoModelForCausalLM.from_pretrained(str(smollm2.hf_folder()), dtype=torch.float32, attn_implementation="sdpa")
    state = {}
    def fwd(ids):
        with torch.inference_mode():
            out = lm(input_ids=ids, past_key_values=state["c"], use_cache=True, logits_to_keep=1)
        state["c"] = out.past_key_values
        return out.logits[0, -1].numpy()
    def start(p):
        state["c"] = DynamicCache(config=lm.config); return fwd(torch.from_numpy(p)[None])
    def step(t):
        return fwd(torch.tensor([[t]]))
else:
    if family == "onnxruntime":
        import onnxruntime as ort
        o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
        sess = ort.InferenceSession(onnx_path, o, providers=["CPUExecutionProvider"])
        def run(ids, k, v):
            return sess.run(None, {"input_ids": ids, "past_key": k, "past_value": v})
    elif family == "openvino":
        import openvino as ov
        cfg = {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
               "NUM_STREAMS": 1, "EXECUTION_MODE_HINT": "PERFORMANCE", "CPU_DENORMALS_OPTIMIZATION": False}
        req = ov.Core().compile_model(onnx_path, "CPU", cfg).create_infer_request()  # the adapter's pins
        def run(ids, k, v):
            r = req.infer({"input_ids": ids, "past_key": k, "past_value": v}); return [np.array(x) for x in r.values()]
    else:
        import torch
        import onnx
        from hspi_onnx.graph.to_torch import convert
        torch.set_num_threads(1)
        mod = convert(onnx.load(onnx_path), torch.float32).eval()
        def run(ids, k, v):
            with torch.inference_mode():
                return [x.numpy() for x in mod(torch.from_numpy(ids), torch.from_numpy(k), torch.from_numpy(v))]
    state = {}
    def fwd(ids):
        lo, state["k"], state["v"] = run(ids.reshape(1, -1), state["k"], state["v"]); return lo[0, -1]
    def start(p):
        z = np.zeros((spec.layers, 1, spec.kv_heads, 0, spec.head_dim), np.float32)
        state["k"], state["v"] = z, z.copy(); return fwd(np.asarray(p, np.int64))
    def step(t):
        return fwd(np.array([t], np.int64))
loaded = time.perf_counter()
tokens = 0
for p in prompts:
    row = start(p)
    for i in range(spec.new_tokens):
        t = int(np.argmax(row)); tokens += 1
        if t in spec.stop or i == spec.new_tokens - 1:
            break
        row = step(t)
done = time.perf_counter()
print(json.dumps({"load_s": loaded - t0, "gen_s": done - loaded, "tokens": tokens}))
"""


def _measured(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """(wall seconds, peak RSS of the process tree in MiB, stdout) of ``cmd`` in a fresh wrapper."""
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter(); p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "w = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps({'wall': w, 'rss': rss, 'rc': p.returncode, 'out': p.stdout, 'err': p.stderr[-2000:]}))\n"
    )
    res = json.loads(
        subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, env=env).stdout
    )
    if res["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} failed: {res['err']}")
    return res["wall"], res["rss"], res["out"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=8, help="chats of the built-in prompt set (default: all 8)")
    ap.add_argument("--times", type=int, default=1, help="each chat asked this many times (more work, same fixed cost)")
    ap.add_argument("--stack", action="append", choices=list(STACKS), help="only these stacks (repeatable)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    from hspi_onnx.models import ensure_exported

    onnx_path = str(ensure_exported("smollm2"))  # the export and the conversions, made once and cached
    tmp = tempfile.mkdtemp(prefix="llm-stacks-")
    probes = f"{tmp}/probes.npz"
    cli = [sys.executable, "-m", "hspi_onnx.cli"]
    make = [*cli, "probes", "make", "smollm2", "-o", probes]
    if args.times > 1:  # the first n built-in chats, each repeated: a longer run of the same kind
        from hspi_onnx.inputs.chats import builtin_chats

        chats = builtin_chats()[: args.n] * args.times
        with open(f"{tmp}/chats.jsonl", "w") as f:
            f.writelines(json.dumps({"messages": c}) + "\n" for c in chats)
        make += ["--chats", f"{tmp}/chats.jsonl"]
    else:
        make += ["-n", str(args.n)]
    subprocess.run(make, env=env, check=True, capture_output=True)
    rows = []
    try:
        rows = _compare(args, env, cli, probes, onnx_path, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _report(rows, args.json)


def _compare(args, env, cli, probes, onnx_path, tmp) -> list[dict]:
    rows = []
    for family in args.stack or list(STACKS):
        wall, rss, out = _measured([sys.executable, "-c", BARE, family, probes, onnx_path], env)
        bare = json.loads(out.strip().splitlines()[-1])
        hspi = [*cli, "db", "build", "smollm2", "--db", f"{tmp}/db-{family}", "--probes", probes]
        bwall, brss, _ = _measured([*hspi, "-p", STACKS[family], "-q"], env)
        rows.append(
            {
                "stack": family,
                "platform": STACKS[family],
                "tokens": bare["tokens"],
                "bare_load_s": round(bare["load_s"], 2),
                "bare_tokens_per_s": round(bare["tokens"] / bare["gen_s"], 1),
                "bare_wall_s": round(wall, 2),
                "bare_peak_rss_mib": round(rss),
                "build_wall_s": round(bwall, 2),
                "build_peak_rss_mib": round(brss),
                "ratio": round(bwall / wall, 2),
            }
        )
    return rows


def _report(rows: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    cols = list(rows[0])[2:]
    print("stack".ljust(13) + "".join(c.rjust(19) for c in cols))
    for r in rows:
        print(r["stack"].ljust(13) + "".join(str(r[c]).rjust(19) for c in cols))
    print(f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
