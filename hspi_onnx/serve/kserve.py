"""KServe v2 / Open Inference Protocol REST routes: health, metadata, infer.

The response carries the ``parameters`` the client sent, unchanged (e.g. ``probe_set`` and
``probe_ids``), so a log of responses is a suspect file ``hspi match`` reads
(:func:`hspi_onnx.match.suspect.load_suspect`). Nothing in it names the platform: metadata
says ``"platform": "onnx"``, the model format.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from hspi_onnx.serve.tensors import datatype, decode_inputs, encode_outputs, parse_header

VERSION = "1"


def _shape(shape, batch: int | None) -> list[int]:
    return [batch or -1, *(-1 if s is None else int(s) for s in shape)]


def metadata(service) -> dict:
    model = service.model
    return {
        "name": service.name,
        "versions": [VERSION],
        "platform": "onnx",
        "inputs": [
            {"name": s.name, "datatype": datatype(s.dtype), "shape": _shape(s.shape, s.fixed_batch)}
            for s in model.inputs
        ],
        "outputs": (
            [{"name": service.output_names[0], "datatype": "INT64", "shape": [model.fixed_batch or -1]}]
            if service.labels_only
            else [
                {
                    "name": o.name,
                    # an output in the runtime's own dtype (a language model's top-k logits): as warm-up returned it
                    "datatype": datatype(o.dtype or service.dtypes.get(o.name, "float32")),
                    "shape": _shape(o.shape, model.fixed_batch),
                }
                for o in model.outputs
            ]
        ),
    }


def router(service, read_body) -> APIRouter:
    """The /v2 routes of ``service``; ``read_body`` reads a request body within the size limit."""
    from hspi_onnx import __version__
    from hspi_onnx.serve.service import BadRequest
    from hspi_onnx.serve.tensors import requested_outputs

    api = APIRouter(prefix="/v2")
    meta = metadata(service)  # a model whose tensors KServe cannot carry fails here, before serving

    @api.get("")
    def server_metadata() -> dict:
        return {"name": "hspi", "version": __version__, "extensions": ["binary_tensor_data"]}

    @api.get("/health/live")
    @api.get("/health/ready")
    def health() -> dict:
        return {}

    @api.get("/models/{name}/ready")
    @api.get("/models/{name}/versions/{version}/ready")
    def model_ready(name: str, version: str = VERSION) -> dict:
        service.check_name(name)
        return {}

    @api.get("/models/{name}")
    @api.get("/models/{name}/versions/{version}")
    def model_metadata(name: str, version: str = VERSION) -> dict:
        service.check_name(name)
        return meta

    @api.post("/models/{name}/infer")
    @api.post("/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str = VERSION) -> Response:
        from starlette.concurrency import run_in_threadpool

        service.check_name(name)
        if request.headers.get("content-encoding", "identity") != "identity":
            raise BadRequest("compressed requests are not accepted")
        doc, binary = parse_header(await read_body(request), request.headers.get("inference-header-content-length"))
        inputs = decode_inputs(doc, binary, service.model.inputs)
        wanted = requested_outputs(doc, service.output_names)
        outputs = await run_in_threadpool(service.answer, inputs)
        header = {"model_name": service.name, "model_version": VERSION}
        if isinstance(doc.get("id"), str):
            header["id"] = doc["id"]
        if doc.get("parameters"):
            header["parameters"] = doc["parameters"]
        body, head_len = encode_outputs(header, outputs, wanted)
        if head_len is None:
            return Response(body, media_type="application/json")
        return Response(
            body, media_type="application/octet-stream", headers={"Inference-Header-Content-Length": str(head_len)}
        )

    return api
