"""The stage graph, read from `dvc.yaml`: the one place a stage's dependencies are written.

The Prefect cache key of a stage (mmrec_flows/tasks.py `stage_key`) is built from the `deps` and
`params` that `dvc.yaml` lists for the stage of the same name, so `dvc repro` and a Prefect re-run
agree on what invalidates a result; a dependency added to dvc.yaml invalidates the Prefect cache
too, with nothing else to edit.

Paths in dvc.yaml are relative to the repository (DVC's working directory): outputs of stages
(`data/`, `artifacts/`, `reports/`) are resolved against the run's workspace, everything else
(code such as `mmrec/models`, `feature_repo`) against the checkout holding dvc.yaml. The
variables dvc.yaml interpolates from params.yaml (`${dataset.name}`, `${dataset.raw}`,
`${split.kind}`, ...) take the run's values: the dataset of the run, not params.yaml's default.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mmrec.errors import ConfigError

if TYPE_CHECKING:
    from mmrec.context import StageContext

#: the checkout's dvc.yaml (deployments run from the checkout: prefect.yaml's working directory)
DVC_YAML = Path(__file__).resolve().parents[1] / "dvc.yaml"
#: path prefixes that name artifacts of a run (resolved against the workspace, not the checkout)
WORKSPACE_PREFIXES = ("data/", "artifacts/", "reports/")
_VAR = re.compile(r"\$\{([^}]+)\}")


@dataclass(frozen=True)
class DvcStage:
    """One stage of dvc.yaml: its dependency path templates and params keys, as written."""

    name: str
    deps: tuple[str, ...]
    params: tuple[str, ...]


def load_stages(path: str | Path = DVC_YAML) -> dict[str, DvcStage]:
    """Every stage of `path` (a dvc.yaml), read once per file version."""
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"{path} not found: the Prefect stage cache keys are derived from dvc.yaml; run the flows from a checkout of the repo"
        ) from None
    return _load(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _load(path: str, _mtime: int, _size: int) -> dict[str, DvcStage]:
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    stages = doc.get("stages")
    if not isinstance(stages, dict):
        raise ConfigError(f"{path}: no `stages:` mapping")
    out = {}
    for name, body in stages.items():
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: stage {name!r} is not a mapping")
        out[name] = DvcStage(
            name,
            tuple(_dep_paths(path, name, body.get("deps") or [])),
            tuple(_param_keys(path, name, body.get("params") or [])),
        )
    return out


def _dep_paths(path: str, stage: str, deps: list[Any]) -> list[str]:
    out = []
    for d in deps:
        if isinstance(d, str):
            out.append(d)
        elif isinstance(d, dict) and len(d) == 1:  # `- path: {hash options}`
            out.append(str(next(iter(d))))
        else:
            raise ConfigError(f"{path}: stage {stage!r} has a dependency entry this reader does not understand: {d!r}")
    return out


def _param_keys(path: str, stage: str, params: list[Any]) -> list[str]:
    out = []
    for p in params:
        if isinstance(p, str):
            out.append(p)
        elif isinstance(p, dict) and set(p) <= {"params.yaml"}:  # `- params.yaml: [keys]`
            out.extend(str(k) for k in next(iter(p.values())) or [])
        elif isinstance(p, dict) and set(p) == {"${dataset.params}"} and not p["${dataset.params}"]:
            # the dataset's parameter overlay as a whole file: its values are already merged into the
            # run's params, so the stage's own keys above carry whatever of it the stage reads
            continue
        else:
            raise ConfigError(
                f"{path}: stage {stage!r} reads params from {p!r}; only params.yaml keys can be part of the Prefect cache key"
            )
    return out


def lookup(tree: Any, dotted: str) -> Any:
    """`tree[a][b]...` for the key `a.b...`; KeyError naming the first missing part."""
    node = tree
    for i, part in enumerate(dotted.split(".")):
        if node is None:  # an absent optional section: all its keys are None
            return None
        if not isinstance(node, dict) or part not in node:
            raise KeyError(".".join(dotted.split(".")[: i + 1]))
        node = node[part]
    return node


def variables(ctx: StageContext) -> dict[str, Any]:
    """What `${...}` means for this run: the params (by their params.yaml names) and the dataset."""
    tree = ctx.params.model_dump(mode="json", by_alias=True)
    spec_path = getattr(ctx.spec, "spec_path", None)
    tree["dataset"] = {
        "name": ctx.spec.name,
        "raw": str(ctx.spec.root_path),
        "spec": str(spec_path) if spec_path else None,
    }
    return tree


def interpolate(template: str, tree: dict[str, Any], stage: str = "?") -> str:
    """Replace each `${a.b}` in a dvc.yaml path by its value for this run."""

    def sub(m: re.Match[str]) -> str:
        try:
            value = lookup(tree, m.group(1).strip())
        except KeyError as exc:
            raise ConfigError(
                f"dvc.yaml stage {stage!r}: `${{{m.group(1)}}}` names {exc.args[0]!r}, which the params do not define"
            ) from None
        return str(value)

    return _VAR.sub(sub, template)


def dep_paths(ctx: StageContext, stage: str, dvc_yaml: str | Path = DVC_YAML) -> list[Path]:
    """The files and folders `stage` depends on, for this run (see the module docstring)."""
    spec = _stage(stage, dvc_yaml)
    tree = variables(ctx)
    checkout = Path(dvc_yaml).resolve().parent
    out = []
    for template in spec.deps:
        rel = interpolate(template, tree, stage)
        p = Path(rel)
        if p.is_absolute():
            out.append(p)
        elif rel.startswith(WORKSPACE_PREFIXES):
            out.append(Path(ctx.paths.workspace) / p)
        else:
            out.append(checkout / p)
    return out


def param_values(ctx: StageContext, stage: str, dvc_yaml: str | Path = DVC_YAML) -> dict[str, Any]:
    """`{params key: value}` for every params key `stage` lists, from this run's params."""
    spec = _stage(stage, dvc_yaml)
    tree = variables(ctx)
    out = {}
    for key in spec.params:
        try:
            out[key] = lookup(tree, key)
        except KeyError as exc:
            raise ConfigError(
                f"dvc.yaml stage {stage!r} lists params key {key!r}, but {exc.args[0]!r} is not a params.yaml setting"
            ) from None
    return out


def _stage(stage: str, dvc_yaml: str | Path) -> DvcStage:
    stages = load_stages(dvc_yaml)
    if stage not in stages:
        raise ConfigError(f"stage {stage!r} is not in {dvc_yaml}; stages there: {', '.join(stages)}")
    return stages[stage]
