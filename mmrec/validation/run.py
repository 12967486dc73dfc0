"""The validate stage: warehouse tables in; validated tables, quarantine and a report out.

Order matters: items and users are validated first, so that interactions are checked against the
ids that *passed* (a quarantined item takes its interactions with it). Row-level problems
quarantine the row and the run goes on; table-level problems (schema, empty table, too many
quarantined rows, no interactions left) stop the pipeline with `ValidationFailed` after the
report is written. Outputs under `data/<name>/validated` and `data/<name>/quarantine` are only
replaced, each folder as a whole, when the run succeeds, so a failed run leaves the previous ones.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mmrec.config import ValidateParams
from mmrec.constants import ITEM_ID, MAX_IMAGE_PIXELS, REASON, ROW_HASH, SOURCE_ROW, USER_ID
from mmrec.data.contract import DatasetSpec
from mmrec.errors import DataError, StageError, ValidationFailed
from mmrec.io import atomic_dir, write_json, write_text
from mmrec.paths import DatasetPaths
from mmrec.validation.duplicates import apply_duplicate_policy
from mmrec.validation.media import check_media, empty_media_quarantine
from mmrec.validation.quarantine import INGEST_CHECK, RAW, quarantine_frame, read_rejects
from mmrec.validation.report import (
    MAX_EXAMPLES,
    MAX_FAILURE_ROWS,
    CheckReport,
    Failure,
    TableReport,
    ValidationReport,
    jsonable,
)
from mmrec.validation.suites import (
    Check,
    Outcome,
    SuiteRunner,
    interactions_checks,
    items_checks,
    schema_checks,
    show,
    source_row,
    table_columns,
    users_checks,
)

log = logging.getLogger(__name__)

MEDIA_QUARANTINE_TABLE = "items_media"
_REINGEST = "re-run `mmrec stage ingest` (it writes the contract columns and types)"


@dataclass
class _TableRun:
    """Working state of one table during a run."""

    name: str
    frame: pd.DataFrame
    report: TableReport
    rejects: pd.DataFrame | None
    schema_ok: bool = False
    failures: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # position -> (check, reason)

    def valid_positions(self) -> np.ndarray:
        bad = np.zeros(len(self.frame), dtype=bool)
        if self.failures:
            bad[list(self.failures)] = True
        return np.flatnonzero(~bad)

    def valid_frame(self) -> pd.DataFrame:
        return self.frame.iloc[self.valid_positions()].reset_index(drop=True)

    def quarantined_ids(self, column: str) -> dict[str, str]:
        """Ids whose every row was quarantined -> where and why (their first quarantined row).

        Ingest rejects count too, by the id ingest recovered from the bad line (if it could):
        rows of other tables that refer to the id then show this root cause.
        """
        valid = set(self.frame[column].iloc[self.valid_positions()].dropna())
        found: dict[str, tuple[int, str]] = {}
        for pos in sorted(self.failures):
            value = self.frame[column].iat[pos]
            if isinstance(value, str) and value not in valid and value not in found:
                row = source_row(self.frame, pos)
                found[value] = (row, f"row {row}: " + "; ".join(r for _, r in self.failures[pos]))
        rej = self.rejects
        if rej is not None and column in rej.columns:
            for row, value, reason in zip(rej[SOURCE_ROW], rej[column], rej[REASON], strict=True):
                if isinstance(value, str) and value not in valid and (value not in found or found[value][0] > row):
                    found[value] = (int(row), str(reason))
        return {k: v for k, (_, v) in found.items()}


# ---------------------------------------------------------------------------------------------
# Reading inputs.


def _read_table(paths: DatasetPaths, table: str) -> pd.DataFrame:
    f = paths.table(table)
    if not f.is_file():
        raise StageError(f"{f}: warehouse table {table!r} missing; run `mmrec stage ingest` first")
    try:
        return pd.read_parquet(f).reset_index(drop=True)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{f}: cannot read the warehouse table ({exc}); re-run `mmrec stage ingest`") from exc


def _manifest_tables(paths: DatasetPaths) -> dict[str, Any]:
    f = paths.warehouse / "manifest.json"
    if f.is_file():
        try:
            tables = json.loads(f.read_text(encoding="utf-8")).get("tables", {})
            return tables if isinstance(tables, dict) else {}
        except (ValueError, AttributeError):
            return {}
    return {}


def _source_counts(paths: DatasetPaths, table: str) -> tuple[int | None, dict[str, int] | None, int]:
    """(data records ingest counted in the source, its line buckets, rows of forgotten users
    ingest dropped), from the manifest."""
    entry = _manifest_tables(paths).get(table)
    if not isinstance(entry, dict) or not isinstance(entry.get("source_rows"), int):
        return None, None, 0
    lines = entry.get("lines")
    forgotten = entry.get("forgotten", 0)
    return (
        int(entry["source_rows"]),
        lines if isinstance(lines, dict) else None,
        forgotten if isinstance(forgotten, int) else 0,
    )


def _sources(spec: DatasetSpec, paths: DatasetPaths, tables: Sequence[str]) -> dict[str, str]:
    """Raw source file of each table: from the warehouse manifest, else from the spec."""
    manifest = _manifest_tables(paths)
    out = {}
    for t in tables:
        src = manifest.get(t, {}).get("source") if isinstance(manifest.get(t), dict) else None
        out[t] = str(src) if src else str(spec.table_path(t))
    return out


# ---------------------------------------------------------------------------------------------
# Turning GE outcomes into report entries, quarantine reasons and failures.


def _examples(run: _TableRun, check: Check, positions: Sequence[int]) -> list[dict[str, Any]]:
    col = check.example_column or check.column
    out = []
    for pos in list(positions)[:MAX_EXAMPLES]:
        value = run.frame[col].iat[pos] if col is not None and col in run.frame.columns else None
        out.append({"source_row": source_row(run.frame, pos), "value": jsonable(value)})
    return out


def _schema_failure(run: _TableRun, outcome: Outcome, source: str) -> Failure:
    check, table = outcome.check, run.name
    warehouse = run.report.warehouse
    rows = [source_row(run.frame, p) for p in outcome.positions[:MAX_FAILURE_ROWS]]
    if outcome.error is not None:
        return Failure(
            table,
            check.name,
            source,
            check.column,
            rows,
            f"check {check.name} could not run on {warehouse}: {outcome.error}",
            _REINGEST,
        )
    if check.name == "row_count":
        n_rej = run.report.ingest_rejects
        why = f"; all {n_rej} data rows were rejected at ingest" if n_rej else ""
        return Failure(
            table,
            check.name,
            source,
            None,
            [],
            f"{warehouse} has no rows{why}",
            f"check {source} and its `path:`/columns in dataset.yaml, then re-run `mmrec stage ingest`",
        )
    if check.name == "required_columns":
        missing = list(outcome.details.get("mismatched", {}).get("missing", []))
        have = list(run.frame.columns)
        what = f"column {missing[0]!r} is" if len(missing) == 1 else f"columns {missing} are"
        return Failure(
            table,
            check.name,
            source,
            ", ".join(missing),
            [],
            f"required {what} missing from {warehouse} (it has {have})",
            f"map it under `{table}:` in dataset.yaml (or fix the source file) and {_REINGEST}",
        )
    dtype = str(run.frame[check.column].dtype) if check.column in run.frame.columns else "?"
    bad = [jsonable(v) for v in outcome.values[:3]]
    detail = f" (unexpected values {bad})" if bad else ""
    expected = check.expectation.type_list
    return Failure(
        table,
        check.name,
        source,
        check.column,
        rows,
        f"column {check.column!r} has type {dtype}{detail}, expected one of {expected}",
        _REINGEST,
    )


def _apply_row_outcomes(run: _TableRun, outcomes: Sequence[Outcome], source: str) -> list[CheckReport]:
    """Record quarantine reasons per row; duplicates last, so the kept copy is a valid one."""
    attributed: dict[str, list[int]] = {}
    ordinary = [o for o in outcomes if not o.check.name.endswith("_unique") and o.check.name != "duplicate_row"]
    uniques = [o for o in outcomes if o not in ordinary]
    for o in ordinary:
        attributed[o.check.name] = []
        # Values come from the frame, not GE: its `unexpected_list` stops at 200 values even in
        # COMPLETE mode (the index list is complete).
        values = run.frame[o.check.column] if o.check.column is not None else None
        for pos in o.positions:
            value = values.iat[pos] if values is not None else None
            reason = o.check.reason(run.frame, pos, value) if o.check.reason else f"{o.check.name} failed"
            run.failures.setdefault(pos, []).append((o.check.name, reason))
            attributed[o.check.name].append(pos)
    already = set(run.failures)
    for o in uniques:
        attributed[o.check.name] = []
        col = o.check.column
        groups: dict[Any, list[int]] = {}
        for pos in sorted(o.positions):
            groups.setdefault(run.frame[col].iat[pos], []).append(pos)
        for value, members in groups.items():
            keep = next((p for p in members if p not in already), None)
            if keep is None:
                continue  # every copy is quarantined for another reason already
            kept_row = source_row(run.frame, keep)
            for pos in members:
                if pos == keep:
                    continue
                if col == ROW_HASH:
                    reason = f"duplicate row: same content (row_hash {str(value)[:12]}) as row {kept_row}"
                else:
                    reason = f"duplicate {col} {show(value)} (first at row {kept_row})"
                run.failures.setdefault(pos, []).append((o.check.name, reason))
                attributed[o.check.name].append(pos)
    reports = []
    for o in outcomes:
        positions = sorted(attributed[o.check.name])
        reports.append(
            CheckReport(
                o.check.name,
                "row",
                o.check.column,
                success=not positions and o.error is None,
                unexpected=len(positions),
                examples=_examples(run, o.check, positions),
                details=f"could not run: {o.error}" if o.error else None,
            )
        )
        if o.error is not None:
            run.report.failures.append(
                Failure(
                    run.name,
                    o.check.name,
                    source,
                    o.check.column,
                    [],
                    f"check {o.check.name} could not run: {o.error}",
                    _REINGEST,
                )
            )
    return reports


def _rejects_report(run: _TableRun) -> CheckReport:
    rej = run.rejects
    n = 0 if rej is None else len(rej)
    examples = []
    if rej is not None:
        for _, r in rej.head(MAX_EXAMPLES).iterrows():
            # The reason first ("line 9: unclosed quote ..."): the raw text alone does not say what is wrong.
            raw = r[RAW] if isinstance(r[RAW], str) and r[RAW] else None
            value = f"{r[REASON]} | raw: {raw}" if raw else str(r[REASON])
            examples.append({"source_row": int(r[SOURCE_ROW]), "value": jsonable(value)})
    return CheckReport(INGEST_CHECK, "row", None, success=n == 0, unexpected=n, examples=examples)


def _fraction_check(run: _TableRun, params: ValidateParams, source: str) -> None:
    """Too many bad rows means something systematic (wrong delimiter, wrong unit): fail the table."""
    rep = run.report
    total, bad = rep.rows - rep.deduplicated, rep.quarantined  # repeats merged by policy are not bad rows
    frac = bad / total if total else 0.0
    ok = frac <= params.max_quarantine_fraction
    rep.checks.append(
        CheckReport(
            "quarantine_fraction",
            "table",
            None,
            success=ok,
            unexpected=bad,
            details=f"{bad} of {total} rows quarantined ({frac:.1%}); max {params.max_quarantine_fraction:.1%}",
        )
    )
    if ok:
        return
    counts = sorted(
        ((c.unexpected, c.name, c.column) for c in rep.checks if c.level == "row" and c.unexpected), reverse=True
    )
    top_n, top_name, top_col = counts[0] if counts else (0, "?", None)
    example = next((r for p in sorted(run.failures) for c, r in run.failures[p] if c == top_name), None)
    if example is None and run.rejects is not None and len(run.rejects):
        example = str(run.rejects[REASON].iat[0])
    rows = sorted(
        [source_row(run.frame, p) for p in run.failures]
        + ([] if run.rejects is None else run.rejects[SOURCE_ROW].astype(int).tolist())
    )
    rep.failures.append(
        Failure(
            run.name,
            "quarantine_fraction",
            source,
            top_col,
            rows[:MAX_FAILURE_ROWS],
            f"{bad} of {total} rows ({frac:.1%}) failed validation, above validate.max_quarantine_fraction="
            f"{params.max_quarantine_fraction}; most frequent: {top_name} ({top_n} rows, e.g. {example!r})",
            f"fix {source} (or its mapping in dataset.yaml) using the reasons listed in the report; if these rows "
            f"are expected, raise validate.max_quarantine_fraction in params.yaml",
        )
    )


def _run_table(
    runner: SuiteRunner,
    run: _TableRun,
    spec: DatasetSpec,
    params: ValidateParams,
    row_checks: Sequence[Check],
    source: str,
) -> None:
    """Run one table's suite (schema + row rules as one GE batch) and fill in `run`."""
    columns = list(run.frame.columns)
    schema = schema_checks(run.name, table_columns(run.name, spec), columns)
    rows = [c for c in row_checks if c.column is None or c.column in columns]
    outcomes = runner.run(run.name, run.frame, [*schema, *rows])
    for check in schema:
        o = outcomes[check.name]
        ok = o.success and o.error is None
        details = o.error or (None if o.observed is None or o.success else f"observed {jsonable(o.observed)}")
        run.report.checks.append(
            CheckReport(
                check.name,
                "table",
                check.column,
                success=ok,
                unexpected=len(o.positions),
                examples=_examples(run, check, o.positions),
                details=details,
            )
        )
        if not ok:
            run.report.failures.append(_schema_failure(run, o, source))
    run.schema_ok = not run.report.failures
    run.report.checks.append(_rejects_report(run))
    n_rej = run.report.ingest_rejects
    if not run.schema_ok:
        run.report.quarantined = n_rej
        return  # rows are not judged against a table whose shape is wrong
    run.report.checks += _apply_row_outcomes(run, [outcomes[c.name] for c in rows], source)
    run.report.quarantined = len(run.failures) + n_rej
    run.report.valid_rows = len(run.frame) - len(run.failures)


