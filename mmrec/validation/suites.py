"""Great Expectations suites for the warehouse tables: what "valid" means, one expectation per rule.

Every expectation carries a `Check`: a stable name used in the report and the quarantine file, its
level (`table`: the table as a whole is unusable and the pipeline stops; `row`: the offending rows
are quarantined and the run goes on) and how to phrase the reason for one bad row. The suites run
through one ephemeral GE context per validation run (`SuiteRunner`), one batch per table, with
`result_format="COMPLETE"` so every unexpected row comes back by its position.

great_expectations is imported lazily (it takes seconds), with analytics and progress bars off.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from mmrec.config import ValidateParams
from mmrec.constants import (
    EVENT,
    ITEM_ID,
    MEDIA_COLUMNS,
    RATING,
    ROW_HASH,
    SOURCE_ROW,
    TEXT,
    TIMESTAMP,
    USER_ID,
    WEIGHT,
)
from mmrec.data.contract import DatasetSpec
from mmrec.ids import UNUSABLE_ID_REGEX, id_problem

TIMESTAMP_RAW = "timestamp_raw"  # the raw timestamp text kept by ingest, quoted in reasons
RATING_RAW_SUFFIX = "_raw"  # `rating_raw` / `weight_raw`, when ingest keeps them, are quoted too

Level = Literal["row", "table"]
Kind = Literal["str", "int", "float", "datetime"]

# Type names as GE's ExpectColumnValuesToBeInTypeList understands them for pandas. An object
# column is checked value by value (each must be a Python str); the pandas string dtype by dtype.
_TYPE_LISTS: dict[str, list[str]] = {
    "str": ["str", "string", "StringDtype"],
    "int": ["int64", "int32", "Int64", "Int32"],
    "float": ["float64", "float32", "Float64", "Float32", "int64", "int32", "Int64", "Int32"],
    # GE 1.x cannot name a timezone-aware dtype in a type list, so `ge_frame` hands GE the UTC
    # timestamps as naive datetime64 (same instants); any resolution is accepted, and a naive
    # column (not what ingest writes) is taken as UTC.
    "datetime": ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"],
}

Reason = Callable[[pd.DataFrame, int, Any], str]
"""Phrase why row `pos` of the frame failed; gets the frame, the row position and the value GE saw."""


@dataclass(frozen=True)
class ColumnRule:
    """One column of a warehouse table: its name, value kind (None: any) and whether it must exist."""

    name: str
    kind: Kind | None
    required: bool = True


@dataclass
class Check:
    """One rule, backed by one GE expectation.

    Attributes:
        name: stable id in the report and the quarantine file's `check` column.
        level: "table" stops the pipeline; "row" quarantines the rows GE reports as unexpected.
        column: the column the rule is about (None for whole-table rules).
        expectation: the great_expectations Expectation instance.
        reason: phrases the reason for one unexpected row (row-level checks only).
        example_column: column whose value the report shows for an unexpected row (default `column`).
    """

    name: str
    level: Level
    column: str | None
    expectation: Any
    reason: Reason | None = None
    example_column: str | None = None


@dataclass
class Outcome:
    """What GE said about one check on one table."""

    check: Check
    success: bool
    positions: list[int] = field(default_factory=list)  # every unexpected row, by position in the frame
    values: list[Any] = field(default_factory=list)  # unexpected values as GE saw them (at most 200)
    observed: Any = None
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # the expectation could not run (its message)


# ---------------------------------------------------------------------------------------------
# Table contracts: the columns each warehouse table must have, derived from the dataset spec.


def table_columns(table: str, spec: DatasetSpec) -> list[ColumnRule]:
    """The columns the warehouse table must have for this dataset (what ingest writes)."""
    if table == "interactions":
        mapped = spec.interactions.columns
        rules = [
            ColumnRule(USER_ID, "str"),
            ColumnRule(ITEM_ID, "str"),
            ColumnRule(TIMESTAMP, "datetime"),
            ColumnRule(TIMESTAMP_RAW, "str", required=False),
        ]
        rules += [ColumnRule(c, "float", required=c in mapped) for c in (RATING, WEIGHT)]
        rules.append(ColumnRule(EVENT, "str", required=EVENT in mapped))
    elif table == "items":
        rules = [ColumnRule(ITEM_ID, "str")]
        if spec.items.text_fields:
            rules.append(ColumnRule(TEXT, "str"))
            rules += [ColumnRule(f"text_{name}", "str") for name in spec.items.text_fields]
        rules += [ColumnRule(m, "str") for m in MEDIA_COLUMNS if m in spec.items.media]
        rules += [ColumnRule(c, None) for c in spec.items.metadata]
    elif table == "users":
        rules = [ColumnRule(USER_ID, "str")]
        rules += [ColumnRule(c, None) for c in (spec.users.attributes if spec.users else [])]
    else:
        raise ValueError(f"unknown table {table!r}; expected one of interactions, items, users")
    rules += [ColumnRule(ROW_HASH, "str"), ColumnRule(SOURCE_ROW, "int")]
    return rules


# ---------------------------------------------------------------------------------------------
# Reason phrasing. Row numbers in reasons are `source_row`: the 1-based data row of the raw file,
# which is what a user opens in an editor.


def source_row(frame: pd.DataFrame, pos: int) -> int:
    return int(frame[SOURCE_ROW].iat[pos]) if SOURCE_ROW in frame.columns else pos + 1


def show(value: Any) -> str:
    """A cell value as quoted in a reason: plain Python repr (numpy scalars unwrapped)."""
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def _null_reason(column: str) -> Reason:
    return lambda frame, pos, value: f"{column} is missing (null)"


def _empty_reason(column: str) -> Reason:
    return lambda frame, pos, value: f"{column} {show(value)} is empty"


def _id_reason(column: str) -> Reason:
    def reason(frame: pd.DataFrame, pos: int, value: Any) -> str:
        shown = show(value)
        return f"{column} {shown if len(shown) <= 80 else shown[:77] + '...'} cannot be used as an id: {id_problem(str(value))}"

    return reason


def _raw_of(frame: pd.DataFrame, pos: int, column: str) -> Any:
    raw_col = TIMESTAMP_RAW if column == TIMESTAMP else column + RATING_RAW_SUFFIX
    return frame[raw_col].iat[pos] if raw_col in frame.columns else None


def _timestamp_parse_reason(frame: pd.DataFrame, pos: int, value: Any) -> str:
    raw = _raw_of(frame, pos, TIMESTAMP)
    if raw is None or (isinstance(raw, float) and pd.isna(raw)):
        return "timestamp is missing (null)"
    return f"timestamp {raw!r} does not parse (check interactions.timestamp_format in dataset.yaml)"


def _timestamp_range_reason(lo: pd.Timestamp, hi: pd.Timestamp, future: str | None = None) -> Reason:
    """Reason for a timestamp outside [lo, hi]; `future` names the tolerance when hi is "now + it"."""

    def reason(frame: pd.DataFrame, pos: int, value: Any) -> str:
        raw = _raw_of(frame, pos, TIMESTAMP)
        ts = pd.Timestamp(value)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        shown = ts.isoformat()
        src = f" (raw {raw!r})" if raw is not None else ""
        if future is not None and ts > hi:
            # No date in the text: the bound moves with the clock, the report must not.
            return (
                f"timestamp {shown}{src} is in the future: later than the validation time + "
                f"validate.future_tolerance ({future}); set validate.timestamp_max to accept it"
            )
        upper = "now + validate.future_tolerance" if future is not None else str(hi.date())
        return f"timestamp {shown}{src} outside [{lo.date()}, {upper}] (validate.timestamp_min/timestamp_max)"

    return reason


def timestamp_bounds(params: ValidateParams, now: pd.Timestamp | None = None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The accepted timestamp range: timestamp_min .. timestamp_max, or now + future_tolerance."""
    lo = parse_bound(params.timestamp_min)
    if params.timestamp_max is not None:
        return lo, parse_bound(params.timestamp_max)
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    return lo, now + pd.Timedelta(params.future_tolerance)


