"""Real servers on loopback for the production-profile tests: MLflow on PostgreSQL, private Redis.

Each server runs in its own process group on a free port, logs to a file under the test's tmp
folder, and can be killed and restarted on the same port and state (the fault tests need that).
The fixtures here are imported by tests/integration/conftest.py; the Prefect server fixture
(`prefect_api`) lives there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_service

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
MLFLOW_START_S = 240
REDIS_START_S = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(app: Any) -> Iterator[str]:
    """An ASGI `app` under uvicorn in a thread on a free loopback port; yields its base URL."""
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, access_log=False, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        if time.time() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@contextmanager
def pg_database(prefix: str) -> Iterator[str]:
    """A throw-away PostgreSQL database on 127.0.0.1:5432; yields its name, dropped afterwards."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    psycopg = pytest.importorskip("psycopg", reason="the [postgres] extra (psycopg) creates the test database")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Server:
    """A subprocess server in its own process group; `kill()` and `start()` again on the same port."""

    def __init__(self, name: str, cmd: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.cmd, self.log, self.cwd = name, cmd, log, cwd
        self.env = env if env is not None else dict(os.environ)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.cmd, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.is_file() else "(no log)"

    def wait_until(self, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.alive():
                pytest.fail(f"{self.name} exited with {self.proc.returncode if self.proc else '?'}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.5)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop the whole process group (SIGKILL by default: the abrupt loss the fault tests want)."""
        if not self.alive():
            return
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


class MlflowServer(Server):
    """`mlflow server` with a PostgreSQL backend store and proxied artifacts in a local folder."""

    def __init__(self, backend_uri: str, root: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_URI")}
        # mmrec runs no server-side MLflow jobs; without this the server forks 7 job consumers
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        cmd = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            backend_uri,
            "--artifacts-destination",
            str(root / "server-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        super().__init__("mlflow server", cmd, root / "mlflow-server.log", root, env)

    def start(self) -> None:
        super().start()
        self.wait_until(lambda: _http_ok(f"{self.url}/health"), MLFLOW_START_S)


class RedisServer(Server):
    """A private `redis-server` (not the shared one on 6379) with append-only persistence.

    A restart (`kill()` + `start()`) keeps the data, as a production Redis with AOF does, so a
    test can tell "the API reconnected" from "the data came back".
    """

    def __init__(self, root: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            if os.environ.get("MMREC_REQUIRE_SERVICES") == "1":
                pytest.fail("redis-server is not installed, and MMREC_REQUIRE_SERVICES=1 makes this a failure")
            pytest.skip("redis-server is not installed")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        data = root / "redis-data"
        data.mkdir(parents=True, exist_ok=True)
        cmd = [
            exe,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]
        super().__init__("redis-server", cmd, root / "redis.log", root)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        super().start()
        self.wait_until(self.ping, REDIS_START_S)

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: Redis flushes its append-only file and exits (a clean restart)."""
        super().kill(sig)


class ApiProcess(Server):
    """`mmrec serve` as its own process (what the `api` service of infra/ runs), no registry polling."""

    def __init__(self, dataset: str, params: str, workspace: str, root: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            str(Path(sys.executable).parent / "mmrec"),
            "serve",
            "--dataset",
            dataset,
            "--params",
            params,
            "--workspace",
            workspace,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--reload-interval",
            "0",
        ]
        super().__init__("mmrec serve", cmd, root / "api.log", Path(workspace), dict(os.environ))

    def start(self) -> None:
        super().start()
        self.wait_until(lambda: _http_ok(f"{self.url}/ready"), MLFLOW_START_S)

    def get(self, path: str, timeout: float = 60) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def get_until_ok(self, path: str, timeout: float) -> tuple[int, dict]:
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.get(path)
            if status == 200 or time.monotonic() > deadline:
                return status, body
            time.sleep(0.5)


@pytest.fixture
def mlflow_pg_server(tmp_path: Path) -> Iterator[MlflowServer]:
    """A real MLflow server on a fresh PostgreSQL database (killed, restartable by the test)."""
    with pg_database("mmrec_mlflow") as db:
        server = MlflowServer(f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}", tmp_path)
        try:
            server.start()
            yield server
        finally:
            server.kill(signal.SIGTERM)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port (the shared 6379 is left alone)."""
    server = RedisServer(tmp_path)
    try:
        server.start()
        yield server
    finally:
        server.kill()
