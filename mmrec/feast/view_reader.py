"""Lean online reads of one Feast feature view: the store plugin's `online_read`, nothing around it.

`FeatureStore.get_online_features` is general: for every call it parses feature references,
looks views and feature services up in the registry, groups entity rows, builds an
`OnlineResponse` proto and converts it back to Python. For the API's reads (one view, a few
fields, one or a few string ids) that machinery is ~80% of the cost: 0.23 ms per user's top-K on
the sqlite store against 0.05 ms for the online store's own `online_read` (benchmarks/serving.py).

`ViewReader` calls the configured online store's `online_read` (Feast's plugin interface, the
call `get_online_features` makes underneath, so keys, layouts and serialisation stay Feast's)
with the feature views it looked up once, and converts values with Feast's own
`feast_value_type_to_python_type`. It answers what `get_online_features(...).to_dict()` answers
for the same view and fields (None for entities or fields the store lacks; like Feast 0.67's
online path it applies no TTL at read time, and every mmrec view has `ttl=0` anyway).
`forget()` drops the cached views (after `FeatureStore.refresh_registry()`: a new `apply` may
have changed them).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mmrec.errors import ConfigError

if TYPE_CHECKING:
    from feast import FeatureStore


class ViewReader:
    """Reads of feature views of one `FeatureStore` through its online store's `online_read`.

    Args:
        store: the Feast store: its config, its registry and its provider's online-store object
            (so both read paths share one connection, and whatever reopens or reconnects the
            store's connection does it for this reader too).
    """

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.config = store.config
        self._views: dict[str, tuple[Any, str]] = {}
        self._lock = threading.Lock()

    @property
    def online_store(self) -> Any:
        """The store's own online-store plugin object (the one `get_online_features` uses)."""
        return self.store._get_provider().online_store

    def forget(self) -> None:
        """Drop the cached feature views (the registry was refreshed)."""
        with self._lock:
            self._views = {}

    def _view(self, name: str) -> tuple[Any, str]:
        """(FeatureView, its join key), looked up once per registry refresh."""
        hit = self._views.get(name)
        if hit is not None:
            return hit
        from feast.types import String

        view = self.store.get_feature_view(name)
        columns = list(view.entity_columns)
        if len(columns) != 1 or columns[0].dtype != String:
            raise ConfigError(
                f"feature view {name!r} is keyed by {[(c.name, str(c.dtype)) for c in columns]}; the API reads views keyed "
                f"by one string id (user_id or item_id): fix its entity in feature_repo/entities.py"
            )
        hit = (view, columns[0].name)
        with self._lock:
            self._views[name] = hit
        return hit

    def read(self, view: str, key: str, ids: Sequence[str], fields: Sequence[str]) -> dict[str, list[Any]]:
        """`fields` of `view` for each id, as `get_online_features(...).to_dict()` gives them.

        Args:
            view: the feature view's name.
            key: the join key the caller means (checked against the view's entity).
            ids: entity ids (strings), in the order the answer follows.
            fields: feature names of the view.

        Returns:
            field -> values aligned with `ids` (None: no row or no such field).

        Raises:
            ConfigError: the view is keyed by something else than `key`.
            Whatever the online store raises (a lost connection: the caller translates it).
        """
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import feast_value_type_to_python_type

        fv, join_key = self._view(view)
        if join_key != key:
            raise ConfigError(f"feature view {view!r} is keyed by {join_key!r}, not {key!r}")
        keys = [EntityKey(join_keys=[join_key], entity_values=[Value(string_val=str(i))]) for i in ids]
        rows = self.online_store.online_read(self.config, fv, keys, list(fields))
        out: dict[str, list[Any]] = {f: [] for f in fields}
        for _, values in rows:
            values = values or {}
            for f in fields:
                out[f].append(_python(values.get(f), feast_value_type_to_python_type))
        return out


#: value kinds whose Python form is the attribute itself (what Feast's converter returns for them)
_SCALARS = frozenset({"string_val", "int32_val", "int64_val", "float_val", "double_val", "bool_val", "bytes_val"})
_LISTS = frozenset(
    {
        "string_list_val",
        "int32_list_val",
        "int64_list_val",
        "float_list_val",
        "double_list_val",
        "bool_list_val",
        "bytes_list_val",
    }
)


def _python(value: Any, convert: Any) -> Any:
    """A ValueProto as Python: the plain kinds read directly, every other one by Feast's converter."""
    if value is None:
        return None
    kind = value.WhichOneof("val")
    if kind is None:
        return None
    if kind in _SCALARS:
        return getattr(value, kind)
    if kind in _LISTS:
        return list(getattr(value, kind).val)
    return convert(value)
