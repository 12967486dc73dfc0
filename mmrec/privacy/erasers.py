"""One eraser per store the platform writes: each removes one user and says how much it removed.

An eraser is `fn(ctx, user_id) -> {what: count}`. Each is idempotent (a second run finds nothing
and returns zeros), rewrites every file it changes through a temporary sibling and `os.replace`
(a crash leaves the old file or the new one, never half of one), and reads the raw id only to
match it: nothing here writes it anywhere. `mmrec.privacy.forget.ERASERS` runs them in order.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.constants import USER_ID
from mmrec.context import StageContext
from mmrec.errors import ServiceUnavailable
from mmrec.io import atomic_path, write_json
from mmrec.privacy.scan import file_mentions, id_pattern

log = logging.getLogger(__name__)

#: what a report shows instead of an erased id
REDACTED = "[forgotten]"
#: files whose text is rewritten with the id replaced (reports, summaries)
TEXT_SUFFIXES = {".json", ".md", ".txt", ".csv", ".tsv", ".html", ".log", ".yaml", ".yml"}


# -- files ----------------------------------------------------------------------------------------


def filter_parquet(path: Path, user_id: str, column: str = USER_ID) -> int:
    """Drop the user's rows from one parquet file (atomically); rows removed."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if column not in table.column_names:
        return 0
    df = table.to_pandas()
    hit = df[column].astype(str) == user_id
    n = int(hit.sum())
    if n:
        import pyarrow as pa

        kept = pa.Table.from_pandas(df[~hit].reset_index(drop=True), schema=table.schema, preserve_index=False)
        with atomic_path(path) as tmp:
            pq.write_table(kept, tmp)
    return n


def filter_parquet_raw(path: Path, forgotten: Any, raw_column: str = "raw") -> int:
    """Drop rows whose unparsed source line (`raw`) names a forgotten id (rejects, quarantine)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if raw_column not in table.column_names:
        return 0
    df = table.to_pandas()
    hit = df[raw_column].map(forgotten).astype(bool)
    n = int(hit.sum())
    if n:
        import pyarrow as pa

        kept = pa.Table.from_pandas(df[~hit].reset_index(drop=True), schema=table.schema, preserve_index=False)
        with atomic_path(path) as tmp:
            pq.write_table(kept, tmp)
    return n


def filter_tsv(path: Path, user_id: str, column: str = USER_ID) -> int:
    """Drop the user's lines from a header-first TSV; every other line is kept byte for byte."""
    with path.open("rb") as fh:
        lines = fh.read().split(b"\n")
    if not lines or not lines[0]:
        return 0
    header = lines[0].rstrip(b"\r").split(b"\t")
    if column.encode() not in header:
        return 0
    pos, uid = header.index(column.encode()), user_id.encode("utf-8")
    kept, n = [lines[0]], 0
    for line in lines[1:]:
        fields = line.rstrip(b"\r").split(b"\t")
        if len(fields) > pos and fields[pos] == uid:
            n += 1
        else:
            kept.append(line)
    if n:
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"\n".join(kept))
    return n


def redact_text(path: Path, user_id: str) -> int:
    """Replace every whole-token occurrence of the id in a text file with `[forgotten]`."""
    data = path.read_bytes()
    new, n = id_pattern(user_id).subn(REDACTED.encode(), data)
    if n:
        with atomic_path(path) as tmp:
            tmp.write_bytes(new)
    return n


