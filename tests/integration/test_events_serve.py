"""The feedback loop through a real uvicorn server on loopback, in both store profiles.

Embedded: the sqlite WAL event store; production: the Redis store on 127.0.0.1:6379 (skipped
locally without Redis, a failure in CI), keys under a private prefix removed afterwards. Two API
"workers" (two apps, two runtimes, one store) check that the log, the recent history and the
bandit's counts are shared, and that `erase_user` leaves nothing of a user in the store.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mmrec.events.config import EventsParams
from mmrec.events.store import RedisEventStore, SqliteEventStore, erase_user
from tests.conftest import require_service
from tests.integration.servers import running
from tests.serving import ListSource, tiny_state

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"
PROFILES = ["sqlite", pytest.param("redis", marks=pytest.mark.services)]
KEY = "k3y-for-events"


@pytest.fixture(params=PROFILES)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Opens the same store again on each call (as each API worker does)."""
    params = EventsParams(seed=1)
    opened: list[Any] = []
    if request.param == "redis":
        require_service("Redis", "127.0.0.1", 6379)
        prefix = f"mmrec:test:{uuid.uuid4().hex[:8]}:"

        def make() -> Any:
            opened.append(RedisEventStore(REDIS_URL, prefix, params, privacy=tmp_path / "privacy"))
            return opened[-1]
    else:

        def make() -> Any:
            opened.append(SqliteEventStore(tmp_path / "events.db", params, privacy=tmp_path / "privacy"))
            return opened[-1]

    yield make
    if request.param == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    for s in opened:
        s.close()


def _app(store: Any, tiny_dataset: Path) -> tuple[Any, Any]:
    from mmrec.serve.app import create_app
    from mmrec.serve.realtime import EventsRuntime
    from mmrec.serve.settings import ServeSettings
    from mmrec.serve.state import StateHolder

    runtime = EventsRuntime(store, store.params)
    app = create_app(
        StateHolder(ListSource([tiny_state(tiny_dataset)]), interval_s=0),
        ServeSettings(log_key="k", api_key=KEY),
        poll=False,
        events=runtime,
    )
    return app, runtime


def _call(url: str, method: str = "GET", body: Any = None, key: str | None = KEY) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if key:
        req.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def test_events_flow_through_two_workers_and_are_erased(store_factory: Any, tiny_dataset: Path):
    a_app, a_rt = _app(store_factory(), tiny_dataset)
    b_app, b_rt = _app(store_factory(), tiny_dataset)
    with running(a_app) as a_url, running(b_app) as b_url:
        status, first = _call(f"{a_url}/users/u1/recommendations?k=2")
        assert status == 200 and first["strategy"] == "nightly"
        shown = [i["item_id"] for i in first["items"]]
        a_rt.flush()
        assert _call(f"{a_url}/events", "POST", {"events": []}, key=None)[0] == 401
        events = {
            "events": [
                {"event_id": "ev-1", "user_id": "u1", "item_id": shown[0], "event": "click"},
                {
                    "event_id": "ev-2",
                    "user_id": "u1",
                    "item_id": "i4",
                    "event": "view",
                    "timestamp": "2026-01-02T03:04:05Z",
                },
            ]
        }
        posted = time.monotonic()
        status, body = _call(f"{a_url}/events", "POST", events)
        assert status == 202 and body == {"accepted": 2, "duplicates": 0, "rewarded": 1, "forgotten": 0}
        # the other worker: same log (idempotent), same recent history, within a second
        again = _call(f"{b_url}/events", "POST", events)[1]
        assert again == {"accepted": 0, "duplicates": 2, "rewarded": 0, "forgotten": 0}
        # worker B learns of u1's events from the store's active users within its tick (0.25 s)
        while True:
            status, recs = _call(f"{b_url}/users/u1/recommendations?k=3")
            if recs.get("recent_item_ids") or time.monotonic() - posted > 10:
                break
            time.sleep(0.05)
        assert status == 200 and recs["recent_item_ids"] == ["i4", shown[0]]
        assert not {shown[0], "i4"} & {i["item_id"] for i in recs["items"]}
        assert recs["strategy"] in ("nightly", "realtime", "popularity", "content")
        b_rt.flush()
        status, bandit = _call(f"{a_url}/events/bandit")
        segments = bandit["segments"]
        assert segments["5-19/no-recent"]["nightly"]["rewarded"] == 1.0  # the click credited worker A's impression
        assert segments["5-19"][recs["strategy"]]["shown"] == 1.0  # worker B's impression, seen by worker A
        status, recent = _call(f"{a_url}/users/u1/events?limit=5")
        assert [i["item_id"] for i in recent["items"]] == ["i4", shown[0]]
        status, bad = _call(
            f"{a_url}/events", "POST", {"events": [{**events["events"][0], "event_id": "x", "item_id": "nope"}]}
        )
        assert status == 422 and bad["detail"][0]["loc"] == ["body", "events", 0, "item_id"]

        removed = erase_user(a_rt.store, "u1")
        assert removed["events"] == 2 and removed["recent"] == 2 and removed["impressions"] >= 2
        assert _call(f"{b_url}/users/u1/events")[1]["items"] == []
        assert all(e.user_id != "u1" for e in b_rt.store.events())
        assert all(i.user_id != "u1" for i in b_rt.store.impressions())
        assert _call(f"{b_url}/users/u1/recommendations")[1]["strategy"] == "nightly"  # back on the fast path
        # the user stays forgotten: the same post to the other worker is dropped (the store's tombstone)
        assert _call(f"{b_url}/events", "POST", events)[1] == {
            "accepted": 0,
            "duplicates": 0,
            "rewarded": 0,
            "forgotten": 2,
        }
        assert all(e.user_id != "u1" for e in b_rt.store.events())
        # erased event ids are forgotten too: the same ids from another user are new again
        others = {"events": [{**e, "user_id": "u2"} for e in events["events"]]}
        assert _call(f"{a_url}/events", "POST", others)[1]["accepted"] == 2
