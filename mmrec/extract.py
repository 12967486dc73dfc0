"""The extract stage: one modality of a dataset's validated items -> a feature file + a report entry.

`extract_modality` is what `mmrec stage extract_<modality>`, the DVC stages and the Prefect tasks
call. It reads `data/<name>/validated/items.parquet`, encodes the modality with the configured
encoder (through the content-hash cache: unchanged items cost nothing, new items are the only
work), writes `data/<name>/features/<modality>/<encoder>.parquet` (+ a `.json` sidecar with
every failure), and merges its entry into `reports/<name>/extraction.json`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mmrec.constants import ITEM_ID, MODALITIES, TEXT
from mmrec.data.contract import DatasetSpec
from mmrec.encoders.config import ExtractParams
from mmrec.errors import ConfigError, StageError
from mmrec.io import write_json
from mmrec.paths import DatasetPaths

log = logging.getLogger(__name__)

MAX_REPORTED_FAILURES = 200  # in extraction.json; the sidecar json next to the features has them all


def extraction_report_path(paths: DatasetPaths) -> Path:
    return paths.reports / "extraction.json"


def feature_cache_root(paths: DatasetPaths, params: ExtractParams) -> Path:
    """Cache root: `extract.cache_dir`, else data/<name>/cache/features (outside DVC's outputs)."""
    return Path(params.cache_dir) if params.cache_dir else paths.data / "cache" / "features"


def extract_params(params: Any) -> ExtractParams:
    """Accept the whole Params (with an `extract` section), an ExtractParams, a dict or None."""
    if params is None:
        return ExtractParams()
    if isinstance(params, ExtractParams):
        return params
    if isinstance(params, dict):
        return ExtractParams.model_validate(params)
    section = getattr(params, "extract", None)
    if isinstance(section, ExtractParams):
        return section
    raise ConfigError(f"expected ExtractParams or Params with an `extract` section, got {type(params).__name__}")


def build_encoder(modality: str, params: ExtractParams) -> Any:
    """The configured encoder of a modality, with the run's device and precision."""
    from mmrec.encoders.registry import available_encoders, create_encoder, encoder_params, get_encoder_class

    section = params.modality(modality)
    cls = get_encoder_class(section.encoder)
    if cls.modality != modality:
        raise ConfigError(
            f"extract.{modality}.encoder={section.encoder!r} is a {cls.modality} encoder; "
            f"pick one of {available_encoders(modality)}"
        )
    kwargs = section.encoder_kwargs()
    accepted = encoder_params(section.encoder)
    for key, value in (("device", params.device), ("precision", params.precision)):
        if key in accepted:
            kwargs.setdefault(key, value)
    if "weights" in kwargs and "weights" not in accepted:
        raise ConfigError(f"extract.{modality}.weights is set but encoder {section.encoder!r} has no weights")
    dropped = sorted(k for k in kwargs if k not in accepted and k not in section.options)
    for k in dropped:  # section-level settings this encoder has no use for (e.g. logmel has no weights)
        kwargs.pop(k)
    return create_encoder(section.encoder, **kwargs)


def _item_values(items: pd.DataFrame, spec: DatasetSpec, modality: str) -> list[tuple[str, Any]]:
    column = TEXT if modality == "text" else modality
    ids = items[ITEM_ID].astype(str).tolist()
    if column not in items.columns:
        return [(i, None) for i in ids]
    out: list[tuple[str, Any]] = []
    for iid, value in zip(ids, items[column].tolist(), strict=True):
        if value is None or (isinstance(value, float) and pd.isna(value)):
            out.append((iid, None))
        elif modality == "text":
            out.append((iid, value))
        elif isinstance(value, str) and not value.strip():
            out.append((iid, None))
        else:
            out.append((iid, spec.resolve_media(str(value))))
    return out


def _reason_kind(reason: str) -> str:
    """A failure reason without its specifics (paths, numbers), for counting by kind."""
    head = re.split(r"[:(]", reason, maxsplit=1)[0].strip()
    return re.sub(r"\d[\d,.x]*", "N", head) or reason[:60]


@contextmanager
def _locked(path: Path):
    """An exclusive lock beside `path`: parallel modality tasks merge into one report safely."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_report(target: Path, dataset: str) -> dict[str, Any]:
    """The extraction report at `target` (call under `_locked(target)`); a new one when absent or unreadable."""
    report: dict[str, Any] = {}
    if target.is_file():
        try:
            report = json.loads(target.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            log.warning("%s: unreadable, starting a new extraction report", target)
    report.setdefault("dataset", dataset)
    return report


def merge_report(paths: DatasetPaths, modality: str, encoder_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Set report[modality][encoder_id] = entry in reports/<name>/extraction.json, atomically."""
    target = extraction_report_path(paths)
    with _locked(target):
        report = _read_report(target, paths.name)
        modalities = report.setdefault("modalities", {})
        modalities.setdefault(modality, {})[encoder_id] = entry
        skipped = report.get("skipped")
        if isinstance(skipped, dict):
            skipped.pop(modality, None)
        write_json(target, report)
    return report


def extract_modality(spec: DatasetSpec, paths: DatasetPaths, modality: str, params: Any = None) -> dict[str, Any]:
    """Encode one modality of the dataset's validated items; write features and the report entry.

    Args:
        spec: the dataset (for its root, to resolve media paths).
        paths: output locations.
        modality: text, image, audio or video.
        params: ExtractParams, or the whole Params (its `extract` section is used).

    Returns:
        The report entry: encoder info, device/precision, counts (items, encoded, cached,
        missing, failed), failures (first 200) and failures by kind, seconds, items_per_second,
        and the feature file path.

    Raises:
        StageError: the validated items table is missing.
        ConfigError: unknown modality/encoder or bad encoder settings.
    """
    from mmrec.encoders.runner import run_extraction
    from mmrec.encoders.store import FeatureCache

    if modality in MODALITIES and modality not in spec.modalities:
        return skip_undeclared(spec, paths, modality)
    job = plan_extraction(spec, paths, modality, params)
    ex, encoder = job.params, job.encoder
    cache = FeatureCache(job.cache_folder, job.info)
    result = run_extraction(
        encoder,
        job.values if job.declared else [(i, None) for i, _ in job.values],
        cache,
        batch_size=ex.modality(modality).batch_size,
        workers=ex.workers,
        checkpoint_items=ex.checkpoint_items,
        retry_failed=ex.retry_failed,
        progress=ex.progress,
        sort_by_length=modality == "text",
    )
    return finish_extraction(job, result, encoder.runtime())


#: written in data/<name>/features/<modality>/ when the dataset has no such modality: the stage's
#: output folder exists (DVC expects it) but holds no feature file a model could mistake for data
SKIPPED_MARKER = "SKIPPED.json"


def skip_undeclared(spec: DatasetSpec, paths: DatasetPaths, modality: str) -> dict[str, Any]:
    """The extract stage of a modality the dataset does not declare: a no-op that says so.

    No feature file is written (an empty one made the train stage fail later with "none of the
    N items has a audio vector"); the models use the modalities the dataset has
    (`mmrec.models.modalities`). The output folder gets a SKIPPED.json note and the extraction
    report a `skipped` entry, so DVC and Prefect see a finished stage and a reader sees why.
    """
    where = "items.text_fields" if modality == "text" else f"items.media.{modality}"
    reason = (
        f"dataset {spec.name!r} declares no {modality} ({where} in {spec.spec_path or 'dataset.yaml'}); "
        f"nothing to extract, and models that list {modality} use the dataset's other modalities"
    )
    folder = paths.data / "features" / modality
    folder.mkdir(parents=True, exist_ok=True)
    entry = {
        "modality": modality,
        "declared": False,
        "skipped": reason,
        "items": 0,
        "encoded": 0,
        "cached": 0,
        "missing": 0,
        "failed": 0,
    }
    write_json(folder / SKIPPED_MARKER, entry)
    target = extraction_report_path(paths)
    with _locked(target):
        report = _read_report(target, paths.name)
        report.setdefault("modalities", {}).pop(modality, None)  # a stale entry from when it was declared
        report.setdefault("skipped", {})[modality] = reason
        write_json(target, report)
    log.info("extract %s: skipped: %s", modality, reason)
    return entry


@dataclass
class ExtractionJob:
    """What one modality's extraction works on, resolved once (by the driver when it is distributed).

    Attributes:
        values: (item_id, text or absolute media path or None) in the items table's order.
        declared: whether the dataset declares the modality (undeclared: an empty feature file).
        info: the encoder's identity (`Encoder.info()`), cache key included.
        cache_folder: the content-hash cache of that key.
        out_path: data/<name>/features/<modality>/<encoder>.parquet.
    """

    spec: DatasetSpec
    paths: DatasetPaths
    modality: str
    params: ExtractParams
    encoder: Any
    values: list[tuple[str, Any]]
    declared: bool
    info: dict[str, Any]
    cache_folder: Path
    out_path: Path


def plan_extraction(spec: DatasetSpec, paths: DatasetPaths, modality: str, params: Any = None) -> ExtractionJob:
    """Resolve the items, encoder and cache of one modality (no model is loaded).

    Raises:
        StageError: the validated items table is missing.
        ConfigError: unknown modality/encoder or bad encoder settings.
    """
    if modality not in MODALITIES:
        raise ConfigError(f"unknown modality {modality!r}; expected one of {list(MODALITIES)}")
    ex = extract_params(params)
    table = paths.validated_table("items")
    if not table.is_file():
        raise StageError(f"{table}: validated items table missing; run `mmrec stage validate` first")
    items = pd.read_parquet(table)
    encoder = build_encoder(modality, ex)
    info = encoder.info()
    return ExtractionJob(
        spec=spec,
        paths=paths,
        modality=modality,
        params=ex,
        encoder=encoder,
        values=_item_values(items, spec, modality),
        declared=modality in spec.modalities,
        info=info,
        cache_folder=feature_cache_root(paths, ex) / modality / encoder.id / info["cache_key"][:16],
        out_path=paths.features(modality, encoder.id),
    )


def finish_extraction(job: ExtractionJob, result: Any, runtime: dict[str, Any]) -> dict[str, Any]:
    """Write the feature file (atomically), its sidecar and the report entry of a finished extraction.

    Args:
        result: an `ExtractionResult` over all of `job.values` (one run, or shards merged in order).
        runtime: device/precision actually used (`Encoder.runtime()`).
    """
    from mmrec.encoders.store import write_features

    spec, paths, modality, info, out_path = job.spec, job.paths, job.modality, job.info, job.out_path
    declared, values = job.declared, job.values
    meta = {**info, "dataset": spec.name, "items": len(result.item_ids)}
    write_features(out_path, result.item_ids, result.vectors, meta)
    (out_path.parent / SKIPPED_MARKER).unlink(missing_ok=True)  # the modality is declared now
    kinds = Counter(_reason_kind(f["reason"]) for f in result.failures)
    entry: dict[str, Any] = {
        **info,
        **runtime,
        "declared": declared,
        "items": len(values),
        "encoded": result.encoded,
        "cached": result.cached,
        "missing": result.missing,
        "failed": result.failed,
        "failure_kinds": dict(kinds.most_common()),
        "failures": result.failures[:MAX_REPORTED_FAILURES],
        "seconds": round(result.seconds, 3),
        "model_seconds": round(result.model_seconds, 3),
        "items_per_second": round(result.items_per_second, 2),
        "output": str(out_path),
        "cache": str(job.cache_folder),
    }
    if not declared:
        entry["note"] = f"dataset {spec.name!r} declares no {modality}; the feature file is empty"
    if result.failed > MAX_REPORTED_FAILURES:
        entry["failures_truncated"] = True
    write_json(out_path.with_suffix(".json"), {**entry, "failures": result.failures})
    merge_report(paths, modality, info["encoder"], entry)
    log.info(
        "extract %s/%s: %d encoded, %d cached, %d missing, %d failed in %.1fs (%.1f items/s) -> %s",
        modality,
        info["encoder"],
        result.encoded,
        result.cached,
        result.missing,
        result.failed,
        result.seconds,
        result.items_per_second,
        out_path,
    )
    for f in result.failures[:20]:
        log.warning("extract %s: item %s failed: %s", modality, f["item_id"], f["reason"])
    return entry


def extract_all(spec: DatasetSpec, paths: DatasetPaths, params: Any = None) -> dict[str, Any]:
    """Every modality the dataset declares, one after the other (Prefect runs them in parallel)."""
    return {m: extract_modality(spec, paths, m, params) for m in spec.modalities}
