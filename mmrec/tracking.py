"""MLflow 3 tracking and model lifecycle: runs, MLflow models, the registry and the promotion gate.

- Every trained model becomes one MLflow run in the experiment `mmrec-<dataset>`: its
  hyper-parameters, per-epoch metrics (`model.history`), final valid/test/cold metrics, the
  split hash, the feature files it could use, the git commit, the evaluation and validation
  reports and a learning-curve plot, and the model itself as an MLflow pyfunc with a signature.
- The best model on validation is registered as a new version of `mmrec-<dataset>` and gets the
  alias `challenger`. The promotion gate moves `champion` to it only if it beats the current
  champion's validation metric by the configured margin. Every decision (promoted, refused,
  forced, rolled back) and its evidence is written as tags on the model version, on its run and
  in the registered model's decision log. Aliases only: the deprecated stages are never used.
- Embedded default: an sqlite backend (`mlflow.db`) and a local artifact store (`mlruns/`) in
  the workspace; `tracking.uri` (or `MLFLOW_TRACKING_URI`) points everything at a server.

MLflow is imported inside functions: it takes seconds to import and most commands never need it.
MLflow metric/tag names may not contain '@', so `recall@20` is logged as `recall_at_20`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from mmrec.errors import ConfigError, MMRecError, ModelError, ServiceUnavailable, StageError, TrackingStoreError
from mmrec.params.tracking import TrackingParams, tracking_params

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from mmrec.models.base import Recommender
    from mmrec.stages import StageContext

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "model"
#: registered-model tag holding the promotion history (versions, oldest first) for rollback
CHAMPION_HISTORY = "mmrec.champion_history"
#: registered-model tag holding the last decisions (JSON list), newest last
DECISION_LOG = "mmrec.decisions"
_MAX_LOGGED_DECISIONS = 20
_TAG_LIMIT = 5000


def registered_model_name(dataset: str) -> str:
    return f"mmrec-{dataset}"


def experiment_name(dataset: str) -> str:
    return f"mmrec-{dataset}"


def mlflow_key(name: str) -> str:
    """A metric/param/tag name MLflow accepts (`recall@20` -> `recall_at_20`)."""
    return name.replace("@", "_at_")


# -- connection -------------------------------------------------------------------------------------


def resolve_uri(tp: TrackingParams, workspace: Path) -> str:
    """Where tracking goes: params, then $MLFLOW_TRACKING_URI, then `<workspace>/mlflow.db`."""
    chosen = tp.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if chosen:
        check_uri(chosen)
        return chosen
    return f"sqlite:///{(Path(workspace).resolve() / 'mlflow.db').as_posix()}"


def _is_local(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri


_READ_ONLY = ("readonly database", "read-only", "permission denied")
_CORRUPT = ("file is not a database", "database disk image is malformed", "file is encrypted", "malformed")
_UNOPENABLE = ("unable to open database file",)


def store_error(uri: str, exc: BaseException) -> TrackingStoreError | None:
    """A one-line error naming the store and the fix, when `exc` comes from a broken sqlite store.

    MLflow lets SQLAlchemy/sqlite errors through (sometimes wrapped in an MlflowException); the
    chain of causes is searched for them. Other errors (a server down, a bug) return None.
    """
    import sqlite3

    messages = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        db_error = isinstance(cur, sqlite3.Error) or type(cur).__module__.startswith("sqlalchemy")
        if db_error or "sqlite" in str(cur).lower():
            messages.append(str(cur).splitlines()[0] if str(cur) else type(cur).__name__)
        cur = cur.__cause__ or cur.__context__
    if not messages:
        return None
    text = " ".join(messages).lower()
    where = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else uri
    first = next((m for m in messages if any(k in m.lower() for k in (*_READ_ONLY, *_CORRUPT, *_UNOPENABLE))), messages[0])
    if any(k in text for k in _READ_ONLY):
        fix = f"make it and its folder writable (e.g. chmod u+w {where}), or set tracking.uri / MLFLOW_TRACKING_URI to a writable store"
        what = "is read-only"
    elif any(k in text for k in _CORRUPT):
        fix = (
            f"restore it from a backup, or move it aside (mv {where} {where}.corrupt) and re-run `mmrec pipeline` "
            f"to register the models again; or set tracking.uri / MLFLOW_TRACKING_URI to another store"
        )
        what = "is corrupt"
    elif any(k in text for k in _UNOPENABLE):
        fix = "check that the path exists and its folder is writable, or set tracking.uri / MLFLOW_TRACKING_URI"
        what = "cannot be opened"
    elif uri.startswith("sqlite:"):
        fix = "check the file (sqlite3 FILE 'PRAGMA integrity_check'), or set tracking.uri / MLFLOW_TRACKING_URI"
        what = "failed"
    else:
        return None
    return TrackingStoreError(f"MLflow store {where} {what} ({first}); fix: {fix}")


@contextlib.contextmanager
def _mlflow(uri: str) -> Iterator[MlflowClient]:
    """Point the mlflow module at `uri` for the block, then put everything back.

    `mlflow.set_tracking_uri` also exports `MLFLOW_TRACKING_URI` to the environment; left in
    place it would silently redirect the next dataset or workspace to this store.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved = (
        getattr(tracking_utils, "_tracking_uri", None),
        getattr(registry_utils, "_registry_uri", None),
        {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")},
    )
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield MlflowClient(tracking_uri=uri, registry_uri=uri)
    except MMRecError:
        raise
    except Exception as exc:
        store = store_error(uri, exc)
        if store is None:
            raise
        raise store from exc
    finally:
        mlflow.set_tracking_uri(saved[0])  # type: ignore[arg-type]  # None: back to "unset" (env/default)
        registry_utils._registry_uri = saved[1]
        for key, value in saved[2].items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _experiment_id(client: MlflowClient, name: str, uri: str, tp: TrackingParams, workspace: Path) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if _is_local(uri):
        location = (Path(workspace).resolve() / tp.artifact_root / name).as_uri()
    return client.create_experiment(name, artifact_location=location)


# -- evidence gathering --------------------------------------------------------------------------


def git_commit(start: Path | None = None) -> dict[str, str]:
    """The commit of the code that ran (`git_commit`, `git_dirty`); empty outside a git checkout."""
    where = start or Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "git_dirty": str(bool(dirty)).lower()}


