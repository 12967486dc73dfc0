"""The validation report: what was checked, what failed, where, and how to fix it.

Written every run (also when validation fails) as `reports/<name>/validation.json` (for tools and
DVC) and `reports/<name>/validation.md` (for people). It holds no timings or dates, so an
unchanged warehouse gives a byte-identical report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

MAX_EXAMPLES = 5
MAX_FAILURE_ROWS = 10
_MAX_VALUE_CHARS = 200


def jsonable(value: Any) -> Any:
    """A JSON-friendly rendering of one cell value (NaN/NaT -> None, timestamps -> ISO text)."""
    if value is None:
        return None
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else pd.Timestamp(value).isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, bool | int):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    text = str(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 1] + "…"


@dataclass
class CheckReport:
    """One check on one table.

    Attributes:
        unexpected: rows the check flagged; for row-level checks, the rows it quarantined (a
            duplicate group counts all but the occurrence that was kept).
        examples: a few flagged rows as {"source_row", "value"}.
        details: observed value (e.g. the column type) or why the check could not run.
    """

    name: str
    level: str
    column: str | None
    success: bool
    unexpected: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    details: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "level": self.level,
            "column": self.column,
            "success": self.success,
            "unexpected": self.unexpected,
            "examples": self.examples,
        }
        if self.details is not None:
            out["details"] = self.details
        return out


@dataclass
class Failure:
    """A table-level failure: the pipeline stops. Names the file, column, rows and the fix."""

    table: str
    check: str
    file: str
    column: str | None
    rows: list[int]
    message: str
    fix: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "file": self.file,
            "column": self.column,
            "rows": self.rows,
            "message": self.message,
            "fix": self.fix,
        }

    def line(self) -> str:
        col = f", column {self.column!r}" if self.column else ""
        rows = f", rows {self.rows}" if self.rows else ""
        return f"{self.table} ({self.file}{col}{rows}): {self.message}. Fix: {self.fix}"


@dataclass
class TableReport:
    """Validation of one warehouse table.

    Attributes:
        source: the raw file the table came from (what a user edits).
        warehouse: the warehouse parquet file that was validated.
        rows: rows in: warehouse rows plus the lines ingest rejected.
        valid_rows: rows that passed (None when table-level checks failed and rows were not judged).
        quarantined: rows quarantined, ingest rejects included.
        deduplicated: identical repeats merged or dropped by the dataset's duplicate policy
            (`interactions.duplicates`); accounted for, but neither valid rows nor quarantined.
        source_rows: data records the ingest reader counted in the source file, apart from the
            parser (None for a warehouse written without that count).
        lines: where every physical line of the source went (header, blank, records...).
        forgotten: rows of forgotten users that ingest dropped (`mmrec forget`): accounted for,
            never validated nor quarantined.
    """

    name: str
    source: str
    warehouse: str
    rows: int
    ingest_rejects: int = 0
    valid_rows: int | None = None
    quarantined: int = 0
    deduplicated: int = 0
    source_rows: int | None = None
    lines: dict[str, int] | None = None
    forgotten: int = 0
    checks: list[CheckReport] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.failures

    def accounting(self) -> dict[str, Any]:
        """source rows = valid + quarantined + deduplicated + forgotten, with each term (see `line_accounting`)."""
        expected = self.rows if self.source_rows is None else self.source_rows
        valid = self.valid_rows or 0
        accounted = (
            valid + self.quarantined + self.deduplicated + (self.forgotten if self.source_rows is not None else 0)
        )
        return {
            "source_rows": self.source_rows,
            "valid": self.valid_rows,
            "quarantined": self.quarantined,
            "deduplicated": self.deduplicated,
            "forgotten": self.forgotten,
            "unaccounted": None if self.valid_rows is None else expected - accounted,
            "lines": self.lines,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "warehouse": self.warehouse,
            "success": self.success,
            "rows": self.rows,
            "ingest_rejects": self.ingest_rejects,
            "valid_rows": self.valid_rows,
            "quarantined": self.quarantined,
            "deduplicated": self.deduplicated,
            "forgotten": self.forgotten,
            "accounting": self.accounting(),
            "checks": [c.to_dict() for c in self.checks],
            "failures": [f.to_dict() for f in self.failures],
        }


@dataclass
class ValidationReport:
    """The whole run: one TableReport per table, the media summary and where outputs went."""

    dataset: str
    tables: dict[str, TableReport] = field(default_factory=dict)
    media: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    great_expectations: str = ""

    @property
    def success(self) -> bool:
        return all(t.success for t in self.tables.values())

    @property
    def failures(self) -> list[Failure]:
        return [f for t in self.tables.values() for f in t.failures]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "success": self.success,
            "tables": {name: t.to_dict() for name, t in self.tables.items()},
            "media": self.media,
            "warnings": self.warnings,
            "params": self.params,
            "outputs": self.outputs,
            "great_expectations": self.great_expectations,
        }

    def to_markdown(self) -> str:
        status = "passed" if self.success else "FAILED"
        lines = [f"# Validation of `{self.dataset}`: {status}", ""]
        lines += [
            "| table | source | source rows | valid | quarantined | deduplicated | ingest rejects | unaccounted | status |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for name, t in self.tables.items():
            valid = "-" if t.valid_rows is None else str(t.valid_rows)
            ok = "ok" if t.success else "**failed**"
            acc = t.accounting()
            src = t.rows if t.source_rows is None else t.source_rows
            gap = "-" if acc["unaccounted"] is None else str(acc["unaccounted"])
            lines.append(
                f"| {name} | `{t.source}` | {src} | {valid} | {t.quarantined} | {t.deduplicated} | "
                f"{t.ingest_rejects} | {gap} | {ok} |"
            )
        lines.append("")
        if self.failures:
            lines += ["## Failures (the pipeline stopped)", ""]
            for f in self.failures:
                col = f", column `{f.column}`" if f.column else ""
                rows = f", rows {f.rows}" if f.rows else ""
                lines.append(f"- **{f.table}** `{f.check}` in `{f.file}`{col}{rows}: {f.message}.  ")
                lines.append(f"  Fix: {f.fix}")
            lines.append("")
        if self.warnings:
            lines += ["## Warnings", ""] + [f"- {w}" for w in self.warnings] + [""]
        for name, t in self.tables.items():
            lines += [
                f"## {name}",
                "",
                "| check | level | column | ok | unexpected | examples (source row: value) |",
                "|---|---|---|---|---:|---|",
            ]
            for c in t.checks:
                ex = ", ".join(f"{e.get('source_row')}: `{_md_value(e.get('value'))}`" for e in c.examples)
                if c.details and not c.success:
                    ex = (ex + "; " if ex else "") + _md_value(c.details)
                ok = "yes" if c.success else "no"
                lines.append(f"| {c.name} | {c.level} | {c.column or ''} | {ok} | {c.unexpected} | {ex} |")
            lines.append("")
        if self.media:
            lines += ["## Media", ""]
            if not self.media.get("enabled", False):
                lines += ["Media checks were skipped (validate.check_media is false or items failed).", ""]
            else:
                lines += [
                    "| modality | checked | ok | missing | corrupt | skipped URIs |",
                    "|---|---:|---:|---:|---:|---:|",
                ]
                for modality, c in self.media.get("modalities", {}).items():
                    counts = " | ".join(str(c[k]) for k in ("checked", "ok", "missing", "corrupt", "skipped_uris"))
                    lines.append(f"| {modality} | {counts} |")
                lines.append("")
                for e in self.media.get("examples", []):
                    lines.append(f"- item `{e['item_id']}` ({e['modality']}): {_md_value(e['reason'])}")
                if self.media.get("examples"):
                    where = self.media.get("quarantine")
                    lines.append(f"\nAll failing files: `{where}`; their paths are null in the validated items.")
                lines.append("")
        if self.outputs:
            lines += ["## Outputs", ""] + [f"- {k}: `{v}`" for k, v in self.outputs.items()] + [""]
        return "\n".join(lines)


def _md_value(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", "\\n").replace("`", "'")
