"""Validation of the warehouse: Great Expectations suites, quarantine of bad rows, the report.

`validate_dataset(spec, paths, params)` is the validate stage's entry point; see `run.py`.
Importing this package is cheap: great_expectations is imported when a run starts.
"""

from mmrec.validation.report import CheckReport, Failure, TableReport, ValidationReport
from mmrec.validation.run import validate_dataset

__all__ = ["CheckReport", "Failure", "TableReport", "ValidationReport", "validate_dataset"]
