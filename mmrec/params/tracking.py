"""The `tracking:` section of params.yaml: the MLflow store and the promotion gate's settings.

A leaf module (`mmrec.config` imports it): pydantic only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TrackingParams(BaseModel):
    """The `tracking:` section of params.yaml.

    Attributes:
        uri: tracking (and registry) URI, e.g. `http://127.0.0.1:5000` or
            `postgresql://...`. Empty: `$MLFLOW_TRACKING_URI`, else the embedded default
            `sqlite:///<workspace>/mlflow.db`.
        artifact_root: local artifact store for the embedded default, relative to the workspace.
            With a server the server decides where artifacts go.
        register_best: register the best model of each training run as a new model version.
        auto_promote: run the promotion gate right after registering (else the new version stays
            `challenger` until `mmrec promote`).
        metric: validation metric of the gate; empty means `evaluate.selection_metric`.
        margin: how much the challenger must beat the champion by (strictly more than).
        margin_mode: `absolute` (challenger > champion + margin) or `relative`
            (challenger > champion x (1 + margin)).
        log_all_models: log every trained model as an MLflow model (else only the best one;
            the others still get a run with params and metrics).
    """

    model_config = ConfigDict(extra="forbid")

    uri: str | None = None
    artifact_root: str = "mlruns"
    register_best: bool = True
    auto_promote: bool = True
    metric: str | None = None
    margin: float = Field(0.0, ge=0.0)
    margin_mode: Literal["absolute", "relative"] = "absolute"
    log_all_models: bool = True


def tracking_params(params: Any) -> TrackingParams:
    """The `tracking` section of a `Params`, or the defaults when params.yaml has none."""
    section = getattr(params, "tracking", None)
    if section is None:
        return TrackingParams()
    if isinstance(section, TrackingParams):
        return section
    if isinstance(section, BaseModel):
        section = section.model_dump()
    return TrackingParams.model_validate(section)