def model_hash(folder: Path) -> str:
    """Content hash of a saved model folder: the same trained model is never registered twice."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def feature_keys(ctx: StageContext) -> dict[str, str]:
    """`features.<modality>` -> encoder files and their content hashes, for the run's tags."""
    root = ctx.paths.data / "features"
    out: dict[str, str] = {}
    if not root.is_dir():
        return out
    for mod_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        keys = []
        for f in sorted(mod_dir.glob("*.parquet")):
            digest = hashlib.sha256(f.read_bytes()).hexdigest()[:16]
            keys.append(f"{f.stem}:{digest}")
        if keys:
            out[f"features.{mod_dir.name}"] = ",".join(keys)[:_TAG_LIMIT]
    return out


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


def _learning_curve(history: list[dict[str, float]], path: Path, title: str) -> bool:
    """Loss and validation metrics per epoch as a PNG; False when there is nothing to plot."""
    rows = [r for r in history if "epoch" in r]
    if len(rows) < 1:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib comes with mlflow
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = [r["epoch"] for r in rows]
    if any("loss" in r for r in rows):
        ax.plot(epochs, [r.get("loss", float("nan")) for r in rows], label="train loss", color="tab:blue")
        ax.set_ylabel("loss")
    ax2 = ax.twinx()
    for key in sorted({k for r in rows for k in r if k.startswith("valid")}):
        pts = [(r["epoch"], r[key]) for r in rows if key in r]
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key, color="tab:orange")
        ax2.set_ylabel("validation")
    ax.set_xlabel("epoch")
    ax.set_title(title)
    fig.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# -- the pyfunc ----------------------------------------------------------------------------------


