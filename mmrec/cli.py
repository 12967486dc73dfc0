"""The `mmrec` command (typer). Each command is a thin shell over a library function.

Errors of the `MMRecError` family print one clear line (no traceback) and exit with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mmrec.cli_common import DatasetOpt, ParamsOpt, RootOpt, WorkspaceOpt, handle_errors
from mmrec.cli_common import load_context as _context
from mmrec.cli_events import register as _register_events
from mmrec.cli_lifecycle import register as _register_lifecycle
from mmrec.cli_privacy import register as _register_privacy
from mmrec.cli_search import register as _register_search
from mmrec.environment import QUIET_ENV_DEFAULTS, set_env_defaults  # noqa: F401 - re-exported

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="mmrec: multimodal recommendation, from raw catalogue to nightly recommendations.",
)
data_app = typer.Typer(no_args_is_help=True, help="Dataset tools (synthetic default dataset, checks).")
app.add_typer(data_app, name="data")


@app.callback()
def _main_callback() -> None:
    """mmrec: multimodal recommendation, from raw catalogue to nightly recommendations."""
    set_env_defaults()  # before any command imports prefect/mlflow/gx/dvc/feast


@data_app.command("synth")
@handle_errors
def data_synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to create (must not exist or be empty).")] = Path(
        "data/raw/synth"
    ),
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same dataset.")] = 42,
    users: Annotated[int | None, typer.Option("--users", help="Number of users.")] = None,
    items: Annotated[int | None, typer.Option("--items", help="Number of items.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing non-empty folder.")] = False,
) -> None:
    """Generate the embedded default dataset: a synthetic shop with images, audio, video and text."""
    from mmrec.data.synth.generate import generate_synthetic

    kwargs: dict[str, Any] = {"seed": seed, "overwrite": overwrite}
    if users is not None:
        kwargs["n_users"] = users
    if items is not None:
        kwargs["n_items"] = items
    spec_path = generate_synthetic(out, **kwargs)
    typer.echo(f"wrote {spec_path}")


@data_app.command("check")
@handle_errors
def data_check(
    dataset: DatasetOpt,
    root: RootOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    workspace: WorkspaceOpt = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Fast pre-flight (seconds): tables, columns, items per modality, models and modalities, time estimates.

    Reads headers and a sample of the interaction log, resolves every item's media paths, lists
    the models `mmrec pipeline` would train (and on which modalities) and estimates extraction
    and training time on this machine. Exit status 1 when it finds a problem.
    """
    import json

    from mmrec.data.check import check_dataset, format_check

    ctx = _context(dataset, root, params, workspace)
    report = check_dataset(ctx.spec, ctx.params, workspace, list(ctx.params_files))
    typer.echo(json.dumps(report, indent=2, default=str) if as_json else format_check(report))
    if report["problems"]:
        raise typer.Exit(1)


