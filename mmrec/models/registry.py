"""Name -> model class registry; `create_model` fails loudly on unknown names (timm style)."""

from __future__ import annotations

import difflib
import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mmrec.errors import ModelError

if TYPE_CHECKING:
    from mmrec.models.base import Recommender

_REGISTRY: dict[str, type[Recommender]] = {}
# Modules that register built-in models; imported on first lookup so `import mmrec` stays light.
_BUILTIN_MODULES = (
    "mmrec.models.popularity",
    "mmrec.models.itemknn",
    "mmrec.models.bpr",
    "mmrec.models.lightgcn",
    "mmrec.models.content_knn",
    "mmrec.models.vbpr",
    "mmrec.models.two_tower",
    "mmrec.models.mm_graph",
)
_loaded = False

T = TypeVar("T", bound="type[Recommender]")


def register_model(cls: T) -> T:
    """Class decorator: make `cls` available to `create_model(cls.name)`."""
    name = cls.name
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ModelError(f"model name {name!r} is registered twice ({_REGISTRY[name].__module__} and {cls.__module__})")
    _REGISTRY[name] = cls
    return cls


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        for mod in _BUILTIN_MODULES:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as exc:
                if exc.name != mod:  # a real missing dependency, not a not-yet-written module
                    raise
        _loaded = True


def available_models() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get_model_class(name: str) -> type[Recommender]:
    _load_builtins()
    if name not in _REGISTRY:
        hint = difflib.get_close_matches(name, _REGISTRY, n=1)
        did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ModelError(f"unknown model {name!r}; available: {sorted(_REGISTRY)}.{did_you_mean}")
    return _REGISTRY[name]


def create_model(name: str, **params: Any) -> Recommender:
    """Instantiate a registered model with explicit hyper-parameters.

    Raises:
        ModelError: unknown name, or a hyper-parameter the model does not take.
    """
    cls = get_model_class(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ModelError(f"bad hyper-parameters for model {name!r}: {exc}; it takes {sorted(cls.param_names())}") from exc


def load_model(path: str | Path) -> Recommender:
    """Load any saved model: its folder's `model.json` names the class."""
    meta_file = Path(path) / "model.json"
    if not meta_file.is_file():
        raise ModelError(f"{meta_file}: not a saved mmrec model (no model.json)")
    meta = json.loads(meta_file.read_text())
    return get_model_class(meta["name"]).load(path)
