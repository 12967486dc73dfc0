"""The `extract:` section of params.yaml: which encoder runs per modality and how.

Everything that changes a vector (encoder name, weights, preprocessing) is part of the encoder's
cache key, so editing one of these re-encodes only the modality it belongs to; settings that
only change *how fast* vectors are made (device, workers, batch size) are not in the key.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mmrec.constants import MAX_IMAGE_PIXELS

Precision = Literal["auto", "fp32", "bf16", "fp16"]
FitMode = Literal["crop", "pad"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _ModalityParams(_Section):
    """What every modality section has.

    Attributes:
        encoder: registered encoder name (`mmrec.encoders.available_encoders()`).
        weights: weight source: null (the installed package, offline), a local file or folder,
            `hf:org/name` or `timm:name` (need internet; refused fast under HF_HUB_OFFLINE=1).
        batch_size: items per forward pass.
        options: extra constructor arguments for the encoder (e.g. {pooling: max}).
    """

    encoder: str
    weights: str | None = None
    batch_size: int = Field(32, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)

    def encoder_kwargs(self) -> dict[str, Any]:
        """Constructor arguments for `create_encoder(self.encoder, **kwargs)`."""
        kwargs: dict[str, Any] = dict(self.options)
        if self.weights is not None:
            kwargs["weights"] = self.weights
        return kwargs


class TextExtractParams(_ModalityParams):
    """Text: the item document (`title: ...\\ngenres: ...\\ndescription: ...`).

    Attributes:
        max_chars: documents longer than this fail (recorded) instead of being encoded; a huge
            document is almost always a scraping accident, and truncating it would hide that.
        max_tokens: truncate at this many tokens; null = the model's own maximum.
    """

    encoder: str = "minilm"
    batch_size: int = Field(64, ge=1)
    max_chars: int = Field(100_000, ge=1)
    max_tokens: int | None = Field(None, ge=8)

    def encoder_kwargs(self) -> dict[str, Any]:
        kwargs = super().encoder_kwargs()
        kwargs.setdefault("max_chars", self.max_chars)
        if self.max_tokens is not None:
            kwargs.setdefault("max_tokens", self.max_tokens)
        return kwargs


class ImageExtractParams(_ModalityParams):
    """Images (posters, product photos).

    Attributes:
        fit: `pad` resizes the whole image into the model's square input and pads the rest (a
            portrait poster keeps its full height); `crop` is the classic resize + centre crop
            of the model's pretrained config, which cuts ~40% of a 2:3 poster.
        max_pixels: images with more pixels fail as decompression bombs before decoding; the same
            limit makes validation quarantine them and the API refuse to serve them.
    """

    encoder: str = "efficientnet_lite0"
    batch_size: int = Field(32, ge=1)
    fit: FitMode = "pad"
    max_pixels: int = Field(MAX_IMAGE_PIXELS, ge=1)

    def encoder_kwargs(self) -> dict[str, Any]:
        kwargs = super().encoder_kwargs()
        kwargs.setdefault("fit", self.fit)
        kwargs.setdefault("max_pixels", self.max_pixels)
        return kwargs


class AudioExtractParams(_ModalityParams):
    """Audio clips, resampled to 16 kHz mono.

    Attributes:
        max_seconds: only the first `max_seconds` are encoded (Whisper's window is 30 s).
        silence_db: a clip whose RMS level is below this (dBFS) fails as silent; its vector
            would describe the encoder's bias, not the item.
    """

    encoder: str = "whisper_tiny"
    batch_size: int = Field(8, ge=1)
    max_seconds: float = Field(30.0, gt=0, le=30.0)
    silence_db: float = -70.0

    def encoder_kwargs(self) -> dict[str, Any]:
        kwargs = super().encoder_kwargs()
        kwargs.setdefault("max_seconds", self.max_seconds)
        kwargs.setdefault("silence_db", self.silence_db)
        return kwargs


class VideoExtractParams(_ModalityParams):
    """Video: N frames sampled uniformly, each through an image encoder, pooled over time.

    Attributes:
        image_encoder: the registered image encoder the frames go through.
        num_frames: frames sampled per clip (uniformly over its duration).
        pooling: temporal pooling: mean, max, or mean_max (both, concatenated: 2x dim).
        fit: frame fit mode, as for images.
    """

    encoder: str = "frames"
    batch_size: int = Field(4, ge=1)
    image_encoder: str = "efficientnet_lite0"
    num_frames: int = Field(8, ge=1, le=256)
    pooling: Literal["mean", "max", "mean_max"] = "mean"
    fit: FitMode = "pad"

    def encoder_kwargs(self) -> dict[str, Any]:
        kwargs = super().encoder_kwargs()
        kwargs.setdefault("image_encoder", self.image_encoder)
        kwargs.setdefault("num_frames", self.num_frames)
        kwargs.setdefault("pooling", self.pooling)
        kwargs.setdefault("fit", self.fit)
        return kwargs


class ExtractParams(_Section):
    """The `extract:` section.

    Attributes:
        device: auto (cuda when available, else cpu), cpu, cuda or cuda:N.
        precision: auto (bf16/fp16 on cuda, fp32 on cpu), fp32, bf16 or fp16. A reduced
            precision is checked on the first batch against fp32 and dropped (with a warning in
            the report) when any vector's cosine to its fp32 twin is below 0.99.
        workers: threads reading, decoding and preprocessing items while the model runs.
        checkpoint_items: encoded vectors are flushed to the cache this often, so a crash
            loses at most this many items of work.
        cache_dir: where the content-hash cache lives; null = data/<name>/cache/features
            (outside the DVC outputs, so `dvc repro` does not delete it).
        retry_failed: re-try items whose exact bytes failed before (decoding is deterministic,
            so the default is to report the cached failure without re-doing it).
        progress: show a progress bar (items/s) on a terminal.
    """

    device: str = "auto"
    precision: Precision = "auto"
    workers: int = Field(4, ge=1, le=64)
    checkpoint_items: int = Field(512, ge=1)
    cache_dir: str | None = None
    retry_failed: bool = False
    progress: bool = True
    text: TextExtractParams = Field(default_factory=TextExtractParams)
    image: ImageExtractParams = Field(default_factory=ImageExtractParams)
    audio: AudioExtractParams = Field(default_factory=AudioExtractParams)
    video: VideoExtractParams = Field(default_factory=VideoExtractParams)

    def modality(self, modality: str) -> _ModalityParams:
        """The section of one modality (text/image/audio/video)."""
        if modality not in ("text", "image", "audio", "video"):
            from mmrec.errors import ConfigError

            raise ConfigError(f"unknown modality {modality!r}; expected one of text, image, audio, video")
        return getattr(self, modality)
