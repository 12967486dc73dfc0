"""What the API shows about items and users: titles, media files and each user's history.

Built once per serving state from the warehouse (validated tables when validation has run, so
quarantined rows and unreadable media never reach the page) and then only read. Media paths
are resolved here, against the dataset root, and an item whose path leaves that folder (an
absolute path, `..`, a symlink pointing out) simply has no media: the media route only ever
serves files this catalogue resolved, never a path taken from a request.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmrec.constants import ITEM_ID, MAX_IMAGE_PIXELS, MEDIA_COLUMNS, TIMESTAMP, USER_ID
from mmrec.errors import NotFoundError, StageError
from mmrec.ids import id_segment

log = logging.getLogger(__name__)

#: text fields tried, in order, for an item's display title
_TITLE_FIELDS = ("title", "name", "movie_title", "product_name")


@dataclass(frozen=True)
class ItemInfo:
    """One catalogue entry as the API returns it."""

    item_id: str
    title: str
    text: str | None = None
    media: Mapping[str, Path] = field(default_factory=dict)  # modality -> absolute file inside the root

    def __post_init__(self) -> None:
        # encoded once here, not on every response that lists the item
        object.__setattr__(self, "_image_url", media_url(self.item_id, "image") if "image" in self.media else None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "title": self.title,
            "image_url": self._image_url,  # type: ignore[attr-defined]
            "media": sorted(self.media),
        }


def media_url(item_id: str, modality: str) -> str:
    """The API path of an item's media file (the media route), the id percent-encoded."""
    return f"/media/items/{id_segment(item_id)}/{modality}"


def inside(root: Path, rel: str | None) -> Path | None:
    """`rel` resolved under `root`, or None when it is empty, a URI or escapes the folder."""
    if not rel or "://" in rel or "\x00" in rel:
        return None
    root = root.resolve()
    try:
        path = (root / rel).resolve()
    except (OSError, RuntimeError):  # symlink loops
        return None
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


class Catalog:
    """Items (title, text, media) and users (their interaction history), read-only.

    Args:
        items: the items table (item_id, text, text_<field>..., image/audio/video paths).
        interactions: (user_id, item_id[, timestamp]); each user's history in time order.
        users: optional ids of users known from the users table but possibly without history.
        root: the dataset folder media paths are relative to.
        max_pixels: images above this are not served (the platform's one limit).
    """

    def __init__(
        self,
        items: pd.DataFrame,
        interactions: pd.DataFrame | None = None,
        users: Iterable[str] = (),
        root: Path | None = None,
        max_pixels: int = MAX_IMAGE_PIXELS,
    ) -> None:
        self.root = root.resolve() if root is not None else None
        self.max_pixels = max_pixels
        self._items: dict[str, ItemInfo] = {}
        title_col = next((f"text_{f}" for f in _TITLE_FIELDS if f"text_{f}" in items.columns), None)
        if title_col is None:
            title_col = next((c for c in items.columns if str(c).startswith("text_")), None)
        media_cols = [c for c in MEDIA_COLUMNS if c in items.columns] if root is not None else []
        for row in items.to_dict("records"):
            item_id = str(row[ITEM_ID])
            title = row.get(title_col) if title_col else None
            media = {m: p for m in media_cols if (p := inside(root, _str(row.get(m)))) is not None}  # type: ignore[arg-type]
            self._items[item_id] = ItemInfo(
                item_id, str(title) if _str(title) else item_id, _str(row.get("text")), media
            )
        self._history: dict[str, list[str]] = {}
        if interactions is not None and len(interactions):
            frame = interactions
            if TIMESTAMP in frame.columns:
                frame = frame.sort_values(TIMESTAMP, kind="stable")
            for user, group in frame.groupby(frame[USER_ID].astype(str), sort=False):
                self._history[str(user)] = group[ITEM_ID].astype(str).tolist()
        self._user_set = set(self._history) | {str(u) for u in users}
        self._users = sorted(self._user_set)

    # -- items ------------------------------------------------------------------------------------
    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    @property
    def n_items(self) -> int:
        return len(self._items)

    @property
    def item_ids(self) -> list[str]:
        """Every item id, in table order."""
        return list(self._items)

    def item(self, item_id: str) -> ItemInfo:
        """The item, or NotFoundError (the API's 404)."""
        try:
            return self._items[item_id]
        except KeyError:
            raise NotFoundError("item", item_id) from None

    def describe(self, item_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Display records for `item_ids`; ids missing from the catalogue get their id as title."""
        out = []
        for i in item_ids:
            info = self._items.get(i)
            out.append(info.to_dict() if info else {"item_id": i, "title": i, "image_url": None, "media": []})
        return out

    def media_file(self, item_id: str, modality: str) -> Path:
        """The item's media file inside the dataset folder, or NotFoundError."""
        path = self.item(item_id).media.get(modality)
        if path is None:
            raise NotFoundError("media", f"{item_id}/{modality}", f"item {item_id!r} has no {modality} file")
        return path

    def servable_media(self, item_id: str, modality: str) -> tuple[Path, str]:
        """(file, content type) of the item's media, re-checked now (mmrec/serve/media.py), or NotFoundError."""
        from mmrec.serve.media import checked_media

        path = self.media_file(item_id, modality)
        assert self.root is not None  # media exist only when a root was given
        return checked_media(path, self.root, modality, item_id, self.max_pixels)

    # -- users ------------------------------------------------------------------------------------
    def has_user(self, user_id: str) -> bool:
        return user_id in self._user_set

    def history(self, user_id: str) -> list[str]:
        """The user's items, oldest first ([] for a known user without interactions)."""
        if not self.has_user(user_id):
            raise NotFoundError("user", user_id)
        return list(self._history.get(user_id, []))

    def users(self, prefix: str = "", limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Users in id order whose id starts with `prefix`, with their history length."""
        start = bisect.bisect_left(self._users, prefix) if prefix else 0
        out: list[dict[str, Any]] = []
        skipped = 0
        for user in self._users[start:]:
            if not user.startswith(prefix):
                break
            if skipped < offset:
                skipped += 1
                continue
            out.append({"user_id": user, "interactions": len(self._history.get(user, ()))})
            if len(out) >= limit:
                break
        return out

    @property
    def n_users(self) -> int:
        return len(self._users)


def _str(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    s = str(value)
    return s or None


def load_catalog(paths: Any, root: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> Catalog:
    """The catalogue of a dataset from its validated tables (the warehouse when not validated).

    Args:
        paths: the dataset's `DatasetPaths`.
        root: the dataset folder (media paths are relative to it).
        max_pixels: images above this are not served (`extract.image.max_pixels`).

    Raises:
        StageError: no items table; says which stage to run.
    """

    def table(name: str, columns: list[str] | None = None) -> pd.DataFrame | None:
        for f in (paths.validated_table(name), paths.table(name)):
            if f.is_file():
                return pd.read_parquet(f, columns=columns)
        return None

    items = table("items")
    if items is None:
        raise StageError(f"{paths.table('items')}: no items table; run `mmrec stage ingest` (and validate) first")
    inter = table("interactions", [USER_ID, ITEM_ID, TIMESTAMP])
    users = table("users", [USER_ID])
    return Catalog(items, inter, users[USER_ID].astype(str).tolist() if users is not None else (), root, max_pixels)