def forget_in_state(path: Path, user_id: str) -> int:
    """Remove a user from a saved model's `state.npz` (mmrec.models.base.Recommender.save).

    The user's entry of `user_ids`, their row of the training matrix (`train_indptr`/`indices`)
    and their row of every user-indexed learned array (`state__*user*`, e.g. BPR/LightGCN/VBPR
    `user_factors`) go; the model then does not know the user (unknown users fall back to the
    cold-user path). Item-side parameters keep the user's aggregate influence until retraining.
    Returns 1 when the user was in the model, else 0.
    """
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    users = arrays["user_ids"].astype(str)
    hit = np.flatnonzero(users == user_id)
    if not len(hit):
        return 0
    n_users = len(users)
    keep = np.ones(n_users, dtype=bool)
    keep[hit] = False
    out: dict[str, np.ndarray] = {}
    indptr, indices = arrays.get("train_indptr"), arrays.get("train_indices")
    for k, v in arrays.items():
        if k == "user_ids":
            out[k] = v[keep]
        elif k in ("train_indptr", "train_indices"):
            continue
        elif k.startswith("state__") and "user" in k[len("state__") :] and v.ndim >= 1 and v.shape[0] == n_users:
            out[k] = v[keep]
        else:
            out[k] = v
    if indptr is not None and indices is not None:
        counts = np.diff(indptr)
        rows = [indices[indptr[u] : indptr[u + 1]] for u in range(n_users) if keep[u]]
        out["train_indices"] = np.concatenate(rows).astype(indices.dtype) if rows else indices[:0]
        out["train_indptr"] = np.concatenate([[0], np.cumsum(counts[keep])]).astype(indptr.dtype)
    fd, tmp_name = tempfile.mkstemp(prefix=".state.", suffix=".npz", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        np.savez(tmp, **out)  # type: ignore[arg-type]  # numpy's stub reads ** as allow_pickle
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return 1


def _files(root: Path, pattern: str = "*") -> list[Path]:
    return (
        sorted(f for f in root.rglob(pattern) if f.is_file() and not f.is_symlink() and not f.name.startswith("."))
        if root.is_dir()
        else []
    )


def _add(out: dict[str, int], key: str, n: int) -> None:
    out[key] = out.get(key, 0) + n


# -- stores ---------------------------------------------------------------------------------------


def erase_online_sqlite(ctx: StageContext, user_id: str) -> dict[str, int]:
    """Feast's sqlite online store(s) of the dataset: the user's entity rows, then VACUUM.

    Every `online.db` under data/<name>/feast/ (one per profile folder) is cleaned; VACUUM
    rewrites the file so the deleted rows do not linger in free pages.
    """
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    out: dict[str, int] = {}
    for db in _files(ctx.paths.data / "feast", "*.db"):
        if db.name == "registry.db":
            continue
        con = sqlite3.connect(db)
        try:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            removed = 0
            for t in tables:
                cols = [r[1] for r in con.execute(f'PRAGMA table_info("{t}")')]
                if "entity_key" not in cols:
                    continue
                for version in (3,):
                    key = serialize_entity_key(
                        EntityKey(join_keys=[USER_ID], entity_values=[Value(string_val=user_id)]),
                        entity_key_serialization_version=version,
                    )
                    removed += con.execute(f'DELETE FROM "{t}" WHERE entity_key = ?', (key,)).rowcount
            con.commit()
            if removed or file_mentions(db, user_id):
                con.execute("VACUUM")
        finally:
            con.close()
        _add(out, "rows", removed)
    return out


def erase_online_redis(ctx: StageContext, user_id: str) -> dict[str, int]:
    """Feast's Redis online store (production profile): the user's entity key of this project.

    Skipped (zeros) when the dataset does not use the redis profile. Raises ServiceUnavailable
    when Redis cannot be reached: the forget is then incomplete and must be re-run.
    """
    from mmrec.feast.store import project_name
    from mmrec.params.feast import features_params

    fp = features_params(ctx.params)
    if fp.profile != "redis" or not fp.redis_url:
        return {}
    import redis
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    project = fp.project or project_name(ctx.spec.name)
    ek = EntityKey(join_keys=[USER_ID], entity_values=[Value(string_val=user_id)])
    keys = [_redis_key(project, ek, entity_key_serialization_version=v) for v in (3,)]
    try:
        client = redis.Redis.from_url(fp.redis_url)
        removed = int(client.delete(*keys))
        rewrites = _rewrite_persistence(client) if removed else 0
    except redis.exceptions.RedisError as exc:
        where = fp.redis_url.split("@")[-1]
        raise ServiceUnavailable(
            "redis",
            where,
            f"the Redis online store at {where} could not be reached ({exc}); re-run the forget when it is back",
        ) from exc
    return {"keys": removed, "persistence_rewrites": rewrites}


def _rewrite_persistence(client: Any) -> int:
    """Start an append-only-file rewrite (and a snapshot when RDB is on) so the deleted key's
    old writes leave Redis's files too; a server that forbids CONFIG/BG* (managed Redis) is left
    to its own schedule (docs/privacy.md)."""
    import redis

    started = 0
    try:
        config = client.config_get("appendonly") | client.config_get("save")
        if config.get("appendonly") == "yes":
            client.bgrewriteaof()
            started += 1
        if config.get("save"):
            client.bgsave()
            started += 1
    except redis.exceptions.ResponseError as exc:
        log.warning(
            "forget: Redis persistence not rewritten (%s); its files keep old writes until its next rewrite", exc
        )
    return started


def erase_recommendations(ctx: StageContext, user_id: str) -> dict[str, int]:
    """Nightly top-K: latest.parquet and any other (dated) snapshot in the folder; summaries redacted."""
    out: dict[str, int] = {}
    for f in _files(ctx.paths.recommendations.parent):
        if f.suffix == ".parquet":
            _add(out, "rows", filter_parquet(f, user_id))
        elif f.suffix in TEXT_SUFFIXES:
            _add(out, "mentions", redact_text(f, user_id))
    return out


def _forget_list(ctx: StageContext) -> Any:
    from mmrec.privacy.forget_list import ForgetList

    return ForgetList.load(ctx.paths)


def erase_warehouse(ctx: StageContext, user_id: str) -> dict[str, int]:
    """Warehouse tables (interactions, users, ingest rejects); the manifest's counts follow."""
    out: dict[str, int] = {}
    fl = _forget_list(ctx)
    wh = ctx.paths.warehouse
    manifest_file = wh / "manifest.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else None
    for f in _files(wh, "*.parquet"):
        n = filter_parquet(f, user_id)
        if f.stem.endswith("_rejects"):
            n += filter_parquet_raw(f, fl.raw_line_forgotten)
        _add(out, f.stem, n)
        table = f.stem.removesuffix("_rejects")
        entry = manifest.get("tables", {}).get(table) if manifest else None
        if n and isinstance(entry, dict):  # validation's line accounting must still balance
            entry["forgotten"] = int(entry.get("forgotten", 0)) + n
            key = "rejected" if f.stem.endswith("_rejects") else "rows"
            entry[key] = max(0, int(entry.get(key, 0)) - n)
    if manifest is not None and any(out.values()):
        write_json(manifest_file, manifest)
    return {k: v for k, v in out.items() if v} or {"rows": 0}


def erase_events(ctx: StageContext, user_id: str) -> dict[str, int]:
    """The event log (events, recent history, impressions) and its ingested snapshot and quarantine."""
    from mmrec.events.ingest import quarantine_path, snapshot_path
    from mmrec.events.store import erase_user

    out = dict(erase_user(ctx, user_id))
    for label, f in (("ingested", snapshot_path(ctx.paths)), ("ingest_quarantine", quarantine_path(ctx.paths))):
        if f.is_file():
            out[label] = filter_parquet(f, user_id)
    return out


def erase_validated(ctx: StageContext, user_id: str) -> dict[str, int]:
    """Validated tables (what every later stage reads) and the quarantine (bad rows kept for review)."""
    out: dict[str, int] = {}
    fl = _forget_list(ctx)
    for folder, label in ((ctx.paths.validated, "validated"), (ctx.paths.quarantine, "quarantine")):
        for f in _files(folder, "*.parquet"):
            n = filter_parquet(f, user_id)
            if folder == ctx.paths.quarantine:
                n += filter_parquet_raw(f, fl.raw_line_forgotten)
            _add(out, f"{label}/{f.stem}", n)
    return {k: v for k, v in out.items() if v} or {"rows": 0}


def erase_splits(ctx: StageContext, user_id: str) -> dict[str, int]:
    """Every split kind's TSV files (train/valid/test/cold_*); split.json records the erasure.

    The split's hash is kept: the models trained on it lose the same user (erase_models), so they
    still match the split they are served with.
    """
    out: dict[str, int] = {}
    root = ctx.paths.data / "splits"
    for f in _files(root, "*.tsv"):
        _add(out, f"{f.parent.name}/{f.stem}", filter_tsv(f, user_id))
    for kind_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        removed = sum(v for k, v in out.items() if k.startswith(f"{kind_dir.name}/"))
        meta = kind_dir / "split.json"
        if removed and meta.is_file():
            body = json.loads(meta.read_text())
            body["erased_rows"] = int(body.get("erased_rows", 0)) + removed
            write_json(meta, body)
    return {k: v for k, v in out.items() if v} or {"rows": 0}


def erase_feast_tables(ctx: StageContext, user_id: str) -> dict[str, int]:
    """Feast's offline tables (user statistics, embeddings, top-K) exported under data/<name>/feast/tables."""
    out: dict[str, int] = {}
    for f in _files(ctx.paths.data / "feast", "*.parquet"):
        _add(out, f.stem, filter_parquet(f, user_id))
    return {k: v for k, v in out.items() if v} or {"rows": 0}


def _mlflow_locations(ctx: StageContext) -> list[str]:
    """Artifact locations of every run, logged model and registered version of the dataset."""
    from mmrec.params.tracking import tracking_params
    from mmrec.tracking.store import experiment_name, registered_model_name, resolve_uri
    from mmrec.tracking.store import mlflow_client as _mlflow

    tp = tracking_params(ctx.params)
    uri = resolve_uri(tp, ctx.workspace)
    if uri.startswith("sqlite:") and not Path(uri.split("sqlite:///", 1)[-1]).is_file():
        return []  # no local store: nothing was ever tracked here
    locations: list[str] = []
    with _mlflow(uri) as client:
        from mlflow.exceptions import MlflowException

        exp = client.get_experiment_by_name(experiment_name(ctx.spec.name))
        if exp is not None:
            for run in client.search_runs([exp.experiment_id], max_results=50000):
                locations.append(run.info.artifact_uri)
            try:
                for lm in client.search_logged_models(experiment_ids=[exp.experiment_id], max_results=50000):
                    locations.append(lm.artifact_location)
            except (AttributeError, MlflowException):  # pragma: no cover - MLflow < 3
                pass
        versions: list[Any] = []
        try:
            versions = list(client.search_model_versions(f"name = '{registered_model_name(ctx.spec.name)}'"))
        except MlflowException:
            pass
        for mv in versions:
            try:
                locations.append(client.get_model_version_download_uri(mv.name, mv.version))
            except MlflowException:
                locations.append(mv.source or "")
    return list(dict.fromkeys(loc for loc in locations if loc))


def _local_path(location: str) -> Path | None:
    if location.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(location).path))
    if "://" not in location and ":" not in location.split("/", 1)[0]:
        return Path(location)
    return None


