"""The Feast store bound to one dataset: where its files are, its config, the repository's objects, `apply`.

The Feast repository (`feature_repo/`: entities, data sources, feature views, feature services)
is defined once, dataset-free. The profile's `feature_store[.<profile>].yaml` is the template;
the project becomes `mmrec_<name>` and the registry/online database live under
`data/<name>/feast/<profile>/`, so datasets and profiles never share state (Redis keys end with
the project name). `apply` registers the repo's objects for the dataset (stale feature services
are deleted).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mmrec.errors import ConfigError, MMRecError
from mmrec.feast import tables as ft
from mmrec.io import atomic_path
from mmrec.params.feast import FeaturesParams, features_params
from mmrec.paths import DatasetPaths

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    from mmrec.context import StageContext

log = logging.getLogger(__name__)


#: environment variable feature_repo/data_sources.py reads: the folder of the exported tables
DATA_ENV = "MMREC_FEAST_DATA"


_DEFAULT_REPO = Path(__file__).resolve().parents[2] / "feature_repo"


def feast_dir(paths: DatasetPaths) -> Path:
    return paths.data / "feast"


def tables_dir(paths: DatasetPaths) -> Path:
    return feast_dir(paths) / "tables"


def table_path(paths: DatasetPaths, table: str) -> Path:
    return tables_dir(paths) / f"{table}.parquet"


def project_name(dataset: str) -> str:
    """Feast projects allow letters, digits and underscores."""
    return "mmrec_" + re.sub(r"[^A-Za-z0-9_]", "_", dataset)


def repo_dir(fp: FeaturesParams, workspace: Path = Path(".")) -> Path:
    if fp.repo is None:
        repo = (
            workspace / "feature_repo"
            if (workspace / "feature_repo" / "feature_store.yaml").is_file()
            else _DEFAULT_REPO
        )
    else:
        repo = Path(fp.repo)
        if not repo.is_absolute():
            repo = workspace / repo if (workspace / repo).is_dir() else _DEFAULT_REPO.parent / repo
    if not (repo / "feature_store.yaml").is_file():
        raise ConfigError(f"{repo}: not a Feast repository (no feature_store.yaml); set features.repo in params.yaml")
    return repo.resolve()


def redis_connection_string(url: str) -> str:
    """`redis://[:password@]host:port[/db]` -> Feast's `host:port,db=N[,password=...]`."""
    from urllib.parse import urlparse

    if "://" not in url:
        return url  # already Feast's form
    u = urlparse(url)
    if u.scheme not in ("redis", "rediss") or not u.hostname:
        raise ConfigError(f"features.redis_url {url!r}: expected redis://host:port/db")
    parts = [f"{u.hostname}:{u.port or 6379}"]
    db = u.path.lstrip("/")
    if db:
        if not db.isdigit():
            raise ConfigError(
                f"features.redis_url {url!r}: the database must be a number, e.g. redis://127.0.0.1:6379/0"
            )
        parts.append(f"db={db}")
    if u.password:
        parts.append(f"password={u.password}")
    if u.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def store_config(paths: DatasetPaths, fp: FeaturesParams, profile: str | None = None) -> RepoConfig:
    """The profile's feature_store yaml, bound to this dataset (project, registry, online store)."""
    import yaml
    from feast.repo_config import RepoConfig

    repo = repo_dir(fp, paths.workspace)
    profile = profile or fp.profile
    yaml_file = repo / ("feature_store.yaml" if profile == "sqlite" else f"feature_store.{profile}.yaml")
    if not yaml_file.is_file():
        raise ConfigError(f"{yaml_file}: no Feast profile {profile!r} (features.profile); profiles are sqlite, redis")
    raw = yaml.safe_load(os.path.expandvars(yaml_file.read_text(encoding="utf-8"))) or {}
    state = (feast_dir(paths) / profile).resolve()
    raw["project"] = fp.project or project_name(paths.name)
    registry = raw.get("registry")
    raw["registry"] = {**(registry if isinstance(registry, dict) else {}), "path": str(state / "registry.db")}
    online = dict(raw.get("online_store") or {"type": "sqlite"})
    if online.get("type", "sqlite") == "sqlite":
        online["path"] = str(state / "online.db")
    elif online.get("type") == "redis" and fp.redis_url:
        online["connection_string"] = redis_connection_string(fp.redis_url)
    raw["online_store"] = online
    try:
        config = RepoConfig(**raw)
    except Exception as exc:  # pydantic / Feast config errors: name the file
        raise ConfigError(f"{yaml_file}: invalid Feast configuration: {exc}") from exc
    config.repo_path = repo
    return config


