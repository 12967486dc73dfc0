"""The API's online reads from the Feast online store (`OnlineFeatures`), with clear errors when the store is down."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mmrec.config import load_params
from mmrec.constants import ITEM_ID, MODALITIES, USER_ID
from mmrec.errors import ConfigError, ServiceUnavailable, StageError
from mmrec.feast import tables as ft
from mmrec.feast.store import store_config, table_path
from mmrec.feast.view_reader import ViewReader
from mmrec.params.feast import FeaturesParams, features_params
from mmrec.paths import DatasetPaths

if TYPE_CHECKING:
    from mmrec.context import StageContext

log = logging.getLogger(__name__)


#: embedding views by the short name `OnlineFeatures.item_embeddings(view=...)` takes
EMBEDDING_VIEWS = {
    **{m: f"item_{m}_embedding" for m in MODALITIES},
    "fused": "item_fused_embedding",
    "model": "item_model_embedding",
}


@dataclass(frozen=True)
class Recommendations:
    """A user's precomputed top-K: item ids best first, their scores, and the model behind them."""

    item_ids: list[str]
    scores: np.ndarray
    model: str
    model_version: str


def _vec(value: Any) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=np.float32)


def connection_lost(exc: BaseException) -> bool:
    """Whether `exc` means the online store's server is gone (down, restarting, still loading)."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - the [redis] extra is installed by make
        return False
    return isinstance(exc, RedisConnectionError | RedisTimeoutError)  # BusyLoadingError is a ConnectionError


def _sqlite_broken(exc: BaseException) -> bool:
    """Whether `exc` means the sqlite online store file is unusable (corrupt, not a database, no tables)."""
    import sqlite3

    return isinstance(exc, sqlite3.DatabaseError)


def _redacted(url: str | None) -> str:
    """host:port/db of a redis:// URL, without the password."""
    from urllib.parse import urlsplit

    if not url:
        return "redis"
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}{parts.path or ''}"


