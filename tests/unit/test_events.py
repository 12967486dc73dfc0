"""The feedback loop on the tiny fixture: validation, idempotent log, blend, bandit, erase, API.

The store is the real sqlite backend in tmp_path; the API runs in-process (TestClient) over the
in-memory tiny serving state (tests/serving.py). The forgotten-user tombstones are tested on both
backends (Redis on 127.0.0.1:6379: skipped without it locally, a failure in CI); a real server on
loopback is covered by tests/integration/test_events_serve.py.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmrec.errors import ConfigError
from mmrec.events.bandit import Arm, ThompsonBandit, segment_of
from mmrec.events.config import EventsParams
from mmrec.events.schema import Event, check_events
from mmrec.events.store import EventStore, Impression, RedisEventStore, SqliteEventStore, erase_user
from mmrec.events.strategies import Strategies, UserView
from mmrec.privacy.forget_list import pseudonym
from mmrec.serve.realtime import ImpressionWriter
from tests.conftest import FIXTURES, require_service
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
    s = SqliteEventStore(
        tmp_path / "events.db", EventsParams(history_length=3, attribution_impressions=2), privacy=tmp_path / "privacy"
    )
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


# -- forgotten users: the store's tombstone ---------------------------------------------------------------

GONE = "zzGoneUser77"  # distinctive: nothing else in a store contains it
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.services)])
def open_store_again(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """Opens one dataset's store again on each call, as each API worker (or `mmrec forget`) does:
    one backend, one privacy folder (where the first forget puts the salt)."""
    params = EventsParams(attribution_impressions=5)
    privacy = tmp_path / "privacy" / "tiny"
    prefix = f"mmrec:test:{uuid.uuid4().hex[:8]}:"
    opened: list[Any] = []

    def make() -> Any:
        if request.param == "redis":
            opened.append(RedisEventStore(REDIS_URL, prefix, params, privacy=privacy))
        else:
            opened.append(SqliteEventStore(tmp_path / "events.db", params, privacy=privacy))
        return opened[-1]

    if request.param == "redis":
        require_service("Redis", "127.0.0.1", 6379)
    yield make
    if request.param == "redis":
        client = opened[0].client
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    for s in opened:
        s.close()


def _held(store: Any) -> bytes:
    """Every byte the store holds: the sqlite files (main and WAL) and a dump through SQLite, or
    every key under the Redis prefix with every value, whatever its type."""
    if isinstance(store, SqliteEventStore):
        files = b"".join(p.read_bytes() for p in store.path.parent.glob(store.path.name + "*"))
        return files + "\n".join(store._con().iterdump()).encode()
    r, out = store.client, []
    for key in r.scan_iter(match=f"{store.prefix}*"):
        kind = r.type(key).decode()
        out.append(key)
        if kind == "string":
            out.append(r.get(key) or b"")
        elif kind == "hash":
            out += [x for kv in r.hgetall(key).items() for x in kv]
        elif kind == "list":
            out += r.lrange(key, 0, -1)
        elif kind == "set":
            out += list(r.smembers(key))
        elif kind == "zset":
            out += [m for m, _ in r.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            out += [x for _, fields in r.xrange(key) for kv in fields.items() for x in kv]
    return b"\n".join(out)


def _tombstones(store: Any) -> int:
    if isinstance(store, SqliteEventStore):
        return int(store._con().execute("SELECT COUNT(*) FROM forgotten").fetchone()[0])
    return int(store.client.scard(f"{store.prefix}forgotten"))


def test_a_forget_drops_what_another_worker_buffered_and_leaves_no_raw_id(open_store_again: Callable[[], Any]):
    api, other, cli = open_store_again(), open_store_again(), open_store_again()
    writer = ImpressionWriter(other)  # another worker: its buffer is not flushed before the forget
    writer.put(Impression(GONE, "0", "nightly", ("i1",)))
    writer.put(Impression("kept", "0", "nightly", ("i2",)))
    api.append([_ev("e1", GONE), _ev("e2", "kept")])
    api.log_impressions([Impression(GONE, "0", "nightly", ("i3",))])
    assert GONE.encode() in _held(api)  # the user did reach the store: the checks below prove something
    assert erase_user(cli, GONE) == {"events": 1, "recent": 1, "impressions": 1}  # `mmrec forget`

    writer.flush()  # the other worker's next tick
    assert [i.user_id for i in api.impressions()] == ["kept"]  # the rest of the batch is written
    assert (writer.forgotten, writer.dropped) == (1, 0)
    # a worker that has not noticed the forget logs the user again, and posts their events
    assert (
        other.log_impressions([Impression(GONE, "0", "nightly", ("i4",)), Impression("late", "0", "nightly", ("i5",))])
        == 1
    )
    posted = other.append([_ev("e3", GONE), _ev("e4", "kept", "i2"), _ev("e2", "kept")])
    assert (posted.accepted, posted.duplicates, posted.forgotten) == (1, 1, 1)
    assert [i.user_id for i in api.impressions()] == ["kept", "late"]
    assert [e.event_id for e in api.events()] == ["e2", "e4"] and api.recent(GONE) == []
    assert GONE not in api.active_users(0.0)
    assert api.arms()["0"]["nightly"].shown == 3  # a dropped impression is no trial either

    held = _held(api)
    assert _tombstones(api) == 1
    assert GONE.encode() not in held  # the tombstone holds no raw id
    salt = bytes.fromhex((cli.tombstones.folder / "salt").read_text().strip())
    assert pseudonym(salt, GONE).encode() not in held  # nor the audit's pseudonym (nothing to join it with)


def test_a_writer_that_read_no_salt_yet_is_made_to_check(open_store_again: Callable[[], Any], monkeypatch):
    cli, late = open_store_again(), open_store_again()
    erase_user(cli, GONE)
    real, calls = late.tombstones.known, []

    def blind_once(users: Any) -> Any:
        """The first batch goes out without pseudonyms, as from a process that looked for the
        salt just before the forget made it (Redis answers 'need a pseudonym'; sqlite never asks)."""
        calls.append(users)
        return None if len(calls) == 1 else real(users)

    monkeypatch.setattr(late.tombstones, "known", blind_once)
    batch = [Impression(GONE, "0", "nightly", ("i1",)), Impression("u1", "0", "nightly", ("i2",))]
    assert late.log_impressions(batch) == 1
    assert late.append([_ev("e1", GONE), _ev("e2")]).forgotten == 1
    assert {i.user_id for i in cli.impressions()} == {"u1"} and {e.user_id for e in cli.events()} == {"u1"}


def test_a_store_that_cannot_key_the_tombstones_refuses_clearly(open_store_again: Callable[[], Any]):
    cli = open_store_again()
    erase_user(cli, GONE)
    (cli.tombstones.folder / "salt").unlink()  # a node that does not see the dataset's privacy folder
    with pytest.raises(ConfigError, match=r"no salt at .*restore the salt"):
        open_store_again().append([_ev("e1", "u1")])


def test_erasing_needs_the_privacy_folder(tmp_path: Path):
    bare: EventStore = SqliteEventStore(tmp_path / "events.db")
    with pytest.raises(ConfigError, match="without the dataset's privacy folder"):
        erase_user(bare, "u1")
    bare.close()


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
        assert r.status_code == 202 and r.json() == {
            "accepted": 1,
            "duplicates": 0,
            "rewarded": 1,
            "forgotten": 0,
        }  # i8 was shown
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
