"""Name -> model class registry; `create_model` fails loudly on unknown names (timm style)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mmrec.errors import ModelError
from mmrec.registry import Registry

if TYPE_CHECKING:
    from mmrec.models.base import Recommender

# Modules that register built-in models; imported on first lookup so `import mmrec` stays light.
MODELS: Registry[type[Recommender]] = Registry(
    "model",
    (
        "mmrec.models.popularity",
        "mmrec.models.itemknn",
        "mmrec.models.bpr",
        "mmrec.models.lightgcn",
        "mmrec.models.content_knn",
        "mmrec.models.vbpr",
        "mmrec.models.two_tower",
        "mmrec.models.mm_graph",
    ),
    ModelError,
    optional_builtins=True,
)

T = TypeVar("T", bound="type[Recommender]")


def register_model(cls: T) -> T:
    """Class decorator: make `cls` available to `create_model(cls.name)`."""
    return MODELS.register(cls)


def available_models() -> list[str]:
    return MODELS.names()


def get_model_class(name: str) -> type[Recommender]:
    return MODELS.get(name)


def create_model(name: str, **params: Any) -> Recommender:
    """Instantiate a registered model with explicit hyper-parameters.

    Raises:
        ModelError: unknown name, or a hyper-parameter the model does not take.
    """
    cls = get_model_class(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ModelError(
            f"bad hyper-parameters for model {name!r}: {exc}; it takes {sorted(cls.param_names())}"
        ) from exc


def load_model(path: str | Path) -> Recommender:
    """Load any saved model: its folder's `model.json` names the class."""
    meta_file = Path(path) / "model.json"
    if not meta_file.is_file():
        raise ModelError(f"{meta_file}: not a saved mmrec model (no model.json)")
    meta = json.loads(meta_file.read_text())
    return get_model_class(meta["name"]).load(path)
