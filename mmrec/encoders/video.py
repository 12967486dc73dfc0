"""Video encoder: N frames sampled uniformly with PyAV, through an image encoder, pooled over time.

Frames are taken at the centres of N equal slices of the clip (frame indices
floor((i + 0.5) * F / N)), so a clip's start and end (black frames, logos) weigh no more than its
middle. Clips with fewer decodable frames than N repeat frames uniformly, so every clip gives
exactly N frames and batches keep a fixed shape. A clip with no decodable frame fails.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from mmrec.encoders.base import Encoder, ItemFailure
from mmrec.encoders.image import DEFAULT_MAX_PIXELS, ImageEncoder
from mmrec.encoders.registry import create_encoder, encoder_params, register_encoder
from mmrec.errors import ConfigError

POOLINGS = ("mean", "max", "mean_max")


def _count_frames(data: bytes) -> int:
    import av

    n = 0
    with av.open(io.BytesIO(data), mode="r") as container:
        try:
            for _ in container.decode(video=0):
                n += 1
        except (av.error.FFmpegError, ValueError):
            pass  # count what decodes
    return n


def sample_frames(data: bytes, num_frames: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Any]:
    """`num_frames` RGB PIL frames sampled uniformly over the clip (repeated when it is shorter).

    Raises:
        ItemFailure: not a video, no video stream, unsupported codec, or zero decodable frames.
    """
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise ItemFailure("file has no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width or 0, stream.codec_context.height or 0
            if width * height > max_pixels:
                raise ItemFailure(f"video frames are {width}x{height}, above extract.image.max_pixels={max_pixels:,}")
            total = int(stream.frames or 0)
    except ItemFailure:
        raise
    except (av.error.FFmpegError, ValueError, OSError, IndexError) as exc:
        raise ItemFailure(f"cannot open video (unsupported container or corrupt file): {exc}") from exc
    try:
        if total <= 0:  # the container does not say: count in a first decoding pass
            total = _count_frames(data)
        # Centres of num_frames equal slices of the clip.
        wanted = sorted({min(total - 1, int((i + 0.5) * total / num_frames)) for i in range(num_frames)})
        if total <= 0:
            wanted = []
        picked: dict[int, Any] = {}
        last_ok: Any = None
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            targets = set(wanted)
            stop = max(wanted) if wanted else -1
            try:
                for index, frame in enumerate(container.decode(stream)):
                    if index in targets:
                        picked[index] = frame.to_image()
                    last_ok = frame
                    if index >= stop:
                        break
            except (av.error.FFmpegError, ValueError) as exc:
                if not picked and last_ok is None:
                    raise ItemFailure(f"video has no decodable frames: {exc}") from exc
    except ItemFailure:
        raise
    except (av.error.FFmpegError, ValueError, OSError, IndexError) as exc:
        raise ItemFailure(f"cannot decode video (unsupported codec or corrupt file): {exc}") from exc
    if not picked and last_ok is not None:
        picked[0] = last_ok.to_image()
    if not picked:
        raise ItemFailure("video has zero decodable frames")
    frames = [picked[k] for k in sorted(picked)]
    # Repeat uniformly when fewer frames decoded than asked for.
    return [frames[min(len(frames) - 1, int(i * len(frames) / num_frames))] for i in range(num_frames)]


@register_encoder
class FramesVideoEncoder(Encoder):
    """Sampled frames through a registered image encoder, pooled over time.

    Args:
        image_encoder: registered image encoder name (its device/precision/weights apply).
        num_frames: frames per clip.
        pooling: mean, max, or mean_max (concatenation, 2x the image dim).
        fit / max_pixels / weights: passed to the image encoder.
    """

    name = "frames"
    modality = "video"
    description = "uniformly sampled frames through an image encoder, pooled over time"

    def __init__(
        self,
        image_encoder: str = "efficientnet_lite0",
        num_frames: int = 8,
        pooling: str = "mean",
        fit: str = "pad",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        weights: str | None = None,
        device: str = "auto",
        precision: str = "auto",
    ) -> None:
        if pooling not in POOLINGS:
            raise ConfigError(f"video pooling={pooling!r}; expected one of {list(POOLINGS)}")
        if num_frames < 1:
            raise ConfigError(f"video num_frames={num_frames}; must be at least 1")
        kwargs: dict[str, Any] = {"fit": fit, "max_pixels": max_pixels, "device": device, "precision": precision}
        if weights is not None:
            kwargs["weights"] = weights
        accepted = encoder_params(image_encoder)
        image = create_encoder(image_encoder, **{k: v for k, v in kwargs.items() if k in accepted})
        if not isinstance(image, ImageEncoder):
            raise ConfigError(
                f"video image_encoder={image_encoder!r} is a {image.modality} encoder; pick an image encoder"
            )
        self.image = image
        self.num_frames = int(num_frames)
        self.pooling = pooling
        self.max_pixels = int(max_pixels)
        self.dim = image.dim * (2 if pooling == "mean_max" else 1)

    @property
    def id(self) -> str:
        return f"frames_{self.image.id}"

    def weight_source(self) -> str:
        return self.image.weight_source()

    def weights_hash(self) -> str:
        return self.image.weights_hash()

    def preprocessing(self) -> dict[str, Any]:
        return {
            "image_encoder": self.image.id,
            "image": self.image.preprocessing(),
            "num_frames": self.num_frames,
            "sampling": "uniform-centres",
            "pooling": self.pooling,
        }

    def runtime(self) -> dict[str, Any]:
        return self.image.runtime()

    def prepare(self, raw: bytes) -> np.ndarray:
        frames = sample_frames(raw, self.num_frames, self.max_pixels)
        return np.stack([self.image.prepare_image(f) for f in frames])  # (N, H, W, 3) uint8

    def encode_batch(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        clips = np.stack(prepared)  # (B, N, H, W, 3)
        b, n = clips.shape[:2]
        vecs = self.image.encode_batch(list(clips.reshape(b * n, *clips.shape[2:])))  # (B*N, D)
        vecs = vecs.reshape(b, n, -1)
        if self.pooling == "mean":
            out = vecs.mean(1)
        elif self.pooling == "max":
            out = vecs.max(1)
        else:
            out = np.concatenate([vecs.mean(1), vecs.max(1)], axis=1)
        return out.astype(np.float32)