def _accounting_check(run: _TableRun, source: str) -> None:
    """Every data row of the source is valid, quarantined or merged as a duplicate: prove it.

    `source_rows` is counted by the ingest reader line by line, apart from the parser; a gap
    means rows were lost on the way (a parser that swallowed lines, a truncated warehouse), which
    is exactly what must never pass silently.
    """
    rep = run.report
    acc = rep.accounting()
    if acc["unaccounted"] is None:
        return  # rows were not judged (table-level failure already reported)
    counted = "counted by ingest" if rep.source_rows is not None else "warehouse rows + ingest rejects"
    details = (
        f"{rep.source_rows if rep.source_rows is not None else rep.rows} source rows ({counted}) = "
        f"{rep.valid_rows} valid + {rep.quarantined} quarantined + {rep.deduplicated} duplicates merged/dropped"
        + (
            f" + {rep.forgotten} of forgotten users (mmrec forget)"
            if rep.forgotten and rep.source_rows is not None
            else ""
        )
    )
    ok = acc["unaccounted"] == 0
    if not ok:
        details = details.replace(" = ", " != ", 1) + f" ({acc['unaccounted']} unaccounted)"
    rep.checks.append(
        CheckReport("line_accounting", "table", None, success=ok, unexpected=abs(acc["unaccounted"]), details=details)
    )
    if not ok:
        rep.failures.append(
            Failure(
                run.name,
                "line_accounting",
                source,
                None,
                [],
                f"rows were lost between {source} and {rep.warehouse}: {details}",
                "re-run `mmrec stage ingest` (the warehouse no longer matches its source); if the gap "
                "persists, it is a bug in mmrec: report it with the file",
            )
        )


