"""Prefect tasks: each calls one `mmrec` function; what they add is retries, caching and states.

- Caching: a stage task's cache key is its inputs, which include a fingerprint of the files the
  stage reads (path, size, mtime) and the values of the params keys it uses, both read from the
  stage's `deps`/`params` in dvc.yaml (mmrec_flows/dvc_stages.py: one definition, so `dvc repro` and a
  Prefect re-run cannot disagree), plus the task's source. Unchanged inputs -> the finished
  result is reused and the stage does not run; a stage whose outputs were deleted is re-run
  (`refresh_cache`).
- Retries: only for transient failures. An `MMRecError` (bad config, bad data, missing artifact)
  would fail the same way again, so it is not retried: it ends the task in a Failed state whose
  message is the error's (no traceback), and the flow returns that state.
- Validation failure: the validation report is published as a markdown artifact (content and a
  link to the file) on the failed task, and the run fails with the report's path in its message.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.states import Failed, State

from mmrec.context import StageContext
from mmrec.errors import MMRecError, ServiceUnavailable, ValidationFailed
from mmrec_flows.dvc_stages import dep_paths, param_values

#: a run's dataset/params/workspace/root, passed to every task as plain strings (JSON-able, hashable)
RunArgs = dict[str, str | None]


def run_args(
    dataset: str | os.PathLike[str],
    params: str | os.PathLike[str] = "params.yaml",
    workspace: str | os.PathLike[str] = ".",
    root: str | os.PathLike[str] | None = None,
) -> RunArgs:
    """Absolute paths, so a task means the same thing on any worker and in any cwd."""
    return {
        "dataset": str(Path(dataset).resolve()),
        "params": str(Path(params).resolve()),
        "workspace": str(Path(workspace).resolve()),
        "root": str(Path(root).resolve()) if root else None,
    }


def load_context(args: RunArgs) -> StageContext:
    """The stage context of a run: params.yaml plus the dataset's own overlays (mmrec.config.load_run_params)."""
    return StageContext.from_files(str(args["dataset"]), args["params"], args["workspace"] or ".", args.get("root"))


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes only."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", "-".join(parts).lower())).strip("-")


# -- fingerprints: what each stage reads (dvc.yaml's deps and params) and writes -------------------


def _ignored(rel: Path) -> bool:
    """Hidden files and Python's bytecode cache (written on import) are not inputs."""
    return any(part.startswith(".") or part == "__pycache__" for part in rel.parts) or rel.suffix == ".pyc"


