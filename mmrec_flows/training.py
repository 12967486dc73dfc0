"""The training pipeline as a Prefect flow: ingest -> validate -> split -> extract[modality] ->
train -> evaluate -> register/promote -> materialize (Feast; `features.materialize`).

The flow only composes: every task calls one `mmrec` function (mmrec_flows/tasks.py). Stages run one
after the other (each reads the previous one's files); the per-modality extraction fans out in a
subflow whose task runner comes from `orchestrate.task_runner` (threads, or Dask for a cluster).

A stage that fails for a reason of ours (bad data, bad config) ends the run in a Failed state
carrying the error message; a validation failure also publishes the validation report as an
artifact. Re-running with unchanged inputs skips the finished stages (cached results).
"""

from __future__ import annotations

import importlib.util
import logging
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger
from prefect.futures import wait
from prefect.states import Failed, State

from mmrec_flows.tasks import (
    RunArgs,
    artifact_key,
    extract_task,
    load_context,
    materialize_enabled,
    materialize_task,
    outputs_exist,
    register_task,
    run_args,
    stage_key,
    stage_task,
    tune_task,
)

if TYPE_CHECKING:
    from mmrec.context import StageContext

STAGES = ("ingest", "validate", "ingest_events", "split", "train", "evaluate")


def extract_available() -> bool:
    """Whether this checkout has the feature-extraction stage (`mmrec.extract`)."""
    return importlib.util.find_spec("mmrec.extract") is not None


@flow(name="extract-features", log_prints=True)
def extract_features(
    modalities: list[str], args: RunArgs, sharded: bool = False, parallel_tasks: int = 1
) -> dict[str, Any] | State:
    """One extraction task per modality, in parallel on this subflow's task runner.

    `sharded` (task runner = Dask): each modality's items are further split into shards encoded
    across the cluster's workers (mmrec/distributed/extract.py). `parallel_tasks`: how many of
    these tasks share this process's CPUs (thread runner), so each sizes its pools to a share.
    """
    futures = {
        m: extract_task.with_options(task_run_name=f"extract-{m}").submit(m, args, sharded, parallel_tasks)
        for m in modalities
    }
    wait(list(futures.values()))
    failed = {m: f.state.message for m, f in futures.items() if not f.state.is_completed()}
    if failed:
        return Failed(message="feature extraction failed: " + "; ".join(f"{m}: {msg}" for m, msg in failed.items()))
    return {m: f.result() for m, f in futures.items()}


def _run_stage(stage: str, args: RunArgs, ctx: StageContext, retries: int, delay: float) -> State:
    """One stage task; its cache is refreshed when the stage's outputs are gone."""
    task = stage_task.with_options(
        task_run_name=stage, retries=retries, retry_delay_seconds=delay, refresh_cache=not outputs_exist(ctx, stage)
    )
    return task(stage, args, stage_key(ctx, stage), return_state=True)


