"""Media writers: every item's PNG, WAV and MP4 files, each from its own seeded random stream."""

from __future__ import annotations

import logging
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.data.synth.attributes import ATTRIBUTE_GROUPS, VIDEO_FPS
from mmrec.data.synth.config import SynthConfig
from mmrec.data.synth.rendering import render_audio, render_image, render_video
from mmrec.errors import ConfigError

log = logging.getLogger(__name__)


def write_media(
    folder: Path, cfg: SynthConfig, items: dict[str, Any], missing: dict[str, set[int]]
) -> dict[str, list[str]]:
    """Render every item's PNG, WAV and MP4; return relative paths ("" where the item lacks one)."""
    for sub in ("images", "audio", "videos"):
        (folder / sub).mkdir()
    paths: dict[str, list[str]] = {"image": [], "audio": [], "video": []}
    lv = items["levels"]
    t0 = time.perf_counter()
    for idx, item_id in enumerate(items["item_id"]):
        attrs = {g: ATTRIBUTE_GROUPS[g][int(lv[g][idx])] for g in ATTRIBUTE_GROUPS}
        if idx in missing["image"]:
            paths["image"].append("")
        else:
            rel = f"images/{item_id}.png"
            render_image(np.random.default_rng([cfg.seed, 2, idx]), attrs, cfg.image_size).save(
                folder / rel, format="PNG", optimize=False
            )
            paths["image"].append(rel)
        if idx in missing["audio"]:
            paths["audio"].append("")
        else:
            rel = f"audio/{item_id}.wav"
            samples = render_audio(np.random.default_rng([cfg.seed, 3, idx]), attrs, cfg.audio_seconds, cfg.audio_rate)
            write_wav(folder / rel, samples, cfg.audio_rate)
            paths["audio"].append(rel)
        if idx in missing["video"]:
            paths["video"].append("")
        else:
            rel = f"videos/{item_id}.mp4"
            frames = render_video(np.random.default_rng([cfg.seed, 4, idx]), attrs, cfg.video_frames, cfg.video_size)
            write_mp4(folder / rel, frames, VIDEO_FPS)
            paths["video"].append(rel)
        if (idx + 1) % 100 == 0:
            log.info("synth: media for %d/%d items (%.1fs)", idx + 1, cfg.n_items, time.perf_counter() - t0)
    return paths


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    pcm = np.clip(np.rint(samples * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited-range YUV 4:2:0 planes stacked as PyAV's (h * 3 / 2, w) uint8 layout.

    Converting in numpy fixes the encoder's input exactly, independent of swscale's SIMD paths.
    """
    x = np.asarray(rgb, dtype=np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    h, w = y.shape

    def sub(c: np.ndarray) -> np.ndarray:  # 2x2 mean (dimensions are even for the synthetic sizes)
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    planes = [np.rint(y), np.rint(sub(u)).reshape(h // 4, w), np.rint(sub(v)).reshape(h // 4, w)]
    return np.clip(np.concatenate(planes, axis=0), 0, 255).astype(np.uint8)


def write_mp4(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """Encode RGB frames as a small yuv420p MP4 (MPEG-4 part 2; h264 if that encoder is absent).

    One encoder thread and fixed options keep the output reproducible.
    """
    import av

    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w", format="mp4") as container:
        stream: Any = None  # av.VideoStream; Any because add_stream's return type is a union
        # MPEG-4 part 2 first: libx264 gave different bytes for the same frames in different
        # processes (even single-threaded), which broke "same seed, same files".
        for codec, options in (
            ("mpeg4", {"qscale": "2", "threads": "1"}),
            ("libx264", {"preset": "veryfast", "crf": "18", "threads": "1", "bframes": "0"}),
        ):
            try:
                stream = container.add_stream(codec, rate=fps, options=options)
                break
            except Exception:  # noqa: BLE001 - encoder not in this PyAV build: try the next one
                continue
        if stream is None:
            raise ConfigError("synth: PyAV has neither a libx264 nor an mpeg4 encoder; reinstall `av`")
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        for arr in frames:
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(arr), format="yuv420p")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
