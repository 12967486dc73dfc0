"""The model registry: registered versions, the `champion`/`challenger` aliases and the promotion gate.

The best model on validation is registered as a new version of `mmrec-<dataset>` and gets the
alias `challenger`. The gate moves `champion` to it only if it beats the current champion's
validation metric by the configured margin. Every decision (promoted, refused, forced, rolled
back) and its evidence is written as tags on the model version, on its run and in the registered
model's decision log. Aliases only: the deprecated stages are never used.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mmrec.errors import ModelError
from mmrec.params.tracking import TrackingParams, tracking_params
from mmrec.tracking.evidence import git_commit
from mmrec.tracking.store import TAG_LIMIT, mlflow_client, mlflow_key, registered_model_name, resolve_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from mmrec.context import StageContext
    from mmrec.models.base import Recommender
    from mmrec.tracking.runs import LoggedRun

log = logging.getLogger(__name__)


CHAMPION = "champion"


CHALLENGER = "challenger"


#: registered-model tag holding the promotion history (versions, oldest first) for rollback
CHAMPION_HISTORY = "mmrec.champion_history"


#: registered-model tag holding the last decisions (JSON list), newest last
DECISION_LOG = "mmrec.decisions"


_MAX_LOGGED_DECISIONS = 20


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
            client.set_model_version_tag(name, decision.version, k, v[:TAG_LIMIT])
        if run_id is None:
            run_id = client.get_model_version(name, decision.version).run_id
    if run_id:
        for k, v in decision.tags().items():
            client.set_tag(run_id, k, v[:TAG_LIMIT])
    rm = client.get_registered_model(name)
    try:
        entries = json.loads(rm.tags.get(DECISION_LOG, "[]"))
    except json.JSONDecodeError:
        entries = []
    entries.append({k: v for k, v in decision.to_dict().items() if v is not None and k != "registered_model"})
    while entries and len(json.dumps(entries)) > TAG_LIMIT:
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
    decision = Decision(
        "refused",
        name,
        version,
        reason="",
        metric=metric,
        challenger_value=value,
        margin=tp.margin,
        margin_mode=tp.margin_mode,
    )
    if champion is not None:
        decision.champion_version = str(champion.version)
        decision.champion_value = _version_metric(champion, metric)
    champ_value = decision.champion_value
    if value is None:
        decision.reason = f"version {version} has no validation {metric} tag; cannot compare"
    elif champion is None:
        _set_champion(client, name, version)
        decision = dataclasses.replace(
            decision, action="promoted", reason="no champion yet: the first registered model becomes champion"
        )
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
        decision.reason = (
            f"{metric} {value:.6f} does not beat champion v{champion.version} ({champ_value:.6f}) "
            f"by more than the {tp.margin_mode} margin {tp.margin}"
        )
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
        client.create_registered_model(
            name,
            tags={"mmrec.dataset": dataset},
            description=f"mmrec recommenders for dataset {dataset!r}; aliases champion/challenger",
        )


def register(
    client: MlflowClient, name: str, dataset: str, logged: LoggedRun, entry: dict[str, Any], report: dict[str, Any]
) -> ModelVersion:
    """A new version for `logged` (or the existing one holding the same model), alias `challenger`."""
    _ensure_registered_model(client, name, dataset)
    existing = _existing_version(client, name, logged.model_hash)
    if existing is not None:
        log.info(
            "model %s (hash %s) is already version %s", logged.model, logged.model_hash[:12], str(existing.version)
        )
        return existing
    if logged.model_uri is None:
        raise ModelError(
            f"model {logged.model!r} was not logged as an MLflow model; set tracking.log_all_models or re-run"
        )
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
    _record(
        client,
        Decision(
            "registered",
            name,
            str(mv.version),
            reason=f"best model on validation: {logged.model}",
            metric=report.get("selection_metric"),
            challenger_value=logged.valid_metric,
        ),
        logged.run_id,
    )
    return client.get_model_version(name, str(mv.version))


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


def promote(
    ctx: StageContext, version: str | None = None, force: bool = False, tp: TrackingParams | None = None
) -> Decision:
    """Promote `version` (default: the current `challenger`) through the gate, or unconditionally with `force`."""
    tp, uri, name, metric = _registry_target(ctx, tp)
    with mlflow_client(uri) as client:
        _require_registered(client, name, uri)
        if version is None:
            ch = _alias_version(client, name, CHALLENGER)
            if ch is None:
                raise ModelError(
                    f"{name}: no `challenger` to promote; pass --version N (see the MLflow UI for versions)"
                )
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
        decision = Decision(
            "forced",
            name,
            str(mv.version),
            reason="promoted by hand with --force (gate skipped)",
            metric=metric,
            challenger_value=_version_metric(mv, metric),
            champion_version=str(champion.version) if champion else None,
            champion_value=_version_metric(champion, metric) if champion else None,
            margin=tp.margin,
            margin_mode=tp.margin_mode,
        )
        _record(client, decision, mv.run_id)
        return decision


def rollback(ctx: StageContext, tp: TrackingParams | None = None) -> Decision:
    """Point `champion` back at the previous champion (the promotion history's previous entry)."""
    tp, uri, name, _ = _registry_target(ctx, tp)
    with mlflow_client(uri) as client:
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
        decision = Decision(
            "rolled_back",
            name,
            previous,
            reason=f"rollback: champion v{current.version!s} replaced by previous v{previous}",
            metric=metric,
            challenger_value=_version_metric(prev_mv, metric),
            champion_version=str(current.version),
            champion_value=_version_metric(current, metric),
        )
        _record(client, decision, prev_mv.run_id)
        return decision


def registry_state(ctx: StageContext, tp: TrackingParams | None = None) -> dict[str, Any]:
    """Versions, aliases and the decision log of `mmrec-<dataset>` (for the CLI and the demo)."""
    tp, uri, name, metric = _registry_target(ctx, tp)
    with mlflow_client(uri) as client:
        _require_registered(client, name, uri)
        rm = client.get_registered_model(name)
        versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(str(v.version)))
        return {
            "registered_model": name,
            "tracking_uri": uri,
            "aliases": {k: str(v) for k, v in (rm.aliases or {}).items()},
            "versions": [
                {
                    "version": str(v.version),
                    "model": v.tags.get("mmrec.model"),
                    metric: _version_metric(v, metric),
                    "decision": v.tags.get("mmrec.decision.action"),
                }
                for v in versions
            ],
            "decisions": json.loads(rm.tags.get(DECISION_LOG, "[]")),
        }


