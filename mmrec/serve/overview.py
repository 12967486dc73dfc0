"""What the "models" page shows: the registry, the champion's metrics, the report and the last nightly run.

`ModelsOverview` gathers, for one dataset:
- **registry** (MLflow): the registered model's versions (model, validation metric, gate
  decision, creation time, aliases), its aliases (`champion`, `challenger`, ...), the last
  lifecycle decisions, and the champion's run metrics (valid / test / sparse / cold, read back
  from the run, so they are exactly the served model's figures even when a later training run
  rewrote the report);
- **report** (`reports/<name>/metrics.json`): the selection metric, the split and the best model;
- **figures**: the PNGs of `reports/<name>/figures/` (learning curves, ablation), served only
  through `figure()`;
- **nightly** (`reports/<name>/recommendations.json`): when the last batch run wrote its file,
  how many users it covered, catalogue coverage and which model version it used.

The MLflow part is the expensive one (a remote server or a sqlite file; the first query also
imports mlflow, seconds): it is cached for `ttl_s` seconds, failures included, so reloading the
page does not hammer the tracking store; one refresh runs at a time. Reports are small local
files and are read on every request, so a new report shows at once.

Nothing here writes: with the embedded sqlite default, a missing `mlflow.db` is reported as "no
registry yet" instead of letting MLflow create an empty store from a page view. The MLflow
client is built with explicit URIs (no `mlflow.set_tracking_uri`): this runs on the API's
request threads, beside the reload poll, and must not switch process-wide state.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrec.errors import MMRecError, NotFoundError

if TYPE_CHECKING:
    from mmrec.stages import StageContext

log = logging.getLogger(__name__)

#: the report's figures folder (mmrec/report.py writes it)
FIGURES = "figures"
#: figure names the page may ask for: one plain file name, a PNG
FIGURE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}\.png$")
#: run metric prefixes of the evaluation parts (mmrec/tracking.py logs `<part>_<metric>`)
PARTS = ("valid", "test", "sparse", "cold")
#: versions listed, newest first
MAX_VERSIONS = 50
MAX_DECISIONS = 10
_TITLES = {
    "learning_curves.png": "Learning curves (validation metric per epoch)",
    "ablation.png": "Ablation: the model on each modality alone, on all of them, and on random-vector controls",
}

RegistryReader = Callable[[str, str, str], dict[str, Any]]


class RegistryMissing(MMRecError):
    """Nothing is registered yet (no store, or no registered model in it): not an error of the page."""


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _metric_name(key: str) -> str:
    """An MLflow metric key back in the report's spelling (`recall_at_20` -> `recall@20`)."""
    return key.replace("_at_", "@")


