"""Posted events, checked row by row against the interactions contract before anything is stored.

The API's request model (mmrec/serve/events_api.py) checks the shape (ids by the platform's id
rule, bounded batch); `check_events` adds what needs the served catalogue and the validation
params: the item exists, the event type is in the vocabulary, the timestamp parses and lies in
the range the warehouse validation accepts (`validate.timestamp_min` .. now + `future_tolerance`),
and no event id repeats within the batch with different content. Every problem names its row and
field, and a batch with any problem is refused as a whole (nothing half-written).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from mmrec.ids import id_problem


@dataclass(frozen=True)
class Event:
    """One validated event. `timestamp`: seconds since the epoch, UTC."""

    event_id: str
    user_id: str
    item_id: str
    event: str
    timestamp: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Problem:
    """Why row `row` of a batch was refused: `field` and a message that says how to fix it."""

    row: int
    field: str
    msg: str

    def to_dict(self) -> dict[str, Any]:
        return {"loc": ["body", "events", self.row, self.field], "msg": self.msg, "type": "event_invalid"}


def parse_timestamp(value: Any, now: float) -> float:
    """Seconds since the epoch from an ISO-8601 string or a number of seconds; `now` when None.

    Raises:
        ValueError: unparsable, not finite, or a string without a date.
    """
    if value is None:
        return now
    if isinstance(value, bool):
        raise ValueError("a timestamp is an ISO-8601 string or seconds since the epoch, not a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(float(value)):
            raise ValueError(f"timestamp {value!r} is not a finite number")
        return float(value)
    if isinstance(value, str):
        import pandas as pd

        try:
            ts = pd.Timestamp(value)
        except (ValueError, OverflowError) as exc:
            raise ValueError(
                f"timestamp {value[:40]!r} does not parse as ISO-8601 (e.g. 2026-01-31T12:00:00Z)"
            ) from exc
        if ts is pd.NaT:
            raise ValueError(f"timestamp {value[:40]!r} is not a time")
        if ts.tzinfo is None:
            ts = ts.tz_localize("UTC")  # naive times are UTC, as in the interactions contract
        return float(ts.timestamp())
    raise ValueError(f"a timestamp is an ISO-8601 string or seconds since the epoch, not {type(value).__name__}")


def check_events(
    rows: Sequence[Mapping[str, Any]],
    known_item: Callable[[str], bool],
    event_types: Iterable[str],
    bounds: tuple[float, float],
    now: float | None = None,
) -> tuple[list[Event], list[Problem]]:
    """The valid events of `rows` and every problem found (the caller refuses the batch if any).

    Args:
        rows: dicts with event_id, user_id, item_id, event and optional timestamp.
        known_item: whether an item id is in the served catalogue (unknown items are refused:
            they have no content and cannot be recommended or folded in).
        event_types: the accepted `event` values.
        bounds: accepted timestamp range (seconds since the epoch), the warehouse validation's.
        now: the receive time given to events without a timestamp.
    """
    now = time.time() if now is None else now
    types = set(event_types)
    events: list[Event] = []
    problems: list[Problem] = []
    seen: dict[str, tuple[Any, ...]] = {}
    for i, row in enumerate(rows):
        bad = False
        for key in ("event_id", "user_id", "item_id"):
            value = row.get(key)
            why = "is missing" if value is None else id_problem(value)
            if why is not None:
                problems.append(Problem(i, key, f"{key}: {why}"))
                bad = True
        event = row.get("event")
        if not isinstance(event, str) or event not in types:
            problems.append(Problem(i, "event", f"event {event!r} is not one of {sorted(types)}"))
            bad = True
        try:
            ts = parse_timestamp(row.get("timestamp"), now)
            if not bounds[0] <= ts <= bounds[1]:
                lo, hi = (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(b)) for b in bounds)
                problems.append(
                    Problem(
                        i,
                        "timestamp",
                        f"timestamp {row.get('timestamp')!r} is outside the accepted range "
                        f"{lo} .. {hi} (validate.timestamp_min / future_tolerance)",
                    )
                )
                bad = True
        except ValueError as exc:
            problems.append(Problem(i, "timestamp", str(exc)))
            bad = True
        if bad:
            continue
        item = str(row["item_id"])
        if not known_item(item):
            problems.append(Problem(i, "item_id", f"unknown item id {item!r}: not in the served catalogue"))
            continue
        ev = Event(str(row["event_id"]), str(row["user_id"]), item, str(event), ts)
        content = (ev.user_id, ev.item_id, ev.event, ev.timestamp)
        if ev.event_id in seen:
            if seen[ev.event_id] != content:
                problems.append(
                    Problem(
                        i,
                        "event_id",
                        f"event_id {ev.event_id!r} repeats an earlier row of this batch "
                        "with different content (event ids must be unique)",
                    )
                )
            continue  # an exact repeat is the same event: kept once
        seen[ev.event_id] = content
        events.append(ev)
    return events, problems
