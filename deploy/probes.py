"""Questions asked of a running tritonserver (is it live, ready, which models does it have) and the reload of one model.

Over HTTP (``/v2/health/ready``, ``/v2/health/live``, ``/v2/repository/index``,
``/v2/repository/models/<m>/unload`` and ``load``) or, for a server started without HTTP, over
plaintext gRPC (``ServerReady``, ``ServerLive``, ``RepositoryIndex``, ``RepositoryModelUnload``
and ``Load``; tritonclient is imported only then). Every HTTP request opens a fresh
connection and closes it. :class:`deploy.local_triton.LocalTriton` asks them while starting and
when asked; :mod:`deploy.supervisor` reloads a model whose backend stub died.

A request to a loopback address never goes through a proxy: urllib's default opener and
gRPC follow ``http_proxy``/``grpc_proxy``, and with one set and no ``no_proxy`` a local
server would never be seen ready (:func:`urlopen`; gRPC channels here set
``grpc.enable_http_proxy=0``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from client.client_options import GRPC_NO_PROXY, is_loopback
from client.errors import ServerError
from deploy.flags import ADMIN_HEADER, GRPC_ADMIN_HEADER

#: An opener without proxies (``ProxyHandler({})``): what loopback requests go through.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def urlopen(req: urllib.request.Request | str, *, timeout_s: float):
    """:func:`urllib.request.urlopen`, but a loopback URL bypasses any proxy of the environment."""
    url = req.full_url if isinstance(req, urllib.request.Request) else req
    host = urllib.parse.urlsplit(url).hostname or ""
    opener = _DIRECT if is_loopback(host) else urllib.request.build_opener()
    return opener.open(req, timeout=timeout_s)


def http_get_status(url: str, *, timeout_s: float = 1.0) -> int | None:
    """HTTP status of GET ``url`` (a fresh connection, closed after), or None if nothing answers."""
    req = urllib.request.Request(url, headers={"Connection": "close"})
    try:
        with urlopen(req, timeout_s=timeout_s) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def _grpc_client(url: str):
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(url, channel_args=GRPC_NO_PROXY)


def grpc_ready(url: str, *, timeout_s: float) -> bool:
    """Whether plaintext gRPC ``ServerReady`` answers true (False when nothing answers)."""
    return _grpc_health(url, "is_server_ready", timeout_s=timeout_s)


def grpc_live(url: str, *, timeout_s: float) -> bool:
    """Whether plaintext gRPC ``ServerLive`` answers true (False when nothing answers)."""
    return _grpc_health(url, "is_server_live", timeout_s=timeout_s)


def _grpc_health(url: str, question: str, *, timeout_s: float) -> bool:
    from tritonclient.utils import InferenceServerException

    client = _grpc_client(url)
    try:
        return bool(getattr(client, question)(client_timeout=timeout_s))
    except InferenceServerException:
        return False
    finally:
        client.close()


def grpc_models(url: str, *, admin_key: str | None) -> dict[str, str]:
    """``{model name: state}`` from the gRPC repository index of the server at ``url`` (HOST:PORT)."""
    headers = {GRPC_ADMIN_HEADER: admin_key} if admin_key is not None else None
    client = _grpc_client(url)
    try:
        index = client.get_model_repository_index(headers=headers, as_json=True, client_timeout=5.0)
    finally:
        client.close()
    return {m["name"]: m.get("state", "") for m in index.get("models", [])}


def http_models(url: str, *, admin_key: str | None) -> dict[str, str]:
    """``{model name: state}`` from the HTTP repository index of the server at ``url`` (HOST:PORT)."""
    req = urllib.request.Request(f"http://{url}/v2/repository/index", data=b"{}", method="POST", headers=_headers(admin_key))
    with urlopen(req, timeout_s=5.0) as resp:
        index = json.loads(resp.read())
    return {m["name"]: m.get("state", "") for m in index}


def http_reload_model(url: str, model: str, *, admin_key: str | None, timeout_s: float) -> None:
    """Unload ``model``, then load it, on the server at ``url`` (HOST:PORT): new instances, new stubs.

    A load alone of a loaded model whose files did not change is a no-op in tritonserver 2.51,
    even with its own config passed as an override; a stub that died stays dead through it.

    Raises:
        urllib.error.URLError, OSError: the server refused or did not answer (an HTTPError carries its reason).
    """
    for action in ("unload", "load"):
        req = urllib.request.Request(
            f"http://{url}/v2/repository/models/{urllib.parse.quote(model, safe='')}/{action}",
            data=b"{}", method="POST", headers=_headers(admin_key),
        )
        with urlopen(req, timeout_s=timeout_s) as resp:
            resp.read()


def grpc_reload_model(url: str, model: str, *, admin_key: str | None, timeout_s: float) -> None:
    """:func:`http_reload_model` over plaintext gRPC (``RepositoryModelUnload``, ``RepositoryModelLoad``).

    Raises:
        tritonclient.utils.InferenceServerException: the server refused or did not answer.
    """
    headers = {GRPC_ADMIN_HEADER: admin_key} if admin_key is not None else None
    client = _grpc_client(url)
    try:
        client.unload_model(model, headers=headers, client_timeout=timeout_s)
        client.load_model(model, headers=headers, client_timeout=timeout_s)
    finally:
        client.close()


def reload_model(http_url: str | None, grpc_url: str, model: str, *, admin_key: str | None, timeout_s: float) -> None:
    """:func:`http_reload_model` at ``http_url`` (HOST:PORT), or :func:`grpc_reload_model` at ``grpc_url`` when it is None.

    Raises:
        ServerError: the server refused or did not answer (the message says why, in one line).
    """
    try:
        if http_url is not None:
            http_reload_model(http_url, model, admin_key=admin_key, timeout_s=timeout_s)
        else:
            grpc_reload_model(grpc_url, model, admin_key=admin_key, timeout_s=timeout_s)
    except Exception as exc:  # noqa: BLE001 - urllib, socket or tritonclient errors: one message
        detail = exc.read().decode(errors="replace")[:300] if hasattr(exc, "read") else str(exc)
        raise ServerError(f"reload of model {model!r} at {http_url or grpc_url} failed: {' '.join(detail.split())}") from None


def _headers(admin_key: str | None) -> dict[str, str]:
    headers = {"Connection": "close"}
    if admin_key is not None:
        headers[ADMIN_HEADER] = admin_key
    return headers
