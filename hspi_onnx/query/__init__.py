"""The query client: send a probe set to a live inference service and record its answers as a
suspect file (``hspi query``). ``client`` drives it, ``kserve`` speaks the Open Inference
Protocol, ``transport`` does HTTP (retries, rate limit, bounded bodies), ``resume`` owns the file."""

from .client import PROTOCOLS, QueryOptions, QuerySummary, query
from .transport import QueryError

__all__ = ["PROTOCOLS", "QueryError", "QueryOptions", "QuerySummary", "query"]
