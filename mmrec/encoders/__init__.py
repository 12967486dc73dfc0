"""Per-modality feature extraction: encoder registry, preprocessing, feature files and cache.

Importing this package is cheap: torch, transformers, timm and PyAV are imported inside the
functions that use them, and weights load on an encoder's first batch.

    from mmrec.encoders import create_encoder
    enc = create_encoder("minilm")                 # weights from the installed package, offline
    vecs = enc.encode(["title: Heat\\ngenres: Crime"])   # (1, 384) float32

Names: text `minilm`, `mpnet`, `tiny_text`; image `efficientnet_lite0`, `mobilenetv2`, `tiny_cnn`;
audio `whisper_tiny`, `logmel`; video `frames` (sampled frames through an image encoder).
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> defining module. Resolved on first access, so `import mmrec.encoders.config`
# (which mmrec.config does) stays as light as pydantic.
_EXPORTS = {
    "Encoder": "mmrec.encoders.base",
    "ItemFailure": "mmrec.encoders.base",
    "TorchEncoder": "mmrec.encoders.base",
    "ExtractParams": "mmrec.encoders.config",
    "available_encoders": "mmrec.encoders.registry",
    "create_encoder": "mmrec.encoders.registry",
    "get_encoder_class": "mmrec.encoders.registry",
    "register_encoder": "mmrec.encoders.registry",
    "VECTOR": "mmrec.encoders.store",
    "FeatureCache": "mmrec.encoders.store",
    "Features": "mmrec.encoders.store",
    "read_features": "mmrec.encoders.store",
    "write_features": "mmrec.encoders.store",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mmrec.encoders' has no attribute {name!r}")
