"""Response bodies as bytes, with each item's display record serialised once per serving state.

Every list the API returns (recommendations, session, similar items) is made of the same item
records (`ItemInfo.to_dict()`: id, title, image URL, media) plus a rank and a score. Building a
dict per item per request and handing the body to `json.dumps` cost more than the online-store
read itself (benchmarks/serving.py). Here:

- `ItemFragments` serialises an item's record the first time it is shown and keeps the bytes
  (an open JSON object, `{"item_id":...,"media":[...]`) for the life of the serving state. The
  state, and with it this cache, is rebuilt on every reload (new champion, new catalogue), so a
  changed title or media file is never served stale.
- `RankedItems` is the `items` list of a response: it renders as those fragments closed with
  `,"rank":r,"score":s}` (no per-item dict, no per-item encoder call) and still reads as a
  sequence of plain dicts for code that wants the data.
- `dumps` encodes a body with orjson (compiled; the remaining numbers and strings of a body
  cost microseconds); `json_response` wraps the bytes for the routes. The routes keep their
  pydantic `response_model`, so the OpenAPI schema is unchanged; the data is trusted (the
  service built it), so it is not validated again.

Numbers are written as the standard library would (shortest round-trip repr); floats are
rounded to 6 decimals as before. NaN and infinity become `null` (the service filters
non-finite scores before they get here).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import orjson

if TYPE_CHECKING:
    from mmrec.serve.catalog import Catalog

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
#: per value name, the `,"rank":r,"<name>":` separator of each rank (1..MAX_K in practice)
_SEPARATORS: dict[str, list[bytes]] = {}


class ItemFragments:
    """Per-item pre-serialised display records of one catalogue (built lazily, kept).

    Args:
        catalog: the serving state's catalogue; ids it does not know are rendered as it
            describes them (id as title, no media) every time and not kept, so the cache is
            bounded by the catalogue.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._memo: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._memo)

    def __getitem__(self, item_id: str) -> bytes:
        fragment = self._memo.get(item_id)
        if fragment is None:
            fragment = orjson.dumps(self.catalog.describe([item_id])[0], option=_OPTIONS)[:-1]  # drop the closing }
            if item_id in self.catalog:
                self._memo[item_id] = fragment  # plain dict store: atomic under the GIL
        return fragment


def _separators(key: str, n: int) -> list[bytes]:
    """`,"rank":1,"<key>":`, `,"rank":2,...` for ranks 1..n (built once per key, grown on demand)."""
    seps = _SEPARATORS.setdefault(key, [])
    if len(seps) < n:
        name = orjson.dumps(key).decode()
        seps.extend(f',"rank":{r},{name}:'.encode() for r in range(len(seps) + 1, n + 1))
    return seps


class RankedItems(Sequence[dict[str, Any]]):
    """The ranked `items` of a response: (item_id, value) best first, `key` naming the value.

    Renders from `ItemFragments` (see the module docstring); indexing and iteration give the
    same records as plain dicts (`{**item record, "rank": r, key: value}`).
    """

    def __init__(self, fragments: ItemFragments, pairs: Sequence[tuple[str, float]], key: str = "score") -> None:
        self.fragments = fragments
        self.ids = [str(i) for i, _ in pairs]
        self.values = np.round(np.fromiter((v for _, v in pairs), np.float64, len(pairs)), 6)
        self.key = key

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        record = self.fragments.catalog.describe([self.ids[index]])[0]
        return {**record, "rank": index + 1, self.key: float(self.values[index])}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    def render(self) -> bytes:
        """The JSON array: one pre-serialised record per item, closed with its rank and value."""
        if not self.ids:
            return b"[]"
        values = orjson.dumps(self.values, option=_OPTIONS)[1:-1].split(b",")  # numbers hold no commas
        fragment = self.fragments.__getitem__
        parts: list[bytes] = []
        for item_id, sep, value in zip(self.ids, _separators(self.key, len(self.ids)), values, strict=False):
            parts += (fragment(item_id), sep, value, b"},")
        parts[-1] = b"}]"
        return b"[" + b"".join(parts)


def _default(obj: Any) -> Any:
    if isinstance(obj, RankedItems):
        return orjson.Fragment(obj.render())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def dumps(body: Any) -> bytes:
    """`body` as compact UTF-8 JSON (RankedItems pre-rendered, numpy values as Python numbers)."""
    return orjson.dumps(body, default=_default, option=_OPTIONS)


def json_response(body: Any, status_code: int = 200) -> Any:
    """A Starlette response carrying `dumps(body)` (what the data routes return)."""
    from starlette.responses import Response

    return Response(dumps(body), status_code=status_code, media_type="application/json")