class OnlineFeatures:
    """Online reads for the API: plain Python/numpy values, None for what the store lacks.

    Args:
        dataset: `name:` of the dataset.yaml.
        workspace: the folder holding data/ (the working directory by default).
        profile: `sqlite` / `redis`; None: `features.profile` of `params`.
        params: a `FeaturesParams` or the whole `Params`; None reads `<workspace>/params.yaml`.

    Raises:
        StageError: nothing applied for this dataset and profile yet (names the command to run).
    """

    _db: Path | None = None
    _db_id: tuple[int, int] | None = None

    def __init__(
        self, dataset: str, workspace: str | os.PathLike[str] = ".", profile: str | None = None, params: Any = None
    ) -> None:
        if params is None:
            params = load_params(Path(workspace) / "params.yaml")
        self.params = params if isinstance(params, FeaturesParams) else features_params(params)
        self.paths = DatasetPaths(dataset, Path(workspace))
        self.profile = profile or self.params.profile
        config = store_config(self.paths, self.params, self.profile)
        if not Path(str(config.registry.path)).is_file():
            raise StageError(
                f"{config.registry.path}: no Feast registry for dataset {dataset!r} (profile {self.profile}); "
                f"run `mmrec stage materialize --dataset PATH/dataset.yaml` first"
            )
        from feast import FeatureStore

        self.store = FeatureStore(repo_path=str(config.repo_path), config=config)
        # sqlite: the file this reader serves, by identity (a deleted or replaced file is noticed)
        self._db = Path(str(config.online_store.path)) if self.profile == "sqlite" else None
        self.views_reader = ViewReader(self.store)  # the API's reads: one view per call, no SDK overhead

    @classmethod
    def from_context(cls, ctx: StageContext, profile: str | None = None) -> OnlineFeatures:
        return cls(ctx.spec.name, ctx.workspace, profile, features_params(ctx.params))

    # -- plumbing
    def get_online_features(
        self, features: Sequence[str], entity_rows: Sequence[dict[str, Any]]
    ) -> dict[str, list[Any]]:
        """Feast's online read; a lost online store is `ServiceUnavailable` (the API answers 503).

        Nothing is cached across a failure: Feast's Redis client reconnects on the next read, so
        a restarted Redis is picked up without restarting the reader.
        """
        if self._db is not None:
            self._check_sqlite_file()
        try:
            return self.store.get_online_features(features=list(features), entity_rows=list(entity_rows)).to_dict()
        except Exception as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: Exception) -> Exception:
        """`exc` itself, or `ServiceUnavailable` when it means the online store is unusable: a
        corrupt sqlite file, or a store server that is gone."""
        if self._db is not None and _sqlite_broken(exc):
            return ServiceUnavailable(
                "sqlite",
                self._shown_db(),
                f"Feast online store {self._shown_db()} cannot be read ({type(exc).__name__}: {str(exc)[:200]}); "
                "rebuild it with `mmrec stage materialize` (the API reopens it by itself, or POST /admin/reload?force=true)",
            )
        if not connection_lost(exc):
            return exc
        where = _redacted(self.params.redis_url) if self.profile == "redis" else self.profile
        return ServiceUnavailable(
            self.profile,
            where,
            f"Feast online store ({self.profile} at {where}) is unreachable: {type(exc).__name__}: "
            f"{str(exc)[:200]}; retry shortly (the reader reconnects on its own)",
        )

    def _shown_db(self) -> str:
        """The sqlite file as messages show it: relative to the workspace when inside it."""
        assert self._db is not None
        try:
            return str(self._db.resolve().relative_to(self.paths.workspace.resolve()))
        except ValueError:
            return self._db.name

    def _check_sqlite_file(self) -> None:
        """Refuse reads while the online store file is missing; reopen it when it was replaced.

        Feast keeps one sqlite connection open: after the file is deleted it would go on reading
        the unlinked copy (and after a replace, the old one), and opening a missing path would
        silently create an empty database. A stat per read (~1 us) notices both.
        """
        assert self._db is not None
        try:
            st = os.stat(self._db)
        except FileNotFoundError:
            raise ServiceUnavailable(
                "sqlite",
                self._shown_db(),
                f"Feast online store {self._shown_db()} is missing (deleted?); rebuild it with "
                "`mmrec stage materialize` (the API picks it up by itself)",
            ) from None
        identity = (st.st_dev, st.st_ino)
        if self._db_id is None:
            self._db_id = identity
        elif identity != self._db_id:
            log.warning("Feast online store %s was replaced: reopening it", self._shown_db())
            online_store = self.store._get_provider().online_store
            if hasattr(online_store, "_conn"):
                online_store._conn = None  # not closed: a read in another thread may still use it
            self._db_id = identity

    def _read(self, key: str, ids: Sequence[str], view: str, fields: Sequence[str]) -> dict[str, list[Any]]:
        """`fields` of one view for `ids`: the same values as `get_online_features`, through the
        online store's `online_read` directly (mmrec/feast/view_reader.py: 4-5x less time per read)."""
        if self._db is not None:
            self._check_sqlite_file()
        ids = [str(i) for i in ids]
        if not ids:
            return {f: [] for f in fields}
        try:
            return self.views_reader.read(view, key, ids, fields)
        except Exception as exc:
            unavailable = self._unavailable(exc)
            if unavailable is exc:
                raise
            raise unavailable from exc

    def refresh(self) -> None:
        """Re-read the registry now (new feature services after a promotion and materialisation)."""
        self.store.refresh_registry()
        self.views_reader.forget()

    def ping(self) -> None:
        """Raise StageError unless the registry and the online store answer (for /ready)."""
        try:
            self.store.get_feature_view("user_recommendations")
            self._read(USER_ID, ["__mmrec_ping__"], "user_recommendations", ["model"])
        except Exception as exc:  # any backend failure means not ready
            raise StageError(
                f"Feast store for {self.paths.name!r} ({self.profile}) is not usable: {type(exc).__name__}: {exc}"
            ) from exc

    # -- the reads the API uses
    def recommendations(self, user_ids: Sequence[str]) -> list[Recommendations | None]:
        """The nightly top-K of each user, aligned with `user_ids`; None: no precomputed list."""
        r = self._read(USER_ID, user_ids, "user_recommendations", ["item_ids", "scores", "model", "model_version"])
        return [
            None
            if items is None
            else Recommendations(list(items), np.asarray(scores or [], np.float32), str(model), str(version))
            for items, scores, model, version in zip(
                r["item_ids"], r["scores"], r["model"], r["model_version"], strict=True
            )
        ]

    def item_embeddings(self, item_ids: Sequence[str], view: str = "fused") -> list[np.ndarray | None]:
        """Vectors of `view` (text, image, audio, video, fused, model), aligned with `item_ids`."""
        if view not in EMBEDDING_VIEWS:
            raise ConfigError(f"unknown embedding view {view!r}; expected one of {sorted(EMBEDDING_VIEWS)}")
        r = self._read(ITEM_ID, item_ids, EMBEDDING_VIEWS[view], ["embedding"])
        return [_vec(v) for v in r["embedding"]]

    def item_embedding_matrix(self, view: str = "fused") -> tuple[list[str], np.ndarray]:
        """Every exported item that has a `view` vector, as (ids, (n, d) float32): to build an index."""
        if view not in EMBEDDING_VIEWS:
            raise ConfigError(f"unknown embedding view {view!r}; expected one of {sorted(EMBEDDING_VIEWS)}")
        f = table_path(self.paths, EMBEDDING_VIEWS[view])
        ids = pd.read_parquet(f, columns=[ITEM_ID])[ITEM_ID].astype(str).tolist() if f.is_file() else []
        vecs = self.item_embeddings(ids, view)
        keep = [(i, v) for i, v in zip(ids, vecs, strict=True) if v is not None]
        if not keep:
            return [], np.zeros((0, 0), np.float32)
        return [i for i, _ in keep], np.stack([v for _, v in keep]).astype(np.float32)

    def views(self) -> list[str]:
        """Short names of the embedding views that hold vectors for this dataset."""
        out = []
        for short, table in EMBEDDING_VIEWS.items():
            f = table_path(self.paths, table)
            if f.is_file() and len(pd.read_parquet(f, columns=[ITEM_ID])):
                out.append(short)
        return out

    def user_features(self, user_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Factors (champion) and statistics of each user; None when the store knows neither."""
        emb = self._read(USER_ID, user_ids, "user_embedding", ["embedding", "model", "model_version"])
        stats = self._read(USER_ID, user_ids, "user_stats", list(ft.STAT_FIELDS))
        out: list[dict[str, Any] | None] = []
        for i in range(len(user_ids)):
            row = {
                "embedding": _vec(emb["embedding"][i]),
                "model": emb["model"][i],
                "model_version": emb["model_version"][i],
                **{f: stats[f][i] for f in ft.STAT_FIELDS},
            }
            out.append(None if row["embedding"] is None and row["interactions"] is None else row)
        return out

    def item_stats(self, item_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Popularity (`interactions`, `interactions_window`) and recency (`days_since_last`) per item."""
        stats = self._read(ITEM_ID, item_ids, "item_stats", list(ft.STAT_FIELDS))
        return [
            None if stats["interactions"][i] is None else {f: stats[f][i] for f in ft.STAT_FIELDS}
            for i in range(len(item_ids))
        ]
