"""`SynthConfig`: the size, seed and media settings of one synthetic dataset (validated on construction)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mmrec.errors import ConfigError


@dataclass(frozen=True)
class SynthConfig:
    """Sizes and seed of one synthetic dataset; validated before anything is written.

    Attributes:
        seed: random seed; the same seed gives the same files.
        n_users: number of users (>= 2).
        n_items: number of items (>= 10).
        interactions_per_user: (min, max) interactions drawn per user; fewer when not enough
            items are released yet at the sampled times.
        image_size: side of the square PNG images, pixels.
        audio_seconds: length of each WAV clip.
        audio_rate: WAV sample rate, Hz (mono PCM16).
        video_frames: frames per MP4 clip (8 fps).
        video_size: side of the square video frames, pixels (even, for yuv420p).
    """

    seed: int = 42
    n_users: int = 300
    n_items: int = 240
    interactions_per_user: tuple[int, int] = (15, 60)
    image_size: int = 64
    audio_seconds: float = 1.0
    audio_rate: int = 16000
    video_frames: int = 8
    video_size: int = 64

    def validate(self) -> None:
        """Raise ConfigError naming the first bad argument and what values are accepted."""

        def _int(name: str, value: Any, lo: int, hi: int, flag: str) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"synth: {name} must be an integer, got {value!r} ({flag})")
            if not lo <= value <= hi:
                raise ConfigError(f"synth: {name} must be between {lo} and {hi}, got {value} ({flag})")

        _int("seed", self.seed, 0, 2**63 - 1, "--seed")
        _int("n_users", self.n_users, 2, 10_000_000, "--users")
        _int("n_items", self.n_items, 10, 1_000_000, "--items")
        ipu = self.interactions_per_user
        if not (isinstance(ipu, (tuple, list)) and len(ipu) == 2):
            raise ConfigError(f"synth: interactions_per_user must be a (min, max) pair, got {ipu!r}")
        lo, hi = ipu
        _int("interactions_per_user[0] (min)", lo, 1, self.n_items, "at least 1, at most n_items")
        _int("interactions_per_user[1] (max)", hi, 1, self.n_items, "at most n_items; raise --items")
        if lo > hi:
            raise ConfigError(f"synth: interactions_per_user min {lo} is larger than max {hi}; swap them")
        _int("image_size", self.image_size, 16, 1024, "pixels")
        _int("audio_rate", self.audio_rate, 8000, 96000, "Hz")
        _int("video_frames", self.video_frames, 1, 600, "frames")
        _int("video_size", self.video_size, 16, 1024, "pixels")
        if self.video_size % 2:
            raise ConfigError(f"synth: video_size must be even (yuv420p), got {self.video_size}")
        secs = self.audio_seconds
        if isinstance(secs, bool) or not isinstance(secs, (int, float)) or not 0.05 <= secs <= 60:
            raise ConfigError(f"synth: audio_seconds must be a number between 0.05 and 60, got {secs!r}")
