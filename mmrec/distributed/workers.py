"""State a Dask worker keeps between tasks: encoders, feature caches and models, built once.

Loading an encoder (hundreds of MB of weights) or a model per shard would cost more than the
shard's work, so the first task on a worker builds it and later tasks reuse it. The state lives
in a `WorkerPlugin` (Dask's documented home for per-worker resources); a worker that joins later
(e.g. the replacement of a killed one) gets the plugin from the scheduler too. Tasks running
where the plugin is not registered (a plain thread, a foreign cluster) fall back to one state per
process, which is the same thing for process workers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

PLUGIN_NAME = "mmrec-worker-state"


class WorkerState:
    """Objects keyed by what determines them (e.g. encoder name + settings), built on first use."""

    def __init__(self) -> None:
        self._objects: dict[Any, Any] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._guard = threading.Lock()
        self.builds: dict[Any, int] = {}

    def lock(self, key: Any) -> threading.Lock:
        """A lock per key: tasks sharing a stateful object (a cache) take turns on it."""
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def get(self, key: Any, build: Callable[[], Any]) -> Any:
        """The object for `key`, built by `build()` the first time it is asked for on this worker."""
        with self.lock(("build", key)):
            if key not in self._objects:
                self._objects[key] = build()
                self.builds[key] = self.builds.get(key, 0) + 1
            return self._objects[key]

    def drop(self, key: Any) -> None:
        self._objects.pop(key, None)


try:  # distributed is in the [dask] extra; without it only the process-level state exists
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # pragma: no cover
    WorkerPlugin = object  # type: ignore[misc,assignment]


class StatePlugin(WorkerPlugin):
    """Holds one `WorkerState` per worker (`Client.register_plugin(StatePlugin())`)."""

    name = PLUGIN_NAME
    idempotent = True  # registering it again (every driver does) keeps the worker's state

    def setup(self, worker: Any) -> None:
        self.state = WorkerState()

    def teardown(self, worker: Any) -> None:
        self.state = WorkerState()


_PROCESS_STATE = WorkerState()


def worker_state() -> WorkerState:
    """This worker's state (the plugin's), or the process-level one outside a plugin-equipped worker."""
    try:
        from distributed import get_worker

        plugin = get_worker().plugins.get(PLUGIN_NAME)
    except (ImportError, ValueError):  # not running inside a Dask worker
        return _PROCESS_STATE
    state = getattr(plugin, "state", None)
    return state if isinstance(state, WorkerState) else _PROCESS_STATE


def ensure_plugin(client: Any) -> None:
    """Register the state plugin on the cluster (a no-op where it already is)."""
    client.register_plugin(StatePlugin(), name=PLUGIN_NAME)
