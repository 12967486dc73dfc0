"""The event log into the warehouse: a validated, deduplicated snapshot the next training reads.

`ingest_events(ctx)` reads every event of the dataset's store (sqlite or Redis), drops repeats of
an `event_id` (the first stored wins; the API already refuses most), runs the interactions
contract's row checks on them through the same Great Expectations suite the `validate` stage
uses (`interactions_checks`: ids, timestamp parses and lies in range, item in the validated
items table), quarantines failing rows with their reason, and writes
`data/<name>/events/ingested.parquet` (`user_id, item_id, timestamp, event, event_id`) atomically.
The warehouse `ingest` stage appends that snapshot to the dataset's interactions
(mmrec/data/warehouse.py), so `validate`, `split` and `train` see the events; DVC versions the
snapshot as the `ingest_events` stage's output (dvc.yaml).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mmrec.constants import EVENT, ITEM_ID, TIMESTAMP, USER_ID
from mmrec.privacy.forget_list import ForgetList, drop_forgotten

if TYPE_CHECKING:
    from mmrec.events.store import EventStore
    from mmrec.paths import DatasetPaths
    from mmrec.stages import StageContext

log = logging.getLogger(__name__)

EVENT_ID = "event_id"
COLUMNS = [USER_ID, ITEM_ID, TIMESTAMP, EVENT, EVENT_ID]


def snapshot_path(paths: DatasetPaths) -> Path:
    """Where the ingested snapshot lives (the `ingest_events` stage's output)."""
    return paths.data / "events" / "ingested.parquet"


def quarantine_path(paths: DatasetPaths) -> Path:
    return paths.data / "events" / "quarantine.parquet"


def events_frame(store: EventStore) -> pd.DataFrame:
    """Every stored event as a frame in log order (timestamps as UTC datetimes)."""
    rows = [e.to_dict() for e in store.events()]
    frame = pd.DataFrame(rows, columns=["event_id", "user_id", "item_id", "event", "timestamp"])
    frame[TIMESTAMP] = pd.to_datetime(frame["timestamp"].astype("float64"), unit="s", utc=True)
    return frame.astype({"event_id": str, "user_id": str, "item_id": str, "event": str})[COLUMNS]


def validate_events(
    frame: pd.DataFrame, valid_items: list[str] | None, validate: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(valid rows, quarantined rows with `check` and `reason`) under the interactions suite."""
    from mmrec.validation.suites import SuiteRunner, interactions_checks

    if frame.empty:
        return frame, pd.DataFrame(columns=[*COLUMNS, "check", "reason"])
    checks = interactions_checks(validate, list(frame.columns), valid_items, None)
    outcomes = SuiteRunner().run("events", frame, checks)
    bad: dict[int, tuple[str, str]] = {}
    for name, outcome in outcomes.items():
        if outcome.error:
            raise RuntimeError(f"validation check {name} could not run on the event log: {outcome.error}")
        for pos in outcome.positions:
            if pos not in bad:
                value = frame.iloc[pos][outcome.check.column] if outcome.check.column else None
                reason = outcome.check.reason(frame, pos, value) if outcome.check.reason else name
                bad[pos] = (name, reason)
    mask = frame.index.isin([frame.index[p] for p in bad])
    quarantined = frame[mask].copy()
    quarantined["check"] = [bad[p][0] for p in sorted(bad)]
    quarantined["reason"] = [bad[p][1] for p in sorted(bad)]
    return frame[~mask].reset_index(drop=True), quarantined.reset_index(drop=True)


def _write(frame: pd.DataFrame, path: Path) -> None:
    """Atomically, and not at all when the file already holds the same rows: an unchanged snapshot
    keeps its mtime, so the split's cache key (size + mtime of its deps) does not move."""
    if path.is_file():
        try:
            if pd.read_parquet(path).equals(frame):
                return
        except Exception:  # noqa: BLE001 - unreadable: rewrite it
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _valid_items(paths: DatasetPaths) -> list[str] | None:
    for path in (paths.validated_table("items"), paths.table("items")):
        if path.is_file():
            return pd.read_parquet(path, columns=[ITEM_ID])[ITEM_ID].astype(str).tolist()
    return None


def ingest_events(ctx: StageContext, store: EventStore | None = None) -> dict[str, Any]:
    """Snapshot, deduplicate and validate the event log (see the module docstring).

    Returns:
        the report also written to `reports/<name>/events_ingest.json`.
    """
    from mmrec.events.store import open_store, store_location

    kind, where = store_location(ctx)
    own = store is None
    if store is None and kind == "sqlite" and not Path(where).is_file():
        frame = events_frame_empty()
    else:
        store = store or open_store(ctx)
        try:
            frame = events_frame(store)
        finally:
            if own:
                store.close()
    read = len(frame)
    frame = frame.drop_duplicates(EVENT_ID, keep="first").reset_index(drop=True)
    duplicates = read - len(frame)
    # users forgotten since (`mmrec forget`) never reach the warehouse again, as at ingest
    frame, forgotten = drop_forgotten(frame, USER_ID, ForgetList.load(ctx.paths))
    valid, quarantined = validate_events(frame, _valid_items(ctx.paths), ctx.params.validate_)
    valid = valid.sort_values([TIMESTAMP, EVENT_ID], kind="stable").reset_index(drop=True)
    _write(valid, snapshot_path(ctx.paths))
    _write(quarantined, quarantine_path(ctx.paths))
    report = {
        "dataset": ctx.spec.name,
        "store": kind,
        "read": read,
        "duplicates": duplicates,
        "forgotten": forgotten,
        "quarantined": len(quarantined),
        "rows": len(valid),
        "path": str(snapshot_path(ctx.paths)),
        "reasons": quarantined["reason"].value_counts().head(20).to_dict() if len(quarantined) else {},
    }
    out = ctx.paths.reports / "events_ingest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out)
    log.info(
        "event log: %d read, %d duplicates, %d quarantined, %d ingested", read, duplicates, len(quarantined), len(valid)
    )
    return report


def events_frame_empty() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=str) for c in COLUMNS})
    frame[TIMESTAMP] = pd.Series(dtype="datetime64[ns, UTC]")
    return frame
