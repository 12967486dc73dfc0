"""Ids as percent-encoded path segments: `/users/sku%2F004/recommendations` names user `sku/004`.

ASGI servers hand the application a path that is already percent-decoded, so `sku%2F004`
arrives as `sku/004` and no route matches (and `%252F`, an id that is literally `%2F`, would
be indistinguishable from `/`). `segment_path` (called by mmrec/serve/guards.py) re-derives
the path from the raw bytes segment by segment, keeping a decoded `/` and `%` escaped (`%2F`,
`%25`), and the `id` convertor of the id routes (`{user_id:id}`) turns them back into the id. Requests without `%` pass untouched,
so the usual path costs one byte search.

The rule for what an id may contain is mmrec/ids.py (shared with validation).
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from starlette.convertors import Convertor, register_url_convertor

_ESCAPED = re.compile(r"%2F|%25")
_UNESCAPE = {"%2F": "/", "%25": "%"}


def _segment(raw: bytes) -> str:
    """One raw path segment decoded, with `%` and `/` kept escaped for routing."""
    text = unquote_to_bytes(raw).decode("utf-8", "replace")
    return text.replace("%", "%25").replace("/", "%2F")


class IdConvertor(Convertor[str]):
    """A path segment holding an id: `%2F` and `%25` (escaped by SegmentPaths) become `/` and `%`."""

    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return _ESCAPED.sub(lambda m: _UNESCAPE[m.group()], value) if "%" in value else value

    def to_string(self, value: str) -> str:
        return value.replace("%", "%25").replace("/", "%2F")


register_url_convertor("id", IdConvertor())


def segment_path(raw_path: bytes) -> str:
    """The request path for routing: each raw segment decoded, a decoded `/` or `%` kept escaped."""
    return "/".join(_segment(s) for s in raw_path.split(b"/"))
