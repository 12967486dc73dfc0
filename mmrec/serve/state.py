"""The serving state: one immutable snapshot of everything a request reads, swapped atomically.

A request takes the current `ServingState` once, at its start, and uses only that object, so it
sees one model version, one item index and one catalogue from start to end even while a new
champion is being loaded. Reloading builds the next state completely off to the side (seconds:
MLflow download, index build) and then replaces one reference; requests in flight keep their
old snapshot, new ones get the new one, nothing is refused or half-updated in between. A load
that fails keeps the old state serving and is reported by /ready.

Every backend is passed in (`StateSource`), so tests build states from tiny in-memory parts
and `mmrec serve` builds them from the MLflow champion, the Feast online store and the item
index (mmrec/serve/loader.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mmrec.serve.catalog import Catalog
from mmrec.serve.render import ItemFragments

log = logging.getLogger(__name__)


class RecsReader(Protocol):
    """Precomputed top-K per user (the nightly job's output, read from the online store)."""

    def get(self, user_id: str) -> list[tuple[str, float]] | None:
        """(item_id, score) best first, or None when the store has no row for the user."""
        ...


class SimilarIndex(Protocol):
    """Nearest items of one modality's embedding space."""

    def similar(self, item_id: str, k: int) -> list[tuple[str, float]] | None:
        """(item_id, similarity) best first without `item_id` itself; None when it has no vector."""
        ...


class StateSource(Protocol):
    """Where serving states come from."""

    def version(self) -> str:
        """Cheap: the version a fresh load would serve (e.g. the champion's registry version)."""
        ...

    def load(self) -> ServingState:
        """Expensive: build a complete state for the current version."""
        ...

    # optional: `stamp() -> str | None`, cheap, changes when the same version must be reloaded
    # (e.g. a user was forgotten: ChampionSource stamps the forget list)


Explainer = Callable[[Any, str, str], dict[str, Any]]


@dataclass(frozen=True)
class ServingState:
    """Everything one request may read; never mutated after construction.

    Attributes:
        version: what is served (the registry version of the champion, or a label).
        catalog: item metadata, media files and user histories.
        model: the champion Recommender (live scoring, sessions, explanations); None disables them.
        recs: precomputed top-K reader; None makes every user a live-scored one.
        similar: modality ("text", "image", "audio", "video", "fused") -> index.
        explainer: `explain(model, user_id, item_id)`; None disables the explain endpoint.
        info: free-form description shown by /ready (registry name, run id, loaded files).
    """

    version: str
    catalog: Catalog
    model: Any | None = None
    recs: RecsReader | None = None
    similar: Mapping[str, SimilarIndex] = field(default_factory=dict)
    explainer: Explainer | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)
    # model index lookups, derived once (id -> row/column of the model)
    user_pos: Mapping[str, int] = field(init=False, repr=False)
    item_pos: Mapping[str, int] = field(init=False, repr=False)
    # each item's display record serialised once (mmrec/serve/render.py); it lives and dies with
    # this state, so a reload (new champion or catalogue) starts from an empty cache
    item_json: ItemFragments = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        users = getattr(self.model, "user_ids", None)
        items = getattr(self.model, "item_ids", None)
        object.__setattr__(self, "user_pos", {str(u): i for i, u in enumerate(users)} if users is not None else {})
        object.__setattr__(self, "item_pos", {str(v): i for i, v in enumerate(items)} if items is not None else {})
        object.__setattr__(self, "item_json", ItemFragments(self.catalog))

    def serves_precomputed(self) -> bool:
        """A precomputed reader that has a nightly list behind it (a reader may say it has none)."""
        if self.recs is None:
            return False
        available = getattr(self.recs, "available", None)
        return bool(available()) if callable(available) else True

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "model": getattr(self.model, "name", None),
            "items": self.catalog.n_items,
            "users": self.catalog.n_users,
            # true only when a nightly list exists and is used; else users get live `model` scores
            "precomputed": self.serves_precomputed(),
            # what GET /users/{id}/recommendations answers with for a known user now
            "serving": "precomputed"
            if self.serves_precomputed()
            else ("model" if self.model is not None else "fallback"),
            "modalities": sorted(self.similar),
            "explain": self.explainer is not None and self.model is not None,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            **dict(self.info),
        }


@dataclass
class ReloadResult:
    action: str  # "loaded", "unchanged" or "failed"
    version: str | None
    previous: str | None
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class StateHolder:
    """Holds the current state; reloads it on demand or by polling `source.version()`.

    Reads (`state`) take no lock: replacing one attribute is atomic. Reloads are serialised by
    a lock so two triggers never build the same state twice.
    """

    def __init__(self, source: StateSource, interval_s: float = 30.0) -> None:
        self.source = source
        self.interval_s = interval_s
        self._state: ServingState | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.last_check: float | None = None
        self._stamp: str | None = None

    @property
    def state(self) -> ServingState | None:
        return self._state

    def reload(self, force: bool = False) -> ReloadResult:
        """Load the source's current version unless it is already served (or `force`)."""
        with self._lock:
            start = time.perf_counter()
            previous = self._state.version if self._state else None
            try:
                version = self.source.version()
                stamp = _stamp(self.source)
                self.last_check = time.time()
                if not force and self._state is not None and version == previous and stamp == self._stamp:
                    # what is served is current: an error of an earlier load is no longer true
                    self.last_error = None
                    return ReloadResult("unchanged", version, previous)
                new = self.source.load()
            except Exception as exc:  # noqa: BLE001 - keep serving the old state, whatever broke
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("reload failed; still serving version %s: %s", previous, self.last_error)
                return ReloadResult(
                    "failed", None, previous, error=self.last_error, seconds=time.perf_counter() - start
                )
            self._state = new
            self._stamp = stamp
            self.last_error = None
            seconds = time.perf_counter() - start
            log.info("serving version %s (was %s), loaded in %.2fs", new.version, previous, seconds)
            return ReloadResult("loaded", new.version, previous, seconds=round(seconds, 3))

    # -- background polling ------------------------------------------------------------------
    def start(self) -> None:
        """Poll every `interval_s` seconds in a daemon thread (no-op when the interval is 0)."""
        if self.interval_s <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="mmrec-serve-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.reload()


def _stamp(source: StateSource) -> str | None:
    fn = getattr(source, "stamp", None)
    return fn() if callable(fn) else None
