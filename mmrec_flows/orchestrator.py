"""The Prefect flows as mmrec's orchestrator (entry point `mmrec.orchestrators: prefect`).

`mmrec pipeline` and `mmrec recommend --prefect` find this module through the entry point
(mmrec/orchestrator.py), so the library never imports `flows`.
"""

from __future__ import annotations

import logging
import os

# Without `PREFECT_API_URL` Prefect starts a temporary API server for the run; its default 20 s
# start-up budget is too short on a busy laptop or CI box, so it is raised (the environment still
# wins). Set before Prefect is imported: it reads its settings then.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call otherwise

from mmrec_flows.nightly import run_nightly  # noqa: E402
from mmrec_flows.training import run_training  # noqa: E402

__all__ = ["run_nightly", "run_training"]