def run_metrics(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """A run's final metrics grouped by evaluation part: {"valid": {"recall@20": ..}, "test": ..}.

    Per-epoch curves (`epoch_*`) are left out; `train_seconds`, `epochs` and `best_epoch` go
    under "training".
    """
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        part, _, rest = key.partition("_")
        if part in PARTS and rest:
            out.setdefault(part, {})[_metric_name(rest)] = float(value)
        elif key in ("train_seconds", "eval_seconds", "epochs", "best_epoch"):
            out.setdefault("training", {})[key] = float(value)
    return {part: dict(sorted(values.items())) for part, values in out.items()}


def _server_answers(uri: str, timeout: float = 3.0) -> bool:
    """Whether an http(s) tracking server answers `/health` within `timeout` seconds.

    MLflow's own client retries a dead server with back-off for minutes; a page must not wait.
    """
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def read_registry(uri: str, name: str, metric: str) -> dict[str, Any]:
    """Versions, aliases, decisions and the champion's run metrics of registered model `name`.

    Args:
        uri: tracking and registry URI (mmrec.tracking.resolve_uri).
        name: registered model (`mmrec-<dataset>`).
        metric: the gate's validation metric (`recall@20`), read from each version's tags.

    Raises:
        RegistryMissing: no store yet, or no such registered model.
        ServiceUnavailable: a tracking server does not answer.
        TrackingStoreError: the sqlite store is broken (mmrec.tracking.store_error).
    """
    from mmrec.errors import ServiceUnavailable
    from mmrec.tracking.registry import CHAMPION, DECISION_LOG
    from mmrec.tracking.store import mlflow_key, store_error

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise RegistryMissing(f"no MLflow registry yet for {name!r}: nothing has been trained and registered")
    if uri.startswith(("http://", "https://")) and not _server_answers(uri):
        raise ServiceUnavailable(
            "mlflow", uri, f"the MLflow tracking server {uri} does not answer; try again when it is up"
        )
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        try:
            rm = client.get_registered_model(name)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower():
                raise RegistryMissing(
                    f"the MLflow registry has no model {name!r} yet: nothing has been registered"
                ) from None
            raise
        aliases = {str(k): str(v) for k, v in (rm.aliases or {}).items()}
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(version, []).append(alias)
        tag = f"mmrec.valid.{mlflow_key(metric)}"
        versions = []
        for mv in sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: -int(str(v.version)))[
            :MAX_VERSIONS
        ]:
            raw = mv.tags.get(tag)
            try:
                value = float(raw) if raw not in (None, "") else None
            except ValueError:
                value = None
            versions.append(
                {
                    "version": str(mv.version),
                    "model": mv.tags.get("mmrec.model"),
                    "metric": value,
                    "decision": mv.tags.get("mmrec.decision.action"),
                    "created": _iso(mv.creation_timestamp / 1000) if mv.creation_timestamp else None,
                    "run_id": mv.run_id,
                    "aliases": sorted(by_version.get(str(mv.version), [])),
                }
            )
        try:
            decisions = json.loads(rm.tags.get(DECISION_LOG, "[]"))
        except ValueError:
            decisions = []
        champion = None
        if CHAMPION in aliases:
            mv = client.get_model_version(name, aliases[CHAMPION])
            run = client.get_run(mv.run_id) if mv.run_id else None
            champion = {
                "version": str(mv.version),
                "model": mv.tags.get("mmrec.model"),
                "run_id": mv.run_id,
                "trained": _iso(run.info.start_time / 1000) if run is not None and run.info.start_time else None,
                "split_hash": run.data.tags.get("mmrec.split_hash") if run is not None else None,
                "metrics": run_metrics(run.data.metrics) if run is not None else {},
            }
    except MMRecError:
        raise
    except Exception as exc:
        broken = store_error(uri, exc)
        if broken is not None:
            raise broken from exc
        raise
    return {
        "registered_model": name,
        "metric": metric,
        "aliases": aliases,
        "versions": versions,
        "decisions": decisions[-MAX_DECISIONS:][::-1] if isinstance(decisions, list) else [],
        "champion": champion,
    }


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the file's object, None) or (None, why it cannot be shown)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, "missing"
    except OSError as exc:
        return None, f"{path.name} cannot be read ({type(exc).__name__})"
    try:
        data = json.loads(text)
    except ValueError as exc:
        return (
            None,
            f"{path.name} is not valid JSON (line {getattr(exc, 'lineno', '?')}); re-run the stage that writes it",
        )
    if not isinstance(data, dict):
        return None, f"{path.name} does not hold a JSON object; re-run the stage that writes it"
    return data, None


