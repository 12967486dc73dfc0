"""The data contract: how a dataset folder and its `dataset.yaml` map onto mmrec's tables.

A dataset is a folder of the user's own files plus a `dataset.yaml` that says which file holds
interactions, items and (optionally) users, and which of their columns are the contract's columns.
Nothing else about the user's files is assumed, so any catalogue is usable without code.

Example::

    name: ml100k-mm
    root: ../shared/data/ml100k-mm      # relative: resolved from the repo root
    interactions:
      path: ratings.csv
      columns: {user_id: user_id, item_id: movie_id, timestamp: timestamp, rating: rating}
      timestamp_format: unix_s
    items:
      path: items.csv
      columns: {item_id: movie_id}
      text_fields: {title: movie_title, genres: genres, description: description}
      media: {image: poster_path}
    users:
      path: users.csv
      columns: {user_id: user_id}
      attributes: [age, gender, occupation]
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmrec.constants import EVENT, ITEM_ID, RATING, TIMESTAMP, USER_ID, WEIGHT
from mmrec.errors import ConfigError

FileFormat = Literal["csv", "tsv", "parquet", "jsonl"]
TimestampFormat = Literal["unix_s", "unix_ms", "iso"]

_SUFFIX_FORMATS: dict[str, FileFormat] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
ROOT_ENV_PREFIX = "MMREC_DATA_ROOT_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TableSpec(_Strict):
    """Where a table lives and how to read it.

    Attributes:
        path: file path relative to the dataset root.
        format: file format; inferred from the suffix when omitted.
        delimiter: field separator for delimited text (default `,` for csv, tab for tsv).
        encoding: text encoding of delimited files; a wrong one is reported with the byte offset.
        columns: contract column -> the file's column.
    """

    path: str
    format: FileFormat | None = None
    delimiter: str | None = None
    encoding: str = "utf-8"
    columns: dict[str, str] = Field(default_factory=dict)

    def file_format(self) -> FileFormat:
        if self.format is not None:
            return self.format
        suffix = Path(self.path).suffix.lower()
        if suffix not in _SUFFIX_FORMATS:
            raise ConfigError(
                f"cannot infer the format of {self.path!r} from its suffix {suffix!r}; "
                f"set `format:` to one of csv, tsv, parquet, jsonl"
            )
        return _SUFFIX_FORMATS[suffix]

    def sep(self) -> str:
        if self.delimiter is not None:
            return self.delimiter
        return "\t" if self.file_format() == "tsv" else ","

    def _check_columns(self, allowed: tuple[str, ...], required: tuple[str, ...], table: str) -> None:
        unknown = sorted(set(self.columns) - set(allowed))
        if unknown:
            raise ValueError(
                f"{table}.columns has unknown contract column(s) {unknown}; "
                f"allowed: {list(allowed)} (map the file's columns onto these names)"
            )
        missing = [c for c in required if c not in self.columns]
        if missing:
            raise ValueError(f"{table}.columns must map {missing} (e.g. `{missing[0]}: <your column>`)")


class InteractionsSpec(TableSpec):
    """The interaction log: one row per (user, item, time) event."""

    timestamp_format: TimestampFormat = "unix_s"
    min_rating: float | None = None  # keep only rows with rating >= this (None: every row is positive)
    #: identical rows (same user, item, time, event, weight): `aggregate` into one row with a
    #: count and summed weight (default: repeats are quantities), or `drop` the repeats (both:
    #: counted as `deduplicated` in validation.json, not quarantined), or `quarantine` them
    #: (strict: they count toward validate.max_quarantine_fraction)
    duplicates: Literal["aggregate", "drop", "quarantine"] = "aggregate"

    @model_validator(mode="after")
    def _columns(self) -> InteractionsSpec:
        self._check_columns(
            (USER_ID, ITEM_ID, TIMESTAMP, RATING, WEIGHT, EVENT), (USER_ID, ITEM_ID, TIMESTAMP), "interactions"
        )
        if self.min_rating is not None and RATING not in self.columns:
            raise ValueError("interactions.min_rating needs a `rating` column in interactions.columns")
        return self


class MediaTemplate(_Strict):
    """A media path built from the item id, for catalogues whose files are named after their items.

    `template: "images/{item_id}.jpg"` (relative to the data root): an item whose file does not
    exist has no such media (missing is data, not an error). An id that would lead the path out
    of the data root (`../x`, absolute parts) gets no path.
    """

    template: str

    @field_validator("template")
    @classmethod
    def _fields(cls, v: str) -> str:
        import string

        try:
            names = [f for _, f, _, _ in string.Formatter().parse(v) if f is not None]
        except ValueError as exc:
            raise ValueError(
                f'template {v!r} is not a valid format string ({exc}); write e.g. "images/{{item_id}}.jpg"'
            ) from exc
        if names != [ITEM_ID] * len(names) or not names:
            raise ValueError(f'template {v!r} must use {{item_id}} and no other field, e.g. "images/{{item_id}}.jpg"')
        if Path(v).is_absolute():
            raise ValueError(f"template {v!r} must be relative to the data root")
        return v


class ItemsSpec(TableSpec):
    """The catalogue.

    Attributes:
        text_fields: field name -> file column, in the order the text document is built.
        media: modality (image/audio/video) -> file column holding a path relative to the root,
            or `{template: "images/{item_id}.jpg"}` (`MediaTemplate`).
        metadata: extra categorical columns kept as they are.
        max_text_chars: longer documents are flagged by validation (not truncated here).
    """

    text_fields: dict[str, str] = Field(default_factory=dict)
    media: dict[Literal["image", "audio", "video"], str | MediaTemplate] = Field(default_factory=dict)
    metadata: list[str] = Field(default_factory=list)
    max_text_chars: int = 20_000

    @model_validator(mode="after")
    def _columns(self) -> ItemsSpec:
        self._check_columns((ITEM_ID,), (ITEM_ID,), "items")
        return self

    @property
    def media_columns(self) -> dict[str, str]:
        """Modalities whose paths come from a column of the items file -> that column."""
        return {m: v for m, v in self.media.items() if isinstance(v, str)}

    @property
    def media_templates(self) -> dict[str, str]:
        """Modalities whose paths are built from the item id -> the template."""
        return {m: v.template for m, v in self.media.items() if isinstance(v, MediaTemplate)}

    def source_columns(self) -> list[str]:
        """Every file column this spec reads, in a stable order."""
        cols = [self.columns[ITEM_ID], *self.text_fields.values(), *self.media_columns.values(), *self.metadata]
        return list(dict.fromkeys(cols))


class UsersSpec(TableSpec):
    """Optional user attributes."""

    attributes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _columns(self) -> UsersSpec:
        self._check_columns((USER_ID,), (USER_ID,), "users")
        return self


class DatasetSpec(_Strict):
    """A parsed `dataset.yaml`.

    Attributes:
        name: short name used in every output path (`data/<name>/...`, `reports/<name>/...`).
        root: data folder. Absolute, or relative to the repo root; omitted means the folder
            holding dataset.yaml. Overridden by `--root` or `MMREC_DATA_ROOT_<NAME>`.
        description: free text for reports.
    """

    name: str
    root: str | None = None
    description: str = ""
    interactions: InteractionsSpec
    items: ItemsSpec
    users: UsersSpec | None = None

    # Set by load_dataset_spec, not by users.
    spec_path: str | None = Field(default=None, exclude=True)
    resolved_root: str | None = Field(default=None, exclude=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"name {v!r} must be letters, digits, '.', '_' or '-' (it is used in paths)")
        return v

    @property
    def root_path(self) -> Path:
        if self.resolved_root is None:
            raise ConfigError("dataset spec was not loaded through load_dataset_spec; its root is unknown")
        return Path(self.resolved_root)

    def table_path(self, table: str) -> Path:
        spec = getattr(self, table)
        if spec is None:
            raise ConfigError(f"dataset {self.name!r} has no {table!r} table")
        return self.root_path / spec.path

    def resolve_media(self, rel: str) -> Path:
        """Absolute path of a media file named relative to the dataset root (or already absolute)."""
        p = Path(rel)
        return p if p.is_absolute() else self.root_path / p

    @property
    def modalities(self) -> list[str]:
        """Modalities this dataset declares: text when it has text fields, plus its media columns."""
        mods = ["text"] if self.items.text_fields else []
        return mods + [m for m in ("image", "audio", "video") if m in self.items.media]


def template_media_paths(
    item_ids: list[str | None], template: str, root: Path
) -> tuple[list[str | None], dict[str, int]]:
    """Paths (relative to `root`) of a media template for each item id; None where no file is.

    The path is built lexically and must stay inside `root`: an id such as `../../etc/passwd`
    or one with a NUL byte gets None (counted as `unsafe`), so a hostile id cannot make the
    pipeline read outside the dataset. Symlinks inside the root are the dataset owner's choice
    and are followed.

    Returns:
        (paths, counts): counts of `found`, `missing` (no file) and `unsafe` ids.
    """
    base = os.path.normpath(str(root))
    out: list[str | None] = []
    counts = {"found": 0, "missing": 0, "unsafe": 0}
    for iid in item_ids:
        if iid is None:
            out.append(None)
            continue
        rel = template.format(item_id=str(iid))
        full = os.path.normpath(os.path.join(base, rel))
        if "\x00" in rel or os.path.isabs(rel) or os.path.commonpath([base, full]) != base or full == base:
            counts["unsafe"] += 1
            out.append(None)
        elif os.path.isfile(full):
            counts["found"] += 1
            out.append(os.path.relpath(full, base))
        else:
            counts["missing"] += 1
            out.append(None)
    return out, counts


def root_env_var(name: str) -> str:
    """Environment variable that overrides a dataset's root, e.g. MMREC_DATA_ROOT_ML100K_MM."""
    return ROOT_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def find_repo_root(start: Path) -> Path:
    """The nearest folder at or above `start` holding dvc.yaml, pyproject.toml or .git; else cwd."""
    for d in [start, *start.parents]:
        if any((d / marker).exists() for marker in ("dvc.yaml", "pyproject.toml", ".git")):
            return d
    return Path.cwd()