def _number_reason(column: str) -> Reason:
    def reason(frame: pd.DataFrame, pos: int, value: Any) -> str:
        raw = _raw_of(frame, pos, column)
        return f"{column} {raw!r} is not a number" if raw is not None else f"{column} is not a number (NaN)"

    return reason


def _finite_reason(column: str) -> Reason:
    return lambda frame, pos, value: f"{column} {show(value)} is not a finite number"


def _text_length_reason(lo: int, hi: int, hi_name: str) -> Reason:
    def reason(frame: pd.DataFrame, pos: int, value: Any) -> str:
        n = len(value)
        if n < lo:
            return f"text has {n} characters, fewer than validate.min_text_chars={lo}"
        return f"text has {n} characters, more than {hi_name}={hi}"

    return reason


def _unique_reason(column: str) -> Reason:
    # Placeholder: the run decides which occurrence is kept and phrases "first at row N" itself.
    return lambda frame, pos, value: f"duplicate {column} {show(value)}"


def _in_set_reason(column: str, table: str, quarantined: dict[str, str]) -> Reason:
    """Unknown id; when its row in `table` was quarantined, the root cause (where and why) instead."""

    def reason(frame: pd.DataFrame, pos: int, value: Any) -> str:
        if value in quarantined:
            return f"{table[:-1]} {show(value)} quarantined ({table} {quarantined[value]})"
        return f"{column} {show(value)} not in {table} table"

    return reason


