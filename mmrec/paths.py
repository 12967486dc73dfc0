"""Where every artifact of a dataset lives (ARCHITECTURE.md §11); one place, so nothing is spelled twice.

All paths are relative to a workspace folder (the working directory by default), which keeps the
repo relocatable and lets tests run in a temporary folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DatasetPaths:
    """Output locations for one dataset name inside one workspace."""

    name: str
    workspace: Path = Path(".")

    @property
    def data(self) -> Path:
        return self.workspace / "data" / self.name

    @property
    def warehouse(self) -> Path:
        return self.data / "warehouse"

    def table(self, table: str) -> Path:
        return self.warehouse / f"{table}.parquet"

    @property
    def duckdb(self) -> Path:
        return self.warehouse / "warehouse.duckdb"

    @property
    def quarantine(self) -> Path:
        return self.data / "quarantine"

    def quarantine_table(self, table: str) -> Path:
        return self.quarantine / f"{table}.parquet"

    @property
    def validated(self) -> Path:
        """Validated tables (the warehouse minus quarantined rows): what later stages read."""
        return self.data / "validated"

    def validated_table(self, table: str) -> Path:
        return self.validated / f"{table}.parquet"

    def splits(self, kind: str) -> Path:
        return self.data / "splits" / kind

    def split_file(self, kind: str, part: str) -> Path:
        return self.splits(kind) / f"{part}.tsv"

    def features(self, modality: str, encoder: str) -> Path:
        return self.data / "features" / modality / f"{encoder}.parquet"

    @property
    def recommendations(self) -> Path:
        return self.data / "recommendations" / "latest.parquet"

    @property
    def reports(self) -> Path:
        return self.workspace / "reports" / self.name

    @property
    def metrics(self) -> Path:
        return self.reports / "metrics.json"

    @property
    def validation_report(self) -> Path:
        return self.reports / "validation.json"

    @property
    def validation_markdown(self) -> Path:
        return self.reports / "validation.md"

    @property
    def models(self) -> Path:
        return self.workspace / "artifacts" / self.name / "models"

    def model_dir(self, model: str) -> Path:
        return self.models / model
