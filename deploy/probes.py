"""Questions asked of a running tritonserver: is it ready, and which models does it have.

Over HTTP (``/v2/health/ready``, ``/v2/repository/index``) or, for a server started
without HTTP, over plaintext gRPC (``ServerReady``, ``RepositoryIndex``; tritonclient is
imported only then). Every HTTP request opens a fresh connection and closes it.
:class:`deploy.local_triton.LocalTriton` asks them while starting and when asked.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from deploy.flags import ADMIN_HEADER, GRPC_ADMIN_HEADER


def http_get_status(url: str, *, timeout_s: float = 1.0) -> int | None:
    """HTTP status of GET ``url`` (a fresh connection, closed after), or None if nothing answers."""
    req = urllib.request.Request(url, headers={"Connection": "close"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def grpc_ready(url: str, *, timeout_s: float) -> bool:
    """Whether plaintext gRPC ``ServerReady`` answers true (False when nothing answers)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url)
    try:
        return bool(client.is_server_ready(client_timeout=timeout_s))
    except InferenceServerException:
        return False
    finally:
        client.close()


def grpc_models(url: str, *, admin_key: str | None) -> dict[str, str]:
    """``{model name: state}`` from the gRPC repository index of the server at ``url`` (HOST:PORT)."""
    import tritonclient.grpc as grpcclient

    headers = {GRPC_ADMIN_HEADER: admin_key} if admin_key is not None else None
    client = grpcclient.InferenceServerClient(url)
    try:
        index = client.get_model_repository_index(headers=headers, as_json=True, client_timeout=5.0)
    finally:
        client.close()
    return {m["name"]: m.get("state", "") for m in index.get("models", [])}


def http_models(url: str, *, admin_key: str | None) -> dict[str, str]:
    """``{model name: state}`` from the HTTP repository index of the server at ``url`` (HOST:PORT)."""
    headers = {"Connection": "close"}
    if admin_key is not None:
        headers[ADMIN_HEADER] = admin_key
    req = urllib.request.Request(f"http://{url}/v2/repository/index", data=b"{}", method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=5.0) as resp:
        index = json.loads(resp.read())
    return {m["name"]: m.get("state", "") for m in index}
