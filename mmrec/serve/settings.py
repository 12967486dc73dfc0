"""Settings of the HTTP API: limits, the optional API key and the log pseudonymisation key.

Values come from the environment (`MMREC_API_KEY`, `MMREC_LOG_KEY`, `MMREC_SERVE_*`) so that a
secret never has to appear on a command line or in params.yaml, where it would end up in shell
history, DVC files or MLflow params.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mmrec import ids
from mmrec.constants import DEFAULT_K

#: ids accepted in paths and bodies: the platform's one id rule (mmrec/ids.py), the same that
#: validation applies, so every id the pipeline accepts can be asked for (percent-encoded in
#: paths); control characters, `.`/`..` and overlong ids are refused before they reach a store
#: or a log line.
ID_PATTERN = ids.ID_PATTERN
ID_MAX_LENGTH = ids.ID_MAX_LENGTH

#: bounds that are part of the API contract (they appear in the OpenAPI spec)
MAX_K = 100
MAX_SESSION_ITEMS = 200

API_KEY_ENV = "MMREC_API_KEY"
LOG_KEY_ENV = "MMREC_LOG_KEY"


def valid_id(value: str) -> bool:
    """Whether `value` is an id the API accepts (mmrec/ids.py)."""
    return ids.id_problem(value) is None


class ServeSettings(BaseModel):
    """Limits and secrets of one API process.

    Attributes:
        api_key: when set, every endpoint except /health, /ready, the page shell and the OpenAPI
            spec needs it in the `X-API-Key` header (or the HttpOnly `mmrec_session` cookie that
            `POST /session` trades for it, because <img> requests cannot carry headers).
        log_key: key of the HMAC that pseudonymises user ids in log lines; a random one per
            process when unset (ids then cannot be linked across restarts).
        default_k: `k` when omitted (at most MAX_K).
        max_body_bytes: request bodies above this are refused with 413 before they are parsed.
        history_limit: most recent history items returned per user.
        reload_interval_s: how often the champion alias is polled (0: only POST /admin/reload).
        allowed_hosts: Host header names the API answers (`*`: any; `.example.com`: the domain
            and its subdomains); None: the loopback names without an API key, any host with one
            (DNS-rebinding guard, mmrec/serve/guards.py). `MMREC_SERVE_ALLOWED_HOSTS=a,b`.
        inline_max_items: session and explain requests are computed on the event loop while the
            model has at most this many items (a scoring pass well under 1 ms), in the thread pool
            above (so a large catalogue never stalls the loop). 0: always in the thread pool.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: str | None = None
    log_key: str = Field(default_factory=lambda: secrets.token_hex(16))
    default_k: int = Field(DEFAULT_K, ge=1, le=100)
    max_body_bytes: int = Field(64 * 1024, ge=256)
    history_limit: int = Field(50, ge=1)
    reload_interval_s: float = Field(30.0, ge=0.0)
    allowed_hosts: tuple[str, ...] | None = None
    inline_max_items: int = Field(50_000, ge=0)

    @classmethod
    def from_env(cls, **overrides: Any) -> ServeSettings:
        """Settings from the environment, `overrides` (e.g. command-line options) winning."""
        values: dict[str, Any] = {}
        if os.environ.get(API_KEY_ENV):
            values["api_key"] = os.environ[API_KEY_ENV]
        if os.environ.get(LOG_KEY_ENV):
            values["log_key"] = os.environ[LOG_KEY_ENV]
        for name in ("default_k", "max_body_bytes", "history_limit", "reload_interval_s", "inline_max_items"):
            env = f"MMREC_SERVE_{name.upper()}"
            if os.environ.get(env):
                values[name] = os.environ[env]
        if os.environ.get("MMREC_SERVE_ALLOWED_HOSTS"):
            values["allowed_hosts"] = tuple(h for h in os.environ["MMREC_SERVE_ALLOWED_HOSTS"].split(",") if h.strip())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
