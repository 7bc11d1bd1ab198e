"""HTTP for ``hspi query``: retries with exponential backoff, a rate limit, bounded bodies.

One :class:`Transport` is shared by every worker thread (httpx clients are thread-safe). A
request is retried on 429, 5xx, timeouts and connection errors, waiting ``Retry-After`` when
the server gives it, else ``backoff * 2**attempt`` (jittered, capped). A body is streamed and
abandoned past ``max_body`` bytes; a request that has not finished within ``timeout`` seconds
(the server hangs or trickles) is a timeout. The Authorization value lives only in the
client's headers: it never enters a message, a log or the output file.
"""

from __future__ import annotations

import email.utils
import random
import re
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import httpx

from hspi_onnx.errors import HspiError

MAX_BODY = 64 << 20
MAX_WAIT = 120.0  # seconds: the longest backoff or Retry-After we honour
KEPT_HEADERS = (
    "server",
    "date",
    "content-type",
    "content-length",
    "x-request-id",
    "request-id",
    "x-envoy-upstream-service-time",
    "via",
    "inference-header-content-length",
)


class QueryError(HspiError):
    """A service that cannot be queried or answers with something unusable."""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # the KEPT_HEADERS the server sent
    body: bytes
    latency_s: float
    attempts: int = 1
    raw_headers: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def content_type(self) -> str:
        return self.raw_headers.get("content-type", "").split(";")[0].strip().lower()


def public_url(url: str) -> str:
    """``url`` without user:password and query string: what may be shown and stored."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise QueryError(f"URL {url.split('@')[-1][:80]!r} must be http:// or https://HOST[:PORT][/PATH]")
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def one_line(body: bytes, limit: int = 120) -> str:
    """A body as a short line: HTML tags stripped, whitespace collapsed."""
    text = body[:4096].decode("utf-8", "replace")
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
    if title:
        text = title.group(1)
    text = re.sub(r"<[^>]*>", " ", text)
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class RateLimit:
    """At most ``rate`` requests started per second, across threads (None: no limit)."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self.next = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next)
            self.next = start + self.interval
        if start > now:
            time.sleep(start - now)


class _Timeout(Exception):
    pass


class Transport:
    def __init__(
        self,
        base_url: str,
        timeout: float = 30.0,
        retries: int = 3,
        rate: float | None = None,
        authorization: str | None = None,
        max_body: int = MAX_BODY,
        backoff: float = 0.5,
        concurrency: int = 1,
    ):
        self.base = base_url.rstrip("/")
        self.shown = public_url(base_url)
        self.timeout, self.retries, self.max_body, self.backoff = timeout, retries, max_body, backoff
        self.limit = RateLimit(rate)
        headers = {"Authorization": authorization} if authorization else {}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.client = httpx.Client(
            headers=headers, timeout=httpx.Timeout(timeout), limits=limits, follow_redirects=False
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, method: str, path: str, body: bytes | None = None) -> Reply:
        """The server's reply to one request, retried while it is 429 / 5xx or fails in transit;
        any other status is returned for the caller to judge."""
        where = f"{method} {self.shown}{path}"
        for attempt in range(self.retries + 1):
            self.limit.wait()
            wait = None
            try:
                reply = self._once(method, path, body)
            except _Timeout:
                problem = f"no complete answer within {self.timeout:g} s"
            except httpx.TimeoutException:
                problem = f"no answer within {self.timeout:g} s"
            except httpx.RemoteProtocolError as exc:
                problem = f"truncated or malformed response ({_reason(exc)})"
            except httpx.TransportError as exc:
                problem = f"connection failed ({_reason(exc)})"
            else:
                if reply.status != 429 and reply.status < 500:
                    reply.attempts = attempt + 1
                    return reply
                kind = "an HTML page" if reply.content_type == "text/html" else repr(one_line(reply.body, 80))
                problem = f"HTTP {reply.status} ({kind})" if kind != "''" else f"HTTP {reply.status}"
                wait = retry_after(reply.raw_headers.get("retry-after"))
            if attempt == self.retries:
                tries = f" after {attempt + 1} attempts" if attempt else ""
                raise QueryError(f"{where}: {problem}{tries}")
            if wait is None:
                wait = self.backoff * 2**attempt * (0.5 + random.random() / 2)
            time.sleep(min(wait, MAX_WAIT))
        raise AssertionError("unreachable")

    def _once(self, method: str, path: str, body: bytes | None) -> Reply:
        start = time.monotonic()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        with self.client.stream(method, self.base + path, content=body, headers=headers) as r:
            declared = r.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body:
                raise QueryError(
                    f"{method} {self.shown}{path}: the response declares {int(declared)} bytes, "
                    f"over the limit of {_mib(self.max_body)}"
                )
            chunks, size = [], 0
            for chunk in r.iter_bytes():
                size += len(chunk)
                if size > self.max_body:
                    raise QueryError(
                        f"{method} {self.shown}{path}: the response is over the limit of "
                        f"{_mib(self.max_body)}; stopped reading"
                    )
                if time.monotonic() - start > self.timeout:
                    raise _Timeout()
                chunks.append(chunk)
            raw = {k.lower(): v for k, v in r.headers.items()}
            kept = {k: raw[k] for k in KEPT_HEADERS if k in raw}
            return Reply(r.status_code, kept, b"".join(chunks), time.monotonic() - start, raw_headers=raw)


def _reason(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:100]


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"
