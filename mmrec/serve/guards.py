"""Browser-facing guards in front of the routes: Host allow-list, cross-site POSTs, HEAD, caching.

A server on 127.0.0.1 without an API key is still reachable from every web page the user
opens: a page can POST a form to it (no CORS preflight for `application/x-www-form-urlencoded`)
and, through DNS rebinding, read its answers under its own host name. So:
- the `Host` header must name this server (`ServeSettings.allowed_hosts`; by default the
  loopback names when no API key is set, any host when one is: a rebinding page has no key and
  no cookie for its own origin). Probes (/health, /ready) are exempt: orchestrators call them
  by pod IP;
- requests that change state (POST, PUT, PATCH, DELETE) need `Content-Type: application/json`
  (or an `image/*` upload, for `POST /search`) or the `X-API-Key` header, none of which a
  cross-site form can send;
- HEAD is answered for every GET route (the headers of the GET, no body);
- with an API key, every protected answer is `Cache-Control: private`, so a shared cache never
  hands one user's (or the key holder's) responses to another;
- `Content-Length` together with `Transfer-Encoding` (a request-smuggling shape h11 accepts) is
  refused with 400.
Ids in paths are decoded segment by segment first (mmrec/serve/paths.py).

One plain ASGI class (not Starlette's BaseHTTPMiddleware) so the hot path pays one call and a
few dictionary reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from mmrec.serve.paths import segment_path

#: host names accepted without an API key when none are configured
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
#: paths open to any Host header (probes of orchestrators that connect by IP)
PROBE_PATHS = frozenset({"/health", "/ready"})
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def host_name(value: bytes) -> str:
    """The host part of a Host header, lower-case, without the port (`[::1]:8000` -> `::1`)."""
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text
    name, sep, port = text.rpartition(":")
    return name if sep and port.isdigit() else text


def host_allowed(name: str, allowed: Iterable[str]) -> bool:
    """Whether `name` matches an entry: exact, `*` (any) or `.example.com` (that domain and below)."""
    for entry in allowed:
        if entry == "*" or entry == name or (entry.startswith(".") and (name.endswith(entry) or name == entry[1:])):
            return True
    return False


def _is_json(content_type: bytes) -> bool:
    """JSON, or an image upload (`POST /search`): neither is a simple content type, so a cross-site
    page cannot send them without a CORS preflight, which this server never grants."""
    media = content_type.split(b";", 1)[0].strip().lower()
    return (
        media == b"application/json"
        or (media.startswith(b"application/") and media.endswith(b"+json"))
        or media.startswith(b"image/")
    )


class BrowserGuards:
    """ASGI middleware applying the rules of the module docstring.

    Args:
        app: the application.
        allowed_hosts: accepted Host names; None: the loopback names without a key, any with one.
        api_key_set: whether the server requires an API key.
        open_path: predicate of the paths served without the key (they keep their own caching).
    """

    def __init__(self, app: Any, allowed_hosts: Iterable[str] | None, api_key_set: bool, open_path: Any) -> None:
        self.app = app
        if allowed_hosts is None:
            allowed_hosts = ("*",) if api_key_set else LOOPBACK_HOSTS
        self.allowed = tuple(h.strip().lower().strip("[]") for h in allowed_hosts if h.strip())
        self.any_host = "*" in self.allowed
        self.private = api_key_set
        self.open_path = open_path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path")
        if raw and b"%" in raw and not scope.get("root_path"):
            scope["path"] = segment_path(raw)
        path = scope["path"]
        method = scope["method"]
        host = content_type = None
        has_key = has_length = has_chunked = False
        for k, v in scope["headers"]:  # one pass over the headers
            if k == b"host":
                host = v
            elif k == b"content-type":
                content_type = v
            elif k == b"x-api-key":
                has_key = True
            elif k == b"content-length":
                has_length = True
            elif k == b"transfer-encoding":
                has_chunked = True
        if has_length and has_chunked:
            # h11 frames by Transfer-Encoding and ignores the length; a proxy in front may do the
            # opposite (request smuggling), so the ambiguous shape is refused outright
            await self._reject(
                send,
                400,
                "bad_request",
                "Content-Length together with Transfer-Encoding is ambiguous "
                "framing (a request-smuggling shape); send one of them",
            )
            return
        if (
            not self.any_host
            and path not in PROBE_PATHS
            and (host is None or not host_allowed(host_name(host), self.allowed))
        ):
            shown = repr(host.decode("latin-1")[:100]) if host is not None else "(none)"
            await self._reject(
                send,
                421,
                "misdirected_request",
                f"Host {shown} is not served here; allowed: {', '.join(self.allowed)} "
                "(set MMREC_SERVE_ALLOWED_HOSTS to add names)",
            )
            return
        if method in _UNSAFE and not has_key and (content_type is None or not _is_json(content_type)):
            await self._reject(
                send,
                415,
                "unsupported_media_type",
                f"{method} requests need Content-Type: application/json (or the X-API-Key header); "
                "send a JSON body, e.g. curl -H 'Content-Type: application/json' -d '{}'",
            )
            return
        private = self.private and not self.open_path(path)
        head = method == "HEAD"
        if not private and not head:
            await self.app(scope, receive, send)
            return
        if head:
            scope = {**scope, "method": "GET"}

        async def send_wrapped(message: Any) -> None:
            if message["type"] == "http.response.start" and private:
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"cache-control"]
                old = next((v for k, v in message.get("headers", []) if k == b"cache-control"), None)
                headers.append(
                    (b"cache-control", b"private, " + old if old and b"private" not in old else old or b"private")
                )
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and head:
                message = {**message, "body": b""}
            await send(message)

        await self.app(scope, receive, send_wrapped)

    @staticmethod
    async def _reject(send: Any, status: int, error: str, detail: str) -> None:
        body = json.dumps({"error": error, "detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