def fingerprint(paths: list[Path]) -> str:
    """Cheap content proxy of files and folders: relative path, size and mtime of every file."""
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p).encode())
        if p.is_file():
            st = p.stat()
            h.update(f":{st.st_size}:{st.st_mtime_ns}".encode())
        elif p.is_dir():
            for f in sorted(x for x in p.rglob("*") if x.is_file() and not _ignored(x.relative_to(p))):
                st = f.stat()
                h.update(f"{f.relative_to(p)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        else:
            h.update(b":missing")
    return h.hexdigest()


def stage_inputs(ctx: StageContext, stage: str) -> list[Path]:
    """The files `stage` reads: its `deps` in dvc.yaml, resolved for this run (mmrec_flows/dvc_stages.py)."""
    inputs = dep_paths(ctx, stage)
    if stage == "ingest" and ctx.spec.spec_path:  # the dataset.yaml may live outside its data folder
        inputs.insert(0, Path(ctx.spec.spec_path))
    return inputs


def stage_outputs(ctx: StageContext, stage: str) -> list[Path]:
    paths, kind = ctx.paths, ctx.params.split.kind
    return {
        "ingest": [paths.warehouse / "manifest.json"],
        "validate": [paths.validated_table("interactions"), paths.validated_table("items"), paths.validation_report],
        "ingest_events": [paths.data / "events" / "ingested.parquet"],
        "split": [paths.split_file(kind, "train")],
        "train": [paths.model_dir(m) / "model.json" for m in ctx.params.train.models],
        "evaluate": [paths.metrics],
    }[stage]


def stage_params(ctx: StageContext, stage: str) -> dict[str, Any]:
    """The params keys `stage` lists in dvc.yaml with this run's values, plus the dataset spec."""
    return {"spec": ctx.spec.model_dump(mode="json"), **param_values(ctx, stage)}


def stage_key(ctx: StageContext, stage: str) -> str:
    """What a stage's result depends on: its input files and its params keys."""
    import json

    blob = json.dumps(
        {"files": fingerprint(stage_inputs(ctx, stage)), "params": stage_params(ctx, stage)}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def outputs_exist(ctx: StageContext, stage: str) -> bool:
    return all(p.exists() for p in stage_outputs(ctx, stage))


# -- retry policy ---------------------------------------------------------------------------------


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry unless the failure is one of ours (deterministic: retrying cannot help).

    `ServiceUnavailable` (a server such as MLflow lost mid-way) is ours but transient: retried.
    """
    try:
        state.result()
    except ServiceUnavailable:
        return True
    except MMRecError:
        return False
    except Exception:  # noqa: BLE001 - anything else (I/O, worker lost) may pass next time
        return True
    return False


def _failed(exc: MMRecError, message: str | None = None) -> State:
    """A Failed state carrying the error (so `is_transient` sees it is ours) and its message, no traceback."""
    return Failed(message=message or f"{type(exc).__name__}: {exc}", data=exc)


def publish_validation_report(ctx: StageContext, exc: ValidationFailed) -> None:
    """The validation report as a markdown artifact (content + link) on the failing task."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact

    md_path = ctx.paths.validation_markdown
    json_path = Path(exc.report_path) if exc.report_path else ctx.paths.validation_report
    body = md_path.read_text(encoding="utf-8") if md_path.is_file() else f"(no markdown report at `{md_path}`)"
    header = (
        f"**Validation failed** for dataset `{ctx.spec.name}`: {exc}\n\n"
        f"Report: `{md_path}` (machine-readable: `{json_path}`). Fix the data or the `validate:` "
        "thresholds in params.yaml, then re-run; finished stages are cached.\n\n---\n\n"
    )
    key = artifact_key("validation", ctx.spec.name)
    create_markdown_artifact(markdown=header + body, key=key, description=f"validation report of {ctx.spec.name}")
    target = md_path if md_path.is_file() else json_path
    create_link_artifact(
        link=target.resolve().as_uri(), link_text=str(target), key=artifact_key("validation-report", ctx.spec.name)
    )


# -- progress -------------------------------------------------------------------------------------


class PrefectProgress:
    """An `mmrec.progress` hook: one Prefect progress artifact per key (e.g. `extract-image`,
    `train-lightgcn`) on the running task, updated at most every `min_interval` seconds (and at
    the end), with the library's "done/total, items/s, ETA" line as its description."""

    def __init__(self, min_interval: float = 2.0) -> None:
        self.min_interval = min_interval
        self.ids: dict[str, Any] = {}
        self.last: dict[str, float] = {}

    def __call__(self, key: str, done: int, total: int, message: str) -> None:
        import time

        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        pct = min(100.0, 100.0 * done / total) if total else 100.0
        now = time.monotonic()
        if key in self.ids and done < total and now - self.last.get(key, 0.0) < self.min_interval:
            return
        self.last[key] = now
        if key not in self.ids:
            self.ids[key] = create_progress_artifact(pct, description=f"{key}: {message}")
        else:
            update_progress_artifact(self.ids[key], pct, description=f"{key}: {message}")


# -- tasks ----------------------------------------------------------------------------------------


@task(
    name="stage",
    cache_policy=INPUTS + TASK_SOURCE,
    persist_result=True,
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=is_transient,
)
def stage_task(stage: str, args: RunArgs, key: str) -> Any:
    """One pipeline stage (`mmrec.stages.run_stage`). `key` is `stage_key(...)`: part of the cache key."""
    from mmrec.progress import progress_hook
    from mmrec.stages import run_stage

    try:
        ctx = load_context(args)
        with progress_hook(PrefectProgress()):
            return run_stage(stage, ctx)
    except ValidationFailed as exc:
        publish_validation_report(ctx, exc)
        report = ctx.paths.validation_markdown if ctx.paths.validation_markdown.is_file() else exc.report_path
        return _failed(
            exc,
            f"validation failed: {exc} (report: {report}; also the `{artifact_key('validation', ctx.spec.name)}` artifact)",
        )
    except MMRecError as exc:
        return _failed(exc)


@contextmanager
def dask_client() -> Iterator[Any]:
    """The Dask client of the cluster this task runs on (`distributed.worker_client`).

    Only for a task run by a `DaskTaskRunner`: the task fans its work out to the same cluster
    (shards, user blocks) and waits for it. While it waits it leaves the worker's thread pool
    (`worker_client` secedes, then rejoins); otherwise one waiting task per worker thread (e.g.
    four modalities on two single-threaded workers) would leave no thread for the shards.
    `worker_client` hands out the worker's own long-lived client: prefect-dask's
    `get_dask_client` opens a client per task and closes it on exit, and a task on another
    thread of the same worker that picked that client up as the default then failed
    (`'NoneType' object has no attribute 'address'`).
    """
    from distributed import worker_client

    with worker_client() as client:
        yield client


@task(name="extract", retries=2, retry_delay_seconds=10, retry_condition_fn=is_transient)
def extract_task(modality: str, args: RunArgs, sharded: bool = False, parallel_tasks: int = 1) -> Any:
    """Features of one modality (`mmrec.extract.extract_modality`); its own cache skips unchanged items.

    `sharded` (under a DaskTaskRunner): the items are encoded in shards across the cluster's
    workers (`mmrec.distributed.extract.extract_modality_dask`); same feature file.
    `parallel_tasks`: extraction tasks sharing this process; the thread pools get a share each
    (`mmrec.runtime`), so four modalities on 2 CPUs do not start 4 x 2 torch threads.
    """
    from mmrec.extract import extract_modality
    from mmrec.progress import progress_hook
    from mmrec.runtime import configure_threads

    try:
        ctx = load_context(args)
        configure_threads(ctx.params.runtime, parallel_tasks)
        params = getattr(ctx.params, "extract", None)
        if not sharded:
            with progress_hook(PrefectProgress()):
                return extract_modality(ctx.spec, ctx.paths, modality, params)
        from mmrec.distributed.extract import extract_modality_dask

        with dask_client() as client:
            return extract_modality_dask(
                ctx.spec, ctx.paths, modality, params, client, shard_items=ctx.params.orchestrate.shard_items
            )
    except MMRecError as exc:
        return _failed(exc)


@task(name="tune", retries=0)
def tune_task(args: RunArgs, trials: int | None = None, timeout: float | None = None) -> Any:
    """The bounded hyper-parameter search on validation (`mmrec.tuning.tune.run_tune`).

    Not cached and never retried: a search is an explicit request, and a failed one would only
    spend its budget again. It writes the dataset's parameter overlay, so the training stage that
    follows (its context and cache key re-read) trains with the chosen values.
    """
    from mmrec.tuning.tune import run_tune

    try:
        ctx = load_context(args)
        result = run_tune(ctx, trials=trials, timeout=timeout)
        return {k: v for k, v in result.items() if k != "models"} | {
            "models": {n: {"best": r.get("best"), "trials": r["trials"]} for n, r in result["models"].items()}
        }
    except MMRecError as exc:
        return _failed(exc)


@task(name="register", retries=2, retry_delay_seconds=10, retry_condition_fn=is_transient)
def register_task(args: RunArgs) -> Any:
    """Log the runs, register the best model, apply the promotion gate (`mmrec.tracking.runs.track_training`)."""
    from mmrec.tracking.runs import track_training

    try:
        ctx = load_context(args)
        return track_training(ctx)
    except MMRecError as exc:
        return _failed(exc)


@task(name="recommend", retries=2, retry_delay_seconds=10, retry_condition_fn=is_transient)
def recommend_task(args: RunArgs, k: int | None = None, distributed: bool = False) -> Any:
    """The champion's top-K for every user (`mmrec.recommend.run.run_recommend`).

    `distributed` (under a DaskTaskRunner): user blocks are scored on the cluster's workers
    (`mmrec.distributed.scoring`); same output file.
    """
    from mmrec.recommend.run import run_recommend

    try:
        ctx = load_context(args)
        if not distributed:
            return run_recommend(ctx, k=k)
        with dask_client() as client:
            return run_recommend(ctx, k=k, client=client)
    except MMRecError as exc:
        return _failed(exc)


@task(name="materialize", retries=2, retry_delay_seconds=10, retry_condition_fn=is_transient)
def materialize_task(args: RunArgs) -> Any:
    """Export feature tables, `feast apply`, `materialize_incremental` (`mmrec.feast.materialize.run_materialize`)."""
    from mmrec.feast.materialize import run_materialize

    try:
        ctx = load_context(args)
        return run_materialize(ctx)
    except MMRecError as exc:
        return _failed(exc)


def materialize_enabled(ctx: StageContext) -> bool:
    """`features.materialize` of params.yaml (on by default; off for runs without a feature store)."""
    features = getattr(ctx.params, "features", None)
    return bool(getattr(features, "materialize", False))
