"""The event log, recent histories, impressions and bandit counts in one real store.

Two backends behind one interface (`EventStore`):
- `SqliteEventStore` (embedded profile): one sqlite file in WAL mode. Several API workers
  (`mmrec serve --workers N`) open the same file; sqlite's file locks serialise the writers
  (`BEGIN IMMEDIATE`, a busy timeout) while readers never block. duckdb was not used because a
  duckdb file admits one writing process at a time, which several uvicorn workers are not.
- `RedisEventStore` (production profile, where the online store is Redis): the log is a Redis
  stream, each user's recent history a capped list, impressions a stream plus a capped per-user
  list, the bandit counts one hash. Every append runs as one Lua script, so deduplication, the
  log entry, the recent history and the reward attribution happen atomically, whichever worker
  receives the event.

Semantics shared by both:
- `append` is idempotent by `event_id` (a retried batch stores nothing twice; in Redis the ids
  are remembered for `dedup_seconds`, in sqlite for ever) and returns how many were new.
- `recent(user)` is the user's newest events received within `recent_ttl_seconds`, newest first,
  at most `history_length` of them.
- Impressions: `log_impression` counts one trial of (segment, strategy); a later reward event
  on one of its items (events.reward_events) turns the newest matching, unrewarded impression of
  the user's last `attribution_impressions` into a success (mmrec/events/bandit.py).
- `erase_user` removes a user's events, recent history and impressions (the forget feature).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mmrec.errors import ConfigError, ServiceUnavailable
from mmrec.events.bandit import Arm
from mmrec.events.config import EventsParams, events_params
from mmrec.events.schema import Event

if TYPE_CHECKING:
    from mmrec.stages import StageContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Impression:
    """What the recommendations endpoint showed a user, and which strategy chose it."""

    user_id: str
    segment: str
    strategy: str
    item_ids: tuple[str, ...]
    timestamp: float = field(default_factory=time.time)
    impression_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class AppendResult:
    accepted: int
    duplicates: int
    rewarded: int


class EventStore(Protocol):
    """The interface both backends implement (see the module docstring)."""

    kind: str

    def append(self, events: Sequence[Event]) -> AppendResult: ...
    def recent(self, user_id: str, limit: int | None = None) -> list[Event]: ...
    def log_impression(self, impression: Impression) -> None: ...
    def log_impressions(self, impressions: Sequence[Impression]) -> None: ...
    def active_users(self, since: float) -> dict[str, float]: ...
    def arms(self) -> dict[str, dict[str, Arm]]: ...
    def events(self) -> Iterator[Event]: ...
    def impressions(self) -> Iterator[Impression]: ...
    def erase_user(self, user_id: str) -> dict[str, int]: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...


# -- sqlite ---------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    event TEXT NOT NULL,
    ts REAL NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id, seq);
CREATE INDEX IF NOT EXISTS events_received ON events (received);
CREATE TABLE IF NOT EXISTS impressions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    impression_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    segment TEXT NOT NULL,
    strategy TEXT NOT NULL,
    items TEXT NOT NULL,
    ts REAL NOT NULL,
    rewarded INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS impressions_user ON impressions (user_id, seq);
CREATE TABLE IF NOT EXISTS bandit (
    segment TEXT NOT NULL,
    strategy TEXT NOT NULL,
    shown REAL NOT NULL DEFAULT 0,
    rewarded REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (segment, strategy)
);
"""


