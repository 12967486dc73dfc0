"""`mmrec data check`: what a pipeline run on a dataset would do and cost, in seconds, before the long run.

It reads each table's header and a sample (never the whole interaction log), counts the lines,
checks that every column dataset.yaml maps exists, resolves the media paths of every item (a
column or a template) and counts the items that have each modality, then lists the models that
would be trained with the modalities each would use (`mmrec.models.modalities`) and estimates
the extraction and training time on this machine.

Estimates: from this dataset's own last run when there is one (`reports/<name>/extraction.json`,
`metrics.json`: measured here), else from reference rates measured on a 2-core CPU with one
thread per process (`REFERENCE_*` below), scaled by the number of interactions; on a GPU
extraction is much faster. They are orders of magnitude, said as such.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from mmrec.constants import ITEM_ID, MODALITIES
from mmrec.data.contract import DatasetSpec, TableSpec, template_media_paths
from mmrec.errors import ConfigError, DataError

SAMPLE_ROWS = 1000

#: items/second of each encoder on a 2-core CPU, one thread, no cache (measured on ml100k-mm:
#: minilm on plot texts, efficientnet_lite0 on 1666 posters); audio/video: per clip, demo clips
REFERENCE_ITEMS_PER_SECOND: dict[str, float] = {
    "minilm": 15.0,
    "efficientnet_lite0": 5.5,
    "mobilenetv2": 6.0,
    "whisper_tiny": 2.0,
    "frames": 1.2,
}
#: seconds per epoch per 100k training interactions on that machine (ml100k-mm, 80k train
#: interactions; closed-form models: seconds per fit). Evaluation time included.
REFERENCE_SECONDS_PER_EPOCH: dict[str, float] = {
    "popularity": 0.1,
    "itemknn": 2.0,
    "content_knn": 3.0,
    "bpr": 1.5,
    "lightgcn": 3.0,
    "vbpr": 3.0,
    "two_tower": 6.0,
    "mm_graph": 4.0,
}
#: epochs an early-stopped model typically runs (between min_epochs and max_epochs)
TYPICAL_EPOCHS = 60
CLOSED_FORM = ("popularity", "itemknn", "content_knn")


def _line_count(path: Path) -> int:
    """Data lines of a delimited/jsonl file (newlines, minus the header for delimited files)."""
    n = 0
    last = b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":
        n += 1
    return n


def _peek(
    path: Path, spec: TableSpec, usecols: list[str] | None = None, nrows: int | None = SAMPLE_ROWS
) -> tuple[list[str], pd.DataFrame, int]:
    """(header columns, sample rows, total data rows) of one table file, reading only what is needed."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; check `path:` in dataset.yaml and the data root")
    fmt = spec.file_format()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        header = list(pf.schema_arrow.names)
        cols = [c for c in (usecols or header) if c in header]
        table = pf.read_row_group(0, columns=cols) if pf.num_row_groups else None
        sample = table.to_pandas() if table is not None else pd.DataFrame(columns=cols)
        if nrows is not None:
            sample = sample.head(nrows)
        return header, sample, int(pf.metadata.num_rows)
    if fmt == "jsonl":
        sample = pd.read_json(path, lines=True, nrows=nrows or None, dtype=False, encoding=spec.encoding)
        return list(sample.columns), sample, _line_count(path)
    try:
        header_df = pd.read_csv(path, sep=spec.sep(), nrows=0, encoding=spec.encoding)
        header = [str(c) for c in header_df.columns]
        cols = [c for c in (usecols or header) if c in header]
        sample = pd.read_csv(
            path,
            sep=spec.sep(),
            nrows=nrows,
            usecols=cols,
            dtype=str,
            keep_default_na=False,
            encoding=spec.encoding,
            on_bad_lines="skip",
        )
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError) as exc:
        raise DataError(
            f"{path}: cannot read it as {fmt} (delimiter {spec.sep()!r}, encoding {spec.encoding}): {exc}; "
            "fix `delimiter:`/`encoding:` in dataset.yaml"
        ) from exc
    if nrows is None:  # read whole: exact (quoted fields may hold newlines, so lines over-count)
        return header, sample, len(sample)
    return header, sample, max(_line_count(path) - 1, 0)


def _present(values: pd.Series) -> pd.Series:
    return values.astype(str).str.strip().ne("") & values.notna()