def _remote_states(location: str, user_id: str) -> int:
    """A non-local artifact store (the MLflow server's proxy, S3...): download each state.npz,
    rewrite it and upload it over the old one."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repo = get_artifact_repository(location)
    todo, found, changed = [""], [], 0
    while todo:
        for info in repo.list_artifacts(todo.pop() or None):
            if info.is_dir:
                todo.append(info.path)
            elif info.path.endswith("state.npz"):
                found.append(info.path)
    for rel in found:
        with tempfile.TemporaryDirectory() as d:
            local = Path(repo.download_artifacts(rel, d))
            if forget_in_state(local, user_id):
                parent = str(Path(rel).parent)
                repo.log_artifact(str(local), None if parent in ("", ".") else parent)
                changed += 1
    return changed


def erase_models(ctx: StageContext, user_id: str) -> dict[str, int]:
    """The user's row in every saved model: the stage's artifacts/<name>/ and every MLflow run,
    logged model and registered version (not only the champion), local or behind a server."""
    out = {"artifacts": 0, "mlflow": 0}
    for f in _files(ctx.workspace / "artifacts" / ctx.spec.name, "state.npz"):
        out["artifacts"] += forget_in_state(f, user_id)
    from mmrec.params.tracking import tracking_params
    from mmrec.tracking.store import mlflow_client as _mlflow
    from mmrec.tracking.store import resolve_uri

    seen: set[Path] = set()
    for loc in _mlflow_locations(ctx):
        local = _local_path(loc)
        if local is None:
            with _mlflow(resolve_uri(tracking_params(ctx.params), ctx.workspace)):  # the server's artifact proxy
                out["mlflow"] += _remote_states(loc, user_id)
            continue
        for f in _files(local, "state.npz"):
            if f.resolve() not in seen:
                seen.add(f.resolve())
                out["mlflow"] += forget_in_state(f, user_id)
    # a local artifact root may hold copies no location above names (deleted runs): sweep it too
    tp_root = ctx.workspace / str(getattr(ctx.params.tracking, "artifact_root", "mlruns"))
    for f in _files(tp_root, "state.npz"):
        if f.resolve() not in seen:
            seen.add(f.resolve())
            out["mlflow"] += forget_in_state(f, user_id)
    return out


def erase_reports(ctx: StageContext, user_id: str) -> dict[str, int]:
    """Reports that name user ids (validation examples, explanations, summaries): the id redacted."""
    out = {"mentions": 0}
    for root in (ctx.paths.reports, ctx.workspace / "artifacts" / ctx.spec.name):
        for f in _files(root):
            if f.suffix in TEXT_SUFFIXES:
                out["mentions"] += redact_text(f, user_id)
    return out


def erase_dvc_cache(ctx: StageContext, user_id: str) -> dict[str, int]:
    """Stale DVC cache objects that hold the user go; dvc.lock is re-committed to the rewritten outputs.

    `dvc commit --force` records the outputs the other erasers rewrote, so `dvc status` shows the
    workspace as committed and `dvc checkout` cannot restore the old files. It is skipped when
    `dvc status` shows a change no forget makes (raw data, code or params edited since the last
    `dvc repro`): committing would hide that a re-run is due (`not_committed` counts those
    stages; run `dvc repro`, whose ingest drops the forgotten user). Then every object under
    `.dvc/cache` is searched (decoded: parquet, npz, gzip, sqlite) and those holding the id are
    deleted. Skipped (zeros) when the workspace is no DVC repository.
    """
    if not (ctx.workspace / ".dvc").is_dir():
        return {}
    out = {"objects": 0, "committed_stages": 0, "not_committed": 0}
    if (ctx.workspace / "dvc.yaml").is_file():
        out["committed_stages"], out["not_committed"] = _dvc_commit(ctx.workspace)
    for f in _files(ctx.workspace / ".dvc" / "cache"):
        if file_mentions(f, user_id):
            f.unlink()
            out["objects"] += 1
    return out


def _external_changes(status: dict[str, Any], outs: list[str]) -> list[str]:
    """What `dvc status` reports that is not one of the pipeline's own outputs being rewritten."""

    def is_out(path: str) -> bool:
        return any(path == o or path.startswith(o.rstrip("/") + "/") for o in outs)

    found = []
    for stage, changes in status.items():
        for change in changes:
            if isinstance(change, dict):
                found += [f"{stage}: {path}" for path in (change.get("changed deps") or {}) if not is_out(path)]
            elif change not in ("changed outs",):
                found.append(f"{stage}: {change}")
    return found


