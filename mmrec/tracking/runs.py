"""One MLflow run per trained model, and the training hand-over to the registry (`track_training`).

Each run holds the model's hyper-parameters, per-epoch metrics (`model.history`), final
valid/test/cold metrics, the split hash, the feature files it could use, the git commit, the
evaluation and validation reports, a learning-curve plot, and the model itself as an MLflow
pyfunc with a signature. A model with the same content hash is logged once.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from mmrec.errors import MMRecError, StageError
from mmrec.models import load_model
from mmrec.params.tracking import TrackingParams, tracking_params
from mmrec.stage_inputs import read_metrics
from mmrec.tracking.evidence import feature_keys, git_commit, model_hash
from mmrec.tracking.plots import learning_curve
from mmrec.tracking.pyfunc import log_pyfunc
from mmrec.tracking.registry import evaluate_gate, register
from mmrec.tracking.store import (
    TAG_LIMIT,
    experiment_id,
    experiment_name,
    is_local_store,
    mlflow_client,
    mlflow_key,
    registered_model_name,
    resolve_uri,
    server_alive,
    unreachable_error,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mmrec.context import StageContext

log = logging.getLogger(__name__)


def _flat_params(prefix: str, obj: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json", by_alias=True)
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flat_params(f"{prefix}.{k}" if prefix else str(k), v))
    else:
        out[mlflow_key(prefix)] = json.dumps(obj) if not isinstance(obj, str) else obj
    return out


@dataclass
class LoggedRun:
    model: str
    run_id: str
    model_uri: str | None
    model_hash: str
    valid_metric: float
    reused: bool = False


def _find_run(client: MlflowClient, exp_id: str, digest: str) -> Any:
    runs = client.search_runs([exp_id], filter_string=f"tags.`mmrec.model_hash` = '{digest}'", max_results=1)
    return runs[0] if runs else None


def log_model_run(
    ctx: StageContext,
    client: MlflowClient,
    exp_id: str,
    name: str,
    entry: dict[str, Any],
    report: dict[str, Any],
    log_model: bool,
    metric: str,
) -> LoggedRun:
    """One MLflow run for one trained model; reused when the same model (hash) was logged before."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    folder = ctx.paths.model_dir(name)
    if not (folder / "model.json").is_file():
        raise StageError(f"{folder}: model {name!r} not trained; run `mmrec stage train` first")
    digest = model_hash(folder)
    valid_value = float(entry["valid"].get(metric, float("nan")))
    found = _find_run(client, exp_id, digest)
    if found is not None:
        uri = found.data.tags.get("mmrec.model_uri") or None
        if uri or not log_model:
            log.info("model %s already logged in run %s (same content); reusing it", name, found.info.run_id)
            return LoggedRun(name, found.info.run_id, uri, digest, valid_value, reused=True)
        if found.info.status == "RUNNING":  # an attempt that lost the server mid-way: close it
            client.set_terminated(found.info.run_id, status="FAILED")
    model = load_model(folder)
    split = report.get("split", {})
    tags = {
        "mmrec.dataset": ctx.spec.name,
        "mmrec.model": name,
        "mmrec.model_hash": digest,
        "mmrec.split_kind": str(split.get("kind", "")),
        "mmrec.split_hash": str(split.get("hash", "")),
        "mmrec.selection_metric": metric,
        "mmrec.best_model": str(name == report.get("best_model")).lower(),
        **{f"mmrec.{k}": v for k, v in git_commit().items()},
        **{f"mmrec.{k}": v for k, v in feature_keys(ctx).items()},
    }
    params = {"model": name, **_flat_params("model", entry.get("params", {}))}
    params.update(_flat_params("split", ctx.params.split))
    params.update(_flat_params("train.seed", ctx.params.train.seed))
    params.update(_flat_params("evaluate", ctx.params.evaluate))
    with mlflow.start_run(experiment_id=exp_id, run_name=f"{name}-{str(split.get('hash', ''))[:8]}") as run:
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        metrics = []
        for row in model.history:
            step = int(row.get("epoch", 0))
            for key, value in row.items():
                if key != "epoch" and isinstance(value, int | float):
                    metrics.append(Metric(mlflow_key(f"epoch_{key}"), float(value), now, step))
        for part in ("valid", "test", "sparse", "cold"):
            for key, value in entry.get(part, {}).items():
                if isinstance(value, int | float):
                    metrics.append(Metric(mlflow_key(f"{part}_{key}"), float(value), now, 0))
        for key in ("train_seconds", "eval_seconds", "epochs", "best_epoch"):
            if isinstance(entry.get(key), int | float):
                metrics.append(Metric(key, float(entry[key]), now, 0))
        param_list = [Param(k, str(v)[:6000]) for k, v in params.items()]
        tag_list = [RunTag(k, str(v)[:TAG_LIMIT]) for k, v in tags.items()]
        for i in range(0, max(len(metrics), 1), 900):  # log_batch takes at most 1000 metrics
            client.log_batch(
                run_id,
                metrics=metrics[i : i + 900],
                params=param_list if i == 0 else [],
                tags=tag_list if i == 0 else [],
            )
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            if learning_curve(model.history, t / f"learning_curve_{name}.png", f"{ctx.spec.name}: {name}"):
                client.log_artifact(run_id, str(t / f"learning_curve_{name}.png"), "plots")
            (t / "model_report.json").write_text(json.dumps({"model": name, **entry}, indent=2, default=str))
            client.log_artifact(run_id, str(t / "model_report.json"), "reports")
            resolved = ctx.params.model_dump(mode="json", by_alias=True)
            (t / "params.json").write_text(json.dumps(resolved, indent=2, default=str))
            client.log_artifact(run_id, str(t / "params.json"), "config")
        for f in (
            ctx.paths.metrics,
            ctx.paths.reports / "metrics.md",
            ctx.paths.reports / "report.md",
            ctx.paths.validation_report,
            ctx.paths.validation_markdown,
            ctx.paths.reports / "extraction.json",
            ctx.paths.models / "train_summary.json",
        ):
            if f.is_file():
                client.log_artifact(run_id, str(f), "reports")
        model_uri = None
        if log_model:
            info = log_pyfunc(folder)
            model_uri = info.model_uri
            client.set_tag(run_id, "mmrec.model_uri", model_uri)
    return LoggedRun(name, run_id, model_uri, digest, valid_value)