def _pyfunc_class() -> type:
    """The MLflow pyfunc wrapper, built on first use so importing mmrec never imports mlflow.

    It is published as `mmrec.tracking.MMRecPyfunc` (module `__getattr__` below), so MLflow's
    cloudpickle stores it by reference and `mlflow.pyfunc.load_model` finds it again.
    """
    cached = globals().get("_PYFUNC_CLASS")
    if cached is not None:
        return cached
    from mlflow.pyfunc import PythonModel

    class MMRecPyfunc(PythonModel):
        """Top-K recommendations from a saved mmrec model folder (the `model` artifact).

        Input: a DataFrame with a `user_id` column. Params: `k` (default 20). Output: one row
        per recommendation, `user_id, item_id, rank, score`; unknown users get the most
        popular items. Loading needs `mmrec` importable, not its training code path.
        """

        def load_context(self, context: Any) -> None:
            from mmrec.models import load_model

            self.model = load_model(context.artifacts[MODEL_ARTIFACT])

        def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
            from mmrec.constants import USER_ID
            from mmrec.recommend.topk import recommend_for_ids

            k = int((params or {}).get("k", 20))
            users = model_input[USER_ID].astype(str).tolist() if USER_ID in model_input else list(model_input.iloc[:, 0])
            return recommend_for_ids(self.model, users, k=k)

    MMRecPyfunc.__module__ = __name__
    MMRecPyfunc.__qualname__ = "MMRecPyfunc"
    globals()["_PYFUNC_CLASS"] = MMRecPyfunc
    return MMRecPyfunc


def __getattr__(name: str) -> Any:  # PEP 562: lazy attribute for the pyfunc class
    if name == "MMRecPyfunc":
        return _pyfunc_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def model_signature() -> Any:
    """Input `user_id` (string), param `k` (long, 20); output user_id, item_id, rank, score."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "user_id")]),
        outputs=Schema(
            [ColSpec("string", "user_id"), ColSpec("string", "item_id"), ColSpec("integer", "rank"), ColSpec("float", "score")]
        ),
        params=ParamSchema([ParamSpec("k", "long", 20)]),
    )


def _pip_requirements() -> list[str]:
    """Explicit requirements: skips MLflow's slow inference, which would import the model in a subprocess."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("mlflow", "numpy", "scipy", "pandas", "pyarrow", "pydantic", "torch"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:  # pragma: no cover
            continue
    return reqs


def log_pyfunc(folder: Path) -> Any:
    """Log a saved mmrec model folder as an MLflow pyfunc model in the active run."""
    import mlflow.pyfunc

    return mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT,
        python_model=_pyfunc_class()(),
        artifacts={MODEL_ARTIFACT: str(folder)},
        signature=model_signature(),
        pip_requirements=_pip_requirements(),
    )


# -- logging a training run ----------------------------------------------------------------------


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

    from mmrec.models import load_model

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
        tag_list = [RunTag(k, str(v)[:_TAG_LIMIT]) for k, v in tags.items()]
        for i in range(0, max(len(metrics), 1), 900):  # log_batch takes at most 1000 metrics
            client.log_batch(run_id, metrics=metrics[i : i + 900], params=param_list if i == 0 else [], tags=tag_list if i == 0 else [])
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            if _learning_curve(model.history, t / f"learning_curve_{name}.png", f"{ctx.spec.name}: {name}"):
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


# -- registry and promotion ------------------------------------------------------------------------


@dataclass
class Decision:
    """One lifecycle decision and its evidence (what is written as tags)."""

    action: Literal["promoted", "refused", "forced", "rolled_back", "registered", "unchanged"]
    registered_model: str
    version: str | None
    reason: str
    metric: str | None = None
    challenger_value: float | None = None
    champion_version: str | None = None
    champion_value: float | None = None
    margin: float | None = None
    margin_mode: str | None = None
    at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def tags(self) -> dict[str, str]:
        return {f"mmrec.decision.{k}": "" if v is None else str(v) for k, v in asdict(self).items()}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _version_metric(mv: ModelVersion, metric: str) -> float | None:
    raw = mv.tags.get(f"mmrec.valid.{mlflow_key(metric)}")
    try:
        return float(raw) if raw not in (None, "") else None
    except ValueError:
        return None


def _alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _history(client: MlflowClient, name: str) -> list[str]:
    rm = client.get_registered_model(name)
    raw = rm.tags.get(CHAMPION_HISTORY, "")
    return [v for v in raw.split(",") if v]


