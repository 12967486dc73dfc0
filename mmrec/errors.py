"""One exception family for the whole platform.

Every message names what is wrong (file, row, column or field) and how to fix it, so a user
reading a failed pipeline run never has to open a traceback to know what to do.
"""

from __future__ import annotations


class MMRecError(Exception):
    """Base class of every error mmrec raises on purpose."""


class ConfigError(MMRecError):
    """A dataset.yaml, params.yaml or command-line option is invalid."""


class DataError(MMRecError):
    """Input data cannot be read or violates the data contract."""


class ValidationFailed(DataError):
    """Table-level validation failed; the pipeline stops and points at the report.

    Attributes:
        report_path: where the human-readable validation report was written.
    """

    def __init__(self, message: str, report_path: str | None = None) -> None:
        super().__init__(message)
        self.report_path = report_path


class ModelError(MMRecError):
    """A model was asked for something it cannot do (unknown name, not fitted, missing modality)."""


class StageError(MMRecError):
    """A pipeline stage cannot run because an input artifact is missing or stale."""


class NotFoundError(MMRecError):
    """A user or item id is not known to the model or store (the API answers 404 with the message).

    Attributes:
        kind: "user" or "item".
        key: the id that was asked for.
    """

    def __init__(self, kind: str, key: str, message: str | None = None) -> None:
        super().__init__(message or f"unknown {kind} id {key!r}")
        self.kind = kind
        self.key = key


class ServiceUnavailable(MMRecError):
    """A server mmrec depends on (MLflow, Redis, Prefect) cannot be reached right now.

    Unlike the other errors this one is transient: orchestrators may retry it, and the API
    answers 503 (not 500) while it lasts. The message names the service, its address and
    what state the operation left behind.

    Attributes:
        service: "mlflow", "redis", ...
        address: the URI or host:port that failed.
    """

    def __init__(self, service: str, address: str, message: str) -> None:
        super().__init__(message)
        self.service = service
        self.address = address


class TrackingStoreError(MMRecError):
    """The MLflow tracking/registry store is unusable (corrupt, read-only, unopenable file).

    Not transient, unlike `ServiceUnavailable`: retrying does not help; the message names the
    store and the fix (restore or move the file aside, make it writable, or point tracking.uri
    elsewhere).
    """