def check_dataset(
    spec: DatasetSpec, params: Any, workspace: str | os.PathLike[str] = ".", params_files: list[str] | None = None
) -> dict[str, Any]:
    """The pre-flight report of one dataset (see the module docstring).

    Returns:
        {"dataset", "root", "params_files", "tables": {name: {"file", "rows", "columns",
        "missing_columns"}}, "items": {"total", "modalities": {m: {"items", "files_found", ...}}},
        "models": {name: {"modalities", "dropped", "error"}}, "estimates": {...}, "problems": [...],
        "seconds"}.
    """
    from mmrec.models.modalities import ModalityAvailability, resolve_model_params
    from mmrec.paths import DatasetPaths

    started = time.perf_counter()
    problems: list[str] = []
    tables: dict[str, Any] = {}
    plan: list[tuple[str, TableSpec]] = [("interactions", spec.interactions), ("items", spec.items)]
    if spec.users is not None:
        plan.append(("users", spec.users))
    items_frame: pd.DataFrame | None = None
    for name, tspec in plan:
        path = spec.table_path(name)
        mapped = dict(tspec.columns)
        if name == "items":
            mapped.update({f"text_fields.{k}": v for k, v in spec.items.text_fields.items()})
            mapped.update({f"media.{k}": v for k, v in spec.items.media_columns.items()})
            mapped.update({f"metadata[{i}]": v for i, v in enumerate(spec.items.metadata)})
        try:
            # the items table is read whole (only the mapped columns): its modalities are counted per item
            header, sample, rows = _peek(
                path,
                tspec,
                usecols=list(mapped.values()) if name == "items" else None,
                nrows=None if name == "items" else SAMPLE_ROWS,
            )
        except DataError as exc:
            problems.append(str(exc))
            tables[name] = {"file": str(path), "error": str(exc)}
            continue
        missing = {k: v for k, v in mapped.items() if v not in header}
        for key, col in missing.items():
            problems.append(
                f"{path}: column {col!r} (dataset.yaml {name}.{key if '.' in key or '[' in key else 'columns.' + key}) "
                f"is not in the header {header[:12]}{'...' if len(header) > 12 else ''}; fix the mapping"
            )
        tables[name] = {"file": str(path), "rows": rows, "columns": header, "missing_columns": sorted(missing.values())}
        if name == "items" and not missing:
            items_frame = sample
    total_items = tables.get("items", {}).get("rows", 0)
    modalities: dict[str, Any] = {}
    if items_frame is not None:
        ids = items_frame[spec.items.columns[ITEM_ID]].astype(str).tolist()
        total_items = len(ids)
        if spec.items.text_fields:
            has_text = pd.Series(False, index=items_frame.index)
            for col in spec.items.text_fields.values():
                has_text |= _present(items_frame[col])
            modalities["text"] = {"items": int(has_text.sum())}
        for m, col in spec.items.media_columns.items():
            values = items_frame[col]
            present = _present(values)
            found = sum(1 for v in values[present] if spec.resolve_media(str(v).strip()).is_file())
            modalities[m] = {
                "items": int(found),
                "with_path": int(present.sum()),
                "files_missing": int(present.sum()) - found,
                "source": f"column {col!r}",
            }
        for m, template in spec.items.media_templates.items():
            _, counts = template_media_paths(ids, template, spec.root_path)
            modalities[m] = {
                "items": counts["found"],
                "files_missing": counts["missing"],
                "unsafe_ids": counts["unsafe"],
                "source": f"template {template!r}",
            }
        for m, c in modalities.items():
            if (
                m != "text"
                and c.get("files_missing")
                and c["files_missing"] > 0.5 * max(c.get("with_path", total_items), 1)
            ):
                problems.append(
                    f"{m}: {c['files_missing']} of {c.get('with_path', total_items)} files not found under "
                    f"{spec.root_path}; check the data root and items.media.{m} in dataset.yaml"
                )
    declared = tuple(m for m in MODALITIES if m in spec.modalities)
    usable = tuple(m for m in declared if modalities.get(m, {}).get("items", 0) > 0)
    reasons = {m: f"dataset {spec.name!r} declares no {m}" for m in MODALITIES if m not in declared}
    reasons.update({m: f"no item has {m} (0 of {total_items})" for m in declared if m not in usable})
    available = ModalityAvailability(spec.name, declared, usable, reasons)
    models: dict[str, Any] = {}
    for name in params.train.models:
        try:
            resolved, dropped = resolve_model_params(name, params.train.params.get(name, {}), available)
            models[name] = {"modalities": resolved.get("modalities"), "dropped": dropped}
        except (ConfigError, KeyError) as exc:
            models[name] = {"error": str(exc)}
            problems.append(f"model {name}: {exc}")
    paths = DatasetPaths(spec.name, Path(workspace))
    n_inter = int(tables.get("interactions", {}).get("rows", 0) or 0)
    estimates = {
        "extraction": _extraction_estimates(paths, params, modalities, usable),
        "training": _training_estimates(paths, params, models, n_inter),
        "basis": "measured on this dataset's last run where marked, else reference rates of a 2-core CPU "
        "(one thread); a GPU extracts much faster. Orders of magnitude, not promises.",
    }
    return {
        "dataset": spec.name,
        "root": str(spec.root_path),
        "params_files": list(params_files or []),
        "tables": tables,
        "items": {"total": total_items, "modalities": modalities},
        "models": models,
        "estimates": estimates,
        "problems": problems,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _extraction_estimates(
    paths: Any, params: Any, modalities: dict[str, Any], usable: tuple[str, ...]
) -> dict[str, Any]:
    last = _read_json(paths.reports / "extraction.json").get("modalities", {})
    out: dict[str, Any] = {}
    for m in usable:
        encoder = params.extract.modality(m).encoder
        n = int(modalities[m]["items"])
        measured = (
            (last.get(m) or {}).get(encoder, {}).get("items_per_second") if isinstance(last.get(m), dict) else None
        )
        rate = float(measured) if measured else REFERENCE_ITEMS_PER_SECOND.get(encoder)
        out[m] = {
            "encoder": encoder,
            "items": n,
            "items_per_second": rate,
            "seconds": round(n / rate, 1) if rate else None,
            "basis": "measured" if measured else "reference",
        }
    return out


def _training_estimates(paths: Any, params: Any, models: dict[str, Any], n_inter: int) -> dict[str, Any]:
    last = _read_json(paths.metrics).get("models", {})
    scale = max(n_inter * 0.8, 1.0) / 100_000  # the training part of the default 80/10/10 split
    out: dict[str, Any] = {}
    for name, m in models.items():
        if "error" in m:
            continue
        prev = last.get(name) or {}
        if prev.get("train_seconds") is not None:
            out[name] = {"seconds": round(float(prev["train_seconds"]), 1), "basis": "measured"}
            continue
        per = REFERENCE_SECONDS_PER_EPOCH.get(name)
        if per is None:
            out[name] = {"seconds": None, "basis": "no reference for this model"}
            continue
        if name in CLOSED_FORM:
            out[name] = {"seconds": round(per * scale, 1), "basis": "reference"}
            continue
        p = params.train.params.get(name, {})
        max_epochs = int(p.get("max_epochs", 300))
        typical = min(max_epochs, max(int(p.get("min_epochs", 0)), TYPICAL_EPOCHS))
        out[name] = {
            "seconds": round(per * scale * typical, 1),
            "up_to_seconds": round(per * scale * max_epochs, 1),
            "basis": "reference",
        }
    return out


def format_check(report: dict[str, Any]) -> str:
    """The report as the lines `mmrec data check` prints."""
    from mmrec.progress import format_duration

    def dur(s: float | None) -> str:
        return "?" if s is None else format_duration(s)

    out = [
        f"dataset {report['dataset']} (root {report['root']}); checked in {report['seconds']:.1f}s",
        f"parameters: {' + '.join(report['params_files']) or 'built-in defaults'}",
        "",
        "tables:",
    ]
    for name, t in report["tables"].items():
        if "error" in t:
            out.append(f"  {name:<13} {t['file']}: ERROR {t['error']}")
            continue
        miss = f"; missing columns {t['missing_columns']}" if t["missing_columns"] else ""
        out.append(f"  {name:<13} {t['rows']:>10,} rows  {t['file']}{miss}")
    items = report["items"]
    out += ["", f"items with each modality (of {items['total']:,}):"]
    if not items["modalities"]:
        out.append("  none declared (collaborative models only)")
    for m, c in items["modalities"].items():
        extra = [f"{c['files_missing']:,} files missing"] if c.get("files_missing") else []
        extra += [f"{c['unsafe_ids']} ids unsafe for paths"] if c.get("unsafe_ids") else []
        src = f" ({c['source']})" if c.get("source") else ""
        out.append(f"  {m:<6} {c['items']:>8,}{src}" + (f"; {', '.join(extra)}" if extra else ""))
    est = report["estimates"]
    total = 0.0
    out += ["", "extraction estimate:"]
    if not est["extraction"]:
        out.append("  nothing to extract")
    for m, e in est["extraction"].items():
        total += e["seconds"] or 0.0
        rate = f"{e['items_per_second']:.1f} items/s" if e["items_per_second"] else "no reference rate"
        out.append(f"  {m:<6} {e['encoder']:<18} {e['items']:>8,} items  ~{dur(e['seconds'])} ({rate}, {e['basis']})")
    out += ["", "models that would run:"]
    for name, m in report["models"].items():
        if "error" in m:
            out.append(f"  {name:<12} ERROR {m['error']}")
            continue
        mods = f" on {m['modalities']}" if m.get("modalities") else ""
        dropped = f" (dropped: {', '.join(m['dropped'])})" if m.get("dropped") else ""
        e = est["training"].get(name, {})
        upto = f", up to {dur(e['up_to_seconds'])}" if e.get("up_to_seconds") else ""
        total += e.get("seconds") or 0.0
        out.append(f"  {name:<12}{mods}{dropped}: ~{dur(e.get('seconds'))}{upto} ({e.get('basis', '?')})")
    out += ["", f"total: ~{dur(total)} for extraction and training. {est['basis']}"]
    if report["problems"]:
        out += ["", "problems:"] + [f"  - {p}" for p in report["problems"]]
    else:
        out += ["", "no problems found"]
    return "\n".join(out)