class SqliteEventStore:
    """The embedded backend: one sqlite file in WAL mode (safe across processes and threads).

    Each thread gets its own connection (sqlite connections must not be shared across threads).
    """

    kind = "sqlite"

    def __init__(self, path: str | os.PathLike[str], params: EventsParams | None = None) -> None:
        self.path = Path(path)
        self.params = params or EventsParams()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._con().executescript(_SCHEMA)  # idempotent DDL (executescript commits by itself)

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            try:
                con = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=True)
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=NORMAL")  # durable at each WAL checkpoint; no fsync per event
                con.execute("PRAGMA busy_timeout=10000")
            except sqlite3.Error as exc:
                raise ServiceUnavailable(
                    "sqlite", str(self.path), f"event store {self.path.name}: cannot open: {exc}"
                ) from exc
            self._local.con = con
        return con

    class _Tx:
        def __init__(self, con: sqlite3.Connection) -> None:
            self.con = con

        def __enter__(self) -> sqlite3.Connection:
            self.con.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlock between workers
            return self.con

        def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
            self.con.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def _write(self) -> SqliteEventStore._Tx:
        return self._Tx(self._con())

    def append(self, events: Sequence[Event]) -> AppendResult:
        accepted = rewarded = 0
        now = time.time()
        reward_types = set(self.params.reward_events)
        with self._write() as con:
            for ev in events:
                cur = con.execute(
                    "INSERT OR IGNORE INTO events (event_id, user_id, item_id, event, ts, received) VALUES (?,?,?,?,?,?)",
                    (ev.event_id, ev.user_id, ev.item_id, ev.event, ev.timestamp, now),
                )
                if cur.rowcount == 0:
                    continue
                accepted += 1
                if ev.event in reward_types:
                    rewarded += self._attribute(con, ev)
        return AppendResult(accepted, len(events) - accepted, rewarded)

    def _attribute(self, con: sqlite3.Connection, ev: Event) -> int:
        rows = con.execute(
            "SELECT seq, segment, strategy, items, rewarded FROM impressions WHERE user_id = ? ORDER BY seq DESC LIMIT ?",
            (ev.user_id, self.params.attribution_impressions),
        ).fetchall()
        for seq, segment, strategy, items, done in rows:
            if done or ev.item_id not in json.loads(items):
                continue
            con.execute("UPDATE impressions SET rewarded = 1 WHERE seq = ?", (seq,))
            con.execute(
                "UPDATE bandit SET rewarded = rewarded + 1 WHERE segment = ? AND strategy = ?", (segment, strategy)
            )
            return 1
        return 0

    def recent(self, user_id: str, limit: int | None = None) -> list[Event]:
        limit = min(limit or self.params.history_length, self.params.history_length)
        since = time.time() - self.params.recent_ttl_seconds
        rows = (
            self._con()
            .execute(
                "SELECT event_id, user_id, item_id, event, ts FROM events WHERE user_id = ? AND received >= ? "
                "ORDER BY seq DESC LIMIT ?",
                (user_id, since, limit),
            )
            .fetchall()
        )
        return [Event(*r) for r in rows]

    def log_impression(self, impression: Impression) -> None:
        self.log_impressions([impression])

    def log_impressions(self, impressions: Sequence[Impression]) -> None:
        """Each impression and its trial of (segment, strategy), in one transaction."""
        with self._write() as con:
            for imp in impressions:
                con.execute(
                    "INSERT INTO impressions (impression_id, user_id, segment, strategy, items, ts) VALUES (?,?,?,?,?,?)",
                    (
                        imp.impression_id,
                        imp.user_id,
                        imp.segment,
                        imp.strategy,
                        json.dumps(list(imp.item_ids)),
                        imp.timestamp,
                    ),
                )
                con.execute(
                    "INSERT INTO bandit (segment, strategy, shown) VALUES (?, ?, 1) "
                    "ON CONFLICT (segment, strategy) DO UPDATE SET shown = shown + 1",
                    (imp.segment, imp.strategy),
                )

    def active_users(self, since: float) -> dict[str, float]:
        """Users with an event received after `since` (epoch seconds) -> their latest receive time."""
        rows = (
            self._con()
            .execute("SELECT user_id, MAX(received) FROM events WHERE received > ? GROUP BY user_id", (since,))
            .fetchall()
        )
        return {u: float(t) for u, t in rows}

    def arms(self) -> dict[str, dict[str, Arm]]:
        out: dict[str, dict[str, Arm]] = {}
        for segment, strategy, shown, rewarded in self._con().execute(
            "SELECT segment, strategy, shown, rewarded FROM bandit"
        ):
            out.setdefault(segment, {})[strategy] = Arm(shown, rewarded)
        return out

    def events(self) -> Iterator[Event]:
        cur = self._con().execute("SELECT event_id, user_id, item_id, event, ts FROM events ORDER BY seq")
        for row in cur:
            yield Event(*row)

    def impressions(self) -> Iterator[Impression]:
        cur = self._con().execute(
            "SELECT user_id, segment, strategy, items, ts, impression_id FROM impressions ORDER BY seq"
        )
        for user, segment, strategy, items, ts, iid in cur:
            yield Impression(user, segment, strategy, tuple(json.loads(items)), ts, iid)

    def erase_user(self, user_id: str) -> dict[str, int]:
        # Recent history is the newest rows of `events` (no copy of its own), so it goes with them.
        # The bandit counts are per segment, not per user: nothing of the user remains there.
        with self._write() as con:
            recent = len(self.recent(user_id))
            events = con.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount
            impressions = con.execute("DELETE FROM impressions WHERE user_id = ?", (user_id,)).rowcount
        self._con().execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the deleted rows leave the WAL file too
        self._con().execute("VACUUM")  # and the freed pages of the main file
        return {"events": events, "recent": recent, "impressions": impressions}

    def ping(self) -> None:
        try:
            self._con().execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise ServiceUnavailable("sqlite", str(self.path), f"event store {self.path.name}: {exc}") from exc

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None