@flow(name="training-pipeline", log_prints=True)
def training_pipeline(
    dataset: str,
    params: str = "params.yaml",
    workspace: str = ".",
    root: str | None = None,
    extract: bool = True,
    register_best: bool = True,
    tune: bool = False,
    tune_trials: int | None = None,
    tune_timeout: float | None = None,
) -> dict[str, Any] | State:
    """Train, evaluate and register models for one dataset.

    Args:
        dataset: path of the dataset.yaml.
        params: path of params.yaml (every tunable; `orchestrate:` picks the task runner).
        workspace: folder holding data/, artifacts/, reports/ (and the embedded MLflow store).
        root: data root overriding the dataset.yaml `root:`.
        extract: run per-modality feature extraction (skipped, with a log line, when the
            checkout has no `mmrec.extract`).
        register_best: log to MLflow, register the best model and apply the promotion gate.
        tune: before training, search the models' hyper-parameters on validation
            (`mmrec.tuning`, `tune:` of params.yaml) and train with the chosen values (written to
            the dataset's parameter overlay, params/<name>.yaml).
        tune_trials/tune_timeout: bound that search (trials per model / seconds in all);
            default `tune.trials` / `tune.timeout_seconds`.

    Returns:
        {"dataset", "best_model", "selection_metric", "metrics", "stages", "extraction",
         "registry", "features"} ("features": the materialize step's summary, None when
        `features.materialize` is off); or the Failed state of the stage that failed.
    """
    from mmrec.errors import MMRecError
    from mmrec_flows.runners import orchestrate_params

    logger = get_run_logger()
    args = run_args(dataset, params, workspace, root)
    try:
        ctx = load_context(args)
        op = orchestrate_params(ctx.params)
    except MMRecError as exc:
        return Failed(message=f"{type(exc).__name__}: {exc}")

    results: dict[str, Any] = {}
    for stage in STAGES:
        if stage == "train":
            results["extract"] = _extract(ctx, args, op, extract, logger)
            if isinstance(results["extract"], State):
                return Failed(message=results["extract"].message)
            if tune:
                state = tune_task.with_options(task_run_name=f"tune-{ctx.spec.name}")(
                    args, tune_trials, tune_timeout, return_state=True
                )
                if not state.is_completed():
                    return Failed(message=f"tune: {state.message}")
                results["tune"] = state.result()
                try:  # the overlay changed: train's parameters and cache key with it
                    ctx = load_context(args)
                except MMRecError as exc:
                    return Failed(message=f"{type(exc).__name__}: {exc}")
        if stage == "ingest_events":  # a live store: snapshot it every run, never from a cache (mmrec_flows/events.py)
            from mmrec_flows.events import ingest_events_task

            state = ingest_events_task.with_options(retries=op.retries, retry_delay_seconds=op.retry_delay_seconds)(
                args, return_state=True
            )
        else:
            state = _run_stage(stage, args, ctx, op.retries, op.retry_delay_seconds)
        if not state.is_completed():
            return Failed(message=f"stage {stage}: {state.message}")  # the run fails with the stage's message
        results[stage] = state.result()

    report = results["evaluate"]
    registry = None
    if register_best:
        state = register_task.with_options(retries=op.retries, retry_delay_seconds=op.retry_delay_seconds)(
            args, return_state=True
        )
        if not state.is_completed():
            return Failed(message=f"register: {state.message}")
        registry = state.result()
    features = None
    if materialize_enabled(ctx):  # after registration: the new champion's factors go online too
        state = materialize_task.with_options(retries=op.retries, retry_delay_seconds=op.retry_delay_seconds)(
            args, return_state=True
        )
        if not state.is_completed():
            return Failed(message=f"materialize: {state.message}")
        features = state.result()
    _publish_summary(ctx, report, registry)
    return {
        "dataset": ctx.spec.name,
        "best_model": report.get("best_model"),
        "selection_metric": report.get("selection_metric"),
        "metrics": str(ctx.paths.metrics),
        "stages": {s: ("ok" if s in results else "skipped") for s in STAGES},
        "extraction": results.get("extract"),
        "tuning": results.get("tune"),
        "registry": registry,
        "features": features,
    }


def _extract(
    ctx: StageContext, args: RunArgs, op: Any, enabled: bool, logger: logging.Logger | logging.LoggerAdapter
) -> Any:
    from mmrec_flows.runners import make_task_runner

    modalities = list(ctx.spec.modalities)
    if not enabled:
        logger.info("feature extraction disabled for this run (extract=False)")
        return None
    if not modalities:
        logger.info("dataset %s declares no modalities; nothing to extract", ctx.spec.name)
        return None
    if not extract_available():
        logger.warning("skipping feature extraction: this checkout has no mmrec.extract module")
        return None
    sub = extract_features.with_options(task_runner=make_task_runner(op), flow_run_name=f"extract-{ctx.spec.name}")
    sharded = op.task_runner == "dask"
    # thread runner: the tasks share this process's thread pools, so they split its CPUs
    parallel = 1 if sharded else min(len(modalities), op.max_workers)
    state = sub(modalities, args, sharded, parallel, return_state=True)
    if not state.is_completed():
        return state
    return state.result()


def _publish_summary(ctx: StageContext, report: dict[str, Any], registry: dict[str, Any] | None) -> None:
    from prefect.artifacts import create_markdown_artifact

    from mmrec.stages import format_metrics_markdown

    md = format_metrics_markdown(report)
    if registry:
        d = registry.get("decision") or {}
        md += (
            f"\n## Registry\n\nRegistered model `{registry['registered_model']}` version {registry.get('version')} "
            f"at `{registry['tracking_uri']}`: **{d.get('action', 'not gated')}** - {d.get('reason', '')}\n"
        )
    create_markdown_artifact(
        markdown=md, key=artifact_key("training", ctx.spec.name), description=f"training run of {ctx.spec.name}"
    )


def run_training(
    dataset: str,
    params: str = "params.yaml",
    workspace: str = ".",
    root: str | None = None,
    extract: bool = True,
    register_best: bool = True,
    tune: bool = False,
    tune_trials: int | None = None,
    tune_timeout: float | None = None,
) -> State:
    """Run the flow in this process and return its final state (what `mmrec pipeline` calls)."""
    return training_pipeline(
        dataset, params, workspace, root, extract, register_best, tune, tune_trials, tune_timeout, return_state=True
    )
