"""Progress of long work (feature extraction, training) for whoever is watching.

The library reports progress through `report(key, done, total, message)`; what happens with it
depends on who runs the library: nothing by default (the log lines and the terminal's tqdm bar
are the library's own), a Prefect progress artifact when a flow task installed a hook with
`progress_hook(fn)` (mmrec_flows/tasks.py does; the library never imports Prefect). The hook lives in
a context variable, so concurrent tasks in one process each report to their own hook.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

log = logging.getLogger(__name__)

#: (key, done, total, message): key names the work ("extract-image", "train-lightgcn")
ProgressFn = Callable[[str, int, int, str], None]

_HOOK: ContextVar[ProgressFn | None] = ContextVar("mmrec_progress_hook", default=None)


@contextmanager
def progress_hook(fn: ProgressFn | None) -> Iterator[None]:
    """Send every `report` made inside the block (in this context) to `fn`."""
    token = _HOOK.set(fn)
    try:
        yield
    finally:
        _HOOK.reset(token)


def report(key: str, done: int, total: int, message: str = "") -> None:
    """Tell the installed hook (if any) how far `key` is; a failing hook never stops the work."""
    fn = _HOOK.get()
    if fn is None:
        return
    try:
        fn(key, int(done), int(total), message)
    except Exception as exc:  # noqa: BLE001 - progress display must not break a run
        log.debug("progress hook failed for %s: %s", key, exc)


def format_duration(seconds: float) -> str:
    """1h02m, 3m05s or 12s."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class Rate:
    """Items per second and the ETA of a job of `total` items, measured from creation."""

    def __init__(self, total: int) -> None:
        self.total = int(total)
        self.start = time.perf_counter()

    def line(self, done: int) -> str:
        """'120/1682 items (7%), 14.2 items/s, ETA 1m50s'."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = done / elapsed
        pct = 100.0 * done / self.total if self.total else 100.0
        eta = format_duration((self.total - done) / rate) if rate > 0 and done < self.total else "-"
        return f"{done}/{self.total} items ({pct:.0f}%), {rate:.1f} items/s, ETA {eta}"