# ---------------------------------------------------------------------------------------------
# The suites.


def _gxe() -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations.expectations as gxe

    return gxe


def parse_bound(value: str) -> pd.Timestamp:
    """A params.yaml date/time as a UTC timestamp (naive strings are UTC)."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def schema_checks(table: str, rules: Sequence[ColumnRule], columns: Sequence[str]) -> list[Check]:
    """Table-level checks: the table is non-empty and has its columns with the right types."""
    gxe = _gxe()
    checks = [
        # An empty table means ingest read nothing (wrong file, wrong filter); nothing downstream
        # can work with it, so the pipeline stops here instead of training on nothing.
        Check("row_count", "table", None, gxe.ExpectTableRowCountToBeBetween(min_value=1)),
    ]
    required = [r.name for r in rules if r.required]
    # The contract columns exist (extra columns are fine); later stages read them by name.
    checks.append(
        Check(
            "required_columns",
            "table",
            None,
            gxe.ExpectTableColumnsToMatchSet(column_set=required, exact_match=False),
        )
    )
    for rule in rules:
        if rule.kind is not None and rule.name in columns:
            # The column has the contract's type (ids are strings, timestamps datetimes, ratings
            # numbers), so joins and arithmetic downstream mean what they say.
            checks.append(
                Check(
                    f"{rule.name}_type",
                    "table",
                    rule.name,
                    gxe.ExpectColumnValuesToBeInTypeList(column=rule.name, type_list=_TYPE_LISTS[rule.kind]),
                )
            )
    return checks


def _id_checks(column: str, unique: bool) -> list[Check]:
    gxe = _gxe()
    checks = [
        # Every row needs its id: a row without one cannot be joined to anything.
        Check(
            f"{column}_not_null", "row", column, gxe.ExpectColumnValuesToNotBeNull(column=column), _null_reason(column)
        ),
        # An empty or blank id is a missing id in disguise (it would join every other blank id).
        Check(
            f"{column}_not_empty",
            "row",
            column,
            gxe.ExpectColumnValuesToNotMatchRegex(column=column, regex=r"^\s*$"),
            _empty_reason(column),
        ),
        # The one id rule shared with the API (mmrec/ids.py): every id that passes can be asked
        # for over HTTP; control characters, `.`/`..` and overlong ids cannot, so their rows stop here.
        Check(
            f"{column}_usable",
            "row",
            column,
            gxe.ExpectColumnValuesToNotMatchRegex(column=column, regex=UNUSABLE_ID_REGEX),
            _id_reason(column),
        ),
    ]
    if unique:
        # An id names one entity; a repeated id makes features and joins ambiguous. GE reports
        # every member of a duplicate group; the run keeps the first valid one of each group.
        checks.append(
            Check(
                f"{column}_unique",
                "row",
                column,
                gxe.ExpectColumnValuesToBeUnique(column=column),
                _unique_reason(column),
            )
        )
    return checks


def items_checks(spec: DatasetSpec, params: ValidateParams, columns: Sequence[str]) -> list[Check]:
    """Row-level rules for the catalogue."""
    gxe = _gxe()
    checks = _id_checks(ITEM_ID, unique=True)
    if TEXT in columns:
        lo = params.min_text_chars
        hi, hi_name = params.max_text_chars, "validate.max_text_chars"
        if spec.items.max_text_chars < hi:
            hi, hi_name = spec.items.max_text_chars, "items.max_text_chars (dataset.yaml)"
        # A present text document must be long enough to say something and short enough for an
        # encoder; nulls (items without text) pass: a missing modality is data, not an error.
        checks.append(
            Check(
                "text_length",
                "row",
                TEXT,
                gxe.ExpectColumnValueLengthsToBeBetween(column=TEXT, min_value=lo, max_value=hi),
                _text_length_reason(lo, hi, hi_name),
            )
        )
    return checks


def users_checks(columns: Sequence[str]) -> list[Check]:
    """Row-level rules for user attributes."""
    return _id_checks(USER_ID, unique=True)


def interactions_checks(
    params: ValidateParams,
    columns: Sequence[str],
    valid_items: Sequence[str] | None,
    valid_users: Sequence[str] | None,
    quarantined_items: dict[str, str] | None = None,
    quarantined_users: dict[str, str] | None = None,
) -> list[Check]:
    """Row-level rules for the interaction log, referential integrity included.

    Args:
        valid_items/valid_users: ids that passed their own table's checks (None: skip the rule,
            e.g. no users table); run after those tables so a quarantined item cascades.
        quarantined_items/users: id -> where and why its row was quarantined ("row 4: ...",
            "line 10: unclosed quote ..."), so dependent rows carry the root cause.
    """
    gxe = _gxe()
    checks = _id_checks(USER_ID, unique=False) + _id_checks(ITEM_ID, unique=False)
    if ROW_HASH in columns:
        # The same event twice (same content hash) would count double in training and metrics;
        # the first occurrence is kept.
        checks.append(
            Check(
                "duplicate_row",
                "row",
                ROW_HASH,
                gxe.ExpectColumnValuesToBeUnique(column=ROW_HASH),
                _unique_reason(ROW_HASH),
            )
        )
    # A timestamp that did not parse is NaT: the event cannot be placed in time (temporal split).
    checks.append(
        Check(
            "timestamp_parses",
            "row",
            TIMESTAMP,
            gxe.ExpectColumnValuesToNotBeNull(column=TIMESTAMP),
            _timestamp_parse_reason,
            example_column=TIMESTAMP_RAW if TIMESTAMP_RAW in columns else TIMESTAMP,
        )
    )
    lo, hi = timestamp_bounds(params)
    # Timestamps outside the sane range are unit mistakes (ms read as s) or placeholder dates;
    # they would put events in the wrong split. One far-future row would also become the data's
    # end, and every window counted back from it (30-day popularity, ...) would be empty.
    checks.append(
        Check(
            "timestamp_in_range",
            "row",
            TIMESTAMP,
            gxe.ExpectColumnValuesToBeBetween(
                column=TIMESTAMP, min_value=lo.tz_localize(None), max_value=hi.tz_localize(None)
            ),
            _timestamp_range_reason(lo, hi, None if params.timestamp_max is not None else params.future_tolerance),
        )
    )
    for col in (RATING, WEIGHT):
        if col not in columns:
            continue
        # A rating/weight that is present but not a number (NaN after parsing) cannot be used
        # as a label or a weight.
        checks.append(
            Check(
                f"{col}_is_number",
                "row",
                col,
                gxe.ExpectColumnValuesToNotBeNull(column=col),
                _number_reason(col),
                example_column=col + RATING_RAW_SUFFIX if col + RATING_RAW_SUFFIX in columns else col,
            )
        )
        # "inf" parses as a float but poisons every sum it enters.
        checks.append(
            Check(
                f"{col}_finite",
                "row",
                col,
                gxe.ExpectColumnValuesToBeBetween(
                    column=col, min_value=-sys.float_info.max, max_value=sys.float_info.max
                ),
                _finite_reason(col),
            )
        )
    if valid_items is not None:
        # Referential integrity: an interaction with an unknown (or quarantined) item has no
        # content and no catalogue entry to recommend.
        checks.append(
            Check(
                "item_id_in_items",
                "row",
                ITEM_ID,
                gxe.ExpectColumnValuesToBeInSet(column=ITEM_ID, value_set=sorted(valid_items)),
                _in_set_reason(ITEM_ID, "items", quarantined_items or {}),
            )
        )
    if valid_users is not None:
        # Referential integrity with the users table, when the dataset has one.
        checks.append(
            Check(
                "user_id_in_users",
                "row",
                USER_ID,
                gxe.ExpectColumnValuesToBeInSet(column=USER_ID, value_set=sorted(valid_users)),
                _in_set_reason(USER_ID, "users", quarantined_users or {}),
            )
        )
    return checks


# ---------------------------------------------------------------------------------------------
# Running suites.


def ge_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as GE sees it: positional index, timezone-aware datetimes as naive UTC.

    GE reports unexpected rows by index label, so a RangeIndex makes them positions. Timestamps
    are converted because GE 1.x type lists cannot name a timezone-aware dtype and its range
    checks compare against naive bounds; the instants are unchanged.
    """
    view = frame.reset_index(drop=True)
    converted = {
        col: view[col].dt.tz_convert("UTC").dt.tz_localize(None)
        for col in view.columns
        if isinstance(view[col].dtype, pd.DatetimeTZDtype)
    }
    return view.assign(**converted) if converted else view


