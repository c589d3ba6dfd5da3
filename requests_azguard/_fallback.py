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
from typing import Any, Final, Mapping, Optional, Union

import requests
from requests.structures import CaseInsensitiveDict

from ._errors import CircuitOpenError

__all__ = ["FALLBACK_HEADER", "FALLBACK_VALUE", "fallback_response", "synthetic_response"]

#: Header present on every response the breaker made up.
FALLBACK_HEADER: Final = "X-AzGuard-Fallback"
FALLBACK_VALUE: Final = "circuit-open"


def fallback_response(
    request: requests.PreparedRequest,
    status: int = 503,
    body: Union[bytes, str] = b"",
    headers: Optional[Mapping[str, str]] = None,
    reason: Optional[str] = None,
    *,
    encoding: Optional[str] = None,
) -> requests.Response:
    """A complete ``requests.Response`` for a fallback, built without private attributes.

    :param request: the request being answered; becomes ``response.request``
        and gives ``response.url``.
    :param status: the HTTP status code (100 to 599).
    :param body: the body; a ``str`` is encoded as UTF-8 (or ``encoding``).
    :param headers: response headers; ``Content-Length`` is set from the body
        unless given.
    :param reason: the reason phrase; default the standard one for ``status``.
    :param encoding: what ``response.text`` decodes with; default UTF-8 for a
        ``str`` body, else what requests guesses.

    The body is already read, so ``.content``, ``.text``, ``.json()``,
    ``iter_content()`` and ``stream=True`` callers all work, and
    ``raise_for_status()`` raises for 4xx/5xx as for a real response.
    """
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        from ._errors import ConfigError

        raise ConfigError("status", status, "an HTTP status code from 100 to 599")
    if isinstance(body, str):
        if encoding is None:
            encoding = "utf-8"
        data = body.encode(encoding)
    else:
        data = bytes(body)
    response = requests.Response()
    response.status_code = status
    if reason is None:
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = ""
    response.reason = reason
    merged: CaseInsensitiveDict[str] = CaseInsensitiveDict(headers or {})
    merged.setdefault("Content-Length", str(len(data)))
    response.headers = merged
    # requests has no public setter for an already-read body: these two
    # attributes are what Response.content itself fills in.
    response._content = data
    response._content_consumed = True  # type: ignore[attr-defined]
    response.raw = io.BytesIO(data)
    response.encoding = encoding
    response.url = request.url or ""
    response.request = request
    return response


def synthetic_response(
    request: requests.PreparedRequest,
    status: int,
    error: CircuitOpenError,
    now: float,
    connection: Optional[Any] = None,
) -> requests.Response:
    """The ``AZGUARD_FALLBACK`` response: :func:`fallback_response` marked
    with ``X-AzGuard-Fallback`` and a ``Retry-After``."""
    headers = {
        FALLBACK_HEADER: FALLBACK_VALUE,
        "Content-Type": "text/plain; charset=utf-8",
    }
    if error.retry_at is not None:
        headers["Retry-After"] = str(max(0, math.ceil(error.retry_at - now)))
    reason = None
    try:
        http.HTTPStatus(status)
    except ValueError:
        reason = "Circuit Open"
    response = fallback_response(
        request,
        status,
        f"circuit breaker open for {error.host}\n",
        headers,
        reason,
    )
    if connection is not None:
        response.connection = connection
    return response
