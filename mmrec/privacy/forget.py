"""`forget_user`: remove one user from every store the platform writes, then write an audit record.

The stores are an explicit, ordered list (`ERASERS`): the forget list first (so a pipeline run
that starts meanwhile already drops the user), the stores that answer requests next (online
store, nightly top-K), then the warehouse and everything derived from it, the models, reports
and caches. Another store adds one line here.

Each eraser is idempotent and crash-safe (mmrec.privacy.erasers), so a forget that fails midway
is simply run again: the audit record of the failed attempt lists what was done and which
stores are left, the command exits non-zero and says to re-run it. After the erasers, a scan of
every folder the platform writes (decoding parquet, npz, gzip and sqlite) reports any file that
still holds the id, so an incomplete erasure is never reported as complete.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mmrec.context import StageContext
from mmrec.errors import DataError
from mmrec.ids import id_problem
from mmrec.privacy import erasers
from mmrec.privacy.audit import append_audit
from mmrec.privacy.forget_list import ForgetList

log = logging.getLogger(__name__)

Eraser = Callable[[StageContext, str], dict[str, int]]

#: (store name, eraser), in the order they run.
ERASERS: list[tuple[str, Eraser]] = [
    # the event log (sqlite or Redis stream), its snapshot and quarantine: before the Redis online
    # store, whose eraser rewrites Redis's append-only file after every Redis deletion is done
    ("events", erasers.erase_events),
    ("online_store", erasers.erase_online_sqlite),
    ("online_store_redis", erasers.erase_online_redis),
    ("recommendations", erasers.erase_recommendations),
    ("warehouse", erasers.erase_warehouse),
    ("validated", erasers.erase_validated),
    ("splits", erasers.erase_splits),
    ("feast_tables", erasers.erase_feast_tables),
    ("models", erasers.erase_models),
    ("reports", erasers.erase_reports),
    ("dvc_cache", erasers.erase_dvc_cache),  # last: commits the rewritten outputs, then drops stale objects
]


@dataclass
class ForgetResult:
    """What one forget did: per store, counts removed; failures; files that still hold the id."""

    dataset: str
    pseudonym: str
    time: str
    removed: dict[str, dict[str, int]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    left: list[str] = field(default_factory=list)
    known: bool = False

    @property
    def complete(self) -> bool:
        return not self.failed and not self.left

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "pseudonym": self.pseudonym,
            "time": self.time,
            "complete": self.complete,
            "known": self.known,
            "removed": self.removed,
            "failed": self.failed,
            "left": self.left,
        }


def check_user_id(user_id: str) -> str:
    problem = id_problem(user_id)
    if problem is not None:
        raise DataError(f"--user {user_id!r}: {problem}")
    return user_id


def forget_user(ctx: StageContext, user_id: str, scan: bool = True) -> ForgetResult:
    """Forget `user_id` in `ctx`'s dataset and workspace; always appends an audit record.

    Args:
        scan: after the erasers, search every platform folder for what is left (seconds on a
            small workspace; the API passes False to answer fast and leaves it to `mmrec forget`).

    Returns:
        The result; `complete` is False when a store failed or a file still holds the id (the
        audit record says which; run the forget again).
    """
    check_user_id(user_id)
    forget = ForgetList.load(ctx.paths, create=True)
    result = ForgetResult(ctx.spec.name, forget.add(user_id), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    for name, eraser in ERASERS:
        try:
            counts = eraser(ctx, user_id) or {}
        except Exception as exc:  # noqa: BLE001 - every other store is still erased; this one is reported
            msg = str(exc).replace(user_id, "[forgotten]")
            result.failed[name] = f"{type(exc).__name__}: {msg}"
            log.error("forget: store %s failed: %s", name, result.failed[name])
            continue
        result.removed[name] = {k: int(v) for k, v in counts.items()}
    result.known = any(v for c in result.removed.values() for v in c.values())
    if scan:
        result.left = erasers.leftovers(ctx, user_id)
    append_audit(ctx.paths, result.to_dict())
    return result