# -- Redis ----------------------------------------------------------------------------------------

# KEYS: 1 dedup key of the event id, 2 log stream, 3 the user's recent list, 4 the user's impressions
#       list, 5 bandit hash, 6 the active-users sorted set (user -> last receive time)
# ARGV: event_id, user_id, item_id, event, ts, received, history_length, recent_ttl, dedup_ttl,
#       is_reward (0/1)
_APPEND_LUA = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[9])) then
  return 0
end
redis.call('XADD', KEYS[2], '*', 'event_id', ARGV[1], 'user_id', ARGV[2], 'item_id', ARGV[3],
           'event', ARGV[4], 'ts', ARGV[5], 'received', ARGV[6])
local entry = cjson.encode({ARGV[1], ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])})
redis.call('LPUSH', KEYS[3], entry)
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[7]) - 1)
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[8]))
redis.call('ZADD', KEYS[6], tonumber(ARGV[6]), ARGV[2])
if ARGV[10] == '1' then
  local imps = redis.call('LRANGE', KEYS[4], 0, -1)
  for i, raw in ipairs(imps) do
    local imp = cjson.decode(raw)
    if imp['r'] == 0 then
      for _, item in ipairs(imp['items']) do
        if item == ARGV[3] then
          imp['r'] = 1
          redis.call('LSET', KEYS[4], i - 1, cjson.encode(imp))
          redis.call('HINCRBYFLOAT', KEYS[5], imp['seg'] .. '\\t' .. imp['s'] .. '\\trewarded', 1)
          return 2
        end
      end
    end
  end
