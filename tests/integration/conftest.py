"""Fixtures shared by the integration tests: a real Prefect server on PostgreSQL, on loopback.

`prefect_api` (session-scoped) starts `prefect server start` once per test session, on a free
loopback port, with a throw-away PostgreSQL database as its backend (127.0.0.1:5432, trust auth,
user postgres), waits for `/api/health`, yields the API URL (`http://127.0.0.1:PORT/api`), and
at the end stops the server (SIGTERM to its process group, SIGKILL after a grace period) and
drops the database. Unlike `prefect_test_harness` (an in-process ephemeral server), this one is
reachable from other processes, which Dask worker processes and served deployments need.

`use_prefect_api` (function-scoped) points this process at that server (settings context and
`PREFECT_API_URL` in the environment, so subprocesses such as Dask workers inherit it).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_service

# MLflow on PostgreSQL and a private Redis, restartable for the fault tests (tests/integration/servers.py)
from tests.integration.servers import mlflow_pg_server, private_redis  # noqa: F401

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
SERVER_START_S = 300  # a loaded 2-core CI box runs the migrations slowly
SERVER_STOP_S = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200 and json.loads(resp.read() or b"null") is True
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _log_tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.is_file() else "(no log)"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (uvicorn + services), SIGKILL what outlives the grace period."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=SERVER_STOP_S)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def prefect_pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for the Prefect server (asyncpg URL), dropped at the end."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    psycopg = pytest.importorskip("psycopg", reason="the [postgres] extra (psycopg) creates the test database")
    name = f"mmrec_prefect_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def prefect_api(prefect_pg_database: str) -> Iterator[str]:
    """A real `prefect server start` on PostgreSQL; yields its API URL (`http://127.0.0.1:PORT/api`)."""
    home = Path(tempfile.mkdtemp(prefix="mmrec-prefect-server-"))
    port = _free_port()
    log = home / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=prefect_pg_database,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    cmd = [
        str(Path(sys.executable).parent / "prefect"),
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-ui",
        "--analytics-off",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(
                    f"prefect server exited with status {proc.returncode} before becoming healthy:\n{_log_tail(log)}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"prefect server not healthy at {url}/health after {SERVER_START_S}s:\n{_log_tail(log)}")
            time.sleep(0.5)
        yield url
    finally:
        _stop(proc)


@pytest.fixture
def use_prefect_api(prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point this process (settings context) and its children (environment) at `prefect_api`."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
        try:
            yield prefect_api
        finally:
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            # send buffered run logs and events while the server is still up
            APILogWorker.drain_all(timeout=5)
            EventsWorker.drain_all(timeout=5)
