"""`mmrec replay` and `mmrec events ingest`: the feedback loop's commands (thin shells)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmrec.cli_common import DatasetOpt, ParamsOpt, RootOpt, WorkspaceOpt, handle_errors
from mmrec.cli_common import load_context as _context


def register(app: typer.Typer) -> None:
    """Add the commands to the `mmrec` app."""
    events_app = typer.Typer(no_args_is_help=True, help="The event log (POST /events): ingest into the warehouse.")
    app.add_typer(events_app, name="events")

    @app.command("replay")
    @handle_errors
    def replay(
        dataset: DatasetOpt,
        model: Annotated[
            str | None,
            typer.Option(
                "--model", help="The model playing the nightly job (default: the champion, else the best evaluated)."
            ),
        ] = None,
        k: Annotated[int, typer.Option("--k", min=1, max=100, help="List length.")] = 20,
        seed: Annotated[int, typer.Option("--seed", help="The bandit sampler's seed.")] = 0,
        max_events: Annotated[
            int | None, typer.Option("--max-events", min=1, help="Replay only the first N test events.")
        ] = None,
        docs: Annotated[
            Path | None, typer.Option("--docs", help="Also copy the figure into this folder (e.g. docs/figures).")
        ] = None,
        root: RootOpt = None,
        params: ParamsOpt = Path("params.yaml"),
        workspace: WorkspaceOpt = Path("."),
    ) -> None:
        """Replay the test period in time order: hit rate and recall@K of static nightly vs real-time vs adaptive.

        Writes reports/<name>/replay.json and reports/<name>/replay_learning_curve.png (the bandit's
        learning curve). Needs a trained split (`mmrec pipeline` or `mmrec evaluate`).
        """
        from mmrec.events.replay import run_replay
        from mmrec.runtime import configure_threads

        ctx = _context(dataset, root, params, workspace)
        configure_threads(ctx.params.runtime)
        summary = run_replay(ctx, model, k=k, seed=seed, max_events=max_events, docs_dir=docs)
        typer.echo(
            f"{summary['dataset']}: {summary['events']} test events replayed, nightly model {summary['model']}, K={k}"
        )
        typer.echo(f"{'policy':<12} {'hit_rate@' + str(k):>12} {'recall@' + str(k):>12}")
        for policy, figures in summary["policies"].items():
            typer.echo(f"{policy:<12} {figures[f'hit_rate@{k}']:>12.4f} {figures[f'recall@{k}']:>12.4f}")
        typer.echo(f"bandit draws: {summary['adaptive_picks']} (last fifth: {summary['adaptive_picks_last_fifth']})")
        typer.echo(f"figure: {summary['figure']}")

    @events_app.command("ingest")
    @handle_errors
    def ingest(
        dataset: DatasetOpt,
        root: RootOpt = None,
        params: ParamsOpt = Path("params.yaml"),
        workspace: WorkspaceOpt = Path("."),
    ) -> None:
        """Snapshot the event log into the warehouse (validated, deduplicated by event_id): data/<name>/events/ingested.parquet."""
        from mmrec.events.ingest import ingest_events

        ctx = _context(dataset, root, params, workspace)
        report = ingest_events(ctx)
        typer.echo(
            f"events: {report['read']} read, {report['duplicates']} duplicates dropped, "
            f"{report['quarantined']} quarantined, {report['rows']} rows in {report['path']}"
        )
