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
- `erase_user` removes a user's events, recent history and impressions (the forget feature)
  and leaves a tombstone: the user's pseudonym (mmrec.privacy.forget_list.Pseudonymiser, a keyed
  HMAC under a key derived from the dataset's salt; never the raw id, never the audit's
  pseudonym). From then on `append` and `log_impressions` drop the user's records, whichever
  process writes them: another API worker or node flushing impressions it buffered before the
  forget, or logging some before it noticed the forget, cannot write the user back. The check
  runs inside the write's own transaction (sqlite) or script (Redis), so a forget commits either
  before a batch (which then sees the tombstone) or after it (and erases what it wrote).
  New events of a forgotten user are dropped too (`AppendResult.forgotten`), for good: the forget
  list keeps the id out of the warehouse at every ingest from then on, so events kept in the log
  would train nothing and only hold the raw id of someone who asked to be forgotten. A person
  who comes back is a new user with a new id.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mmrec.errors import ConfigError, ServiceUnavailable
from mmrec.events.bandit import Arm
from mmrec.events.config import EventsParams, events_params
from mmrec.events.schema import Event

if TYPE_CHECKING:
    from mmrec.privacy.forget_list import Pseudonymiser
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
    forgotten: int = 0  # events of users with a tombstone: not stored (see the module docstring)


class EventStore(Protocol):
    """The interface both backends implement (see the module docstring)."""

    kind: str

    def append(self, events: Sequence[Event]) -> AppendResult: ...
    def recent(self, user_id: str, limit: int | None = None) -> list[Event]: ...
    def log_impression(self, impression: Impression) -> None: ...
    def log_impressions(self, impressions: Sequence[Impression]) -> int: ...
    def active_users(self, since: float) -> dict[str, float]: ...
    def arms(self) -> dict[str, dict[str, Arm]]: ...
    def events(self) -> Iterator[Event]: ...
    def impressions(self) -> Iterator[Impression]: ...
    def erase_user(self, user_id: str) -> dict[str, int]: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...


# -- tombstones -----------------------------------------------------------------------------------

#: the purpose the tombstones' pseudonyms are derived for (mmrec.privacy.forget_list.purpose_key)
TOMBSTONE_PURPOSE = "event-store tombstones"


class Tombstones:
    """User id -> the pseudonym a store's tombstone holds, under the dataset's salt.

    Args:
        privacy: the dataset's privacy folder (where the salt is); None for a store opened
            without one, which can neither erase a user nor write once a tombstone exists.
        where: the store, for error messages.
    """

    def __init__(self, privacy: str | os.PathLike[str] | None, where: str) -> None:
        self.where = where
        self.folder = Path(privacy) if privacy is not None else None
        self._of: Pseudonymiser | None = None
        if self.folder is not None:
            from mmrec.privacy.forget_list import Pseudonymiser  # (pandas behind it: imported when used)

            self._of = Pseudonymiser(self.folder, TOMBSTONE_PURPOSE)

    def known(self, user_ids: Iterable[str]) -> dict[str, str] | None:
        """Each distinct user's pseudonym (one HMAC each), or None while the dataset has no salt."""
        if self._of is None or self._of.key() is None:
            return None
        return self._map(self._of, user_ids)

    def required(self, user_ids: Iterable[str], create: bool = False) -> dict[str, str]:
        """As `known`, but a missing salt is an error (`create` makes it, as a forget does)."""
        if self._of is None:
            raise ConfigError(
                f"event store {self.where}: opened without the dataset's privacy folder, so it cannot "
                "record or recognise forgotten users; open it with open_store(ctx) or pass privacy=privacy/<dataset>"
            )
        if self._of.key(create) is None:
            raise ConfigError(
                f"event store {self.where} holds tombstones of forgotten users but there is no salt at "
                f"{self.folder}/salt: every process writing to this store must see the dataset's privacy "
                "folder (a shared workspace); restore the salt from a backup"
            )
        return self._map(self._of, user_ids)

    @staticmethod
    def _map(of: Pseudonymiser, user_ids: Iterable[str]) -> dict[str, str]:
        return {u: str(of(u)) for u in set(user_ids)}


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
CREATE TABLE IF NOT EXISTS forgotten (
    pseudonym TEXT PRIMARY KEY
) WITHOUT ROWID;
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
    `privacy` is the dataset's privacy folder (the salt of the tombstones; `open_store` passes it).
    """

    kind = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        params: EventsParams | None = None,
        privacy: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.params = params or EventsParams()
        self.tombstones = Tombstones(privacy, str(self.path))
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

    def _forgotten(self, con: sqlite3.Connection, user_ids: Iterable[str]) -> set[str]:
        """The users among `user_ids` with a tombstone, read inside the writer's transaction: a
        forget commits before it (the batch sees the tombstone) or after it (and erases the batch).
        One indexed read per batch while nobody was forgotten; else one HMAC per distinct user."""
        if con.execute("SELECT 1 FROM forgotten LIMIT 1").fetchone() is None:
            return set()
        by_pseudonym = {p: u for u, p in self.tombstones.required(user_ids).items()}
        keys = list(by_pseudonym)
        found: set[str] = set()
        for start in range(0, len(keys), 500):  # well under sqlite's bound on query parameters
            chunk = keys[start : start + 500]
            rows = con.execute(
                f"SELECT pseudonym FROM forgotten WHERE pseudonym IN ({','.join('?' * len(chunk))})", chunk
            )
            found.update(by_pseudonym[p] for (p,) in rows)
        return found

    def append(self, events: Sequence[Event]) -> AppendResult:
        accepted = rewarded = forgotten = 0
        now = time.time()
        reward_types = set(self.params.reward_events)
        with self._write() as con:
            gone = self._forgotten(con, (ev.user_id for ev in events))
            for ev in events:
                if ev.user_id in gone:
                    forgotten += 1
                    continue
                cur = con.execute(
                    "INSERT OR IGNORE INTO events (event_id, user_id, item_id, event, ts, received) VALUES (?,?,?,?,?,?)",
                    (ev.event_id, ev.user_id, ev.item_id, ev.event, ev.timestamp, now),
                )
                if cur.rowcount == 0:
                    continue
                accepted += 1
                if ev.event in reward_types:
                    rewarded += self._attribute(con, ev)
        return AppendResult(accepted, len(events) - accepted - forgotten, rewarded, forgotten)

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

    def log_impressions(self, impressions: Sequence[Impression]) -> int:
        """Each impression and its trial of (segment, strategy), in one transaction; those of
        forgotten users are dropped (their count is returned)."""
        dropped = 0
        with self._write() as con:
            gone = self._forgotten(con, (imp.user_id for imp in impressions))
            for imp in impressions:
                if imp.user_id in gone:
                    dropped += 1
                    continue
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
        return dropped

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
        # The tombstone is written in the same transaction as the deletions (module docstring).
        tombstone = self.tombstones.required([user_id], create=True)[user_id]
        with self._write() as con:
            con.execute("INSERT OR IGNORE INTO forgotten (pseudonym) VALUES (?)", (tombstone,))
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

#: what a script returns for a forgotten user (nothing written), and when it needs the caller's
#: pseudonym of the user (tombstones exist but the caller sent none: it had no salt yet)
_FORGOTTEN, _NEED_PSEUDONYM = 3, -1


def _tombstone_lua(key: str, arg: str) -> str:
    """Lua: return early when the user whose pseudonym is `arg` has a tombstone in set `key`."""
    return f"""
