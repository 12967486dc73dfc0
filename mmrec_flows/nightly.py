"""The nightly job as a Prefect flow: the registry's champion -> top-K for every user.

Writes `data/<name>/recommendations/latest.parquet` (atomically: a crash keeps the previous
file) and publishes a summary artifact: users covered, catalogue coverage, score distribution,
runtime. No champion -> the run fails with a message naming the command that makes one. Then
(`features.materialize`) the feature tables are re-exported and `materialize_incremental` loads
the new top-K into Feast's online store; a failure there fails the run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.states import Failed, State

from mmrec_flows.tasks import RunArgs, artifact_key, materialize_enabled, materialize_task, recommend_task, run_args


@flow(name="nightly-recommendations", log_prints=True)
def nightly_recommendations(
    dataset: str,
    params: str = "params.yaml",
    workspace: str = ".",
    root: str | None = None,
    k: int | None = None,
) -> dict[str, Any] | State:
    """Generate the champion's top-K for every user of a dataset.

    Args:
        dataset: path of the dataset.yaml.
        params: path of params.yaml (`recommend:` section: k, batch_size, exclude_seen, the
            generation strategy, threshold and item filters; `tracking:` section: where the
            registry is).
        workspace: folder holding data/, reports/ and the embedded MLflow store.
        root: data root overriding the dataset.yaml `root:`.
        k: overrides `recommend.k` for this run.

    Returns:
        The summary of `mmrec.recommend.run.run_recommend`, or the Failed state.
    """
    from prefect.artifacts import create_markdown_artifact

    from mmrec.recommend.writer import summary_markdown

    args = run_args(dataset, params, workspace, root)
    from mmrec.errors import MMRecError
    from mmrec_flows.runners import orchestrate_params
    from mmrec_flows.tasks import load_context

    try:
        ctx = load_context(args)
        op = orchestrate_params(ctx.params)
    except MMRecError as exc:
        return Failed(message=f"{type(exc).__name__}: {exc}")
    # the day's events into the warehouse (validated, deduplicated): the next training sees them
    from mmrec_flows.events import ingest_events_task

    ingested = ingest_events_task.with_options(retries=op.retries, retry_delay_seconds=op.retry_delay_seconds)(
        args, return_state=True
    )
    if not ingested.is_completed():
        return Failed(message=f"ingest_events: {ingested.message}")
    if op.task_runner == "dask":  # user blocks scored across the cluster (mmrec/distributed/scoring.py)
        from mmrec_flows.runners import make_task_runner

        sub = score_on_dask.with_options(task_runner=make_task_runner(op), flow_run_name="score-on-dask")
        state: State[Any] = sub(args, k, op.retries, op.retry_delay_seconds, return_state=True)  # type: ignore[assignment]  # a sync flow returns its state
    else:
        task = recommend_task.with_options(retries=op.retries, retry_delay_seconds=op.retry_delay_seconds)
        state = task(args, k, return_state=True)
    if not state.is_completed():
        return Failed(message=state.message)
    summary = state.result()
    create_markdown_artifact(
        markdown=summary_markdown(summary),
        key=artifact_key("recommendations", summary["dataset"]),
        description=f"nightly recommendations of {summary['dataset']}",
    )
    if materialize_enabled(ctx):  # the new top-K (and any new champion) into the online store
        state = materialize_task.with_options(retries=op.retries, retry_delay_seconds=op.retry_delay_seconds)(
            args, return_state=True
        )
        if not state.is_completed():
            return Failed(message=f"materialize: {state.message}")
        summary = {**summary, "features": state.result()}
    return {**summary, "events": ingested.result()}


@flow(name="score-on-dask", log_prints=True)
def score_on_dask(args: RunArgs, k: int | None, retries: int, retry_delay_seconds: float) -> Any:
    """The recommend task on the Dask task runner; it partitions the users over the cluster."""
    task = recommend_task.with_options(retries=retries, retry_delay_seconds=retry_delay_seconds)
    future = task.submit(args, k, True)
    future.wait()
    if not future.state.is_completed():
        return Failed(message=future.state.message)
    return future.result()


def run_nightly(
    dataset: str, params: str = "params.yaml", workspace: str = ".", root: str | None = None, k: int | None = None
) -> State:
    """Run the flow in this process and return its final state."""
    return nightly_recommendations(dataset, params, workspace, root, k, return_state=True)
