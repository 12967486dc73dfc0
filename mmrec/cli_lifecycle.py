"""Lifecycle commands of the `mmrec` CLI: pipeline (through Prefect), recommend, promote, rollback, registry.

`register(app)` adds them to the main typer app (mmrec/cli.py calls it). The flows are reached
through the orchestrator entry point (mmrec/orchestrator.py) only inside `mmrec pipeline` and
`mmrec recommend --prefect`; the library never imports Prefect or the `mmrec_flows` package.
"""

# No `from __future__ import annotations`: typer reads the option annotations at registration.
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from mmrec.cli_common import DatasetOpt, ParamsOpt, RootOpt, WorkspaceOpt, handle_errors
from mmrec.cli_common import load_context as _context


def ui_hints(tracking_uri: str) -> list[str]:
    """Where the MLflow and Prefect UIs are and how to open them."""
    api = os.environ.get("PREFECT_API_URL")
    if tracking_uri.startswith(("http://", "https://")):
        mlflow_line = f"MLflow UI: {tracking_uri}"
    else:
        mlflow_line = (
            f"MLflow UI: `mlflow ui --backend-store-uri {tracking_uri} --port 5000`, then open http://127.0.0.1:5000"
        )
    if api:
        prefect_line = (
            f"Prefect UI: {api.removesuffix('/api')} (runs of flow training-pipeline / nightly-recommendations)"
        )
    else:
        prefect_line = (
            "Prefect UI: this run used a temporary Prefect server; to keep run history start "
            "`prefect server start` (http://127.0.0.1:4200) and `export PREFECT_API_URL=http://127.0.0.1:4200/api`"
        )
    return [mlflow_line, prefect_line]