def feature_store(paths: DatasetPaths, fp: FeaturesParams, profile: str | None = None) -> FeatureStore:
    from feast import FeatureStore

    config = store_config(paths, fp, profile)
    return FeatureStore(repo_path=str(config.repo_path), config=config)


_LOAD_LOCK = threading.Lock()


@dataclass
class RepoObjects:
    entities: list[Any]
    data_sources: list[Any]
    feature_views: list[Any]
    feature_services: list[Any]

    def all(self) -> list[Any]:
        return [*self.entities, *self.data_sources, *self.feature_views, *self.feature_services]


@contextmanager
def _repo_import(repo: Path, data: str) -> Iterator[list[str]]:
    """Import the repo's modules fresh with `$MMREC_FEAST_DATA=data`, as `feast apply` would.

    The definitions import each other by bare name (`from entities import item`), like every
    Feast repo; they are imported under those names and removed from `sys.modules` afterwards so
    the next dataset gets fresh objects. A lock keeps concurrent loads apart.
    """
    names = sorted(p.stem for p in repo.glob("*.py") if p.name != "__init__.py")
    with _LOAD_LOCK:
        saved_env = os.environ.get(DATA_ENV)
        saved = {n: sys.modules.pop(n) for n in names if n in sys.modules}
        saved_bytecode = sys.dont_write_bytecode
        os.environ[DATA_ENV] = data
        sys.path.insert(0, str(repo))
        sys.dont_write_bytecode = True  # no __pycache__ in the repo: DVC hashes it as a dependency
        try:
            yield names
        finally:
            sys.dont_write_bytecode = saved_bytecode
            sys.path.remove(str(repo))
            for n in names:
                sys.modules.pop(n, None)
            sys.modules.update(saved)
            if saved_env is None:
                os.environ.pop(DATA_ENV, None)
            else:
                os.environ[DATA_ENV] = saved_env


def load_objects(paths: DatasetPaths, fp: FeaturesParams) -> RepoObjects:
    """Entities, sources, views and services of the repo, reading this dataset's tables."""
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    repo = repo_dir(fp, paths.workspace)
    data = os.path.relpath(tables_dir(paths).resolve(), repo)  # relative: the registry stays relocatable
    found = RepoObjects([], [], [], [])
    with _repo_import(repo, data) as names:
        for name in names:
            try:
                module = importlib.import_module(name)
            except MMRecError:
                raise
            except Exception as exc:  # a broken definition file: say which
                raise ConfigError(
                    f"{repo / (name + '.py')}: cannot load Feast definitions: {type(exc).__name__}: {exc}"
                ) from exc
            for attr in dir(module):
                obj = getattr(module, attr)
                for kind, bucket in (
                    (Entity, found.entities),
                    (FeatureView, found.feature_views),
                    (FeatureService, found.feature_services),
                    (DataSource, found.data_sources),
                ):
                    if isinstance(obj, kind) and not any(obj is o for o in bucket):
                        bucket.append(obj)
    return found


def write_table(path: Path, df: pd.DataFrame, table: str) -> None:
    """Write one feature table where Feast's data source reads it (its arrow schema, atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.Table.from_pandas(df.reset_index(drop=True), schema=ft.arrow_schema(table), preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(t, tmp)


def apply(ctx: StageContext, profile: str | None = None) -> dict[str, Any]:
    """Register the repository's objects for this dataset; delete feature services and views gone from it."""
    fp = features_params(ctx.params)
    for table in ft.TABLES:  # sources must exist before Feast reads them
        if not table_path(ctx.paths, table).is_file():
            write_table(table_path(ctx.paths, table), ft.empty(table), table)
    objects = load_objects(ctx.paths, fp)
    store = feature_store(ctx.paths, fp, profile)
    keep_views = {v.name for v in objects.feature_views}
    keep_services = {s.name for s in objects.feature_services}
    stale: list[Any] = []
    try:
        stale += [s for s in store.list_feature_services() if s.name not in keep_services]
        stale += [v for v in store.list_feature_views() if v.name not in keep_views]
    except Exception as exc:  # noqa: BLE001 - a fresh registry has nothing to list
        log.debug("nothing registered yet (%s)", exc)
    store.apply(objects.all(), objects_to_delete=stale, partial=False)
    return {
        "project": store.project,
        "profile": profile or fp.profile,
        "views": sorted(keep_views),
        "services": sorted(keep_services),
        "deleted": sorted(o.name for o in stale),
    }
