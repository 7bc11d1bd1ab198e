"""One model on one platform, served: request tensors in, the runtime's outputs out.

A request becomes a probe set of its own rows and runs through :class:`Runner` exactly as a
DB build runs probes: in a worker process, in batches of the platform's ``bs`` (the last batch
wraps around), so a served output is bit-identical to the DB's for the same input and the
same batch-mates. (A platform whose output depends on what shares its batch, as int8 dynamic
quantisation does with one scale per batch, gives other bits for a request of other rows: the
DB build records such platforms, see ``hspi_onnx.db.build``.) A runtime
that crashes fails that request (:class:`InferenceFailed`, a 500) and the next request gets a
fresh worker. Error messages never name the platform: the label is what a client must infer.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from hspi_onnx.errors import BadProbesError, HspiError

MAX_ROWS = 4096
LOG = logging.getLogger("hspi.serve")


class BadRequest(HspiError):
    """A request the server refuses (HTTP 400)."""

    status = 400


class NotFound(HspiError):
    """A model the server does not serve (HTTP 404)."""

    status = 404


class InferenceFailed(HspiError):
    """The runtime failed or crashed on a request (HTTP 500)."""

    status = 500


LABEL_OUTPUT = "label"


class Service:
    """The served model and platform, and the runner that executes requests one at a time."""

    def __init__(
        self,
        model,
        adapter,
        platform,
        name: str | None = None,
        in_process: bool = False,
        timeout: float = 300.0,
        labels_only: bool = False,
    ) -> None:
        from hspi_onnx.inputs.probes import default_kind
        from hspi_onnx.run.runner import Runner

        self.model, self.adapter, self.platform = model, adapter, platform
        self.name = name or model.name
        self.labels_only = labels_only  # answer the top-1 label of the first output, nothing else
        self.kind = default_kind(model)
        self.runner = Runner(in_process=in_process, timeout=timeout)
        self._lock = threading.Lock()
        self.dtypes: dict[str, str] = {}  # output name -> dtype the platform returned (warm_up)

    def check_name(self, name: str) -> None:
        if name != self.name:
            raise NotFound(f"no model {name[:80]!r}; this server serves {self.name!r}")

    def warm_up(self) -> None:
        """Run one generated probe, so the server is ready (and a broken platform fails) before it listens."""
        from hspi_onnx.inputs.probes import generate

        outputs = self.infer(generate(self.model, n=1).inputs)
        self.dtypes = {name: str(np.asarray(v).dtype) for name, v in outputs.items()}

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output for the request's rows, in the dtype the runtime returned."""
        from hspi_onnx.inputs.probes import ProbeSet
        from hspi_onnx.run.runner import PlatformCrashed, PlatformFailed

        rows = {len(v) if v.ndim else 0 for v in inputs.values()}
        if len(rows) != 1 or not 1 <= next(iter(rows)) <= MAX_ROWS:
            raise BadRequest(f"every input needs the same batch size, between 1 and {MAX_ROWS}")
        n = rows.pop()
        try:
            probes = ProbeSet("request", self.kind, 0, "probe", inputs, np.arange(n, dtype=np.int64)).bind(self.model)
        except BadProbesError as exc:
            raise BadRequest(str(exc).replace("probe set 'request'", "the request"))
        with self._lock:
            try:
                result = self.runner.run(self.adapter, self.model, self.platform, probes)
            except PlatformCrashed as exc:
                LOG.error("inference crashed: %s", exc)
                raise InferenceFailed("inference failed: the runtime crashed; it restarts for the next request")
            except PlatformFailed as exc:
                LOG.error("inference failed: %s", exc)
                raise InferenceFailed(f"inference failed: the runtime raised {exc.kind or 'an error'}")
        return result.outputs

    @property
    def output_names(self) -> list[str]:
        return [LABEL_OUTPUT] if self.labels_only else self.model.output_names

    def answer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What a client receives: every output, or with ``labels_only`` the top-1 label of the
        first output per row (INT64; ties to the lower index, as the matcher takes argmax)."""
        outputs = self.infer(inputs)
        if not self.labels_only:
            return outputs
        from hspi_onnx.forms import top_indices

        first = np.asarray(outputs[self.model.output_names[0]], np.float64)
        return {LABEL_OUTPUT: top_indices(first.reshape(len(first), -1), 1)[:, 0].astype(np.int64)}

    def close(self) -> None:
        self.runner.close()