def load_dataset_spec(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> DatasetSpec:
    """Parse and check a dataset.yaml, resolving its data root.

    Args:
        path: the dataset.yaml file.
        root: explicit data root (the `--root` option); wins over the environment and the file.

    Raises:
        ConfigError: the file is missing, not YAML, has unknown keys or wrong values; the message
            names the file and the offending key.
    """
    spec_file = Path(path).resolve()
    if not spec_file.is_file():
        raise ConfigError(f"{spec_file}: dataset.yaml not found (pass --dataset PATH/dataset.yaml)")
    try:
        raw = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{spec_file}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{spec_file}: expected a mapping with name/interactions/items, got {type(raw).__name__}")
    try:
        spec = DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<top>'}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"{spec_file}: invalid dataset.yaml: {problems}") from exc

    chosen = root or os.environ.get(root_env_var(spec.name)) or spec.root
    if chosen is None:
        resolved = spec_file.parent
    else:
        p = Path(os.path.expanduser(str(chosen)))
        if not p.is_absolute():
            # --root and env values are relative to the cwd; a root in the file to the repo root.
            base = Path.cwd() if (root or os.environ.get(root_env_var(spec.name))) else find_repo_root(spec_file.parent)
            p = base / p
        resolved = p.resolve()
    if not resolved.is_dir():
        raise ConfigError(
            f"{spec_file}: data root {resolved} does not exist; set `root:` in the file, "
            f"pass --root, or set {root_env_var(spec.name)}"
        )
    return spec.model_copy(update={"spec_path": str(spec_file), "resolved_root": str(resolved)})
