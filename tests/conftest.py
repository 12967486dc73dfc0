"""Test-wide settings: offline, no telemetry, a private Prefect home; service helpers."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

# Set before any test imports prefect / mlflow / transformers (they read these at import time).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="mmrec-prefect-home-"))
os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ML100K = (REPO.parent / "shared" / "data" / "ml100k-mm").resolve()


def service_available(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a loopback service is absent, unless MMREC_REQUIRE_SERVICES=1 (CI): then fail."""
    if service_available(host, port):
        return
    msg = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("MMREC_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{msg}, and MMREC_REQUIRE_SERVICES=1 makes this a failure (CI must have it)")
    pytest.skip(f"{msg}; start it to run this test")


def require_ml100k() -> Path:
    """The real ml100k-mm data, or a skip locally / failure in CI when absent."""
    if (ML100K / "ratings.csv").is_file():
        return ML100K
    msg = f"ml100k-mm data not found at {ML100K}"
    if os.environ.get("MMREC_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{msg} (CI must have ../shared/data)")
    pytest.skip(msg)


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (tiny models: threads only add overhead and jitter)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A writable copy of tests/fixtures/tiny (6 users, 8 items, 36 interactions); returns dataset.yaml."""
    dst = tmp_path / "tiny"
    shutil.copytree(FIXTURES / "tiny", dst)
    return dst / "dataset.yaml"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws
