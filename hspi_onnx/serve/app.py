"""The ASGI app (FastAPI) and the uvicorn server around one :class:`Service`.

Errors of the project's family become one-line JSON errors: ``{"error": "..."}`` with the
error's status (400 a bad request, 404 an unknown model, 413 a body over the limit, 500 a
failed or crashed runtime) under ``/v2``, OpenAI's ``{"error": {"message", "type"}}`` under
``/v1``. Uvicorn's ``server`` header is off: no header names the software stack.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from hspi_onnx.errors import HspiError
from hspi_onnx.serve.service import BadRequest

DEFAULT_MAX_BODY = 64 << 20


class TooLarge(BadRequest):
    status = 413


def body_reader(limit: int):
    """An async function reading a request's body, refusing one over ``limit`` bytes."""

    async def read_body(request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise TooLarge(f"the request body is over {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the request body is over {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    return read_body


def reference_router(service):
    """``GET /hspi/v1/platform``: the served platform's label, the model's sha256 and this host's
    facts, for ``hspi db build --remote`` (only with ``hspi serve --reveal-platform``: a machine
    contributing reference outputs, not a black box)."""
    from fastapi import APIRouter

    from hspi_onnx import __version__
    from hspi_onnx.host import cpu_facts

    api = APIRouter(prefix="/hspi/v1")
    doc = {
        "platform": str(service.platform),
        "model": service.name,
        "model_sha256": service.model.sha256,
        "host": cpu_facts(),
        "hspi_onnx": __version__,
    }

    @api.get("/platform")
    def platform() -> dict:
        return doc

    return api


def create_app(service, max_body: int = DEFAULT_MAX_BODY, reveal_platform: bool = False):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    from hspi_onnx.serve import kserve, openai_api

    app = FastAPI(title="hspi serve", docs_url=None, redoc_url=None, openapi_url=None)
    read_body = body_reader(max_body)
    app.include_router(kserve.router(service, read_body))
    app.include_router(openai_api.router(service, read_body))
    if reveal_platform:
        app.include_router(reference_router(service))

    def error(request: Request, status: int, message: str) -> JSONResponse:
        message = " ".join(str(message).split())[:500]
        if request.url.path.startswith("/v1"):
            kind = "invalid_request_error" if status < 500 else "server_error"
            return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)
        return JSONResponse({"error": message}, status)

    @app.exception_handler(HspiError)
    async def _ours(request: Request, exc: HspiError) -> JSONResponse:
        return error(request, getattr(exc, "status", 500), str(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return error(request, exc.status_code, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(request, 400, "malformed request")

    return app


def serve(
    service,
    host: str,
    port: int,
    on_listen: Callable[[str, int], None] | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    reveal_platform: bool = False,
) -> None:
    """Serve until interrupted (SIGINT / SIGTERM); ``port`` 0 takes a free one, which
    ``on_listen(host, port)`` is told once the socket is bound."""
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise HspiError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    config = uvicorn.Config(
        create_app(service, max_body, reveal_platform),
        log_level="warning",
        server_header=False,
        limit_concurrency=64,
        timeout_graceful_shutdown=5,
    )
    if on_listen:
        on_listen(host, sock.getsockname()[1])
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
