"""The event log into the warehouse (ingest_events -> split) and the replay simulator, on tiny data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mmrec.config import Params
from mmrec.constants import ITEM_ID, TIMESTAMP, USER_ID
from mmrec.data.contract import load_dataset_spec
from mmrec.events.config import EventsParams
from mmrec.events.replay import ADAPTIVE, STATIC, plot_learning_curve, replay
from mmrec.events.schema import Event
from mmrec.events.store import SqliteEventStore, erase_user, open_store
from mmrec.events.strategies import Strategies
from mmrec.stages import StageContext, run_stage
from tests.conftest import FIXTURES
from tests.serving import tiny_state

T0 = 1_600_100_000.0


@pytest.fixture
def validated(tiny_dataset: Path, workspace: Path) -> StageContext:
    params = Params.model_validate({"split": {"cold_item_fraction": 0.0, "min_user_interactions": 1}})
    ctx = StageContext(spec=load_dataset_spec(tiny_dataset), params=params, workspace=workspace)
    run_stage("ingest", ctx)
    run_stage("validate", ctx)
    return ctx


def test_ingest_events_validates_deduplicates_and_feeds_the_split(validated: StageContext):
    ctx = validated
    store = open_store(ctx)
    assert isinstance(store, SqliteEventStore) and store.path == ctx.paths.data / "events" / "events.db"
    store.append(
        [
            Event("e1", "u1", "i8", "purchase", T0),
            Event("e2", "newbie", "i3", "view", T0 + 1),
            Event("e3", "u2", "i1", "view", 100.0),
        ]
    )  # 1970: outside validate.timestamp_min
    # a row the API would refuse, written behind its back: the ingest validation still catches it
    store._con().execute(
        "INSERT INTO events (event_id, user_id, item_id, event, ts, received) "
        "VALUES ('e4', 'u1', 'ghost', 'view', ?, ?)",
        (T0, T0),
    )
    store.close()
    report = run_stage("ingest_events", ctx)
    assert (report["read"], report["duplicates"], report["quarantined"], report["rows"]) == (4, 0, 2, 2)
    snap = pd.read_parquet(ctx.paths.data / "events" / "ingested.parquet")
    assert snap["event_id"].tolist() == ["e1", "e2"]
    quarantine = pd.read_parquet(ctx.paths.data / "events" / "quarantine.parquet")
    assert dict(zip(quarantine["event_id"], quarantine["check"], strict=True)) == {
        "e3": "timestamp_in_range",
        "e4": "item_id_in_items",
    }
    mtime = (ctx.paths.data / "events" / "ingested.parquet").stat().st_mtime_ns
    assert run_stage("ingest_events", ctx)["rows"] == 2
    assert (ctx.paths.data / "events" / "ingested.parquet").stat().st_mtime_ns == mtime  # unchanged: not rewritten
    run_stage("split", ctx)
    kind = ctx.params.split.kind
    parts = pd.concat(
        [pd.read_csv(ctx.paths.split_file(kind, p), sep="\t", dtype=str) for p in ("train", "valid", "test")]
    )
    pairs = set(zip(parts[USER_ID], parts[ITEM_ID], strict=True))
    assert ("u1", "i8") in pairs and ("newbie", "i3") in pairs  # the next training sees the events
    assert ("u1", "ghost") not in pairs
    assert erase_user(ctx, "newbie") == {"events": 1, "recent": 1, "impressions": 0}


def test_forget_erases_the_event_log_and_its_snapshot_and_ingest_keeps_the_user_out(validated: StageContext):
    from mmrec.privacy.erasers import erase_events
    from mmrec.privacy.forget_list import ForgetList

    ctx = validated
    store = open_store(ctx)
    store.append(
        [
            Event("e1", "u1", "i8", "purchase", T0),
            Event("e2", "gone", "i3", "view", T0 + 1),
            Event("e3", "gone", "ghost", "view", T0 + 2),
        ]
    )  # e3 is quarantined (unknown item)
    store.close()
    run_stage("ingest_events", ctx)
    snap, quarantine = (ctx.paths.data / "events" / f for f in ("ingested.parquet", "quarantine.parquet"))
    assert "gone" in set(pd.read_parquet(snap)[USER_ID]) and "gone" in set(pd.read_parquet(quarantine)[USER_ID])
    forget = ForgetList.load(ctx.paths, create=True)
    forget.add("gone")
    forget.save()
    assert erase_events(ctx, "gone") == {
        "events": 2,
        "recent": 2,
        "impressions": 0,
        "ingested": 1,
        "ingest_quarantine": 1,
    }
    assert set(pd.read_parquet(snap)[USER_ID]) == {"u1"} and len(pd.read_parquet(quarantine)) == 0
    assert b"gone" not in (ctx.paths.data / "events" / "events.db").read_bytes()  # vacuumed, not just unlinked
    store = open_store(ctx)  # the user comes back through the API after being forgotten: the store's tombstone
    assert store.append([Event("e4", "gone", "i1", "view", T0 + 3)]).forgotten == 1
    # a row of the user that reaches the log behind the store's back (a restored backup): ingest drops it
    store._con().execute(
        "INSERT INTO events (event_id, user_id, item_id, event, ts, received) VALUES ('e5', 'gone', 'i1', 'view', ?, ?)",
        (T0 + 4, T0 + 4),
    )
    store.close()
    report = run_stage("ingest_events", ctx)
    assert (report["forgotten"], set(pd.read_parquet(snap)[USER_ID])) == (1, {"u1"})


def test_replay_scores_every_policy_and_the_bandit_learns(tmp_path: Path):
    state = tiny_state(FIXTURES / "tiny" / "dataset.yaml")
    strat = Strategies(state.model, state.item_pos, state.similar["fused"].similar)
    nightly = {"u1": [("i8", 0.9), ("i7", 0.8)], "u2": [("i7", 0.5), ("i1", 0.4)]}
    history = {"u1": ["i5", "i2"], "u2": ["i3"]}
    events = pd.DataFrame(
        {
            USER_ID: ["u1", "u2", "u1", "u2", "u1", "u2"],
            ITEM_ID: ["i8", "i1", "i7", "i2", "i4", "i7"],
            TIMESTAMP: [1, 2, 3, 4, 5, 6],
        }
    )
    params = EventsParams(segments=(1, 3))
    result = replay(strat, nightly, history, events.sample(frac=1, random_state=0), params, k=2, seed=0, checkpoints=3)
    assert result.events == 6 and result.policies[0] == STATIC and result.policies[-1] == ADAPTIVE
    # static: the nightly lists, unchanged: u1's i8, i7 and u2's i1, i7 are on them (4 of 6 events)
    assert result.hits[STATIC] == 4
    assert result.recall[STATIC] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert 0 <= result.hits[ADAPTIVE] <= 6 and len(result.picks) == 6
    assert result.checkpoints[-1] == 6 and all(len(v) == len(result.checkpoints) for v in result.curve.values())
    shown = sum(a + b - 2 for arms in result.posteriors.values() for a, b in arms.values())
    assert shown == 6  # every event was one trial of one arm
    again = replay(strat, nightly, history, events, params, k=2, seed=0, checkpoints=3)
    assert again.picks == result.picks  # time order, not input order; deterministic under the seed
    summary = result.summary()
    assert summary["policies"][STATIC] == {"hit_rate@2": round(4 / 6, 5), "recall@2": round(2 / 3, 5)}
    png = plot_learning_curve(result, "tiny", tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
