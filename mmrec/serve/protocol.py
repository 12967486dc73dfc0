"""uvicorn's HTTP/1.1 protocol with the API's error body for requests h11 cannot parse.

A malformed request line or header, an oversized header block, `Content-Length` together with
`Transfer-Encoding`, two `Host` headers: h11 refuses these before any ASGI application runs,
and uvicorn answers a plain-text 400. This subclass answers the same 400 (connection closed) as
`{"error": "bad_request", "detail": ...}` JSON, like every other error of the API, with
`nosniff`. What it cannot change: the request never reaches the application, so there is no
request id, access-log line or security-header set beyond these (uvicorn logs a warning).
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.h11_impl import H11Protocol

_DETAIL = (
    "the request is not valid HTTP/1.1 (malformed request line or header, oversized headers, or conflicting "
    "Content-Length/Transfer-Encoding/Host); nothing was processed"
)


class JsonErrorH11Protocol(H11Protocol):
    """H11Protocol whose protocol-level 400 has the API's JSON error body (`mmrec serve` uses it)."""

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"error": "bad_request", "detail": _DETAIL}).encode()
        head = [
            b"HTTP/1.1 400 Bad Request\r\n",
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"x-content-type-options: nosniff\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