class ModelsOverview:
    """The models page's data for one dataset (see the module docstring).

    Args:
        dataset: the dataset's name (`name:` of dataset.yaml).
        reports: `reports/<name>` of the workspace.
        tracking_uri: MLflow tracking/registry URI.
        registered_model: `mmrec-<name>`.
        metric: the gate's validation metric.
        ttl_s: how long a registry answer (or failure) is reused.
        read: the registry reader (`read_registry`; tests pass another).
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        dataset: str,
        reports: Path,
        tracking_uri: str,
        registered_model: str,
        metric: str,
        ttl_s: float = 30.0,
        read: RegistryReader = read_registry,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dataset = dataset
        self.reports = Path(reports)
        self.tracking_uri = tracking_uri
        self.registered_model = registered_model
        self.metric = metric
        self.ttl_s = ttl_s
        self._read = read
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None

    @classmethod
    def from_context(cls, ctx: StageContext, ttl_s: float = 30.0) -> ModelsOverview:
        """The overview of the dataset a `mmrec serve` process serves."""
        from mmrec.params.tracking import tracking_params
        from mmrec.tracking.store import registered_model_name, resolve_uri

        tp = tracking_params(ctx.params)
        return cls(
            ctx.spec.name,
            ctx.paths.reports,
            resolve_uri(tp, ctx.workspace),
            registered_model_name(ctx.spec.name),
            tp.metric or ctx.params.evaluate.selection_metric,
            ttl_s=ttl_s,
        )

    # -- the registry (cached) ---------------------------------------------------------------------
    def registry(self) -> dict[str, Any]:
        """The registry block: `status` ok / missing / unavailable, and what was read or why not."""
        with self._lock:
            now = self._clock()
            if self._cached is not None and now - self._cached[0] < self.ttl_s:
                return self._cached[1]
            try:
                block = {"status": "ok", **self._read(self.tracking_uri, self.registered_model, self.metric)}
            except RegistryMissing as exc:
                block = {
                    "status": "missing",
                    "registered_model": self.registered_model,
                    "message": f"{exc}. Run `mmrec pipeline --dataset PATH/dataset.yaml` to train, register and promote a model.",
                }
            except MMRecError as exc:
                log.warning("models page: the MLflow registry cannot be read: %s", exc)
                block = {"status": "unavailable", "registered_model": self.registered_model, "message": str(exc)}
            except Exception as exc:  # any MLflow failure is shown, the page stays up
                log.exception("models page: reading the MLflow registry failed")
                block = {
                    "status": "unavailable",
                    "registered_model": self.registered_model,
                    "message": f"the MLflow registry could not be read ({type(exc).__name__}); the server log has the details",
                }
            block["read_at"] = _iso(time.time())
            self._cached = (self._clock(), block)
            return block

    # -- the reports (read each time) --------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        data, problem = _read_json(self.reports / "metrics.json")
        if data is None:
            message = (
                "no evaluation report yet: run `mmrec evaluate` or `mmrec pipeline`"
                if problem == "missing"
                else problem
            )
            return {"status": "missing" if problem == "missing" else "unreadable", "message": message}
        raw = data.get("models")
        models: dict[str, Any] = raw if isinstance(raw, dict) else {}
        return {
            "status": "ok",
            "selection_metric": data.get("selection_metric"),
            "best_model": data.get("best_model"),
            "split": data.get("split") if isinstance(data.get("split"), dict) else None,
            "models": {
                name: {
                    part: entry[part] for part in PARTS if isinstance(entry, dict) and isinstance(entry.get(part), dict)
                }
                for name, entry in models.items()
            },
        }

    def figures(self) -> list[dict[str, str]]:
        """The report's PNG figures, each with its URL on this API."""
        folder = self.reports / FIGURES
        try:
            names = sorted(p.name for p in folder.iterdir() if FIGURE_NAME.match(p.name) and p.is_file())
        except OSError:
            return []
        return [
            {
                "name": n,
                "title": _TITLES.get(n, n.removesuffix(".png").replace("_", " ")),
                "url": f"/models/figures/{n}",
            }
            for n in names
        ]

    def nightly(self) -> dict[str, Any]:
        path = self.reports / "recommendations.json"
        data, problem = _read_json(path)
        if data is None:
            message = (
                "no nightly run yet: run `mmrec recommend` (or the nightly-recommendations flow)"
                if problem == "missing"
                else problem
            )
            return {"status": "missing" if problem == "missing" else "unreadable", "message": message}
        try:
            finished = _iso(path.stat().st_mtime)
        except OSError:
            finished = None
        raw = data.get("model")
        model: dict[str, Any] = raw if isinstance(raw, dict) else {}
        keys = (
            "k",
            "users",
            "users_covered",
            "users_full",
            "rows",
            "items_recommended",
            "n_items",
            "catalogue_coverage",
            "seconds",
            "users_per_second",
            "strategy",
        )
        return {
            "status": "ok",
            "finished_at": finished,
            **{k: data.get(k) for k in keys},
            "model": {k: model.get(k) for k in ("name", "registered_model", "version", "alias")},
        }

    def overview(self) -> dict[str, Any]:
        """Everything the page shows, as one JSON object."""
        return {
            "dataset": self.dataset,
            "registry": self.registry(),
            "report": self.report(),
            "figures": self.figures(),
            "nightly": self.nightly(),
            "cache_ttl_s": self.ttl_s,
        }

    def figure(self, name: str) -> tuple[Path, str]:
        """(the real file, its content type) of figure `name`, or NotFoundError.

        Only a plain PNG file name is accepted; the file must resolve (symlinks followed) inside
        the figures folder and be a real PNG within the image pixel limit
        (mmrec.serve.media.checked_media), so no name reaches another file.
        """
        if not FIGURE_NAME.match(name) or ".." in name:
            raise NotFoundError("figure", name, f"no figure {name!r}: figure names are plain PNG file names")
        from mmrec.serve.media import checked_media

        root = Path(os.path.realpath(self.reports / FIGURES))
        try:
            return checked_media(root / name, root, "image", name)
        except NotFoundError:
            raise NotFoundError(
                "figure", name, f"no figure {name!r} in the report (or it is not a servable PNG)"
            ) from None
