"""Where MLflow tracking goes and how to talk to it: names, URIs, the client session, store errors.

`mlflow_client(uri)` points the mlflow module at a store for one block and puts everything back
(MLflow keeps the URI in module globals and the environment). Broken sqlite stores and servers
lost mid-way become one-line errors that name the store and the fix.
MLflow metric/tag names may not contain '@', so `recall@20` is logged as `recall_at_20`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mmrec.errors import ConfigError, MMRecError, ServiceUnavailable, TrackingStoreError
from mmrec.params.tracking import TrackingParams

if TYPE_CHECKING:
    from mlflow import MlflowClient


def registered_model_name(dataset: str) -> str:
    return f"mmrec-{dataset}"


def experiment_name(dataset: str) -> str:
    return f"mmrec-{dataset}"


def mlflow_key(name: str) -> str:
    """A metric/param/tag name MLflow accepts (`recall@20` -> `recall_at_20`)."""
    return name.replace("@", "_at_")


def resolve_uri(tp: TrackingParams, workspace: Path) -> str:
    """Where tracking goes: params, then $MLFLOW_TRACKING_URI, then `<workspace>/mlflow.db`."""
    chosen = tp.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if chosen:
        check_uri(chosen)
        return chosen
    return f"sqlite:///{(Path(workspace).resolve() / 'mlflow.db').as_posix()}"


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri


#: longest tag value written (MLflow's limit on tag values)
TAG_LIMIT = 5000

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
    first = next(
        (m for m in messages if any(k in m.lower() for k in (*_READ_ONLY, *_CORRUPT, *_UNOPENABLE))), messages[0]
    )
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
def mlflow_client(uri: str) -> Iterator[MlflowClient]:
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


def experiment_id(client: MlflowClient, name: str, uri: str, tp: TrackingParams, workspace: Path) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if is_local_store(uri):
        location = (Path(workspace).resolve() / tp.artifact_root / name).as_uri()
    return client.create_experiment(name, artifact_location=location)


def server_alive(uri: str, timeout: float = 3.0) -> bool:
    """Whether the tracking server answers `/health` (tells a dead server from an MLflow error)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def unreachable_error(uri: str, name: str, step: str, exc: BaseException) -> ServiceUnavailable:
    """The error for a tracking server lost mid-way, saying what state the registry was left in."""
    if step.startswith(("connecting", "logging")):
        state = (
            f"this attempt created no version of {name!r} and moved no alias (runs logged before the failure stay "
            "in the experiment; an unfinished one is marked FAILED by the next attempt)"
        )
    elif step.startswith("registering"):
        state = (
            f"no alias moved; a version of {name!r} exists only if the server committed it before failing, and "
            "then with its complete artifacts (the model was uploaded first); the next attempt reuses it"
        )
    else:
        state = (
            "the version is registered with complete artifacts; the champion alias may not have moved; "
            "check with `mmrec promote` / the MLflow UI"
        )
    return ServiceUnavailable(
        "mlflow",
        uri,
        f"MLflow tracking server {uri} became unreachable while {step} ({_cause(exc)}). Registry state: {state}. "
        "Re-run the pipeline once the server is back (finished stages are cached).",
    )


def _cause(exc: BaseException) -> str:
    """A one-line reason (MLflow's own message embeds a whole urllib3 retry report)."""
    import re

    text = " ".join(str(e) for e in (exc, exc.__cause__, exc.__context__) if e is not None)
    reason = next(
        (
            label
            for pattern, label in (
                ("refused", "connection refused"),
                ("timed out", "timed out"),
                ("aborted|reset|RemoteDisconnected|closed", "connection dropped"),
            )
            if re.search(pattern, text, re.IGNORECASE)
        ),
        type(exc).__name__,
    )
    call = re.search(r"API request to \S+?(/api/\S+?)[?\s]", text)
    return f"{reason} on {call.group(1)}" if call else reason


def check_uri(uri: str) -> None:
    """Fail early with a clear message on URIs MLflow would misread."""
    if uri.startswith("sqlite:") and not uri.startswith("sqlite:///"):
        raise ConfigError(f"tracking.uri {uri!r}: sqlite URIs need three slashes, e.g. sqlite:///mlflow.db")
