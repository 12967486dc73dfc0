"""Lifecycle commands of the `mmrec` CLI: pipeline (through Prefect), recommend, promote, rollback, registry.

`register(app)` adds them to the main typer app (mmrec/cli.py calls it). Prefect is imported
only inside `mmrec pipeline`, which is the one command that runs the orchestrated flow; the
library itself never imports it.
"""

# No `from __future__ import annotations`: typer reads the option annotations at registration,
# and they name types imported inside `register` (from mmrec.cli, to avoid a circular import).
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer


def _flows() -> Any:
    """Import the `flows` package (repo root), also when `mmrec` runs as an installed console script.

    Without `PREFECT_API_URL` Prefect starts a temporary API server for the run; its default
    20 s start-up budget is too short on a busy laptop or CI box, so it is raised (the
    environment still wins) before Prefect reads its settings.
    """
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call otherwise
    try:
        import flows.training  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name not in ("flows", "flows.training"):
            raise
        repo = Path(__file__).resolve().parents[1]
        if not (repo / "flows" / "training.py").is_file():
            from mmrec.errors import ConfigError

            raise ConfigError(
                "the Prefect flows (flows/ in the mmrec repository) are not importable; run from a checkout of the repo"
            ) from None
        sys.path.insert(0, str(repo))
    import flows.nightly
    import flows.training

    return flows


def ui_hints(tracking_uri: str) -> list[str]:
    """Where the MLflow and Prefect UIs are and how to open them."""
    api = os.environ.get("PREFECT_API_URL")
    if tracking_uri.startswith(("http://", "https://")):
        mlflow_line = f"MLflow UI: {tracking_uri}"
    else:
        mlflow_line = f"MLflow UI: `mlflow ui --backend-store-uri {tracking_uri} --port 5000`, then open http://127.0.0.1:5000"
    if api:
        prefect_line = f"Prefect UI: {api.removesuffix('/api')} (runs of flow training-pipeline / nightly-recommendations)"
    else:
        prefect_line = (
            "Prefect UI: this run used a temporary Prefect server; to keep run history start "
            "`prefect server start` (http://127.0.0.1:4200) and `export PREFECT_API_URL=http://127.0.0.1:4200/api`"
        )
    return [mlflow_line, prefect_line]


