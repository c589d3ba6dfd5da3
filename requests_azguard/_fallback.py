"""The synthetic response served while a breaker is open (``AZGUARD_FALLBACK=503``).

It is a complete ``requests.Response`` (body already read, so ``stream=True``
callers and ``iter_content`` work) marked with ``X-AzGuard-Fallback:
circuit-open`` so that callers and logs can tell it never reached the host,
and with ``Retry-After`` saying when the breaker lets a trial through.
"""

from __future__ import annotations

import http
import io
import math
from typing import Any, Final, Optional

import requests
from requests.structures import CaseInsensitiveDict

from ._errors import CircuitOpenError

__all__ = ["FALLBACK_HEADER", "FALLBACK_VALUE", "synthetic_response"]

#: Header present on every response the breaker made up.
FALLBACK_HEADER: Final = "X-AzGuard-Fallback"
FALLBACK_VALUE: Final = "circuit-open"


def synthetic_response(
    request: requests.PreparedRequest,
    status: int,
    error: CircuitOpenError,
    now: float,
    connection: Optional[Any] = None,
) -> requests.Response:
    body = f"circuit breaker open for {error.host}\n".encode()
    response = requests.Response()
    response.status_code = status
    try:
        response.reason = http.HTTPStatus(status).phrase
    except ValueError:
        response.reason = "Circuit Open"
    headers = CaseInsensitiveDict(
        {
            FALLBACK_HEADER: FALLBACK_VALUE,
            "Content-Type": "text/plain; charset=utf-8",
            "Content-Length": str(len(body)),
        }
    )
    if error.retry_at is not None:
        headers["Retry-After"] = str(max(0, math.ceil(error.retry_at - now)))
    response.headers = headers
    response._content = body
    response._content_consumed = True  # type: ignore[attr-defined]
    response.raw = io.BytesIO(body)
    response.encoding = "utf-8"
    response.url = request.url or ""
    response.request = request
    if connection is not None:
        response.connection = connection
    return response