def register(app: typer.Typer) -> None:
    """Add `pipeline`, `recommend`, `explain`, `serve`, `promote`, `rollback` and `registry` to `app`."""

    @app.command("pipeline")
    @handle_errors
    def pipeline(
        dataset: DatasetOpt,
        root: RootOpt = None,
        params: ParamsOpt = Path("params.yaml"),
        workspace: WorkspaceOpt = Path("."),
        extract: Annotated[
            bool, typer.Option("--extract/--no-extract", help="Run per-modality feature extraction.")
        ] = True,
        register_models: Annotated[
            bool,
            typer.Option(
                "--register/--no-register", help="Log to MLflow, register the best model, apply the promotion gate."
            ),
        ] = True,
        tune: Annotated[
            bool,
            typer.Option(
                "--tune",
                help="Search hyper-parameters on validation before training (mmrec tune) and train with the chosen values.",
            ),
        ] = False,
        tune_trials: Annotated[
            int | None,
            typer.Option("--tune-trials", min=1, help="With --tune: trials per model (default: tune.trials)."),
        ] = None,
        tune_timeout: Annotated[
            float | None,
            typer.Option(
                "--tune-timeout",
                min=1,
                help="With --tune: seconds for the whole search (default: tune.timeout_seconds).",
            ),
        ] = None,
    ) -> None:
        """Run the whole training pipeline through Prefect: ingest, validate, split, extract, [tune,] train, evaluate, register."""
        from mmrec.orchestrator import load_orchestrator
        from mmrec.stage_inputs import read_metrics
        from mmrec.stages import format_metrics_table

        ctx = _context(dataset, root, params, workspace)  # fail fast on a bad dataset.yaml/params.yaml
        typer.echo(f"parameters: {' + '.join(ctx.params_files) or 'built-in defaults'}")
        state = load_orchestrator().run_training(
            str(dataset),
            str(params),
            str(workspace),
            str(root) if root else None,
            extract=extract,
            register_best=register_models,
            tune=tune,
            tune_trials=tune_trials,
            tune_timeout=tune_timeout,
        )
        if not state.is_completed():
            typer.echo(f"error: pipeline failed: {state.message}", err=True)
            raise typer.Exit(2)
        result = state.result()
        if result.get("tuning"):
            t = result["tuning"]
            typer.echo(
                f"tuned on validation ({t['objective']}, {t['seconds'] / 60:.1f} min): "
                + "; ".join(
                    f"{n} {r['best']['value']:.4f} ({r['trials']['run']} trials)"
                    if r["best"]
                    else f"{n}: no completed trial"
                    for n, r in t["models"].items()
                )
                + f"; written to {t['overlay']}"
            )
        report = read_metrics(ctx.paths)
        typer.echo(format_metrics_table(report))
        typer.echo(f"\nbest model on validation {report['selection_metric']}: {report['best_model']}")
        typer.echo(
            f"reports: {ctx.paths.metrics}, {ctx.paths.reports / 'metrics.md'} and {ctx.paths.reports / 'report.md'}; "
            f"validation: {ctx.paths.validation_markdown}"
        )
        registry = result.get("registry")
        if registry:
            d = registry.get("decision") or {}
            typer.echo(
                f"registry: {registry['registered_model']} v{registry['version']}: {d.get('action', 'registered')} ({d.get('reason', '')})"
            )
            for line in ui_hints(registry["tracking_uri"]):
                typer.echo(line)

    @app.command("recommend")
    @handle_errors
    def recommend(
        dataset: DatasetOpt,
        k: Annotated[
            int | None, typer.Option("--k", help="Recommendations per user (default: params.yaml recommend.k).")
        ] = None,
        users: Annotated[
            Path | None,
            typer.Option("--users", help="Only these users: one id per line, or a table with a user_id column."),
        ] = None,
        user: Annotated[
            list[str] | None, typer.Option("--user", help="Only this user (repeatable); printed to stdout.")
        ] = None,
        prefect: Annotated[
            bool,
            typer.Option(
                "--prefect", help="Run as the nightly-recommendations Prefect flow (summary artifact, retries)."
            ),
        ] = False,
        out: Annotated[
            Path | None,
            typer.Option("--out", help="With --users: write the rows here (.parquet/.csv/.tsv) instead of stdout."),
        ] = None,
        alias: Annotated[str, typer.Option("--alias", help="Registry alias to recommend from.")] = "champion",
        strategy: Annotated[
            str | None,
            typer.Option(
                "--strategy", help="model | popularity | content | hybrid (default: params.yaml recommend.strategy)."
            ),
        ] = None,
        threshold: Annotated[
            float | None,
            typer.Option("--threshold", help="Drop recommendations scoring below this (fewer than K per user)."),
        ] = None,
        metric: Annotated[
            str | None, typer.Option("--metric", help="Content similarity: cosine | dot | euclidean | pearson.")
        ] = None,
        exclude_items: Annotated[
            Path | None,
            typer.Option(
                "--exclude-items", help="Never recommend these item ids (one per line, or an item_id column)."
            ),
        ] = None,
        candidates: Annotated[
            Path | None,
            typer.Option(
                "--candidates", help="Recommend only among these item ids (one per line, or an item_id column)."
            ),
        ] = None,
        root: RootOpt = None,
        params: ParamsOpt = Path("params.yaml"),
        workspace: WorkspaceOpt = Path("."),
    ) -> None:
        """Top-K from the registry's champion: every user to data/<name>/recommendations/latest.parquet, or --users to stdout."""
        import dataclasses

        from mmrec.params.recommend import parse_recommend_params, recommend_params
        from mmrec.recommend.id_files import read_user_ids
        from mmrec.recommend.run import run_recommend, strategy_scorer
        from mmrec.recommend.topk import history_matrix, recommend_for_ids
        from mmrec.tracking.registry import load_champion

        ctx = _context(dataset, root, params, workspace)
        overrides: dict[str, Any] = {
            key: value
            for key, value in (
                ("strategy", strategy),
                ("threshold", threshold),
                ("exclude_items_file", str(exclude_items.resolve()) if exclude_items else None),
                ("candidates_file", str(candidates.resolve()) if candidates else None),
            )
            if value is not None
        }
        if metric is not None:
            overrides["content"] = {**recommend_params(ctx.params).content.model_dump(), "metric": metric}
        if overrides:
            rp_new = parse_recommend_params({**recommend_params(ctx.params).model_dump(), **overrides})
            ctx = dataclasses.replace(ctx, params=ctx.params.model_copy(update={"recommend": rp_new}))
        if prefect and users is None and not user:
            from mmrec.errors import ConfigError

            if alias != "champion":
                raise ConfigError("--prefect runs the nightly flow, which always uses the champion; drop --alias")
            if overrides:
                raise ConfigError(
                    "--prefect runs the nightly flow with params.yaml's recommend: section; set "
                    f"{sorted(overrides)} there (or MMREC__RECOMMEND__<KEY>=...) instead of on the command line"
                )
            from mmrec.orchestrator import load_orchestrator

            state = load_orchestrator().run_nightly(
                str(dataset), str(params), str(workspace), str(root) if root else None, k
            )
            if not state.is_completed():
                typer.echo(f"error: nightly run failed: {state.message}", err=True)
                raise typer.Exit(2)
            summary = state.result()
            typer.echo(
                f"{summary['rows']} recommendations for {summary['users_covered']}/{summary['users']} users "
                f"(catalogue coverage {summary['catalogue_coverage']:.3f}) in {summary['seconds']:.1f}s -> {summary['path']}"
            )
            feats = summary.get("features")
            if feats:
                changed = [t for t, v in feats["export"]["tables"].items() if v["changed"]]
                typer.echo(
                    f"feature store: project {feats['apply']['project']} ({feats['profile']} online store), "
                    f"materialised incrementally; updated tables: {', '.join(changed) or 'none'}"
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
        seen = (
            pd.read_parquet(validated, columns=["user_id", "item_id"])
            if validated.is_file() and rp.exclude_seen
            else None
        )
        wanted = (read_user_ids(users) if users is not None else []) + list(user or [])
        if rp.strategy != "model" and validated.is_file() and seen is None:
            seen = pd.read_parquet(validated, columns=["user_id", "item_id"])  # content needs the whole history
        history = history_matrix(model, seen)
        rows = recommend_for_ids(
            strategy_scorer(ctx, model, rp, history),
            wanted,
            k=k or rp.k,
            exclude=history if rp.exclude_seen else None,
            exclude_seen=rp.exclude_seen,
        )
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

    @app.command("explain")
    @handle_errors
    def explain(
        dataset: DatasetOpt,
        user: Annotated[str, typer.Option("--user", help="User id.")],
        item: Annotated[str, typer.Option("--item", help="Item id.")],
        model_name: Annotated[
            str | None,
            typer.Option(
                "--model", help="Explain this trained model (artifacts/<name>/models/<model>) instead of the champion."
            ),
        ] = None,
        top: Annotated[int, typer.Option("--top", min=1, max=100, help="Supporting past items to show.")] = 5,
        as_json: Annotated[bool, typer.Option("--json", help="Print the explanation as JSON.")] = False,
        alias: Annotated[
            str, typer.Option("--alias", help="Registry alias to explain (without --model).")
        ] = "champion",
        root: RootOpt = None,
        params: ParamsOpt = Path("params.yaml"),
        workspace: WorkspaceOpt = Path("."),
    ) -> None:
        """Why a model recommends ITEM to USER: per-modality and collaborative contributions, supporting past items."""
        import json

        from mmrec.explain import explain as do_explain
        from mmrec.explain import format_explanation

        ctx = _context(dataset, root, params, workspace)
        if model_name:
            from mmrec.errors import ModelError
            from mmrec.models import load_model

            folder = ctx.paths.model_dir(model_name)
            if not (folder / "model.json").is_file():
                raise ModelError(
                    f"{folder}: no trained {model_name!r} model; run `mmrec stage train --dataset {dataset}`"
                )
            model = load_model(folder)
        else:
            from mmrec.tracking.registry import load_champion

            model, _ = load_champion(ctx, alias=alias)
        result = do_explain(model, user, item, top_n=top)
        if as_json:
            typer.echo(json.dumps(result, indent=2))
            return
        titles: dict[str, str] = {}
        items_table = ctx.paths.validated_table("items")
        if items_table.is_file():
            import pandas as pd

            from mmrec.explain import item_titles

            titles = item_titles(pd.read_parquet(items_table))
        typer.echo(format_explanation(result, titles))

    @app.command("serve")
    @handle_errors
    def serve(
        dataset: DatasetOpt,
        host: Annotated[
            str, typer.Option("--host", help="Interface to bind (0.0.0.0 to serve beyond this machine).")
        ] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
        profile: Annotated[
            str | None,
            typer.Option(
                "--profile", help="Feast online store profile: sqlite or redis (default: params.yaml features.profile)."
            ),
        ] = None,
        alias: Annotated[
            str, typer.Option("--alias", help="Registry alias to serve; a new version behind it is picked up live.")
        ] = "champion",
        reload_interval: Annotated[
            float | None,
            typer.Option(
                "--reload-interval", min=0, help="Seconds between registry polls (0: only POST /admin/reload)."
            ),
        ] = None,
        workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Server processes (one per core).")] = 1,
        root: RootOpt = None,
        params: ParamsOpt = Path("params.yaml"),
        workspace: WorkspaceOpt = Path("."),
    ) -> None:
        """Serve the HTTP API and web page: recommendations, similar items, explanations (MMREC_API_KEY protects it)."""
        from mmrec.serve.run import serve as run_server
        from mmrec.serve.settings import ServeSettings

        settings = ServeSettings.from_env(reload_interval_s=reload_interval)
        run_server(
            _context(dataset, root, params, workspace),
            host=host,
            port=port,
            profile=profile,
            alias=alias,
            settings=settings,
            workers=workers,
            params_path=str(params.resolve()),
            root=str(root) if root else None,
        )

    @app.command("promote")
    @handle_errors
    def promote(
        dataset: DatasetOpt,
        version: Annotated[
            str | None, typer.Option("--version", help="Model version to promote (default: the challenger).")
        ] = None,
        force: Annotated[
            bool, typer.Option("--force", help="Skip the promotion gate (the decision is logged as forced).")
        ] = False,
        root: RootOpt = None,
        params: ParamsOpt = Path("params.yaml"),
        workspace: WorkspaceOpt = Path("."),
    ) -> None:
        """Make a model version the champion if it passes the promotion gate (or --force)."""
        from mmrec.tracking.registry import promote as do_promote

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
        from mmrec.tracking.registry import rollback as do_rollback

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
        from mmrec.tracking.registry import registry_state

        state = registry_state(_context(dataset, root, params, workspace))
        if as_json:
            typer.echo(json.dumps(state, indent=2, default=str))
            return
        typer.echo(f"{state['registered_model']} at {state['tracking_uri']}; aliases: {state['aliases']}")
        for v in state["versions"]:
            typer.echo(
                "  v{version:<4} {model:<12} ".format(**{**v, "model": v["model"] or "?"})
                + json.dumps({k: val for k, val in v.items() if k not in ("version", "model")})
            )
        for d in state["decisions"][-5:]:
            typer.echo(f"  {d.get('at', '')} v{d.get('version')}: {d.get('action')} - {d.get('reason', '')}")
