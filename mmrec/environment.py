"""Environment defaults of mmrec's entry points (the `mmrec` command, mmrec_flows/serve.py).

Set before Prefect, MLflow, Great Expectations, DVC, Feast or the Hugging Face hub are imported,
with `setdefault`, so a value the user exported always wins. Importing this module changes
nothing; the entry points call `set_env_defaults()`.
"""

from __future__ import annotations

import os

#: what the entry points set before anything imports Prefect, MLflow, Great Expectations, DVC, Feast or
#: the Hugging Face hub: no analytics or telemetry (on an offline machine Prefect's telemetry
#: service logs an ERROR every ten minutes, which reads like a failed run), and hub access offline
#: (the default encoders ship their weights; set HF_HUB_OFFLINE=0 for `hf:` weights). Defaults
#: only: a variable already set in the environment wins.
QUIET_ENV_DEFAULTS: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "FEAST_USAGE": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def set_env_defaults(environ: dict[str, str] | None = None) -> None:
    """Apply `QUIET_ENV_DEFAULTS` with setdefault (the environment can override every one)."""
    env = os.environ if environ is None else environ
    for key, value in QUIET_ENV_DEFAULTS.items():
        env.setdefault(key, value)