def _dvc_commit(workspace: Path) -> tuple[int, int]:
    """`dvc commit --force` of every stage whose outputs exist: (committed, not committed)."""
    import contextlib

    from dvc.repo import Repo  # type: ignore[import-untyped]

    # DVC resolves stage paths against the working directory: run it from the repository's root
    with contextlib.chdir(workspace), Repo(".") as repo:
        stages = [s for s in repo.index.stages if getattr(s, "outs", None)]
        outs = [str(o.def_path) for s in stages for o in s.outs]
        external = _external_changes(repo.status(), outs)
        if external:
            log.warning(
                "forget: not re-committing dvc.lock: `dvc status` shows changes made outside the forget (%s); "
                "run `dvc repro` (ingest drops the forgotten user)",
                "; ".join(external[:5]),
            )
            return 0, len(stages)
        committed = 0
        for stage in stages:
            if not all(o.exists for o in stage.outs):
                continue
            repo.commit(stage.addressing, force=True)
            committed += 1
    return committed, len(stages) - committed


def leftovers(ctx: StageContext, user_id: str, roots: Iterable[Path] | None = None) -> list[str]:
    """Files the platform writes that still hold the id (relative to the workspace)."""
    from mmrec.privacy.scan import files_mentioning

    ws = ctx.workspace
    default = [
        ctx.paths.data,
        ws / "artifacts" / ctx.spec.name,
        ctx.paths.reports,
        ws / ".dvc" / "cache",
        ws / str(getattr(ctx.params.tracking, "artifact_root", "mlruns")),
        ws / "mlflow.db",
    ]
    found = files_mentioning(roots or default, user_id, skip=[Path(ctx.spec.root_path)])
    return [os.path.relpath(f, ws) for f in found]
