"""Which Prefect task runner runs the parallel part of the pipeline (per-modality extraction).

Threads by default (one machine, encoders release the GIL in torch); Dask (`prefect-dask`) to
spread extraction over a cluster: a temporary `LocalCluster`, or an existing scheduler at
`dask_address`. Under Dask the modality tasks shard their items over the same cluster and the
nightly flow scores user blocks there (`mmrec_flows.tasks.dask_client`, mmrec/distributed/). Every
worker must see the same workspace (shared filesystem), since tasks exchange artifacts through
files, never through Dask.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from mmrec.config import OrchestrateParams


def orchestrate_params(params: Any) -> OrchestrateParams:
    """The `orchestrate` section of a `Params` (a model or a dict), or the defaults."""
    section = getattr(params, "orchestrate", None)
    if section is None:
        return OrchestrateParams()
    if isinstance(section, OrchestrateParams):
        return section
    if isinstance(section, BaseModel):
        section = section.model_dump()
    return OrchestrateParams.model_validate(section)


def make_task_runner(op: OrchestrateParams) -> Any:
    """A Prefect task runner instance for `op`."""
    if op.task_runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:  # pragma: no cover - the [dask] extra is installed by make
            from mmrec.errors import ConfigError

            raise ConfigError("orchestrate.task_runner=dask needs prefect-dask: pip install -e '.[dask]'") from exc
        if op.dask_address:
            return DaskTaskRunner(address=op.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": op.dask_workers,
                "processes": op.dask_processes,
                "threads_per_worker": 1,
                "dashboard_address": None,
            }
        )
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=op.max_workers)
