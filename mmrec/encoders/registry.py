"""Name -> encoder class registry; `create_encoder` fails loudly on unknown names (timm style)."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, TypeVar

from mmrec.errors import ConfigError
from mmrec.registry import Registry

if TYPE_CHECKING:
    from mmrec.encoders.base import Encoder

# Modules that register the built-in encoders; imported on first lookup so `import mmrec` stays light
# (they import torch/transformers lazily themselves).
ENCODERS: Registry[type[Encoder]] = Registry(
    "encoder",
    (
        "mmrec.encoders.text",
        "mmrec.encoders.image",
        "mmrec.encoders.audio",
        "mmrec.encoders.video",
        "mmrec.encoders.tiny",
    ),
    ConfigError,
)

T = TypeVar("T", bound="type[Encoder]")


def register_encoder(cls: T) -> T:
    """Class decorator: make `cls` available as `create_encoder(cls.name)`."""
    return ENCODERS.register(cls)


def available_encoders(modality: str | None = None) -> list[str]:
    """Registered encoder names, optionally only those of one modality."""
    return ENCODERS.names(None if modality is None else (lambda c: c.modality == modality))


def get_encoder_class(name: str) -> type[Encoder]:
    return ENCODERS.get(name, _listing)


def _listing() -> str:
    by_mod = {m: available_encoders(m) for m in ("text", "image", "audio", "video")}
    return "; ".join(f"{m}: {', '.join(v)}" for m, v in by_mod.items() if v)


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
