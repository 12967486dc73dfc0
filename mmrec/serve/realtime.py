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
"""

from __future__ import annotations

import logging
import queue
import threading
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
    """Writes impressions to the store from one daemon thread (requests only enqueue)."""

    def __init__(self, store: EventStore, maxsize: int = 10_000) -> None:
        self.store = store
        self._queue: queue.Queue[Impression | None] = queue.Queue(maxsize)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.dropped = 0

    def put(self, impression: Impression) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="mmrec-impressions", daemon=True)
                    self._thread.start()
        try:
            self._queue.put_nowait(impression)
        except queue.Full:  # the store is down or slow: lose impressions, never block requests
            self.dropped += 1

    def _run(self) -> None:
        while True:
            imp = self._queue.get()
            try:
                if imp is not None:
                    self.store.log_impression(imp)
            except Exception as exc:  # noqa: BLE001 - a store outage must not kill the writer
                log.warning("impression not logged (%s: %s)", type(exc).__name__, exc)
            finally:
                self._queue.task_done()
            if imp is None:
                return

    def flush(self) -> None:
        """Wait until every queued impression is written (tests, shutdown)."""
        if self._thread is not None:
            self._queue.join()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None


class EventsRuntime:
    """The feedback loop of one API process.

    Args:
        store: the event store (shared by every worker through the backend).
        params: the `events:` section.
        validate: the `validate:` section (timestamp bounds of posted events).
    """

    def __init__(self, store: EventStore, params: EventsParams | None = None, validate: Any = None) -> None:
        from mmrec.config import ValidateParams

        self.store = store
        self.params = params or EventsParams()
        self.validate = validate or ValidateParams()
        self.bandit = ThompsonBandit(self.params.strategies, self.params.prior_alpha, self.params.prior_beta,
                                     self.params.seed)
        self.writer = ImpressionWriter(store)
        self._strategies: tuple[int, Strategies] | None = None

    def strategies(self, state: ServingState) -> Strategies:
        """The strategy functions of the state's model (built once per serving state)."""
        cached = self._strategies
        if cached is not None and cached[0] == id(state):
            return cached[1]
        fused = state.similar.get("fused")
        built = Strategies(service._model(state, "real-time recommendation"), state.item_pos,
                           fused.similar if fused is not None else None,
                           self.params.realtime_weight, self.params.rrf_k)
        self._strategies = (id(state), built)
        return built

    def recommendations(self, state: ServingState, user_id: str, k: int) -> dict[str, Any]:
        """The body of `GET /users/{id}/recommendations` (see the module docstring)."""
        recent = [e.item_id for e in self.store.recent(user_id)]
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
            nightly: Sequence[tuple[str, float]] = list(zip(base["items"].ids, base["items"].values.tolist(), strict=True))
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
            "user_id": user_id, "source": source, "version": version, "items": PartItems(state.item_json, ranked),
            "strategy": strategy, "segment": segment, "recent_item_ids": recent,
            "realtime_item_ids": [i for i, _, p in ranked if p == "realtime"], "impression_id": impression.impression_id,
        }

    def posteriors(self) -> dict[str, Any]:
        """Per segment and strategy: counts, Beta posterior and its mean (GET /events/bandit)."""
        out: dict[str, Any] = {}
        for segment, arms in sorted(self.store.arms().items()):
            post = self.bandit.posteriors(arms)
            out[segment] = {s: {"shown": arms[s].shown if s in arms else 0.0,
                                "rewarded": arms[s].rewarded if s in arms else 0.0,
                                "alpha": a, "beta": b, "mean": a / (a + b)} for s, (a, b) in post.items()}
        return out

    def close(self) -> None:
        self.writer.stop()
        self.store.close()
