"""Real-time recommendations for users with recent events, and the impressions they produce.

`EventsRuntime` sits beside the `StateHolder`: it owns the event store (mmrec/events/store.py),
the bandit's sampler and a background impression writer. For `GET /users/{id}/recommendations`:
- a user with no recent event gets the existing answer (precomputed fast path, unchanged apart
  from one indexed read of the recent history and a queued impression, a few microseconds);
- a user with recent events gets the list of the strategy the bandit draws for their segment
  (nightly, real-time blend, popularity or content; mmrec/events/strategies.py), what they just
  consumed excluded, each item marked with the part that placed it.
Impressions are written by one daemon thread per process (the request only enqueues), so
logging what was shown never adds a store write to a request's latency.

A forget (`DELETE /users/{id}` on any worker, or `mmrec forget`) leaves a tombstone in the store
(mmrec/events/store.py), so what other processes still buffer of the user, or log before they
notice the forget, is dropped by the store when they flush; this worker needs no notice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import orjson

from mmrec.errors import NotFoundError
from mmrec.events.bandit import ThompsonBandit, segment_of
from mmrec.events.config import EventsParams
from mmrec.events.store import EventStore, Impression
from mmrec.events.strategies import Ranked, Strategies, UserView
from mmrec.serve import service
from mmrec.serve.render import ItemFragments, RankedItems
from mmrec.serve.state import ServingState

log = logging.getLogger(__name__)

#: the nightly depth the real-time blend reads (at most the API's MAX_K)
_BLEND_DEPTH = 100


class PartItems(RankedItems):
    """Ranked items that also say which part placed each one (`part`, `realtime`)."""

    def __init__(self, fragments: ItemFragments, ranked: Ranked) -> None:
        super().__init__(fragments, [(i, s) for i, s, _ in ranked], "score")
        self.parts = [p for _, _, p in ranked]

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        record = super().__getitem__(index)
        part = self.parts[index]
        return {**record, "part": part, "realtime": part == "realtime"}

    def render(self) -> bytes:
        if not self.ids:
            return b"[]"
        items = orjson.loads(super().render())
        for record, part in zip(items, self.parts, strict=True):
            record["part"] = part
            record["realtime"] = part == "realtime"
        return orjson.dumps(items)


class ImpressionWriter:
    """Buffers impressions; `flush()` writes them in one transaction / pipeline.

    The runtime's background tick flushes every `EventsRuntime.tick_s`; a request flushes inline
    only when the buffer reaches `max_buffer` (the store is slow or down: memory stays bounded,
    and beyond twice that impressions are dropped and counted). Measured alternatives: a write per
    request costs a store round trip each; a writer thread draining a queue continuously fought
    the request thread for the GIL (Python's 5 ms switch interval) and made a Redis-backed
    request tens of times slower.

    Impressions of a user forgotten since they were buffered are dropped by the store at the
    flush (its tombstones) and counted in `forgotten`.
    """

    def __init__(self, store: EventStore, max_buffer: int = 5000) -> None:
        self.store = store
        self.max_buffer = max_buffer
        self._buffer: list[Impression] = []
        self._lock = threading.Lock()
        self.dropped = 0
        self.forgotten = 0

    def put(self, impression: Impression) -> None:
        with self._lock:
            if len(self._buffer) >= 2 * self.max_buffer:
                self.dropped += 1
                return
            self._buffer.append(impression)
            full = len(self._buffer) >= self.max_buffer
        if full:
            self.flush()

    def flush(self) -> None:
        """Write every buffered impression now."""
        with self._lock:
            batch, self._buffer = self._buffer, []
        if not batch:
            return
        try:
            self.forgotten += self.store.log_impressions(batch)
        except Exception as exc:  # noqa: BLE001 - a store outage must never fail a recommendation
            self.dropped += len(batch)
            log.warning("%d impressions not logged (%s: %s)", len(batch), type(exc).__name__, exc)


class EventsRuntime:
    """The feedback loop of one API process.

    Args:
        store: the event store (shared by every worker through the backend).
        params: the `events:` section.
        validate: the `validate:` section (timestamp bounds of posted events).
    """

    def __init__(
        self, store: EventStore, params: EventsParams | None = None, validate: Any = None, tick_s: float = 0.25
    ) -> None:
        from mmrec.config import ValidateParams

        self.store = store
        self.params = params or EventsParams()
        self.validate = validate or ValidateParams()
        self.bandit = ThompsonBandit(
            self.params.strategies, self.params.prior_alpha, self.params.prior_beta, self.params.seed
        )
        self.writer = ImpressionWriter(store)
        self.tick_s = tick_s
        self._strategies: tuple[int, Strategies] | None = None
        # users with an event received within recent_ttl_seconds -> latest receive time: requests
        # of everyone else take the fast path without a store read. This worker's own posts enter
        # at once; other workers' every `tick_s` (well within the one-second promise).
        self.active: dict[str, float] = {}
        self._polled = time.time() - self.params.recent_ttl_seconds
        self._poll()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """The background tick (impression flush + active-user poll), started on first use."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mmrec-events-tick", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            self.writer.flush()
            try:
                self._poll()
            except Exception as exc:  # noqa: BLE001 - the store is down: keep the last view, retry next tick
                log.warning("active users not refreshed (%s: %s)", type(exc).__name__, exc)

    def _poll(self) -> None:
        now = time.time()
        fresh = self.store.active_users(self._polled - 2.0)  # overlap: receive clocks of workers may differ
        self._polled = now
        horizon = now - self.params.recent_ttl_seconds
        merged = {u: t for u, t in self.active.items() if t >= horizon}
        for user, t in fresh.items():
            merged[user] = max(t, merged.get(user, 0.0))
        self.active = merged  # replaced whole: readers never see a half-updated dict

    def record(self, events: Sequence[Any]) -> Any:
        """Store validated events (`POST /events`); returns the store's `AppendResult`.

        This worker's buffered impressions are written first, so a click on an item shown a moment
        ago is credited to it (another worker's buffer reaches the store within `tick_s`). The
        events' users are active on this worker at once (read-your-writes).
        """
        self.writer.flush()
        result = self.store.append(events)
        now = time.time()
        for ev in events:
            self.active[ev.user_id] = now
        return result

    def forget(self, user_id: str) -> None:
        """Before a forget (DELETE /users/{id}): write this worker's buffered impressions, so the
        erasure that follows removes them with the rest, and stop treating the user as active.

        Other workers and processes are not told: the tombstone the erasure leaves in the store
        drops whatever they write of the user afterwards (mmrec/events/store.py).
        """
        self.writer.flush()
        self.active = {u: t for u, t in self.active.items() if u != user_id}

    def flush(self) -> None:
        """Write buffered impressions and refresh the active users now (tests, shutdown)."""
        self.writer.flush()
        self._poll()

    def strategies(self, state: ServingState) -> Strategies:
        """The strategy functions of the state's model (built once per serving state)."""
        cached = self._strategies
        if cached is not None and cached[0] == id(state):
            return cached[1]
        fused = state.similar.get("fused")
        built = Strategies(
            service._model(state, "real-time recommendation"),
            state.item_pos,
            fused.similar if fused is not None else None,
            self.params.realtime_weight,
            self.params.rrf_k,
        )
        self._strategies = (id(state), built)
        return built

    def recommendations(self, state: ServingState, user_id: str, k: int) -> dict[str, Any]:
        """The body of `GET /users/{id}/recommendations` (see the module docstring)."""
        if self._thread is None:
            self.start()
        recent = [e.item_id for e in self.store.recent(user_id)] if user_id in self.active else []
        if not recent or state.model is None:
            body = service.user_recommendations(state, user_id, k)
            history_n = len(state.catalog.history(user_id)) if state.catalog.has_user(user_id) else 0
            segment = segment_of(history_n, self.params.segments) + "/no-recent"
            self.writer.put(Impression(user_id, segment, "nightly", tuple(body["items"].ids)))
            body["strategy"] = "nightly"
            body["segment"] = segment
            return body
        history = state.catalog.history(user_id) if state.catalog.has_user(user_id) else []
        try:
            base = service.user_recommendations(state, user_id, _BLEND_DEPTH)
            nightly: Sequence[tuple[str, float]] = list(
                zip(base["items"].ids, base["items"].values.tolist(), strict=True)
            )
            source = base["source"]
            version = base["version"]
        except NotFoundError:  # a user only the events know: the fold-in alone
            nightly, source, version = [], "history", state.version
        view = UserView(nightly=nightly, history=history, recent=recent)
        segment = segment_of(len(history) + len(recent), self.params.segments)
        strategy = self.bandit.choose(self.store.arms().get(segment, {}))
        ranked = self.strategies(state).run(strategy, view, k)
        impression = Impression(user_id, segment, strategy, tuple(i for i, _, _ in ranked))
        self.writer.put(impression)
        return {
            "user_id": user_id,
            "source": source,
            "version": version,
            "items": PartItems(state.item_json, ranked),
            "strategy": strategy,
            "segment": segment,
            "recent_item_ids": recent,
            "realtime_item_ids": [i for i, _, p in ranked if p == "realtime"],
            "impression_id": impression.impression_id,
        }

    def posteriors(self) -> dict[str, Any]:
        """Per segment and strategy: counts, Beta posterior and its mean (GET /events/bandit)."""
        out: dict[str, Any] = {}
        for segment, arms in sorted(self.store.arms().items()):
            post = self.bandit.posteriors(arms)
            out[segment] = {
                s: {
                    "shown": arms[s].shown if s in arms else 0.0,
                    "rewarded": arms[s].rewarded if s in arms else 0.0,
                    "alpha": a,
                    "beta": b,
                    "mean": a / (a + b),
                }
                for s, (a, b) in post.items()
            }
        return out

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.writer.flush()
        self.store.close()
