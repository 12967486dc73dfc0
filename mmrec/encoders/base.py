"""The encoder contract: what the extraction runner needs from every text/image/audio/video encoder.

An encoder splits its work in two so the model never waits on I/O:
- `read` + `prepare` run in worker threads: read the file (or take the text), hash it, decode
  and preprocess into arrays; a bad item raises `ItemFailure` with a reason;
- `encode_batch` runs on the main thread: one batched forward pass, returning float32 vectors.

Each encoder declares its modality, output dimension, weight source and preprocessing; these (plus
a weights hash) form the cache key under which its vectors are stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mmrec.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

#: Bumped when the extraction code changes what vectors an unchanged encoder produces.
EXTRACTION_VERSION = 1
#: Reduced precision is kept only when every vector of the check batch is this close to fp32.
MIN_PRECISION_COSINE = 0.99


#: Serialises first imports of lazily-loaded libraries (transformers' lazy modules are not safe
#: to import from several threads at once; Prefect runs the modality extractions in threads and
#: decoding runs in worker threads). Hold it around `from transformers import ...`.
IMPORT_LOCK = threading.RLock()


class ItemFailure(Exception):
    """One item cannot be encoded (corrupt file, silent audio, empty text...).

    Not an MMRecError on purpose: it never escapes the runner; it becomes a line in the
    extraction report and the run goes on.
    """


class Encoder(ABC):
    """Base class of every encoder.

    Class attributes:
        name: registry name (`create_encoder(name)`).
        modality: text, image, audio or video.
        description: one line for `mmrec` help and the report.
        package: pip package shipping the default weights (None: no packaged weights).
    """

    name: ClassVar[str]
    modality: ClassVar[str]
    description: ClassVar[str] = ""
    package: ClassVar[str | None] = None

    dim: int

    # ---- identity -------------------------------------------------------------------------
    @property
    def id(self) -> str:
        """File stem of the feature file (`features/<modality>/<id>.parquet`)."""
        return self.name

    @abstractmethod
    def preprocessing(self) -> dict[str, Any]:
        """Every setting that changes the vectors besides the weights (goes into the cache key)."""

    @abstractmethod
    def weights_hash(self) -> str:
        """Hash of the weights, computed without loading the model where possible."""

    def weight_source(self) -> str:
        """Human-readable weight source for the report."""
        return "none"

    def cache_key(self) -> str:
        """sha256 of (encoder id, weights hash, preprocessing, extraction version)."""
        payload = {
            "encoder": self.id,
            "weights": self.weights_hash(),
            "preprocessing": self.preprocessing(),
            "version": EXTRACTION_VERSION,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def info(self) -> dict[str, Any]:
        """What the report and the feature file metadata say about this encoder."""
        return {
            "encoder": self.id,
            "name": self.name,
            "modality": self.modality,
            "dim": self.dim,
            "weights_source": self.weight_source(),
            "weights_hash": self.weights_hash(),
            "preprocessing": self.preprocessing(),
            "cache_key": self.cache_key(),
        }

    # ---- worker-thread side ---------------------------------------------------------------
    def read(self, value: Any) -> tuple[Any, str]:
        """Fetch an item's raw content and its content hash (runs in a worker thread).

        Media encoders read the file's bytes (hash = sha256 of the bytes); text encoders take the
        string (hash = sha256 of its UTF-8). Raises ItemFailure for a missing/unreadable file.
        """
        return read_media(value)

    @abstractmethod
    def prepare(self, raw: Any) -> Any:
        """Decode + preprocess one item's raw content (worker thread). Raises ItemFailure."""

    # ---- main-thread side -----------------------------------------------------------------
    @abstractmethod
    def encode_batch(self, prepared: Sequence[Any]) -> np.ndarray:
        """(B, dim) float32 vectors for prepared items."""

    def runtime(self) -> dict[str, Any]:
        """Device/precision actually used (after any fallback), for the report."""
        return {"device": "cpu", "precision": "fp32"}

    def encode(self, values: Sequence[Any]) -> np.ndarray:
        """Convenience: read + prepare + encode a few items in this thread (tests, notebooks).

        Raises:
            ModelError: an item failed; the message carries its reason.
        """
        prepared = []
        for i, v in enumerate(values):
            try:
                raw, _ = self.read(v)
                prepared.append(self.prepare(raw))
            except ItemFailure as exc:
                raise ModelError(f"{self.name}: item {i} ({str(v)[:80]!r}) cannot be encoded: {exc}") from exc
        if not prepared:
            return np.zeros((0, self.dim), np.float32)
        return self.encode_batch(prepared)