end
return 1
"""


class RedisEventStore:
    """The production backend (see the module docstring); keys under `prefix`."""

    kind = "redis"

    def __init__(
        self, url: str, prefix: str, params: EventsParams | None = None, dedup_seconds: int = 7 * 86400
    ) -> None:
        import redis

        self.url = url
        self.prefix = prefix
        self.params = params or EventsParams()
        self.dedup_seconds = dedup_seconds
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self._append = self.client.register_script(_APPEND_LUA)

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _unavailable(self, exc: Exception) -> ServiceUnavailable:
        where = _redacted(self.url)
        return ServiceUnavailable("redis", where, f"event store redis {where}: {type(exc).__name__}: {exc}")

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise self._unavailable(exc) from exc

    def append(self, events: Sequence[Event]) -> AppendResult:
        now = time.time()
        reward_types = set(self.params.reward_events)
        pipe = self.client.pipeline(transaction=False)
        for ev in events:
            self._append(
                keys=[
                    self._k("eid", ev.event_id),
                    self._k("log"),
                    self._k("recent", ev.user_id),
                    self._k("imp", ev.user_id),
                    self._k("bandit"),
                    self._k("active"),
                ],
                args=[
                    ev.event_id,
                    ev.user_id,
                    ev.item_id,
                    ev.event,
                    repr(ev.timestamp),
                    repr(now),
                    self.params.history_length,
                    self.params.recent_ttl_seconds,
                    self.dedup_seconds,
                    "1" if ev.event in reward_types else "0",
                ],
                client=pipe,
            )
        results = self._call(pipe.execute) if events else []
        accepted = sum(1 for r in results if int(r) > 0)
        return AppendResult(accepted, len(events) - accepted, sum(1 for r in results if int(r) == 2))

    def recent(self, user_id: str, limit: int | None = None) -> list[Event]:
        limit = min(limit or self.params.history_length, self.params.history_length)
        raw = self._call(self.client.lrange, self._k("recent", user_id), 0, limit - 1)
        since = time.time() - self.params.recent_ttl_seconds
        out = []
        for entry in raw:
            event_id, item_id, event, ts, received = json.loads(entry)
            if received >= since:
                out.append(Event(event_id, user_id, item_id, event, float(ts)))
        return out

    def log_impression(self, impression: Impression) -> None:
        self.log_impressions([impression])

    def log_impressions(self, impressions: Sequence[Impression]) -> None:
        """Each impression into the log stream and the user's capped list, its trial counted; one
        pipeline (MULTI) for the whole batch."""
        pipe = self.client.pipeline(transaction=True)
        for imp in impressions:
            entry = json.dumps(
                {
                    "id": imp.impression_id,
                    "seg": imp.segment,
                    "s": imp.strategy,
                    "items": list(imp.item_ids),
                    "ts": imp.timestamp,
                    "r": 0,
                }
            )
            key = self._k("imp", imp.user_id)
            pipe.xadd(
                self._k("impressions"),
                {
                    "impression_id": imp.impression_id,
                    "user_id": imp.user_id,
                    "segment": imp.segment,
                    "strategy": imp.strategy,
                    "items": json.dumps(list(imp.item_ids)),
                    "ts": repr(imp.timestamp),
                },
            )
            pipe.lpush(key, entry)
            pipe.ltrim(key, 0, self.params.attribution_impressions - 1)
            pipe.expire(key, self.params.recent_ttl_seconds)
            pipe.hincrbyfloat(self._k("bandit"), f"{imp.segment}\t{imp.strategy}\tshown", 1)
        self._call(pipe.execute)

    def active_users(self, since: float) -> dict[str, float]:
        """Users with an event received after `since` -> their latest receive time (and the set is
        trimmed of users idle for longer than `recent_ttl_seconds`)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zremrangebyscore(self._k("active"), "-inf", time.time() - self.params.recent_ttl_seconds)
        pipe.zrangebyscore(self._k("active"), f"({since!r}", "+inf", withscores=True)
        _, rows = self._call(pipe.execute)
        return {u.decode(): float(t) for u, t in rows}

    def arms(self) -> dict[str, dict[str, Arm]]:
        raw = self._call(self.client.hgetall, self._k("bandit"))
        counts: dict[tuple[str, str], dict[str, float]] = {}
        for key, value in raw.items():
            segment, strategy, what = key.decode().split("\t")
            counts.setdefault((segment, strategy), {})[what] = float(value)
        out: dict[str, dict[str, Arm]] = {}
        for (segment, strategy), c in counts.items():
            out.setdefault(segment, {})[strategy] = Arm(c.get("shown", 0.0), c.get("rewarded", 0.0))
        return out

    def _stream(self, key: str) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
        last = "-"
        while True:
            batch = self._call(self.client.xrange, key, min=last, count=10_000)
            if last != "-" and batch and batch[0][0].decode() == last:
                batch = batch[1:]
            if not batch:
                return
            yield from batch
            last = batch[-1][0].decode()

    def events(self) -> Iterator[Event]:
        for _, f in self._stream(self._k("log")):
            yield Event(
                f[b"event_id"].decode(),
                f[b"user_id"].decode(),
                f[b"item_id"].decode(),
                f[b"event"].decode(),
                float(f[b"ts"]),
            )

    def impressions(self) -> Iterator[Impression]:
        for _, f in self._stream(self._k("impressions")):
            yield Impression(
                f[b"user_id"].decode(),
                f[b"segment"].decode(),
                f[b"strategy"].decode(),
                tuple(json.loads(f[b"items"])),
                float(f[b"ts"]),
                f[b"impression_id"].decode(),
            )

    def erase_user(self, user_id: str) -> dict[str, int]:
        """Delete the user's stream entries (log and impressions), recent list, impression list and
        the dedup keys of their event ids. Streams are scanned whole: forgetting is rare, the log is
        not indexed by user."""
        counts = {"events": 0, "recent": 0, "impressions": 0}
        uid = user_id.encode()
        for key, name in ((self._k("log"), "events"), (self._k("impressions"), "impressions")):
            doomed = [(sid, f.get(b"event_id")) for sid, f in self._stream(key) if f.get(b"user_id") == uid]
            for start in range(0, len(doomed), 1000):
                chunk = doomed[start : start + 1000]
                self._call(self.client.xdel, key, *[sid for sid, _ in chunk])
                eids = [self._k("eid", e.decode()) for _, e in chunk if e is not None]
                if eids:
                    self._call(self.client.delete, *eids)
            counts[name] = len(doomed)
        counts["recent"] = int(self._call(self.client.llen, self._k("recent", user_id)))
        self._call(self.client.delete, self._k("recent", user_id), self._k("imp", user_id))
        self._call(self.client.zrem, self._k("active"), user_id)
        return counts

    def ping(self) -> None:
        self._call(self.client.ping)

    def close(self) -> None:
        self.client.close()