if {arg} ~= '' then
  if redis.call('SISMEMBER', {key}, {arg}) == 1 then
    return {_FORGOTTEN}
  end
elseif redis.call('EXISTS', {key}) == 1 then
  return {_NEED_PSEUDONYM}
end
"""


# KEYS: 1 dedup key of the event id, 2 log stream, 3 the user's recent list, 4 the user's impressions
#       list, 5 bandit hash, 6 the active-users sorted set (user -> last receive time), 7 tombstones
# ARGV: event_id, user_id, item_id, event, ts, received, history_length, recent_ttl, dedup_ttl,
#       is_reward (0/1), the user's tombstone pseudonym ('' when the caller has no salt)
# returns 0 duplicate, 1 stored, 2 stored and rewarded, _FORGOTTEN, _NEED_PSEUDONYM
_APPEND_LUA = (
    _tombstone_lua("KEYS[7]", "ARGV[11]")
    + """
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
)

# KEYS: 1 tombstones, 2 impressions stream, 3 the user's impressions list, 4 bandit hash
# ARGV: 1 the user's tombstone pseudonym (or ''), 2 impression_id, 3 user_id, 4 segment,
#       5 strategy, 6 items (JSON), 7 ts, 8 the list entry (JSON), 9 list length, 10 list TTL,
#       11 the bandit field of (segment, strategy)
# returns 1 written, _FORGOTTEN, _NEED_PSEUDONYM
_IMPRESSION_LUA = (
    _tombstone_lua("KEYS[1]", "ARGV[1]")
    + """
redis.call('XADD', KEYS[2], '*', 'impression_id', ARGV[2], 'user_id', ARGV[3], 'segment', ARGV[4],
           'strategy', ARGV[5], 'items', ARGV[6], 'ts', ARGV[7])
redis.call('LPUSH', KEYS[3], ARGV[8])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[9]) - 1)
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[10]))
redis.call('HINCRBYFLOAT', KEYS[4], ARGV[11], 1)
return 1
"""
)


