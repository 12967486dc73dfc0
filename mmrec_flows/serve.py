"""Serve the mmrec deployments from this process (no work pool needed).

    python mmrec_flows/serve.py --dataset data/raw/synth/dataset.yaml

creates two deployments on the Prefect API in `PREFECT_API_URL` and runs their flow runs here:
- `nightly-recommendations/nightly-recommendations`: cron `0 2 * * *` (02:00 every night);
- `training-pipeline/training-pipeline`: on demand, plus weekly (Sunday 03:00) with `--weekly`.

Trigger a run by hand: `prefect deployment run nightly-recommendations/nightly-recommendations`.
For work-pool workers (containers, Kubernetes) see prefect.yaml; docs/orchestration.md has the
whole walk-through. `--interval SECONDS` replaces the nightly cron by a short interval (tests,
demos). Stop with Ctrl-C (schedules are paused on shutdown).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `mmrec_flows` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NIGHTLY_CRON = "0 2 * * *"
WEEKLY_CRON = "0 3 * * 0"
NIGHTLY = "nightly-recommendations"
TRAINING = "training-pipeline"


def build_deployments(
    dataset: str,
    params: str = "params.yaml",
    workspace: str = ".",
    root: str | None = None,
    weekly_training: bool = False,
    nightly_interval: float | None = None,
    timezone: str = "UTC",
    only: str | None = None,
) -> list[Any]:
    """The RunnerDeployments to serve (parameters baked in as absolute paths)."""
    from prefect.schedules import Cron, Interval

    from mmrec_flows.nightly import nightly_recommendations
    from mmrec_flows.tasks import run_args
    from mmrec_flows.training import training_pipeline

    args = run_args(dataset, params, workspace, root)
    deployments = []
    if only in (None, NIGHTLY):
        schedule = Interval(nightly_interval) if nightly_interval else Cron(NIGHTLY_CRON, timezone=timezone)
        deployments.append(
            nightly_recommendations.to_deployment(
                name=NIGHTLY,
                schedules=[schedule],
                parameters=dict(args),
                tags=["mmrec", "nightly"],
                description="The registry champion's top-K for every user -> data/<name>/recommendations/latest.parquet.",
            )
        )
    if only in (None, TRAINING):
        deployments.append(
            training_pipeline.to_deployment(
                name=TRAINING,
                schedules=[Cron(WEEKLY_CRON, timezone=timezone)] if weekly_training else [],
                parameters=dict(args),
                tags=["mmrec", "training"],
                description="ingest -> validate -> split -> extract -> train -> evaluate -> register/promote.",
            )
        )
    return deployments


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the mmrec Prefect deployments from this process.")
    parser.add_argument("--dataset", required=True, help="PATH/dataset.yaml")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--workspace", default=".")
    parser.add_argument("--root", default=None, help="data root overriding dataset.yaml `root:`")
    parser.add_argument(
        "--weekly", action="store_true", help="also schedule the training pipeline weekly (Sunday 03:00)"
    )
    parser.add_argument("--interval", type=float, default=None, help="run nightly every N seconds instead of the cron")
    parser.add_argument("--timezone", default="UTC")
    parser.add_argument("--only", choices=[NIGHTLY, TRAINING], default=None, help="serve just one deployment")
    parser.add_argument("--limit", type=int, default=None, help="maximum concurrent flow runs")
    opts = parser.parse_args(argv)

    from mmrec.environment import set_env_defaults

    set_env_defaults()  # no analytics/telemetry, offline hub: before prefect is imported
    from prefect import serve

    deployments = build_deployments(
        opts.dataset, opts.params, opts.workspace, opts.root, opts.weekly, opts.interval, opts.timezone, opts.only
    )
    serve(*deployments, limit=opts.limit)


if __name__ == "__main__":
    main()
