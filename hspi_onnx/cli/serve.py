"""``hspi serve``: one model on one platform behind KServe v2 and OpenAI-compatible endpoints."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import InProcessOpt, ModelArg


def serve(
    model: ModelArg,
    platform: Annotated[
        str,
        typer.Option(
            "--platform",
            "-p",
            help="The platform to serve: an exact label or a glob that selects one (see `hspi runtimes variants MODEL`). No response names it.",
            show_default=False,
        ),
    ],
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", min=0, max=65535, help="TCP port; 0 takes a free one (printed).")
    ] = 8000,
    host: Annotated[str, typer.Option("--host", metavar="ADDRESS", help="Address to listen on.")] = "127.0.0.1",
    name: Annotated[
        str,
        typer.Option(
            "--name", metavar="NAME", help="Model name clients use (default: the model's name).", show_default=False
        ),
    ] = "",
    reveal_platform: Annotated[
        bool,
        typer.Option(
            "--reveal-platform",
            help="Also answer GET /hspi/v1/platform with the platform's label and this host's facts, so that `hspi db build --remote URL` can build reference rows here (not a black box then).",
        ),
    ] = False,
    labels_only: Annotated[
        bool,
        typer.Option(
            "--labels-only",
            help="KServe v2 answers only the top-1 label of the first output (INT64 tensor 'label'), as a label-only service does.",
        ),
    ] = False,
    in_process: InProcessOpt = False,
) -> None:
    """Serve MODEL on one platform until interrupted: KServe v2 REST under /v2 (JSON and binary
    tensors, as tritonclient speaks it) and, for a byte-level language model, OpenAI-compatible
    /v1/completions with logprobs. Requests run in a worker process in the platform's batch
    size, so outputs are bit-identical to a reference DB's."""
    from hspi_onnx.inputs.model import resolve_model
    from hspi_onnx.inputs.probes import default_kind
    from hspi_onnx.run.adapter import resolve_platform
    from hspi_onnx.serve.app import serve as run_server
    from hspi_onnx.serve.service import Service

    info = resolve_model(model)
    adapter, plat = resolve_platform(platform, info, default_kind(info))
    service = Service(info, adapter, plat, name=name or None, in_process=in_process, labels_only=labels_only)

    def listening(addr: str, bound: int) -> None:
        print(f"serving {service.name} on http://{addr}:{bound} (KServe v2 at /v2, OpenAI at /v1)", flush=True)

    try:
        service.warm_up()
        run_server(service, host, port, on_listen=listening, reveal_platform=reveal_platform)
    finally:
        service.close()