class RedisEventStore:
    """The production backend (see the module docstring); keys under `prefix`, the tombstones in
    the set `<prefix>forgotten`; `privacy` is the dataset's privacy folder (`open_store` passes
    it). Every node writing to the store must see that folder's salt (a shared workspace, as the
    forget list already needs)."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        prefix: str,
        params: EventsParams | None = None,
        dedup_seconds: int = 7 * 86400,
        privacy: str | os.PathLike[str] | None = None,
    ) -> None:
        import redis

        self.url = url
        self.prefix = prefix
        self.params = params or EventsParams()
        self.dedup_seconds = dedup_seconds
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self.tombstones = Tombstones(privacy, f"redis {_redacted(url)} {prefix}")
        self._append = self.client.register_script(_APPEND_LUA)
        self._impression = self.client.register_script(_IMPRESSION_LUA)

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

    def _scripts(self, user_ids: Sequence[str], call: Any, transaction: bool) -> list[int]:
        """One script per record in one pipeline, `call(i, pseudonym, pipe)` queueing record i; a
        record refused for want of a pseudonym (tombstones exist, this process had not read the
        salt yet) runs again with one. Returns each record's script result."""
        results = [0] * len(user_ids)
        pending = list(range(len(user_ids)))
        names = self.tombstones.known(user_ids)
        while pending:
            pipe = self.client.pipeline(transaction=transaction)
            for i in pending:
                call(i, names[user_ids[i]] if names else "", pipe)
            retry = []
            for i, r in zip(pending, self._call(pipe.execute), strict=True):
                results[i] = int(r)
                if results[i] == _NEED_PSEUDONYM:
                    retry.append(i)
            if retry and names is not None:  # cannot happen: a script given a pseudonym always answers
                raise RuntimeError(f"event store {self.tombstones.where}: a script asked for a pseudonym it was given")
            names = self.tombstones.required(user_ids) if retry else names
            pending = retry
        return results

    def append(self, events: Sequence[Event]) -> AppendResult:
        now = time.time()
        reward_types = set(self.params.reward_events)

        def queue(i: int, tombstone: str, pipe: Any) -> None:
            ev = events[i]
            self._append(
                keys=[
                    self._k("eid", ev.event_id),
                    self._k("log"),
                    self._k("recent", ev.user_id),
                    self._k("imp", ev.user_id),
                    self._k("bandit"),
                    self._k("active"),
                    self._k("forgotten"),
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
                    tombstone,
                ],
                client=pipe,
            )

        results = self._scripts([ev.user_id for ev in events], queue, transaction=False)
        forgotten = results.count(_FORGOTTEN)
        accepted = results.count(1) + results.count(2)
        return AppendResult(accepted, len(events) - accepted - forgotten, results.count(2), forgotten)

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

    def log_impressions(self, impressions: Sequence[Impression]) -> int:
        """Each impression into the log stream and the user's capped list, its trial counted; one
        pipeline (MULTI) for the whole batch, one script per impression that first checks the
        user's tombstone (SISMEMBER). Returns how many were dropped as forgotten."""

        def queue(i: int, tombstone: str, pipe: Any) -> None:
            imp = impressions[i]
            items = json.dumps(list(imp.item_ids))
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
            self._impression(
                keys=[self._k("forgotten"), self._k("impressions"), self._k("imp", imp.user_id), self._k("bandit")],
                args=[
                    tombstone,
                    imp.impression_id,
                    imp.user_id,
                    imp.segment,
                    imp.strategy,
                    items,
                    repr(imp.timestamp),
                    entry,
                    self.params.attribution_impressions,
                    self.params.recent_ttl_seconds,
                    f"{imp.segment}\t{imp.strategy}\tshown",
                ],
                client=pipe,
            )

        results = self._scripts([imp.user_id for imp in impressions], queue, transaction=True)
        return results.count(_FORGOTTEN)

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
        not indexed by user. The tombstone is added first: every write that runs after it drops the
        user, and every write that ran before it is in what the scan then deletes."""
        tombstone = self.tombstones.required([user_id], create=True)[user_id]
        self._call(self.client.sadd, self._k("forgotten"), tombstone)
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
    """The dataset's event store (`store_location`), keys/files private to the dataset, its
    tombstones keyed by the dataset's salt (privacy/<name>/)."""
    from mmrec.privacy.forget_list import privacy_dir

    params = events_params(ctx.params)
    kind, where = store_location(ctx)
    if kind == "redis":
        return RedisEventStore(where, f"mmrec:events:{ctx.spec.name}:", params, privacy=privacy_dir(ctx.paths))
    return SqliteEventStore(where, params, privacy=privacy_dir(ctx.paths))


def erase_user(store_or_ctx: EventStore | StageContext, user_id: str) -> dict[str, int]:
    """Remove a user's events, recent history and impressions from the event store, and leave
    the user's tombstone there (see the module docstring).

    The store is opened even when no sqlite file exists yet, so the tombstone is there before any
    API process starts writing to it.

    Args:
        store_or_ctx: an open store, or a stage context (its dataset's store is opened and closed).
        user_id: the user to forget.

    Returns:
        what was removed: {"events": n, "recent": n, "impressions": n}.
    """
    if hasattr(store_or_ctx, "erase_user"):
        return store_or_ctx.erase_user(user_id)
    store = open_store(store_or_ctx)
    try:
        return store.erase_user(user_id)
    finally:
        store.close()
