"""Name -> encoder class registry; `create_encoder` fails loudly on unknown names (timm style)."""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import TYPE_CHECKING, Any, TypeVar

from mmrec.errors import ConfigError

if TYPE_CHECKING:
    from mmrec.encoders.base import Encoder

_REGISTRY: dict[str, type[Encoder]] = {}
# Modules that register the built-in encoders; imported on first lookup so `import mmrec` stays light
# (they import torch/transformers lazily themselves).
_BUILTIN_MODULES = (
    "mmrec.encoders.text",
    "mmrec.encoders.image",
    "mmrec.encoders.audio",
    "mmrec.encoders.video",
    "mmrec.encoders.tiny",
)
_loaded = False

T = TypeVar("T", bound="type[Encoder]")


def register_encoder(cls: T) -> T:
    """Class decorator: make `cls` available as `create_encoder(cls.name)`."""
    name = cls.name
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        other = _REGISTRY[name].__module__
        raise ConfigError(f"encoder name {name!r} is registered twice ({other} and {cls.__module__})")
    _REGISTRY[name] = cls
    return cls


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        for mod in _BUILTIN_MODULES:
            importlib.import_module(mod)
        _loaded = True


def available_encoders(modality: str | None = None) -> list[str]:
    """Registered encoder names, optionally only those of one modality."""
    _load_builtins()
    return sorted(n for n, c in _REGISTRY.items() if modality is None or c.modality == modality)


def get_encoder_class(name: str) -> type[Encoder]:
    _load_builtins()
    if name not in _REGISTRY:
        hint = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        did_you_mean = f" Did you mean {' or '.join(repr(h) for h in hint)}?" if hint else ""
        by_mod = {m: available_encoders(m) for m in ("text", "image", "audio", "video")}
        listing = "; ".join(f"{m}: {', '.join(v)}" for m, v in by_mod.items() if v)
        raise ConfigError(f"unknown encoder {name!r}.{did_you_mean} Available encoders: {listing}")
    return _REGISTRY[name]


def encoder_params(name: str) -> list[str]:
    """Constructor arguments an encoder takes."""
    sig = inspect.signature(get_encoder_class(name).__init__)
    return [p for p in sig.parameters if p != "self"]


def create_encoder(name: str, **params: Any) -> Encoder:
    """Instantiate a registered encoder.

    Nothing heavy happens here: weights load on the first batch, so building an encoder to ask
    for its cache key (and finding everything cached) costs no model load.

    Raises:
        ConfigError: unknown name (with suggestions), or an argument the encoder does not take.
    """
    cls = get_encoder_class(name)
    allowed = encoder_params(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(f"encoder {name!r} does not take {unknown}; it takes {allowed}")
    return cls(**params)
