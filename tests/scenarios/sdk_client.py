"""One SDK client in a fresh interpreter (so AZGUARD_AUTO's start-up hook is
what guards it): makes a few calls and prints one JSON object with what was
guarded and the socket options read back from its pooled connections.

    python tests/scenarios/sdk_client.py '{"sdk": "boto3", "url": "http://127.0.0.1:PORT"}'
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from pooled import pooled_sockets  # noqa: E402 - imports neither requests nor the guard

SEEN: Dict[str, Any] = {}


def options(socks: List[Any]) -> List[Dict[str, int]]:
    # Whether the start-up hook brought the guard in: nothing this program
    # imports does (pooled and sockopts import neither requests nor the guard).
    SEEN["azguard_imported"] = "requests_azguard" in sys.modules
    from sockopts import read_options
    return [read_options(s) for s in socks]


def boto3_client(url: str) -> Dict[str, Any]:
    import boto3
    from botocore.config import Config

    s3 = boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(tcp_keepalive=True, retries={"mode": "standard", "max_attempts": 3}),
    )
    s3.create_bucket(Bucket="azguard")
    for i in range(3):
        s3.put_object(Bucket="azguard", Key=f"k{i}", Body=b"x" * 100)
        assert s3.get_object(Bucket="azguard", Key=f"k{i}")["Body"].read() == b"x" * 100
    manager = s3._endpoint.http_session._manager
    pool = manager.connection_from_url(url)
    return {
        "manager": type(manager).__module__ + "." + type(manager).__name__,
        "pool": type(pool).__name__,
        "pool_mro": [c.__name__ for c in type(pool).__mro__],
        "connection_mro": [c.__name__ for c in pool.ConnectionCls.__mro__],
        "sockets": options(pooled_sockets(manager)),
    }


def kubernetes_client(url: str) -> Dict[str, Any]:
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = url
    api = client.ApiClient(configuration)
    v1 = client.CoreV1Api(api)
    names = []
    for _ in range(3):
        names = [ns.metadata.name for ns in v1.list_namespace().items]
    manager = api.rest_client.pool_manager
    return {
        "names": names,
        "manager": type(manager).__module__ + "." + type(manager).__name__,
        "sockets": options(pooled_sockets(manager)),
    }


def azure_client(url: str) -> Dict[str, Any]:
    from azure.core import PipelineClient
    from azure.core.rest import HttpRequest

    client = PipelineClient(base_url=url)
    bodies = []
    for _ in range(3):
        response = client.send_request(HttpRequest("GET", url + "/item"))
        bodies.append(response.text())
    transport: Any = client._pipeline._transport
    adapter = transport.session.adapters["http://"]
    return {
        "bodies": bodies,
        "transport": type(transport).__name__,
        "adapter": type(adapter).__name__,
        "adapter_mro": [c.__name__ for c in type(adapter).__mro__],
        "sockets": options(pooled_sockets(adapter.poolmanager)),
    }


def main(params: Dict[str, Any]) -> Dict[str, Any]:
    sdk = params["sdk"]
    out = {"boto3": boto3_client, "kubernetes": kubernetes_client, "azure": azure_client}[sdk](
        params["url"]
    )
    out.update(SEEN)
    return out


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