def track_training(
    ctx: StageContext, report: dict[str, Any] | None = None, tp: TrackingParams | None = None
) -> dict[str, Any]:
    """Log every evaluated model as a run; register the best and apply the promotion gate.

    Args:
        report: the evaluation report (`reports/<name>/metrics.json` when None).

    Returns:
        {"tracking_uri", "experiment", "runs": {model: run_id}, "registered_model", "version",
         "decision": {...} | None}.
    """
    tp = tp or tracking_params(ctx.params)
    report = report or read_metrics(ctx.paths)
    if not report.get("models"):
        raise StageError(f"{ctx.paths.metrics}: the evaluation report holds no models; run `mmrec stage evaluate`")
    best = report.get("best_model")
    metric = tp.metric or report.get("selection_metric") or ctx.params.evaluate.selection_metric
    uri = resolve_uri(tp, ctx.workspace)
    name = registered_model_name(ctx.spec.name)
    out: dict[str, Any] = {
        "tracking_uri": uri,
        "experiment": experiment_name(ctx.spec.name),
        "runs": {},
        "registered_model": name,
        "version": None,
        "decision": None,
    }
    # Order matters for a server that dies mid-way: every run and its model artifacts are
    # uploaded first; a version is created only for a fully uploaded model; aliases move last.
    step = "connecting"
    try:
        with mlflow_client(uri) as client:
            exp_id = experiment_id(client, experiment_name(ctx.spec.name), uri, tp, ctx.workspace)
            logged: dict[str, LoggedRun] = {}
            for model_name, entry in report["models"].items():
                step = f"logging the run of model {model_name!r}"
                logged[model_name] = log_model_run(
                    ctx,
                    client,
                    exp_id,
                    model_name,
                    entry,
                    report,
                    log_model=tp.log_all_models or model_name == best,
                    metric=metric,
                )
                out["runs"][model_name] = logged[model_name].run_id
            if tp.register_best and best in logged:
                step = f"registering model {best!r}"
                mv = register(client, name, ctx.spec.name, logged[best], report["models"][best], report)
                out["version"] = str(mv.version)
                if tp.auto_promote:
                    step = f"applying the promotion gate to version {mv.version}"
                    out["decision"] = evaluate_gate(client, name, str(mv.version), metric, tp).to_dict()
    except Exception as exc:
        if is_local_store(uri) or isinstance(exc, MMRecError) or server_alive(uri):
            raise
        raise unreachable_error(uri, name, step, exc) from exc
    return out