def _redacted(url: str) -> str:
    """host:port/db of a redis:// URL, never its password."""
    from urllib.parse import urlsplit

    try:
        u = urlsplit(url)
        return f"{u.hostname}:{u.port or 6379}{u.path or ''}"
    except ValueError:
        return "redis"


# -- opening ----------------------------------------------------------------------------------------


def store_location(ctx: StageContext) -> tuple[str, str]:
    """(backend, where) of the dataset's event store: ("redis", url) or ("sqlite", file path).

    `events.store: auto` follows the online store: Redis when `features.profile` is redis, else a
    sqlite file at `data/<name>/events/events.db`.
    """
    params = events_params(ctx.params)
    fp = ctx.params.features  # (read off the params: no import of the Feast glue)
    kind = params.store if params.store != "auto" else ("redis" if fp.profile == "redis" else "sqlite")
    if kind == "redis":
        if not fp.redis_url:
            raise ConfigError("events.store is redis but features.redis_url is not set (redis://host:port/db)")
        return "redis", fp.redis_url
    return "sqlite", str(ctx.paths.data / "events" / "events.db")


def open_store(ctx: StageContext) -> EventStore:
    """The dataset's event store (`store_location`), keys/files private to the dataset."""
    params = events_params(ctx.params)
    kind, where = store_location(ctx)
    if kind == "redis":
        return RedisEventStore(where, f"mmrec:events:{ctx.spec.name}:", params)
    return SqliteEventStore(where, params)


def erase_user(store_or_ctx: EventStore | StageContext, user_id: str) -> dict[str, int]:
    """Remove a user's events, recent history and impressions from the event store.

    Args:
        store_or_ctx: an open store, or a stage context (its dataset's store is opened and closed).
        user_id: the user to forget.

    Returns:
        what was removed: {"events": n, "recent": n, "impressions": n}.
    """
    if hasattr(store_or_ctx, "erase_user"):
        return store_or_ctx.erase_user(user_id)
    ctx = store_or_ctx
    kind, where = store_location(ctx)
    if kind == "sqlite" and not Path(where).is_file():
        return {"events": 0, "recent": 0, "impressions": 0}  # nothing was ever posted
    store = open_store(ctx)
    try:
        return store.erase_user(user_id)
    finally:
        store.close()