def register(app: typer.Typer) -> None:
    """Add `pipeline`, `recommend`, `promote`, `rollback` and `registry` to `app`."""
    from mmrec.cli import DatasetOpt, ParamsOpt, RootOpt, WorkspaceOpt, _context, handle_errors

    @app.command("pipeline")
    @handle_errors
    def pipeline(
        dataset: DatasetOpt,
        root: RootOpt = None,
        params: ParamsOpt = Path("params.yaml"),
        workspace: WorkspaceOpt = Path("."),
        extract: Annotated[bool, typer.Option("--extract/--no-extract", help="Run per-modality feature extraction.")] = True,
        register_models: Annotated[
            bool, typer.Option("--register/--no-register", help="Log to MLflow, register the best model, apply the promotion gate.")
        ] = True,
    ) -> None:
        """Run the whole training pipeline through Prefect: ingest, validate, split, extract, train, evaluate, register."""
        from mmrec.stages import format_metrics_table, read_metrics

        flows = _flows()
        ctx = _context(dataset, root, params, workspace)  # fail fast on a bad dataset.yaml/params.yaml
        state = flows.training.run_training(str(dataset), str(params), str(workspace), str(root) if root else None,
                                            extract=extract, register_best=register_models)
        if not state.is_completed():
            typer.echo(f"error: pipeline failed: {state.message}", err=True)
            raise typer.Exit(2)
        result = state.result()
        report = read_metrics(ctx.paths)
        typer.echo(format_metrics_table(report))
        typer.echo(f"\nbest model on validation {report['selection_metric']}: {report['best_model']}")
        typer.echo(f"reports: {ctx.paths.metrics} and {ctx.paths.reports / 'metrics.md'}; validation: {ctx.paths.validation_markdown}")
        registry = result.get("registry")
        if registry:
            d = registry.get("decision") or {}
            typer.echo(f"registry: {registry['registered_model']} v{registry['version']}: {d.get('action', 'registered')} ({d.get('reason', '')})")
            for line in ui_hints(registry["tracking_uri"]):
                typer.echo(line)

    @app.command("recommend")
    @handle_errors
    def recommend(
        dataset: DatasetOpt,
        k: Annotated[int | None, typer.Option("--k", help="Recommendations per user (default: params.yaml recommend.k).")] = None,
        users: Annotated[
            Path | None, typer.Option("--users", help="Only these users: one id per line, or a table with a user_id column.")
        ] = None,
        user: Annotated[list[str] | None, typer.Option("--user", help="Only this user (repeatable); printed to stdout.")] = None,
        prefect: Annotated[
            bool, typer.Option("--prefect", help="Run as the nightly-recommendations Prefect flow (summary artifact, retries).")
        ] = False,
        out: Annotated[Path | None, typer.Option("--out", help="With --users: write the rows here (.parquet/.csv/.tsv) instead of stdout.")] = None,
        alias: Annotated[str, typer.Option("--alias", help="Registry alias to recommend from.")] = "champion",
        root: RootOpt = None,
        params: ParamsOpt = Path("params.yaml"),
        workspace: WorkspaceOpt = Path("."),
    ) -> None:
        """Top-K from the registry's champion: every user to data/<name>/recommendations/latest.parquet, or --users to stdout."""
        from mmrec.recommend import history_matrix, read_user_ids, recommend_for_ids, recommend_params, run_recommend
        from mmrec.tracking import load_champion

        ctx = _context(dataset, root, params, workspace)
        if prefect and users is None and not user:
            if alias != "champion":
                from mmrec.errors import ConfigError

                raise ConfigError("--prefect runs the nightly flow, which always uses the champion; drop --alias")
            state = _flows().nightly.run_nightly(str(dataset), str(params), str(workspace), str(root) if root else None, k)
            if not state.is_completed():
                typer.echo(f"error: nightly run failed: {state.message}", err=True)
                raise typer.Exit(2)
            summary = state.result()
            typer.echo(
                f"{summary['rows']} recommendations for {summary['users_covered']}/{summary['users']} users "
                f"(catalogue coverage {summary['catalogue_coverage']:.3f}) in {summary['seconds']:.1f}s -> {summary['path']}"
            )
            return
        model, info = load_champion(ctx, alias=alias)
        if users is None and not user:
            summary = run_recommend(ctx, k=k, model=model, model_info=info)
            typer.echo(
                f"{summary['rows']} recommendations for {summary['users_covered']}/{summary['users']} users "
                f"(catalogue coverage {summary['catalogue_coverage']:.3f}) from {info['registered_model']} v{info['version']} "
                f"in {summary['seconds']:.1f}s -> {summary['path']}"
            )
            return
        import pandas as pd

        rp = recommend_params(ctx.params)
        validated = ctx.paths.validated_table("interactions")
        seen = pd.read_parquet(validated, columns=["user_id", "item_id"]) if validated.is_file() and rp.exclude_seen else None
        wanted = (read_user_ids(users) if users is not None else []) + list(user or [])
        rows = recommend_for_ids(model, wanted, k=k or rp.k,
                                 exclude=history_matrix(model, seen) if rp.exclude_seen else None, exclude_seen=rp.exclude_seen)
        if out is None:
            typer.echo(rows.to_csv(sep="\t", index=False, float_format="%.6g"), nl=False)
        else:
            from mmrec.io import atomic_path

            with atomic_path(out) as tmp:
                if out.suffix == ".parquet":
                    rows.to_parquet(tmp, index=False)
                else:
                    rows.to_csv(tmp, sep="\t" if out.suffix == ".tsv" else ",", index=False)
            typer.echo(f"wrote {len(rows)} rows to {out}")

    @app.command("promote")
    @handle_errors
    def promote(
        dataset: DatasetOpt,
        version: Annotated[str | None, typer.Option("--version", help="Model version to promote (default: the challenger).")] = None,
        force: Annotated[bool, typer.Option("--force", help="Skip the promotion gate (the decision is logged as forced).")] = False,
        root: RootOpt = None,
        params: ParamsOpt = Path("params.yaml"),
        workspace: WorkspaceOpt = Path("."),
    ) -> None:
        """Make a model version the champion if it passes the promotion gate (or --force)."""
        from mmrec.tracking import promote as do_promote

        decision = do_promote(_context(dataset, root, params, workspace), version=version, force=force)
        typer.echo(f"{decision.registered_model} v{decision.version}: {decision.action} ({decision.reason})")
        if decision.action == "refused":
            raise typer.Exit(1)

    @app.command("rollback")
    @handle_errors
    def rollback(
        dataset: DatasetOpt,
        root: RootOpt = None,
        params: ParamsOpt = Path("params.yaml"),
        workspace: WorkspaceOpt = Path("."),
    ) -> None:
        """Point the champion alias back at the previous champion."""
        from mmrec.tracking import rollback as do_rollback

        decision = do_rollback(_context(dataset, root, params, workspace))
        typer.echo(f"{decision.registered_model}: champion is v{decision.version} again ({decision.reason})")

    @app.command("registry")
    @handle_errors
    def registry(
        dataset: DatasetOpt,
        root: RootOpt = None,
        params: ParamsOpt = Path("params.yaml"),
        workspace: WorkspaceOpt = Path("."),
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Show the registered model's versions, aliases and last decisions."""
        from mmrec.tracking import registry_state

        state = registry_state(_context(dataset, root, params, workspace))
        if as_json:
            typer.echo(json.dumps(state, indent=2, default=str))
            return
        typer.echo(f"{state['registered_model']} at {state['tracking_uri']}; aliases: {state['aliases']}")
        for v in state["versions"]:
            typer.echo("  v{version:<4} {model:<12} ".format(**{**v, "model": v["model"] or "?"}) + json.dumps({k: val for k, val in v.items() if k not in ("version", "model")}))
        for d in state["decisions"][-5:]:
            typer.echo(f"  {d.get('at', '')} v{d.get('version')}: {d.get('action')} - {d.get('reason', '')}")