def read_media(value: Any) -> tuple[bytes, str]:
    """Read a media file's bytes and their sha256 (the item's content hash)."""
    path = Path(value)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ItemFailure(f"file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise ItemFailure(f"path is a folder, not a file: {path}") from exc
    except OSError as exc:
        raise ItemFailure(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not data:
        raise ItemFailure(f"empty file (0 bytes): {path}")
    return data, hashlib.sha256(data).hexdigest()


def resolve_device(device: str = "auto") -> str:
    """`auto` -> cuda when available, else cpu; anything else is checked and returned."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"extract.device={device!r} but CUDA is not available here; use auto or cpu")
    if device != "cpu" and not device.startswith("cuda") and device != "mps":
        raise ConfigError(f"extract.device={device!r}: expected auto, cpu, cuda or cuda:N")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """`auto` -> bf16 (fp16 where bf16 is unsupported) on CUDA, fp32 elsewhere."""
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (B, D) arrays (0 where a row is all zeros)."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


class TorchEncoder(Encoder):
    """An encoder backed by a torch module: lazy loading, device, precision, channels_last.

    Subclasses implement `build_model` (the module in eval mode, on CPU, fp32), `collate`
    (prepared items -> tensors on CPU) and `forward` (tensors on device -> (B, dim) tensor).

    Reduced precision runs under `torch.autocast` (norms and softmax stay in fp32) and is checked
    once, on the first batch, against fp32: if any cosine is below MIN_PRECISION_COSINE the
    encoder falls back to fp32 and records why.
    """

    #: Convert the module to channels_last (CNNs: faster convolutions on CPU and GPU); the
    #: encoder's forward is responsible for feeding channels_last inputs.
    channels_last: ClassVar[bool] = False

    def __init__(self, device: str = "auto", precision: str = "auto") -> None:
        if precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"precision={precision!r}: expected auto, fp32, bf16 or fp16")
        self._device_arg = device
        self._precision_arg = precision
        self._model: Any = None
        self._device: str | None = None
        self._precision: str | None = None
        self._precision_checked = False
        self.precision_check: dict[str, Any] | None = None

    @abstractmethod
    def build_model(self) -> Any:  # -> torch.nn.Module
        """Build the module with its weights, in eval mode, on CPU in fp32."""

    @abstractmethod
    def collate(self, prepared: Sequence[Any]) -> Any:
        """Stack prepared items into CPU tensors (a tensor, or a dict of tensors)."""

    @abstractmethod
    def forward(self, model: Any, batch: Any) -> Any:
        """(B, dim) tensor from a batch already on the device."""

    @property
    def model(self) -> Any:
        """The loaded module (built, moved to the device, on first use)."""
        if self._model is None:
            import torch

            self._device = resolve_device(self._device_arg)
            self._precision = resolve_precision(self._precision_arg, self._device)
            model = self.build_model().eval()
            model = model.to(self._device)
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
            self._model = model
            log.info("%s loaded on %s (%s) from %s", self.id, self._device, self._precision, self.weight_source())
        return self._model

    @property
    def device(self) -> str:
        _ = self.model
        assert self._device is not None
        return self._device

    @property
    def precision(self) -> str:
        _ = self.model
        assert self._precision is not None
        return self._precision

    def runtime(self) -> dict[str, Any]:
        out: dict[str, Any] = {"device": self._device or resolve_device(self._device_arg)}
        out["precision"] = self._precision or resolve_precision(self._precision_arg, out["device"])
        if self.precision_check is not None:
            out["precision_check"] = self.precision_check
        return out

    def to_device(self, batch: Any) -> Any:
        import torch

        if isinstance(batch, torch.Tensor):
            from mmrec.runtime import to_device

            return to_device(batch, self.device)  # pinned + non-blocking on CUDA
        if isinstance(batch, dict):
            return {k: self.to_device(v) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)):
            return type(batch)(self.to_device(v) for v in batch)
        return batch

    def _run(self, batch: Any, precision: str) -> np.ndarray:
        import torch

        model = self.model
        with torch.inference_mode():
            if precision == "fp32":
                out = self.forward(model, batch)
            else:
                dtype = torch.bfloat16 if precision == "bf16" else torch.float16
                device_type = "cuda" if self.device.startswith("cuda") else "cpu"
                with torch.autocast(device_type=device_type, dtype=dtype):
                    out = self.forward(model, batch)
            return out.float().cpu().numpy()

    def encode_batch(self, prepared: Sequence[Any]) -> np.ndarray:
        batch = self.to_device(self.collate(prepared))
        precision = self.precision
        out = self._run(batch, precision)
        if precision != "fp32" and not self._precision_checked:
            self._precision_checked = True
            ref = self._run(batch, "fp32")
            cos = float(cosine_rows(out, ref).min())
            self.precision_check = {"precision": precision, "min_cosine_vs_fp32": round(cos, 5)}
            if not (cos >= MIN_PRECISION_COSINE) or not np.isfinite(out).all():
                log.warning(
                    "%s: %s vectors reach only cosine %.4f of fp32 (< %.2f); falling back to fp32",
                    self.id,
                    precision,
                    cos,
                    MIN_PRECISION_COSINE,
                )
                self._precision = "fp32"
                self.precision_check["fallback"] = "fp32"
                out = ref
        return np.ascontiguousarray(out, dtype=np.float32)
