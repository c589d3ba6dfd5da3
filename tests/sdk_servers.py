"""Local servers for the SDK integration tests: moto's S3 under waitress, and
small JSON answers for the kubernetes and azure-core clients."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from servers import Action, HTTPTestServer

NAMESPACE_LIST = {
    "apiVersion": "v1",
    "kind": "NamespaceList",
    "metadata": {"resourceVersion": "1"},
    "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}},
    ],
}


@contextmanager
def moto_s3(host: str = "127.0.0.1", threads: int = 8) -> Iterator[str]:
    """moto's WSGI application served by waitress, which keeps connections
    alive (moto's own ThreadedMotoServer answers with Connection: close, so no
    pooled flow would exist to black-hole).  Yields the endpoint URL."""
    import waitress
    from moto.server import DomainDispatcherApplication, create_backend_app

    app = DomainDispatcherApplication(create_backend_app)
    server: Any = waitress.create_server(app, host=host, port=0, threads=threads)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.effective_port}"
    finally:
        server.close()
        thread.join(5)


def json_server(payload: Any) -> HTTPTestServer:
    body = json.dumps(payload).encode()
    return HTTPTestServer(
        lambda req: Action(body=body, headers={"Content-Type": "application/json"})
    )