def _exception_message(info: Any) -> str | None:
    """GE 1.x nests exception info per metric when an expectation fails to compute."""
    if not isinstance(info, dict):
        return None
    if "raised_exception" in info:
        return info.get("exception_message") if info.get("raised_exception") else None
    for sub in info.values():
        msg = _exception_message(sub)
        if msg:
            return msg
    return None


class SuiteRunner:
    """One ephemeral GE context for a validation run; each table is one batch, one suite."""

    def __init__(self) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        gx_log = logging.getLogger("great_expectations")
        if gx_log.level == logging.NOTSET:  # GE logs its internals at INFO; keep pipeline logs readable
            gx_log.setLevel(logging.WARNING)
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        # This GE module pins its own logger to INFO and announces a temporary docs folder.
        logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)

        self._gx = gx
        self._context = gx.get_context(mode="ephemeral")
        self._context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self._source = self._context.data_sources.add_pandas("mmrec_warehouse")

    @property
    def version(self) -> str:
        return str(self._gx.__version__)

    def run(self, name: str, frame: pd.DataFrame, checks: Sequence[Check]) -> dict[str, Outcome]:
        """Validate `frame` against `checks` as one suite; returns check name -> Outcome.

        Args:
            name: the table name (one data asset per table; call once per table and run).
            frame: the table; its rows are referred to by position in the outcomes.
        """
        gx = self._gx
        if not checks:
            return {}
        view = ge_frame(frame)
        asset = self._source.add_dataframe_asset(name)
        batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": view})
        suite = gx.ExpectationSuite(name=f"mmrec_{name}")
        by_name = {}
        for check in checks:
            if check.name in by_name:
                raise ValueError(f"duplicate check name {check.name!r} in the {name} suite")
            by_name[check.name] = check
            check.expectation.meta = {"check": check.name, "level": check.level}
            suite.add_expectation(check.expectation)
        result = batch.validate(suite, result_format="COMPLETE")
        outcomes: dict[str, Outcome] = {}
        for r in result.results:
            check = by_name[r.expectation_config.meta["check"]]
            res = r.result or {}
            positions = [int(i) for i in res.get("unexpected_index_list") or []]
            count = res.get("unexpected_count")
            if check.level == "row" and count is not None and count != len(positions):
                raise RuntimeError(  # quarantining a subset would let bad rows through silently
                    f"great_expectations {self.version} returned {len(positions)} of {count} unexpected rows "
                    f"for check {check.name!r} on {name}; mmrec needs the complete index list"
                )
            outcomes[check.name] = Outcome(
                check=check,
                success=bool(r.success),
                positions=positions,
                values=list(res.get("unexpected_list") or []),
                observed=res.get("observed_value"),
                details=res.get("details") or {},
                error=_exception_message(r.exception_info),
            )
        missing = set(by_name) - set(outcomes)
        if missing:  # pragma: no cover - GE returns one result per expectation
            raise RuntimeError(f"great_expectations returned no result for {sorted(missing)}")
        return outcomes
