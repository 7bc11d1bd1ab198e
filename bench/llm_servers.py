"""Batching and concurrency on real OpenAI-compatible servers: does a busy server answer a chat
with other bits than an idle one?

Starts each peer server on loopback (llama-cpp-python's ``llama_cpp.server`` on the Q8_0 GGUF, or
the type ``--gguf`` names: on a host with AMX use F16, the server segfaults on quantized types there;
``transformers serve`` on the Hugging Face folder, without and with ``--continuous-batching``),
asks it a probe set of 16 chats (the 8 built-in ones and 8 more) with ``hspi query`` at
concurrency 1, 4 and 16, and compares each answer with the concurrency-1 answer of the same chat:
tokens and top-5 log-probabilities where the server returns them, else the text. Prints a table
(or --json).

    python bench/llm_servers.py [--json] [--servers llamacpp,transformers,transformers-cb]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

MORE_CHATS = [
    "Name three rivers in Africa.",
    "Write a haiku about rain.",
    "What is 17 times 23?",
    "Translate 'good morning' into German.",
    "Explain recursion in one sentence.",
    "List the planets closer to the sun than Earth.",
    "Give a synonym for 'happy'.",
    "What does CPU stand for?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hspi(*args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "hspi_onnx.cli", *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"hspi {' '.join(map(str, args[:3]))} failed: {proc.stderr[-1500:]}")
    return proc


def start(name: str, port: int, log: Path, gguf: str = "Q8_0") -> subprocess.Popen:
    from hspi_onnx.models.smollm2 import gguf_path, hf_folder

    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if name == "llamacpp":
        argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path(gguf)), "--n_ctx", "2048"]
        argv += ["--n_threads", "1", "--n_threads_batch", "1", "--flash_attn", "false"]
    else:
        exe = os.path.join(os.path.dirname(sys.executable), "transformers")
        argv = [
            exe,
            "serve",
            str(hf_folder()),
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--attn-implementation",
            "sdpa",
        ]
        argv += ["--continuous-batching"] if name == "transformers-cb" else []
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited: {log.read_text()[-1500:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"{name} did not come up")


def evidence(path: Path) -> dict[int, object]:
    out = {}
    for line in path.read_text().splitlines():
        d = json.loads(line)
        out[d["probe_id"]] = (d["tokens"], d.get("top_logprobs")) if d.get("top_logprobs") else d["text"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--servers", default="llamacpp,transformers,transformers-cb")
    ap.add_argument("--gguf", default="Q8_0", help="GGUF type llama_cpp.server serves (F16 on a host with AMX)")
    args = ap.parse_args()
    from hspi_onnx.inputs.chats import builtin_chats

    work = Path(tempfile.mkdtemp(prefix="hspi-llm-servers-"))
    chats = builtin_chats() + [[{"role": "user", "content": c}] for c in MORE_CHATS]
    (work / "chats.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats))
    hspi("probes", "make", "smollm2", "--chats", work / "chats.jsonl", "-o", work / "chats.npz")
    rows = []
    for name in args.servers.split(","):
        port = free_port()
        proc = start(name, port, work / f"{name}.log", args.gguf)
        try:
            base = None
            for c in (1, 4, 16):
                out = work / f"{name}-c{c}.jsonl"
                t0 = time.monotonic()
                hspi(
                    *["query", f"http://127.0.0.1:{port}", "--wire", "openai", "--probes", work / "chats.npz"],
                    *["--lm", "smollm2", "--chats", work / "chats.jsonl", "--concurrency", c, "-o", out, "-q"],
                    *(["--param", "repeat_penalty=1.0"] if name == "llamacpp" else []),
                )
                wall = time.monotonic() - t0
                got = evidence(out)
                base = base or got
                same = sum(got[k] == base[k] for k in base)
                kind = "tokens + top-5 logprobs" if isinstance(next(iter(got.values())), tuple) else "text"
                rows.append(
                    {
                        "server": name,
                        "concurrency": c,
                        "chats": len(got),
                        "same_as_c1": same,
                        "evidence": kind,
                        "wall_s": round(wall, 1),
                    }
                )
        finally:
            proc.terminate()
            proc.wait(30)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("| server | concurrency | chats | answers equal to concurrency 1 | evidence | wall s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['server']} | {r['concurrency']} | {r['chats']} | {r['same_as_c1']}/{r['chats']} | "
            f"{r['evidence']} | {r['wall_s']} |"
        )


if __name__ == "__main__":
    main()
