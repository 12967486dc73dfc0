"""The library reaches the flows only through the orchestrator entry point, never by importing them.

`mmrec pipeline` / `mmrec recommend --prefect` load the `mmrec.orchestrators` entry point that
pyproject.toml declares (the Prefect flows); these tests check that no module of `mmrec` imports
the flows (`mmrec_flows`, formerly `flows`) or Prefect (nor edits `sys.path` to find them), that the CLI modules have no import cycle,
and that the commands run whatever orchestrator is installed.
"""

from __future__ import annotations

import ast
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from mmrec import orchestrator
from mmrec.errors import ConfigError
from tests.conftest import REPO

MMREC = REPO / "mmrec"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


#: top-level names the library must not import: the flows package (its old name too) and Prefect
FORBIDDEN = {"mmrec_flows", "flows", "prefect", "prefect_dask"}


def test_no_library_module_imports_the_orchestrator():
    offenders = []
    for path in sorted(MMREC.rglob("*.py")):
        top = {name.split(".")[0] for name in _imports(path)}
        if top & FORBIDDEN:
            offenders.append(f"{path.relative_to(REPO)} imports {sorted(top & FORBIDDEN)}")
        text = path.read_text(encoding="utf-8")
        if any(
            f'{call}("{pkg}' in text for call in ("import_module", "__import__") for pkg in ("flows", "mmrec_flows")
        ):
            offenders.append(f"{path.relative_to(REPO)} imports flows by name")
    for name in (
        "cli.py",
        "cli_lifecycle.py",
        "cli_common.py",
        "orchestrator.py",
    ):  # the old way: find the flows on disk
        if "sys.path" in (MMREC / name).read_text(encoding="utf-8"):
            offenders.append(f"mmrec/{name} edits sys.path")
    assert not offenders, offenders


def test_cli_modules_do_not_import_each_other_in_a_cycle():
    assert "mmrec.cli" not in _imports(MMREC / "cli_lifecycle.py")
    assert not {"mmrec.cli", "mmrec.cli_lifecycle"} & _imports(MMREC / "cli_common.py")


def test_pyproject_registers_the_prefect_flows_as_the_default_orchestrator():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    target = meta["project"]["entry-points"][orchestrator.GROUP][orchestrator.DEFAULT]
    assert target == "mmrec_flows.orchestrator"
    plugin = EntryPoint(name=orchestrator.DEFAULT, value=target, group=orchestrator.GROUP).load()
    assert callable(plugin.run_training) and callable(plugin.run_nightly)


# -- the commands against a stand-in orchestrator ---------------------------------------------------

CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []


def _failed(message: str) -> Any:
    return SimpleNamespace(is_completed=lambda: False, message=message)


class StandIn:
    """What an orchestrator entry point provides; records the calls, reports a failed run."""

    @staticmethod
    def run_training(*args: Any, **kwargs: Any) -> Any:
        CALLS.append(("training", args, kwargs))
        return _failed("stage train: stand-in says no")

    @staticmethod
    def run_nightly(*args: Any, **kwargs: Any) -> Any:
        CALLS.append(("nightly", args, kwargs))
        return _failed("stand-in nightly says no")


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    ep = EntryPoint(name="standin", value=f"{__name__}:StandIn", group=orchestrator.GROUP)
    monkeypatch.setattr(orchestrator, "available", lambda: {"standin": ep})
    monkeypatch.setenv("MMREC_ORCHESTRATOR", "standin")
    CALLS.clear()
    return CALLS


def test_pipeline_runs_the_installed_orchestrator(stand_in, tiny_dataset: Path, workspace: Path):
    from mmrec.cli import app

    res = CliRunner().invoke(
        app, ["pipeline", "--dataset", str(tiny_dataset), "--workspace", str(workspace), "--no-extract"]
    )
    assert res.exit_code == 2 and "pipeline failed: stage train: stand-in says no" in res.output
    [(kind, args, kwargs)] = stand_in
    assert kind == "training" and args[0] == str(tiny_dataset) and args[2] == str(workspace)
    assert kwargs == {"extract": False, "register_best": True, "tune": False, "tune_trials": None, "tune_timeout": None}


def test_recommend_prefect_runs_the_nightly_of_the_installed_orchestrator(
    stand_in, tiny_dataset: Path, workspace: Path
):
    from mmrec.cli import app

    res = CliRunner().invoke(
        app, ["recommend", "--dataset", str(tiny_dataset), "--workspace", str(workspace), "--prefect", "--k", "4"]
    )
    assert res.exit_code == 2 and "stand-in nightly says no" in res.output
    [(kind, args, _)] = stand_in
    assert kind == "nightly" and args[0] == str(tiny_dataset) and args[-1] == 4


def test_no_orchestrator_installed_is_a_clear_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(orchestrator, "available", lambda: {})
    monkeypatch.delenv("MMREC_ORCHESTRATOR", raising=False)
    with pytest.raises(ConfigError, match=r"no orchestrator 'prefect' is installed.*pip install -e \."):
        orchestrator.load_orchestrator()


def test_an_entry_point_without_the_two_functions_is_refused(monkeypatch: pytest.MonkeyPatch):
    ep = EntryPoint(name="broken", value="mmrec.errors", group=orchestrator.GROUP)
    monkeypatch.setattr(orchestrator, "available", lambda: {"broken": ep})
    with pytest.raises(ConfigError, match=r"lacks \['run_training', 'run_nightly'\]"):
        orchestrator.load_orchestrator("broken")


def test_a_stale_entry_point_says_to_reinstall(monkeypatch: pytest.MonkeyPatch):
    # an editable install made before the flows package was renamed points at a module that is gone
    ep = EntryPoint(name="prefect", value="mmrec_no_such_flows.orchestrator", group=orchestrator.GROUP)
    monkeypatch.setattr(orchestrator, "available", lambda: {"prefect": ep})
    monkeypatch.delenv("MMREC_ORCHESTRATOR", raising=False)
    with pytest.raises(
        ConfigError, match=r"registered as 'mmrec_no_such_flows.orchestrator' but cannot be imported.*pip install -e \."
    ):
        orchestrator.load_orchestrator()


def test_the_flows_package_has_a_namespaced_name():
    assert (REPO / "mmrec_flows" / "orchestrator.py").is_file()
    assert not (REPO / "flows").exists()  # a generic top-level `flows` would clash with any other project's
