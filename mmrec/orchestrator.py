"""How the library reaches the orchestrator without importing it: an entry point.

`mmrec pipeline` and `mmrec recommend --prefect` run flows, but the library must not depend on
the orchestrator (Prefect) or on the package holding the flows. The orchestrator registers itself
instead, in its distribution's metadata (pyproject.toml of this repo):

    [project.entry-points."mmrec.orchestrators"]
    prefect = "mmrec_flows.orchestrator"

The entry point names an object (here a module) with two callables that return the run's final
state (`is_completed()`, `message`, `result()`):

    run_training(dataset, params, workspace, root, extract=True, register_best=True)
    run_nightly(dataset, params, workspace, root, k)

Another orchestrator (Airflow, Dagster, a test double) plugs in by registering its own entry
point and setting `MMREC_ORCHESTRATOR` to its name.
"""

from __future__ import annotations

import os
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Protocol

from mmrec.errors import ConfigError

GROUP = "mmrec.orchestrators"
DEFAULT = "prefect"


class Orchestrator(Protocol):
    def run_training(
        self,
        dataset: str,
        params: str,
        workspace: str,
        root: str | None,
        extract: bool = True,
        register_best: bool = True,
        tune: bool = False,
        tune_trials: int | None = None,
        tune_timeout: float | None = None,
    ) -> Any: ...

    def run_nightly(self, dataset: str, params: str, workspace: str, root: str | None, k: int | None) -> Any: ...


def available() -> dict[str, EntryPoint]:
    """Installed orchestrators by name."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load_orchestrator(name: str | None = None) -> Orchestrator:
    """The orchestrator `name` (default: `MMREC_ORCHESTRATOR`, else "prefect").

    Raises:
        ConfigError: none of that name is installed, with what is and how to install the flows.
    """
    name = name or os.environ.get("MMREC_ORCHESTRATOR") or DEFAULT
    found = available()
    if name not in found:
        have = ", ".join(sorted(found)) or "none"
        raise ConfigError(
            f"no orchestrator {name!r} is installed (entry points {GROUP!r}: {have}); the Prefect flows ship with "
            "the mmrec repository: `pip install -e .` in the checkout registers them (then `mmrec pipeline` works)"
        )
    try:
        plugin = found[name].load()
    except ImportError as exc:
        # the metadata of an editable install outlives a renamed package (flows -> mmrec_flows)
        raise ConfigError(
            f"orchestrator {name!r} is registered as {found[name].value!r} but cannot be imported ({exc}); the "
            "installed metadata is stale: re-run `pip install -e .` (or `make install`) in the checkout"
        ) from exc
    missing = [f for f in ("run_training", "run_nightly") if not callable(getattr(plugin, f, None))]
    if missing:
        raise ConfigError(f"orchestrator {name!r} ({found[name].value}) lacks {missing}; see mmrec/orchestrator.py")
    return plugin