@app.command("stage")
@handle_errors
def stage(
    name: Annotated[
        str,
        typer.Argument(
            help="ingest | validate | split | extract_text | extract_image | extract_audio | extract_video | tune | train | evaluate | materialize"
        ),
    ],
    dataset: DatasetOpt,
    root: RootOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Run one pipeline stage (what dvc.yaml calls)."""
    import json

    from mmrec.stages import run_stage

    result = run_stage(name, _context(dataset, root, params, workspace))
    if name != "evaluate":
        typer.echo(json.dumps(result, indent=2, default=str)[:4000])
    else:
        from mmrec.stages import format_metrics_table

        typer.echo(format_metrics_table(result))


@app.command("evaluate")
@handle_errors
def evaluate(
    dataset: DatasetOpt,
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated model names (default: params.yaml train.models).")
    ] = None,
    root: RootOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Train and evaluate models on an existing split; write reports/<name>/metrics.json and report.md.

    With --models a,b only those are re-trained and re-evaluated; they are merged into the existing
    report (the other models keep their rows; each row records the run that produced it).

    The report compares every model on warm test, the sparse-user slice and the cold slice (against
    random ranking), with bootstrap ratios to `evaluate.reference`, learning curves, and the
    per-modality ablation of `evaluate.ablation.model` (params.yaml).
    """
    from mmrec.runtime import configure_threads
    from mmrec.stages import format_metrics_table, run_evaluate, run_train

    ctx = _context(dataset, root, params, workspace)
    typer.echo(f"parameters: {' + '.join(ctx.params_files) or 'built-in defaults'}")
    configure_threads(ctx.params.runtime)
    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    run_train(ctx, names)
    report = run_evaluate(ctx, names)
    typer.echo(format_metrics_table(report))
    if names and len(report.get("runs", [])) > 1:
        kept = sorted(set(report["models"]) - set(names))
        typer.echo(
            f"merged into the existing report: {', '.join(names)} from this run; {', '.join(kept)} kept "
            "from earlier runs (each row records its run)"
        )
    typer.echo(f"report: {ctx.paths.reports / 'report.md'}")


@app.command("tune")
@handle_errors
def tune(
    dataset: DatasetOpt,
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help="Comma-separated models to tune (default: tune.models, else every model of train.models with a search space).",
        ),
    ] = None,
    trials: Annotated[
        int | None, typer.Option("--trials", min=1, help="Trials per model (default: tune.trials).")
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=1,
            help="Seconds for the whole search, shared among the models (default: tune.timeout_seconds).",
        ),
    ] = None,
    objective: Annotated[
        str | None, typer.Option("--objective", help="valid | cold_valid | combined (default: tune.objective).")
    ] = None,
    track: Annotated[
        bool | None,
        typer.Option("--track/--no-track", help="Log every trial as a nested MLflow run (default: tune.track)."),
    ] = None,
    root: RootOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Search hyper-parameters on VALIDATION only (Optuna TPE, median pruning on the per-epoch validation curve).

    Needs the split (and, for multimodal models, the features): run the stages up to extract
    first. Writes the chosen values to <workspace>/params/<name>.yaml, which `pipeline`,
    `evaluate`, `stage` and `dvc repro` merge over params.yaml, and the search report to
    reports/<name>/tuning/ (tuning.md, tuning.json, one history plot per model). The test set is
    never read.
    """
    from mmrec.tuning.tune import run_tune

    ctx = _context(dataset, root, params, workspace)
    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    result = run_tune(ctx, names, trials=trials, timeout=timeout, objective=objective, track=track)
    for name, rec in result["models"].items():
        n = rec["trials"]
        best = rec.get("best")
        shown = (
            f"{result['objective']} recall@20 {best['value']:.4f}: "
            + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
            if best
            else rec.get("note", "no completed trial")
        )
        typer.echo(f"{name}: {n['run']} trials ({n['complete']} complete, {n['pruned']} pruned): {shown}")
    typer.echo(
        f"params: {result['overlay'] or 'nothing written'}; report: {result['report']} "
        f"({result['seconds'] / 60:.1f} min)"
    )


@app.command("train-ddp")
@handle_errors
def train_ddp(
    dataset: DatasetOpt,
    nproc: Annotated[int, typer.Option("--nproc", help="Processes on this machine (torchrun --nproc-per-node).")] = 2,
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated model names (default: train.models).")
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="cpu (gloo backend) or cuda (nccl, one GPU per process).")
    ] = "cpu",
    evaluate: Annotated[bool, typer.Option("--evaluate", help="Also run the evaluate stage (rank 0).")] = False,
    root: RootOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Train data-parallel (DDP) over N local processes with torchrun; models land where `stage train` puts them.

    Several machines: run `torchrun --nnodes N --nproc-per-node P --rdzv-endpoint HOST:PORT -m
    mmrec.distributed.train --dataset ...` on each (docs/distributed.md).
    """
    import subprocess

    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "mmrec.distributed.train",
        "--dataset",
        str(dataset),
        "--params",
        str(params),
        "--workspace",
        str(workspace),
        "--device",
        device,
    ]
    if root is not None:
        cmd += ["--root", str(root)]
    if models:
        cmd += ["--models", models]
    if evaluate:
        cmd.append("--evaluate")
    raise typer.Exit(subprocess.call(cmd))


@app.command("models")
def list_models() -> None:
    """List the registered models."""
    from mmrec.models import available_models

    for name in available_models():
        typer.echo(name)


_register_events(app)  # `replay`, `events ingest` (the feedback loop)
_register_lifecycle(app)  # `pipeline` (through the orchestrator), `recommend`, `promote`, `rollback`, `registry`
_register_search(app)  # `search` (mmrec/cli_search.py)
_register_privacy(app)  # `forget`


def main() -> None:  # console-script entry point
    set_env_defaults()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
