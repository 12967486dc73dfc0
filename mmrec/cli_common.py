"""What every `mmrec` command module shares: the common options, error handling, the stage context.

A leaf of the CLI: `mmrec/cli.py` (the app and the data/stage commands) and
`mmrec/cli_lifecycle.py` (pipeline, recommend, promote, ...) both import from here, so neither
imports the other's internals (no import cycle between them).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from mmrec.errors import MMRecError, ValidationFailed

if TYPE_CHECKING:
    from mmrec.context import StageContext

F = TypeVar("F", bound=Callable[..., Any])

DatasetOpt = Annotated[Path, typer.Option("--dataset", "-d", help="PATH/dataset.yaml of the dataset to use.")]
RootOpt = Annotated[
    Path | None,
    typer.Option("--root", help="Data root overriding the dataset.yaml `root:` (or set MMREC_DATA_ROOT_<NAME>)."),
]
ParamsOpt = Annotated[
    Path,
    typer.Option(
        "--params",
        help="Base parameter file (every tunable). Merged over it, in this order: params.yaml beside the "
        "dataset.yaml, then <workspace>/params/<name>.yaml; MMREC__SECTION__KEY env vars win over all. "
        "The files used are logged.",
    ),
]
WorkspaceOpt = Annotated[
    Path, typer.Option("--workspace", help="Folder under which data/, artifacts/ and reports/ are written.")
]


def setup_logging() -> None:
    level = os.environ.get("MMREC_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def handle_errors(fn: F) -> F:
    """An `MMRecError` becomes one `error: ...` line on stderr and exit status 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        setup_logging()
        try:
            return fn(*args, **kwargs)
        except ValidationFailed as exc:
            typer.echo(f"error: validation failed: {exc}", err=True)
            if exc.report_path:
                typer.echo(f"report: {exc.report_path}", err=True)
            raise typer.Exit(2) from None
        except MMRecError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def load_context(dataset: Path, root: Path | None, params: Path, workspace: Path) -> StageContext:
    """The dataset spec, the params (base + the dataset's overlays, logged) and the workspace of one
    command (bad files fail here, early)."""
    from mmrec.context import StageContext

    return StageContext.from_files(dataset, params, workspace, root)