def _record(client: MlflowClient, decision: Decision, run_id: str | None = None) -> None:
    """Write the decision as tags on the version, its run, and the registered model's log."""
    name = decision.registered_model
    if decision.version is not None:
        for k, v in decision.tags().items():
            client.set_model_version_tag(name, decision.version, k, v[:_TAG_LIMIT])
        if run_id is None:
            run_id = client.get_model_version(name, decision.version).run_id
    if run_id:
        for k, v in decision.tags().items():
            client.set_tag(run_id, k, v[:_TAG_LIMIT])
    rm = client.get_registered_model(name)
    try:
        entries = json.loads(rm.tags.get(DECISION_LOG, "[]"))
    except json.JSONDecodeError:
        entries = []
    entries.append({k: v for k, v in decision.to_dict().items() if v is not None and k != "registered_model"})
    while entries and len(json.dumps(entries)) > _TAG_LIMIT:
        entries = entries[1:]
    client.set_registered_model_tag(name, DECISION_LOG, json.dumps(entries[-_MAX_LOGGED_DECISIONS:]))
    log.info("registry %s: %s version %s (%s)", name, decision.action, decision.version, decision.reason)


def _set_champion(client: MlflowClient, name: str, version: str, push_history: bool = True) -> None:
    version = str(version)
    client.set_registered_model_alias(name, CHAMPION, version)
    if push_history:
        hist = _history(client, name)
        if not hist or hist[-1] != version:
            hist.append(version)
        client.set_registered_model_tag(name, CHAMPION_HISTORY, ",".join(hist[-200:]))
    challenger = _alias_version(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == version:
        client.delete_registered_model_alias(name, CHALLENGER)


def gate(challenger: float, champion: float, margin: float, mode: str) -> bool:
    """Whether `challenger` beats `champion` by more than the margin (higher is better)."""
    threshold = champion + margin if mode == "absolute" else champion * (1.0 + margin)
    return challenger > threshold


def evaluate_gate(client: MlflowClient, name: str, version: str, metric: str, tp: TrackingParams) -> Decision:
    """Apply the promotion gate to `version`: move `champion` to it or refuse, and record why."""
    import dataclasses

    version = str(version)
    mv = client.get_model_version(name, version)
    value = _version_metric(mv, metric)
    champion = _alias_version(client, name, CHAMPION)
    decision = Decision("refused", name, version, reason="", metric=metric, challenger_value=value,
                        margin=tp.margin, margin_mode=tp.margin_mode)
    if champion is not None:
        decision.champion_version = str(champion.version)
        decision.champion_value = _version_metric(champion, metric)
    champ_value = decision.champion_value
    if value is None:
        decision.reason = f"version {version} has no validation {metric} tag; cannot compare"
    elif champion is None:
        _set_champion(client, name, version)
        decision = dataclasses.replace(decision, action="promoted", reason="no champion yet: the first registered model becomes champion")
    elif str(champion.version) == version:
        decision = dataclasses.replace(decision, action="unchanged", reason=f"version {version} is already champion")
    elif champ_value is None or gate(value, champ_value, tp.margin, tp.margin_mode):
        _set_champion(client, name, version)
        shown = "n/a" if champ_value is None else f"{champ_value:.6f}"
        why = f"{metric} {value:.6f} beats champion v{champion.version} ({shown}) by more than the {tp.margin_mode} margin {tp.margin}"
        if champion.tags.get("mmrec.split_hash") != mv.tags.get("mmrec.split_hash"):
            why += "; note: the two versions were evaluated on different splits"
        decision = dataclasses.replace(decision, action="promoted", reason=why)
    else:
        client.set_registered_model_alias(name, CHALLENGER, version)
        decision.reason = (f"{metric} {value:.6f} does not beat champion v{champion.version} ({champ_value:.6f}) "
                           f"by more than the {tp.margin_mode} margin {tp.margin}")
    _record(client, decision, mv.run_id)
    return decision


def _existing_version(client: MlflowClient, name: str, digest: str) -> ModelVersion | None:
    for mv in client.search_model_versions(f"name = '{name}'"):
        if mv.tags.get("mmrec.model_hash") == digest:
            return mv
    return None


def _ensure_registered_model(client: MlflowClient, name: str, dataset: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, tags={"mmrec.dataset": dataset},
                                       description=f"mmrec recommenders for dataset {dataset!r}; aliases champion/challenger")


def register(client: MlflowClient, name: str, dataset: str, logged: LoggedRun, entry: dict[str, Any], report: dict[str, Any]) -> ModelVersion:
    """A new version for `logged` (or the existing one holding the same model), alias `challenger`."""
    _ensure_registered_model(client, name, dataset)
    existing = _existing_version(client, name, logged.model_hash)
    if existing is not None:
        log.info("model %s (hash %s) is already version %s", logged.model, logged.model_hash[:12], str(existing.version))
        return existing
    if logged.model_uri is None:
        raise ModelError(f"model {logged.model!r} was not logged as an MLflow model; set tracking.log_all_models or re-run")
    import mlflow

    split = report.get("split", {})
    tags = {
        "mmrec.model": logged.model,
        "mmrec.model_hash": logged.model_hash,
        "mmrec.split_hash": str(split.get("hash", "")),
        "mmrec.split_kind": str(split.get("kind", "")),
        **{f"mmrec.valid.{mlflow_key(k)}": str(v) for k, v in entry.get("valid", {}).items()},
        **{f"mmrec.test.{mlflow_key(k)}": str(v) for k, v in entry.get("test", {}).items()},
        **{f"mmrec.{k}": v for k, v in git_commit().items()},
    }
    mv = mlflow.register_model(logged.model_uri, name, tags=tags)
    client.set_registered_model_alias(name, CHALLENGER, str(mv.version))
    _record(client, Decision("registered", name, str(mv.version), reason=f"best model on validation: {logged.model}",
                             metric=report.get("selection_metric"), challenger_value=logged.valid_metric), logged.run_id)
    return client.get_model_version(name, str(mv.version))


def track_training(ctx: StageContext, report: dict[str, Any] | None = None, tp: TrackingParams | None = None) -> dict[str, Any]:
    """Log every evaluated model as a run; register the best and apply the promotion gate.

    Args:
        report: the evaluation report (`reports/<name>/metrics.json` when None).

    Returns:
        {"tracking_uri", "experiment", "runs": {model: run_id}, "registered_model", "version",
         "decision": {...} | None}.
    """
    from mmrec.stage_inputs import read_metrics

    tp = tp or tracking_params(ctx.params)
    report = report or read_metrics(ctx.paths)
    if not report.get("models"):
        raise StageError(f"{ctx.paths.metrics}: the evaluation report holds no models; run `mmrec stage evaluate`")
    best = report.get("best_model")
    metric = tp.metric or report.get("selection_metric") or ctx.params.evaluate.selection_metric
    uri = resolve_uri(tp, ctx.workspace)
    name = registered_model_name(ctx.spec.name)
    out: dict[str, Any] = {"tracking_uri": uri, "experiment": experiment_name(ctx.spec.name), "runs": {},
                           "registered_model": name, "version": None, "decision": None}
    # Order matters for a server that dies mid-way: every run and its model artifacts are
    # uploaded first; a version is created only for a fully uploaded model; aliases move last.
    step = "connecting"
    try:
        with _mlflow(uri) as client:
            exp_id = _experiment_id(client, experiment_name(ctx.spec.name), uri, tp, ctx.workspace)
            logged: dict[str, LoggedRun] = {}
            for model_name, entry in report["models"].items():
                step = f"logging the run of model {model_name!r}"
                logged[model_name] = log_model_run(ctx, client, exp_id, model_name, entry, report,
                                                   log_model=tp.log_all_models or model_name == best, metric=metric)
                out["runs"][model_name] = logged[model_name].run_id
            if tp.register_best and best in logged:
                step = f"registering model {best!r}"
                mv = register(client, name, ctx.spec.name, logged[best], report["models"][best], report)
                out["version"] = str(mv.version)
                if tp.auto_promote:
                    step = f"applying the promotion gate to version {mv.version}"
                    out["decision"] = evaluate_gate(client, name, str(mv.version), metric, tp).to_dict()
    except Exception as exc:
        if _is_local(uri) or isinstance(exc, MMRecError) or _server_alive(uri):
            raise
        raise _unreachable(uri, name, step, exc) from exc
    return out


def _server_alive(uri: str, timeout: float = 3.0) -> bool:
    """Whether the tracking server answers `/health` (tells a dead server from an MLflow error)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def _unreachable(uri: str, name: str, step: str, exc: BaseException) -> ServiceUnavailable:
    """The error for a tracking server lost mid-way, saying what state the registry was left in."""
    if step.startswith(("connecting", "logging")):
        state = (f"this attempt created no version of {name!r} and moved no alias (runs logged before the failure stay "
                 "in the experiment; an unfinished one is marked FAILED by the next attempt)")
    elif step.startswith("registering"):
        state = (f"no alias moved; a version of {name!r} exists only if the server committed it before failing, and "
                 "then with its complete artifacts (the model was uploaded first); the next attempt reuses it")
    else:
        state = ("the version is registered with complete artifacts; the champion alias may not have moved; "
                 "check with `mmrec promote` / the MLflow UI")
    return ServiceUnavailable(
        "mlflow", uri,
        f"MLflow tracking server {uri} became unreachable while {step} ({_cause(exc)}). Registry state: {state}. "
        "Re-run the pipeline once the server is back (finished stages are cached).",
    )


def _cause(exc: BaseException) -> str:
    """A one-line reason (MLflow's own message embeds a whole urllib3 retry report)."""
    import re

    text = " ".join(str(e) for e in (exc, exc.__cause__, exc.__context__) if e is not None)
    reason = next((label for pattern, label in (("refused", "connection refused"), ("timed out", "timed out"),
                                                ("aborted|reset|RemoteDisconnected|closed", "connection dropped"))
                   if re.search(pattern, text, re.IGNORECASE)), type(exc).__name__)
    call = re.search(r"API request to \S+?(/api/\S+?)[?\s]", text)
    return f"{reason} on {call.group(1)}" if call else reason


# -- commands: promote, rollback, load ----------------------------------------------------------


def _require_registered(client: MlflowClient, name: str, uri: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        raise ModelError(
            f"no registered model {name!r} at {uri}; run `mmrec pipeline --dataset PATH/dataset.yaml` to train and register one"
        ) from None


def _registry_target(ctx: StageContext, tp: TrackingParams | None) -> tuple[TrackingParams, str, str, str]:
    """(tracking params, tracking URI, registered model name, gate metric) for a dataset's registry."""
    tp = tp or tracking_params(ctx.params)
    metric = tp.metric or ctx.params.evaluate.selection_metric
    return tp, resolve_uri(tp, ctx.workspace), registered_model_name(ctx.spec.name), metric


def promote(ctx: StageContext, version: str | None = None, force: bool = False, tp: TrackingParams | None = None) -> Decision:
    """Promote `version` (default: the current `challenger`) through the gate, or unconditionally with `force`."""
    tp, uri, name, metric = _registry_target(ctx, tp)
    with _mlflow(uri) as client:
        _require_registered(client, name, uri)
        if version is None:
            ch = _alias_version(client, name, CHALLENGER)
            if ch is None:
                raise ModelError(f"{name}: no `challenger` to promote; pass --version N (see the MLflow UI for versions)")
            version = str(ch.version)
        from mlflow.exceptions import MlflowException

        try:
            mv = client.get_model_version(name, str(version))
        except MlflowException:
            raise ModelError(f"{name}: no version {version!r}") from None
        if not force:
            return evaluate_gate(client, name, str(mv.version), metric, tp)
        champion = _alias_version(client, name, CHAMPION)
        _set_champion(client, name, str(mv.version))
        decision = Decision("forced", name, str(mv.version), reason="promoted by hand with --force (gate skipped)", metric=metric,
                            challenger_value=_version_metric(mv, metric),
                            champion_version=str(champion.version) if champion else None,
                            champion_value=_version_metric(champion, metric) if champion else None,
                            margin=tp.margin, margin_mode=tp.margin_mode)
        _record(client, decision, mv.run_id)
        return decision


def rollback(ctx: StageContext, tp: TrackingParams | None = None) -> Decision:
    """Point `champion` back at the previous champion (the promotion history's previous entry)."""
    tp, uri, name, _ = _registry_target(ctx, tp)
    with _mlflow(uri) as client:
        _require_registered(client, name, uri)
        current = _alias_version(client, name, CHAMPION)
        if current is None:
            raise ModelError(f"{name}: no champion to roll back; run `mmrec promote --dataset ...` first")
        hist = _history(client, name)
        while hist and hist[-1] == str(current.version):
            hist.pop()
        if not hist:
            raise ModelError(f"{name}: champion v{current.version!s} has no previous champion to roll back to")
        previous = hist[-1]
        client.set_registered_model_alias(name, CHAMPION, previous)
        client.set_registered_model_tag(name, CHAMPION_HISTORY, ",".join(hist))
        client.set_model_version_tag(name, str(current.version), "mmrec.rolled_back", "true")
        metric = tp.metric or ctx.params.evaluate.selection_metric
        prev_mv = client.get_model_version(name, previous)
        decision = Decision("rolled_back", name, previous, reason=f"rollback: champion v{current.version!s} replaced by previous v{previous}",
                            metric=metric, challenger_value=_version_metric(prev_mv, metric),
                            champion_version=str(current.version), champion_value=_version_metric(current, metric))
        _record(client, decision, prev_mv.run_id)
        return decision


def registry_state(ctx: StageContext, tp: TrackingParams | None = None) -> dict[str, Any]:
    """Versions, aliases and the decision log of `mmrec-<dataset>` (for the CLI and the demo)."""
    tp, uri, name, metric = _registry_target(ctx, tp)
    with _mlflow(uri) as client:
        _require_registered(client, name, uri)
        rm = client.get_registered_model(name)
        versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(str(v.version)))
        return {
            "registered_model": name,
            "tracking_uri": uri,
            "aliases": {k: str(v) for k, v in (rm.aliases or {}).items()},
            "versions": [{"version": str(v.version), "model": v.tags.get("mmrec.model"), metric: _version_metric(v, metric),
                          "decision": v.tags.get("mmrec.decision.action")} for v in versions],
            "decisions": json.loads(rm.tags.get(DECISION_LOG, "[]")),
        }


def load_champion(ctx: StageContext, alias: str = CHAMPION, tp: TrackingParams | None = None) -> tuple[Recommender, dict[str, Any]]:
    """The model behind `alias` of `mmrec-<dataset>`, loaded through `mlflow.pyfunc.load_model`.

    Returns:
        (the mmrec Recommender, {"registered_model", "version", "alias", "run_id", "model_uri"}).

    Raises:
        ModelError: nothing registered or no such alias; says which command to run.
    """
    tp, uri, name, _ = _registry_target(ctx, tp)
    spec_hint = ctx.spec.spec_path or "PATH/dataset.yaml"
    with _mlflow(uri) as client:
        import mlflow.pyfunc
        from mlflow.exceptions import MlflowException

        try:
            client.get_registered_model(name)
        except MlflowException:
            raise ModelError(
                f"no registered model {name!r} at {uri}, so there is no {alias}; "
                f"run `mmrec pipeline --dataset {spec_hint}` to train, register and promote one"
            ) from None
        mv = _alias_version(client, name, alias)
        if mv is None:
            raise ModelError(
                f"registered model {name!r} at {uri} has no {alias!r} alias; run `mmrec promote --dataset {spec_hint}` "
                f"(or `mmrec pipeline --dataset {spec_hint}`) to set one"
            )
        model_uri = f"models:/{name}@{alias}"
        try:
            pyfunc = mlflow.pyfunc.load_model(model_uri)
        except MlflowException as exc:
            raise ModelError(f"{model_uri} (version {mv.version!s}) could not be loaded: {exc}") from exc
        model = pyfunc.unwrap_python_model().model
    return model, {"registered_model": name, "version": str(mv.version), "alias": alias, "run_id": mv.run_id, "model_uri": model_uri}


def alias_version(ctx: StageContext, alias: str = CHAMPION, tp: TrackingParams | None = None) -> str | None:
    """The version `alias` points at (None when nothing is registered or the alias is unset).

    Cheap (one registry query, no artifact download): the API polls it to notice a promotion.
    """
    tp, uri, name, _ = _registry_target(ctx, tp)
    with _mlflow(uri) as client:
        mv = _alias_version(client, name, alias)
    return str(mv.version) if mv is not None else None


def check_uri(uri: str) -> None:
    """Fail early with a clear message on URIs MLflow would misread."""
    if uri.startswith("sqlite:") and not uri.startswith("sqlite:///"):
        raise ConfigError(f"tracking.uri {uri!r}: sqlite URIs need three slashes, e.g. sqlite:///mlflow.db")
