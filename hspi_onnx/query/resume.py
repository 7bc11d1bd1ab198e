"""The answer file of ``hspi query``: JSON Lines, appended one per answer: KServe v2 responses,
or ``hspi-logprobs/1`` lines for the OpenAI protocol (one per probe).

Every line names the probe set (``parameters.probe_set``), its probe ids and, under
``parameters.hspi_query`` (which the suspect reader ignores), the endpoint and model it came from
with the request's latency, HTTP status and selected server headers. Reopening the file resumes:
a partially written last line is cut off, lines of another probe set, endpoint or model are
refused, and the probe ids already answered are not asked again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .transport import QueryError

KEY = "hspi_query"


class AnswerFile:
    def __init__(
        self, path: str | Path, probe_set: str, url: str, model: str, signature: Callable[[dict], object] | None = None
    ):
        self.path = Path(path)
        self.origin = {"probe_set": probe_set, "url": url, "model": model}
        self.sign = signature or kserve_signature
        self.signature: object | None = None  # the first answer's
        self.docs: dict[int, tuple[dict, int]] = {}  # probe id -> (answer read back, its row)
        self.fh: IO[bytes] | None = None

    def open(self) -> set[int]:
        """Probe ids already answered; the file is then open for appending."""
        done: set[int] = set()
        if self.path.exists():
            with open(self.path, "r+b") as fh:
                data = fh.read()
                keep = data.rfind(b"\n") + 1
                if keep < len(data):  # an interrupted write: drop the partial line
                    fh.truncate(keep)
            for k, line in enumerate(data[:keep].splitlines()):
                if line.strip():
                    done.update(self._read_line(k, line))
        self.fh = open(self.path, "ab")
        return done

    def _read_line(self, k: int, line: bytes) -> list[int]:
        where = f"{self.path}: line {k + 1}"
        try:
            doc = json.loads(line)
            params = doc["parameters"]
            ours = params[KEY]
            ids = [int(i) for i in params["probe_ids"]]
        except (ValueError, KeyError, TypeError):
            raise QueryError(f"{where} is not an answer written by hspi query; write to another file") from None
        for field in ("probe_set", "url", "model"):
            have = params.get(field) if field == "probe_set" else ours.get(field)
            if have != self.origin[field]:
                raise QueryError(
                    f"{where} holds answers for {field.replace('_', ' ')} {str(have)[:80]!r}, not "
                    f"{self.origin[field][:80]!r}; resume only continues the same query (use another -o)"
                )
        self.check(doc, where)
        for row, pid in enumerate(ids):
            self.docs[pid] = (doc, row)
        return ids

    def check(self, doc: dict, where: str) -> None:
        """Every answer has the signature of the first (outputs, datatypes and row shapes)."""
        try:
            sig = self.sign(doc)
        except (KeyError, TypeError, IndexError):
            raise QueryError(f"{where} is not an answer of this protocol; write to another file") from None
        if self.signature is None:
            self.signature = sig
        elif sig != self.signature:
            raise QueryError(f"{where}: outputs {_show(sig)} differ from the earlier answers' {_show(self.signature)}")

    def append(self, doc: dict, where: str) -> None:
        self.check(doc, where)
        doc["parameters"][KEY] = {
            **doc["parameters"].get(KEY, {}),
            "url": self.origin["url"],
            "model": self.origin["model"],
        }
        assert self.fh is not None  # open() opened it
        self.fh.write(json.dumps(doc, separators=(",", ":")).encode() + b"\n")  # NaN / Infinity kept
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def kserve_signature(doc: dict) -> dict[str, tuple]:
    """Output name -> (datatype, row shape)."""
    return {o["name"]: (o["datatype"], tuple(o["shape"][1:])) for o in doc["outputs"]}


def _show(sig) -> str:
    if isinstance(sig, dict):
        return ", ".join(f"{n}:{dt}{list(shape)}" for n, (dt, shape) in sig.items())[:160]
    return str(sig)[:160]