def _interactions_left_check(inter: _TableRun, source: str) -> None:
    """With no valid interaction there is nothing to split or train on: fail, pointing at why."""
    rep = inter.report
    if rep.valid_rows:
        rep.checks.append(
            CheckReport("valid_rows_left", "table", None, success=True, unexpected=0, details=f"{rep.valid_rows} rows")
        )
        return
    rep.checks.append(CheckReport("valid_rows_left", "table", None, success=False, unexpected=rep.rows))
    top = next((r for p in sorted(inter.failures) for _, r in inter.failures[p]), "all rows rejected at ingest")
    rep.failures.append(
        Failure(
            "interactions",
            "valid_rows_left",
            source,
            None,
            [source_row(inter.frame, p) for p in sorted(inter.failures)[:MAX_FAILURE_ROWS]],
            f"no valid interactions left: all {rep.rows} rows were quarantined (e.g. {top!r})",
            "fix the interactions file or its mapping in dataset.yaml (ids must match the items/users "
            "tables, timestamps must parse with interactions.timestamp_format)",
        )
    )


def _media_checks(
    spec: DatasetSpec,
    params: ValidateParams,
    items: pd.DataFrame,
    report: ValidationReport,
    paths: DatasetPaths,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Decode every media file of the valid items; returns (items with failing paths nulled, quarantine)."""
    started = time.perf_counter()
    media = check_media(spec, items, max_pixels=max_pixels)
    totals = {k: sum(m[k] for m in media.summary.values()) for k in ("checked", "ok", "failed")}
    report.media = {
        "enabled": True,
        **totals,
        "modalities": media.summary,
        "examples": [
            {k: jsonable(r[k]) for k in ("item_id", "source_row", "modality", "path", "reason")}
            for _, r in media.quarantine.head(MAX_EXAMPLES).iterrows()
        ],
        "quarantine": str(paths.quarantine_table(MEDIA_QUARANTINE_TABLE)),
    }
    for modality, m in media.summary.items():
        # Not a failure (the items stay usable), but a wrong data root looks exactly like this.
        if m["checked"] and m["failed"] / m["checked"] > params.max_quarantine_fraction:
            report.warnings.append(
                f"{m['failed']} of {m['checked']} {modality} files failed ({m['missing']} missing, "
                f"{m['corrupt']} corrupt); check the data root ({spec.root_path}) and items.media in dataset.yaml"
            )
    elapsed = time.perf_counter() - started
    log.info("media: %d files checked in %.1fs, %d failed", totals["checked"], elapsed, totals["failed"])
    return media.items, media.quarantine


# ---------------------------------------------------------------------------------------------
# The entry point.


def validate_dataset(
    spec: DatasetSpec, paths: DatasetPaths, params: ValidateParams | None = None, max_pixels: int = MAX_IMAGE_PIXELS
) -> ValidationReport:
    """Validate the warehouse tables of `spec`; write validated tables, quarantine and report.

    `max_pixels` is extraction's image size limit (`extract.image.max_pixels`): larger images
    are quarantined here, from their header, instead of failing later in extraction.

    Returns:
        The report (also written to `paths.validation_report` and `paths.validation_markdown`).

    Raises:
        StageError: the warehouse is missing (ingest has not run).
        ValidationFailed: a table-level check failed; the report was written, the validated and
            quarantine folders were left as they were.
    """
    params = params or ValidateParams()
    started = time.perf_counter()
    names = ["items", *(["users"] if spec.users is not None else []), "interactions"]
    frames = {t: _read_table(paths, t) for t in names}
    sources = _sources(spec, paths, names)
    runs: dict[str, _TableRun] = {}
    for t in names:
        rejects = read_rejects(paths.warehouse / f"{t}_rejects.parquet")
        n_rej = 0 if rejects is None else len(rejects)
        source_rows, lines, forgotten = _source_counts(paths, t)
        rows_in = len(frames[t]) + n_rej
        deduplicated = 0
        if t == "interactions":  # identical rows: the dataset's duplicate policy, not quarantine
            frames[t], deduplicated = apply_duplicate_policy(frames[t], spec.interactions.duplicates)
        rep = TableReport(
            t,
            sources[t],
            str(paths.table(t)),
            rows=rows_in,
            ingest_rejects=n_rej,
            deduplicated=deduplicated,
            source_rows=source_rows,
            lines=lines,
            forgotten=forgotten,
        )
        runs[t] = _TableRun(t, frames[t], rep, rejects)

    runner = SuiteRunner()
    t_ge = time.perf_counter()
    items = runs["items"]
    _run_table(runner, items, spec, params, items_checks(spec, params, list(items.frame.columns)), sources["items"])
    users = runs.get("users")
    if users is not None:
        _run_table(runner, users, spec, params, users_checks(list(users.frame.columns)), sources["users"])
    inter = runs["interactions"]
    valid_items = list(items.frame[ITEM_ID].iloc[items.valid_positions()].dropna()) if items.schema_ok else None
    valid_users = None
    if users is not None and users.schema_ok:
        valid_users = list(users.frame[USER_ID].iloc[users.valid_positions()].dropna())
    checks = interactions_checks(
        params,
        list(inter.frame.columns),
        valid_items,
        valid_users,
        items.quarantined_ids(ITEM_ID) if items.schema_ok else None,
        users.quarantined_ids(USER_ID) if users is not None and users.schema_ok else None,
    )
    _run_table(runner, inter, spec, params, checks, sources["interactions"])
    log.info("great_expectations suites ran in %.1fs", time.perf_counter() - t_ge)

    for run in runs.values():
        _accounting_check(run, sources[run.name])
        if run.schema_ok and not (run.name == "interactions" and run.report.valid_rows == 0):
            _fraction_check(run, params, sources[run.name])
    if inter.schema_ok:
        _interactions_left_check(inter, sources["interactions"])

    report = ValidationReport(
        dataset=spec.name,
        tables={t: runs[t].report for t in ("interactions", "items", "users") if t in runs},
        params=params.model_dump(mode="json"),
        great_expectations=runner.version,
    )

    # Media: only for the items that passed (also on a failing run, so the report is complete).
    valid_items_frame = items.valid_frame() if items.schema_ok else items.frame.iloc[:0]
    media_q = empty_media_quarantine()
    if params.check_media and items.schema_ok and spec.items.media:
        valid_items_frame, media_q = _media_checks(spec, params, valid_items_frame, report, paths, max_pixels)
    else:
        report.media = {"enabled": False, "checked": 0, "ok": 0, "failed": 0, "modalities": {}, "examples": []}

    if not report.success:
        _write_report(report, paths)
        # Root causes first: tables in validation order (a bad items table empties interactions).
        failure_lines = "\n".join(f"- {f.line()}" for t in names for f in runs[t].report.failures)
        raise ValidationFailed(
            f"validation of dataset {spec.name!r} failed; nothing under {paths.data} was changed. "
            f"Report: {paths.validation_markdown}\n{failure_lines}",
            str(paths.validation_report),
        )

    report.outputs = {
        "validated": str(paths.validated),
        "quarantine": str(paths.quarantine),
        "media_quarantine": str(paths.quarantine_table(MEDIA_QUARANTINE_TABLE)),
    }
    validated = {t: runs[t].valid_frame() for t in runs}
    validated["items"] = valid_items_frame
    quarantine = {t: quarantine_frame(runs[t].frame, runs[t].failures, runs[t].rejects) for t in runs}
    quarantine[MEDIA_QUARANTINE_TABLE] = media_q
    # Both folders are built aside and swapped in whole; a crash before this leaves the old ones.
    with atomic_dir(paths.quarantine) as qdir, atomic_dir(paths.validated) as vdir:
        for t, df in quarantine.items():
            df.to_parquet(qdir / paths.quarantine_table(t).name, index=False)
        for t, df in validated.items():
            df.to_parquet(vdir / paths.validated_table(t).name, index=False)
    _write_report(report, paths)
    log.info(
        "validated %s in %.1fs: %s",
        spec.name,
        time.perf_counter() - started,
        ", ".join(f"{t} {r.valid_rows}/{r.rows} valid" for t, r in report.tables.items()),
    )
    return report


def _write_report(report: ValidationReport, paths: DatasetPaths) -> None:
    write_json(paths.validation_report, report.to_dict())
    write_text(paths.validation_markdown, report.to_markdown())
