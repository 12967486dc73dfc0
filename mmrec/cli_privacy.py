"""`mmrec forget`: the command line side of forgetting a user (mmrec.privacy.forget)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mmrec.cli_common import DatasetOpt, ParamsOpt, RootOpt, WorkspaceOpt, handle_errors, load_context


def register(app: typer.Typer) -> None:
    """Add `forget` to `app`."""

    @app.command("forget")
    @handle_errors
    def forget(
        dataset: DatasetOpt,
        user: Annotated[str, typer.Option("--user", help="The user id to forget (as in the raw data).")],
        root: RootOpt = None,
        params: ParamsOpt = Path("params.yaml"),
        workspace: WorkspaceOpt = Path("."),
        as_json: Annotated[bool, typer.Option("--json", help="Print the audit record as JSON.")] = False,
    ) -> None:
        """Remove a user from everything the platform wrote; the raw data stays, ingest drops them from now on.

        Warehouse, validated tables and quarantine, splits, Feast offline tables and online store
        (sqlite and Redis), nightly recommendations, every saved model and MLflow version (the
        user's factors and id removed), reports, stale DVC cache objects. Appends an audit record
        (pseudonym, time, counts per store) to privacy/<name>/audit.jsonl. Idempotent: run it
        again after a failure; exit status 1 while anything is left. A running `mmrec serve`
        forgets the user at its next reload (`POST /admin/reload`), or use `DELETE /users/{id}`.
        """
        from mmrec.privacy.audit import audit_path
        from mmrec.privacy.forget import forget_user

        ctx = load_context(dataset, root, params, workspace)
        result = forget_user(ctx, user)
        if as_json:
            typer.echo(json.dumps(result.to_dict(), indent=2))
        else:
            removed = ", ".join(f"{store} {sum(c.values())}" for store, c in result.removed.items() if sum(c.values()))
            typer.echo(
                f"forgot user (pseudonym {result.pseudonym[:16]}…) in {ctx.spec.name!r}: "
                f"{removed or 'nothing held the user (already forgotten or unknown)'}"
            )
            typer.echo(f"audit record: {audit_path(ctx.paths)}")
        if not result.complete:
            for store, err in result.failed.items():
                typer.echo(f"error: store {store} not erased: {err}", err=True)
            for f in result.left:
                typer.echo(f"error: still holds the user: {f}", err=True)
            typer.echo(
                "the forget is incomplete; fix the cause and run the same command again (it is idempotent)", err=True
            )
            raise typer.Exit(1)
