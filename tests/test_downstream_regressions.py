"""Regressions found by running requests' own suite under the guard.

``tests/downstream/requests_suite.sh`` runs requests' tests with
``AzGuardAdapter`` as ``HTTPAdapter``; each difference it found that was a bug
gets a test here with real local sockets, guarded and plain side by side.
"""

from __future__ import annotations

from typing import Type

import pytest
import requests
from servers import Action, HTTPTestServer

import requests_azguard


def _raised(session: requests.Session, url: str) -> Type[BaseException]:
    with pytest.raises(requests.RequestException) as info:
        session.get(url, timeout=5)
    return type(info.value)


@pytest.mark.parametrize(
    "body",
    [
        # requests' test_chunked_encoding_error: chunked, then FIN before any chunk.
        b"",
        # FIN in the middle of the second chunk.
        b"5\r\nhello\r\n3\r\nab",
    ],
    ids=["no_chunk", "mid_chunk"],
)
def test_broken_chunked_body_is_chunked_encoding_error(body: bytes) -> None:
    """requests raises ChunkedEncodingError when a chunked body breaks; the
    guard reads the body inside send() and must raise the same class, not the
    ConnectionError requests' send() wraps urllib3's ProtocolError in."""
    action = Action(body=body, headers={"Transfer-Encoding": "chunked"}, close=True)
    with HTTPTestServer(lambda req: action) as srv:
        plain = _raised(requests.Session(), srv.url)
        guarded = _raised(requests_azguard.mount(requests.Session()), srv.url)
    assert plain is requests.exceptions.ChunkedEncodingError
    assert guarded is plain
