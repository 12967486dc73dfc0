"""Tiny registered encoders for tests and demos: real torch modules, seeded weights, no files.

They run through exactly the code paths of the real encoders (decoding, preprocessing from a
model config, batching, device, precision check, cache keys) in milliseconds, so unit tests never
load pretrained weights (timm's `test_*` models play the same role).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmrec.encoders.image import DEFAULT_MAX_PIXELS, ImageEncoder
from mmrec.encoders.registry import register_encoder
from mmrec.encoders.text import CLEAN_VERSION, TextEncoder, hashed_tokens
from mmrec.encoders.weights import state_dict_sha256


def _seeded_init(model: Any, seed: int) -> Any:
    """Deterministic weights, independent of the global torch RNG (tests stay order-independent)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = int(np.prod(p.shape[1:])) if p.dim() > 1 else int(p.shape[0])
            p.copy_(torch.randn(p.shape, generator=gen) / max(1.0, fan_in) ** 0.5)
    return model


@register_encoder
class TinyCNNEncoder(ImageEncoder):
    """Two strided convolutions + average pooling on 32x32 inputs: 16-d. For tests."""

    name = "tiny_cnn"
    description = "tiny seeded CNN (16-d) for tests"
    dim = 16

    def __init__(
        self,
        fit: str = "pad",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        seed: int = 0,
        device: str = "auto",
        precision: str = "auto",
    ) -> None:
        super().__init__(fit=fit, max_pixels=max_pixels, device=device, precision=precision)
        self.seed = seed
        self._hash: str | None = None

    def data_config(self) -> dict[str, Any]:
        return {
            "input_size": (3, 32, 32),
            "mean": (0.5, 0.5, 0.5),
            "std": (0.25, 0.25, 0.25),
            "crop_pct": 0.875,
            "interpolation": "bilinear",
        }

    def build_model(self) -> Any:
        import torch.nn as nn

        model = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        return _seeded_init(model, self.seed)

    def weights_hash(self) -> str:
        if self._hash is None:
            self._hash = state_dict_sha256(self.build_model().state_dict())
        return self._hash

    def embed(self, model: Any, x: Any) -> Any:
        return model(x)


@register_encoder
class TinyTextEncoder(TextEncoder):
    """Hashed words + bigrams through a seeded EmbeddingBag (mean): 32-d. For tests."""

    name = "tiny_text"
    description = "tiny hashing text encoder (32-d) for tests"
    dim = 32
    buckets = 4096

    def __init__(
        self,
        max_tokens: int = 64,
        max_chars: int = 100_000,
        seed: int = 0,
        device: str = "auto",
        precision: str = "auto",
    ) -> None:
        super().__init__(max_chars=max_chars, device=device, precision=precision)
        self.max_tokens = max_tokens
        self.seed = seed
        self._hash: str | None = None

    def preprocessing(self) -> dict[str, Any]:
        return {
            "clean": CLEAN_VERSION,
            "max_chars": self.max_chars,
            "max_tokens": self.max_tokens,
            "buckets": self.buckets,
        }

    def weights_hash(self) -> str:
        if self._hash is None:
            self._hash = state_dict_sha256(self.build_model().state_dict())
        return self._hash

    def build_model(self) -> Any:
        import torch.nn as nn

        return _seeded_init(nn.EmbeddingBag(self.buckets, self.dim, mode="mean"), self.seed)

    def collate(self, prepared: Sequence[str]) -> Any:
        """Cleaned texts (`TextEncoder.prepare`, like every text encoder) -> hashed ids + bag offsets."""
        import torch

        ids = [hashed_tokens(text, self.buckets)[: self.max_tokens] for text in prepared]
        lengths = [len(p) for p in ids]
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        return {"ids": torch.from_numpy(np.concatenate(ids)), "offsets": torch.from_numpy(offsets)}

    def forward(self, model: Any, batch: Any) -> Any:
        return model(batch["ids"], batch["offsets"])
