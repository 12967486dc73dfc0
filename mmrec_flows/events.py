"""The event log's Prefect task: snapshot it into the warehouse (mmrec/events/ingest.py).

Not a cached stage task: the log is a live store (sqlite or Redis) whose content no file
fingerprint captures, so the snapshot is taken on every run; the `split` stage's cache key then
includes the snapshot file (its dvc.yaml dep), so only new events re-split and re-train.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from mmrec_flows.tasks import RunArgs, _failed, is_transient, load_context


@task(name="ingest-events", retries=2, retry_delay_seconds=10, retry_condition_fn=is_transient)
def ingest_events_task(args: RunArgs) -> Any:
    """`mmrec stage ingest_events`: validated, deduplicated snapshot of the event log."""
    from mmrec.errors import MMRecError
    from mmrec.stages import run_stage

    try:
        return run_stage("ingest_events", load_context(args))
    except MMRecError as exc:
        return _failed(exc)
