"""The feedback loop on the tiny fixture: validation, idempotent log, blend, bandit, erase, API.

The store is the real sqlite backend in tmp_path; the API runs in-process (TestClient) over the
in-memory tiny serving state (tests/serving.py). The Redis backend and a real server on loopback
are covered by tests/integration/test_events_serve.py.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from mmrec.events.bandit import Arm, ThompsonBandit, segment_of
from mmrec.events.config import EventsParams
from mmrec.events.schema import Event, check_events
from mmrec.events.store import Impression, SqliteEventStore, erase_user
from mmrec.events.strategies import Strategies, UserView
from tests.conftest import FIXTURES
from tests.serving import tiny_state

NOW = 1_700_000_000.0
BOUNDS = (631_152_000.0, NOW + 86_400)  # 1990-01-01 .. now + 1 day
ITEMS = {f"i{n}" for n in range(1, 9)}


def _ev(eid: str, user: str = "u1", item: str = "i1", event: str = "view", ts: float = NOW) -> Event:
    return Event(eid, user, item, event, ts)


# -- validation -----------------------------------------------------------------------------------------


def test_check_events_names_row_and_field_of_every_problem():
    rows = [
        {"event_id": "e1", "user_id": "u1", "item_id": "i1", "event": "view", "timestamp": "2023-11-14T22:13:20Z"},
        {"event_id": "e2", "user_id": "u1", "item_id": "nope", "event": "view"},
        {"event_id": "e3", "user_id": "u1", "item_id": "i2", "event": "teleport"},
        {"event_id": "e4", "user_id": "u1", "item_id": "i2", "event": "view", "timestamp": "yesterday-ish"},
        {"event_id": "e5", "user_id": "u1", "item_id": "i2", "event": "view", "timestamp": 10.0},  # 1970
        {"event_id": "e1", "user_id": "u2", "item_id": "i1", "event": "view"},  # same id, other content
        {"event_id": "", "user_id": "u1", "item_id": "i1", "event": "view"},
    ]
    events, problems = check_events(rows, ITEMS.__contains__, EventsParams().event_types, BOUNDS, now=NOW)
    assert [e.event_id for e in events] == ["e1"]
    assert events[0].timestamp == pytest.approx(NOW)
    where = {(p.row, p.field) for p in problems}
    assert where == {(1, "item_id"), (2, "event"), (3, "timestamp"), (4, "timestamp"), (5, "event_id"), (6, "event_id")}
    by_row = {p.row: p.msg for p in problems}
    assert "unknown item id 'nope'" in by_row[1]
    assert "teleport" in by_row[2] and "view" in by_row[2]
    assert "outside the accepted range" in by_row[4]
    assert problems[0].to_dict()["loc"] == ["body", "events", 1, "item_id"]


def test_check_events_keeps_an_exact_repeat_once_and_defaults_the_time():
    row = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "event": "click"}
    events, problems = check_events([row, dict(row)], ITEMS.__contains__, ["click"], BOUNDS, now=NOW)
    assert problems == [] and len(events) == 1 and events[0].timestamp == NOW


# -- store -------------------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> SqliteEventStore:
    s = SqliteEventStore(tmp_path / "events.db", EventsParams(history_length=3, attribution_impressions=2))
    yield s
    s.close()


def test_append_is_idempotent_and_recent_history_is_bounded_newest_first(store: SqliteEventStore):
    first = store.append([_ev("e1", item="i1"), _ev("e2", item="i2")])
    assert (first.accepted, first.duplicates) == (2, 0)
    again = store.append([_ev("e1", item="i1"), _ev("e3", item="i3"), _ev("e4", item="i4")])
    assert (again.accepted, again.duplicates) == (2, 1)
    assert [e.item_id for e in store.recent("u1")] == ["i4", "i3", "i2"]  # history_length=3
    assert [e.event_id for e in store.events()] == ["e1", "e2", "e3", "e4"]  # the log keeps everything once
    assert store.recent("u2") == []


def test_a_second_process_sees_the_same_log(store: SqliteEventStore, tmp_path: Path):
    store.append([_ev("e1")])
    other = SqliteEventStore(tmp_path / "events.db", store.params)  # as another API worker opens it
    assert other.append([_ev("e1")]).duplicates == 1
    assert [e.event_id for e in other.recent("u1")] == ["e1"]
    assert sqlite3.connect(tmp_path / "events.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()


def test_reward_credits_the_newest_unrewarded_impression_once(store: SqliteEventStore):
    store.log_impression(Impression("u1", "1-4", "nightly", ("i1", "i2"), NOW - 20))
    store.log_impression(Impression("u1", "1-4", "realtime", ("i2", "i3"), NOW - 10))
    assert store.append([_ev("c1", item="i2", event="click")]).rewarded == 1  # -> realtime (newest)
    assert store.append([_ev("c2", item="i2", event="click")]).rewarded == 1  # -> nightly (realtime's is used)
    assert store.append([_ev("c3", item="i2", event="click")]).rewarded == 0  # both used
    assert store.append([_ev("c4", item="i8", event="click")]).rewarded == 0  # never shown
    arms = store.arms()["1-4"]
    assert arms["realtime"] == Arm(shown=1, rewarded=1) and arms["nightly"] == Arm(shown=1, rewarded=1)
    store.log_impression(Impression("u1", "1-4", "content", ("i5",), NOW))
    store.log_impression(Impression("u1", "1-4", "content", ("i6",), NOW))
    store.log_impression(Impression("u1", "1-4", "content", ("i7",), NOW))
    assert store.append([_ev("c5", item="i5", event="click")]).rewarded == 0  # beyond attribution_impressions=2


def test_erase_user_removes_events_recent_history_and_impressions(store: SqliteEventStore, tmp_path: Path):
    store.append([_ev("e1", "gone"), _ev("e2", "gone", "i2"), _ev("e3", "kept")])
    store.log_impression(Impression("gone", "0", "nightly", ("i3",)))
    store.log_impression(Impression("kept", "0", "nightly", ("i3",)))
    removed = erase_user(store, "gone")
    assert removed == {"events": 2, "recent": 2, "impressions": 1}
    assert store.recent("gone") == [] and [e.user_id for e in store.events()] == ["kept"]
    assert [i.user_id for i in store.impressions()] == ["kept"]
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("events.db"))
    assert b"gone" not in raw  # not in the main file, nor left in the WAL
    assert erase_user(store, "gone") == {"events": 0, "recent": 0, "impressions": 0}


# -- bandit ------------------------------------------------------------------------------------------------


def test_segments_by_history_length():
    cuts = (1, 5, 20)
    assert [segment_of(n, cuts) for n in (0, 1, 4, 5, 19, 20, 500)] == ["0", "1-4", "1-4", "5-19", "5-19", "20+", "20+"]


def test_posterior_updates_and_seeded_draws():
    bandit = ThompsonBandit(["a", "b"], prior_alpha=1, prior_beta=1, seed=7)
    arms = {"a": Arm(shown=10, rewarded=8), "b": Arm(shown=10, rewarded=1)}
    assert bandit.posteriors(arms) == {"a": (9.0, 3.0), "b": (2.0, 10.0)}
    assert bandit.means({}) == {"a": 0.5, "b": 0.5}
    draws = [bandit.choose(arms) for _ in range(200)]
    assert 0.95 < draws.count("a") / 200 < 1.0  # mostly the better arm, the other still explored
    again = ThompsonBandit(["a", "b"], seed=7)
    assert [again.choose(arms) for _ in range(200)] == draws  # deterministic under a seed
    with pytest.raises(ValueError, match="none of"):
        bandit.choose(arms, allowed=["zzz"])


def test_bandit_learns_the_better_arm_from_simulated_rewards():
    rng = np.random.default_rng(0)
    bandit = ThompsonBandit(["good", "bad"], seed=1)
    counts = {"good": [0.0, 0.0], "bad": [0.0, 0.0]}
    picks = []
    for _ in range(400):
        arm = bandit.choose({s: Arm(*c) for s, c in counts.items()})
        counts[arm][0] += 1
        counts[arm][1] += float(rng.random() < (0.6 if arm == "good" else 0.2))
        picks.append(arm)
    assert picks[-100:].count("good") > 80


# -- strategies ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def state():
    return tiny_state(FIXTURES / "tiny" / "dataset.yaml")


def test_blend_excludes_consumed_items_and_marks_the_realtime_part(state):
    strat = Strategies(state.model, state.item_pos, state.similar["fused"].similar, realtime_weight=0.5)
    view = UserView(nightly=[("i8", 0.9), ("i7", 0.8), ("i4", 0.5)], history=["i5", "i2"], recent=["i8", "i1"])
    for name in ("nightly", "realtime", "popularity", "content"):
        ranked = strat.run(name, view, 4)
        ids = [i for i, _, _ in ranked]
        assert not set(ids) & {"i8", "i1", "i5", "i2"}, name  # nothing just consumed, nothing seen
        assert len(ids) == len(set(ids)) and len(ids) >= 1
    foldin = [i for i, _, _ in strat.foldin(view, 4)]
    blend = strat.realtime(view, 4)
    parts = {i: p for i, _, p in blend}
    assert parts["i7"] == "nightly" or foldin.index("i7") == 0  # the nightly head stays nightly unless fold-in agrees
    assert all(p == "realtime" for i, p in parts.items() if i not in ("i7", "i4")), parts
    only_fold = Strategies(state.model, state.item_pos, realtime_weight=1.0).realtime(view, 3)
    assert [i for i, _, _ in only_fold] == foldin[:3] and {p for _, _, p in only_fold} == {"realtime"}
    only_night = Strategies(state.model, state.item_pos, realtime_weight=0.0).realtime(view, 2)
    assert [i for i, _, _ in only_night] == ["i7", "i4"]
    with pytest.raises(ValueError, match="unknown strategy"):
        strat.run("magic", view, 3)


# -- API (in-process) -----------------------------------------------------------------------------------------


def _client(state, tmp_path: Path, **settings):
    from fastapi.testclient import TestClient

    from mmrec.serve.app import create_app
    from mmrec.serve.realtime import EventsRuntime
    from mmrec.serve.settings import ServeSettings
    from mmrec.serve.state import StateHolder
    from tests.serving import ListSource

    runtime = EventsRuntime(SqliteEventStore(tmp_path / "ev.db", EventsParams(seed=3)))
    app = create_app(
        StateHolder(ListSource([state]), interval_s=0),
        ServeSettings(log_key="k", **settings),
        poll=False,
        events=runtime,
    )
    return TestClient(app, raise_server_exceptions=False, base_url="http://localhost"), runtime


def test_post_events_then_recommendations_reflect_them(state, tmp_path: Path):
    client, runtime = _client(state, tmp_path)
    with client:
        before = client.get("/users/u1/recommendations?k=2").json()
        assert before["source"] == "precomputed" and before["strategy"] == "nightly"
        assert [i["item_id"] for i in before["items"]] == ["i8", "i7"]
        body = {"events": [{"event_id": "a1", "user_id": "u1", "item_id": "i8", "event": "view"}]}
        r = client.post("/events", json=body)
        assert r.status_code == 202 and r.json() == {"accepted": 1, "duplicates": 0, "rewarded": 1}  # i8 was shown
        assert client.post("/events", json=body).json()["duplicates"] == 1
        after = client.get("/users/u1/recommendations?k=3").json()
        ids = [i["item_id"] for i in after["items"]]
        assert "i8" not in ids and after["recent_item_ids"] == ["i8"]
        assert after["strategy"] in EventsParams().strategies and after["segment"] == "5-19"
        assert all(i["part"] in ("nightly", "realtime", "popularity", "content") for i in after["items"])
        assert after["realtime_item_ids"] == [i["item_id"] for i in after["items"] if i["realtime"]]
        recent = client.get("/users/u1/events").json()
        assert [(i["item_id"], i["event"], i["title"]) for i in recent["items"]] == [("i8", "view", "Item 8")]
        # a brand-new user known only from events gets a fold-in of them
        client.post(
            "/events", json={"events": [{"event_id": "n1", "user_id": "newbie", "item_id": "i3", "event": "click"}]}
        )
        fresh = client.get("/users/newbie/recommendations?k=3").json()
        assert fresh["recent_item_ids"] == ["i3"] and "i3" not in [i["item_id"] for i in fresh["items"]]
        runtime.flush()
        segments = client.get("/events/bandit").json()["segments"]
        assert segments["5-19/no-recent"]["nightly"]["shown"] >= 1


def test_post_events_refuses_bad_batches_naming_row_and_field(state, tmp_path: Path):
    client, runtime = _client(state, tmp_path)
    with client:
        ok = {"event_id": "a", "user_id": "u1", "item_id": "i1", "event": "view"}
        r = client.post("/events", json={"events": [ok, {**ok, "event_id": "b", "item_id": "zz"}]})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "events", 1, "item_id"]
        assert list(runtime.store.events()) == []  # nothing of a refused batch is stored
        r = client.post("/events", json={"events": [{**ok, "user_id": 5}]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][:4] == ["body", "events", "0", "user_id"]
        r = client.post("/events", json={"events": [{**ok, "extra": 1}]})
        assert r.status_code == 422
        r = client.post("/events", json={"events": []})
        assert r.status_code == 422
        r = client.post("/events", json={"events": [{**ok, "event_id": f"x{n}"} for n in range(1001)]})
        assert r.status_code in (413, 422)  # over the body limit or the batch bound, never stored
        assert list(runtime.store.events()) == []


def test_events_need_the_api_key_when_one_is_set(state, tmp_path: Path):
    client, _ = _client(state, tmp_path, api_key="s3cret")
    with client:
        body = {"events": [{"event_id": "a", "user_id": "u1", "item_id": "i1", "event": "view"}]}
        assert client.post("/events", json=body).status_code == 401
        assert client.get("/users/u1/events").status_code == 401
        assert client.post("/events", json=body, headers={"X-API-Key": "s3cret"}).status_code == 202


def test_recent_history_is_visible_within_a_second(state, tmp_path: Path):
    client, _ = _client(state, tmp_path)
    with client:
        start = time.monotonic()
        client.post("/events", json={"events": [{"event_id": "t", "user_id": "u3", "item_id": "i2", "event": "view"}]})
        body = client.get("/users/u3/recommendations").json()
        assert body["recent_item_ids"] == ["i2"]
        assert time.monotonic() - start < 5  # generous: correctness, not a timing claim (see benchmarks)