def load_champion(
    ctx: StageContext, alias: str = CHAMPION, tp: TrackingParams | None = None
) -> tuple[Recommender, dict[str, Any]]:
    """The model behind `alias` of `mmrec-<dataset>`, loaded through `mlflow.pyfunc.load_model`.

    Returns:
        (the mmrec Recommender, {"registered_model", "version", "alias", "run_id", "model_uri"}).

    Raises:
        ModelError: nothing registered or no such alias; says which command to run.
    """
    tp, uri, name, _ = _registry_target(ctx, tp)
    spec_hint = ctx.spec.spec_path or "PATH/dataset.yaml"
    with mlflow_client(uri) as client:
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
    return model, {
        "registered_model": name,
        "version": str(mv.version),
        "alias": alias,
        "run_id": mv.run_id,
        "model_uri": model_uri,
    }


def alias_version(ctx: StageContext, alias: str = CHAMPION, tp: TrackingParams | None = None) -> str | None:
    """The version `alias` points at (None when nothing is registered or the alias is unset).

    Cheap (one registry query, no artifact download): the API polls it to notice a promotion.
    """
    tp, uri, name, _ = _registry_target(ctx, tp)
    with mlflow_client(uri) as client:
        mv = _alias_version(client, name, alias)
    return str(mv.version) if mv is not None else None
