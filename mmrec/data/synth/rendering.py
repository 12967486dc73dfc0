"""Rendering attributes into media, in memory: images (shape, colour, pattern), audio (pitch, timbre, tempo) and video frames (motion)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mmrec.data.synth.attributes import DIRECTION_VEC, PITCH_HZ, RGB, SPEED_FRAC, TEMPO_HZ


def jitter_colour(r: np.random.Generator, colour: str, amount: int = 18) -> tuple[int, int, int]:
    base = np.array(RGB[colour]) + r.integers(-amount, amount + 1, size=3)
    c = np.clip(base, 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


def shape_points(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    """Polygon vertices of a square, triangle or five-pointed star (circles use ellipse)."""
    if shape == "square":
        n, radii = 4, [radius]
        angle += math.pi / 4
    elif shape == "triangle":
        n, radii = 3, [radius]
        angle -= math.pi / 2
    else:  # star
        n, radii = 10, [radius, radius * 0.45]
        angle -= math.pi / 2
    return [
        (
            cx + radii[j % len(radii)] * math.cos(angle + 2 * math.pi * j / n),
            cy + radii[j % len(radii)] * math.sin(angle + 2 * math.pi * j / n),
        )
        for j in range(n)
    ]


def draw_shape(
    draw: Any, shape: str, cx: float, cy: float, radius: float, angle: float, fill: tuple[int, int, int]
) -> None:
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    else:
        draw.polygon(shape_points(shape, cx, cy, radius, angle), fill=fill)


def render_background(r: np.random.Generator, pattern: str, size: int) -> np.ndarray:
    """(size, size, 3) uint8 light textured background carrying the item's pattern."""
    base = np.array([228, 224, 214], dtype=np.float64) + r.integers(-12, 13, size=3)
    yy, xx = np.mgrid[0:size, 0:size]
    period = max(4, size // int(r.integers(5, 9)))
    phase = int(r.integers(0, period))
    if pattern == "stripes":
        mask = ((xx + yy + phase) // max(2, period // 2)) % 2 == 0
    elif pattern == "dots":
        cy = (yy + phase) % period - period / 2
        cx = (xx + phase) % period - period / 2
        mask = cy**2 + cx**2 < (period / 4) ** 2
    elif pattern == "checker":
        mask = (((xx + phase) // period) + ((yy + phase) // period)) % 2 == 0
    else:
        mask = np.zeros((size, size), dtype=bool)
    img = np.broadcast_to(base, (size, size, 3)).copy()
    img[mask] -= 45.0
    img += r.normal(0.0, 6.0, size=(size, size, 1))  # paper-like grain, so no two are identical
    return np.clip(img, 0, 255).astype(np.uint8)


def render_image(r: np.random.Generator, attrs: dict[str, str], size: int) -> Any:
    """The item's shape in its colour on its patterned background, with jitter."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(render_background(r, attrs["pattern"], size), mode="RGB")
    draw = ImageDraw.Draw(img)
    radius = size * float(r.uniform(0.24, 0.34))
    cx = size / 2 + float(r.uniform(-0.08, 0.08)) * size
    cy = size / 2 + float(r.uniform(-0.08, 0.08)) * size
    draw_shape(draw, attrs["shape"], cx, cy, radius, float(r.uniform(-0.3, 0.3)), jitter_colour(r, attrs["colour"]))
    return img


def render_audio(r: np.random.Generator, attrs: dict[str, str], seconds: float, rate: int) -> np.ndarray:
    """Mono float samples in [-1, 1]: pitch, timbre and tempo made audible.

    pitch -> fundamental (low/mid/high, +-1.5 semitones); timbre -> pure sine, bright
    harmonics, major chord, or noise bursts over a tone; tempo -> pulse rate (2/4/8 per second).
    """
    n = max(1, int(round(seconds * rate)))
    t = np.arange(n) / rate
    f0 = PITCH_HZ[attrs["pitch"]] * 2 ** (float(r.uniform(-1.5, 1.5)) / 12)
    timbre = attrs["timbre"]
    if timbre == "pure":
        wave_ = np.sin(2 * np.pi * f0 * t)
    elif timbre == "bright":
        wave_ = np.sum([np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 7)], axis=0)
    elif timbre == "chord":
        wave_ = np.sum([np.sin(2 * np.pi * f0 * m * t) for m in (1.0, 1.26, 1.5)], axis=0)
    else:  # noisy: smoothed noise bursts over a quiet tone
        noise = r.normal(0.0, 1.0, size=n)
        width = max(1, int(rate / (4 * f0)))
        noise = np.convolve(noise, np.ones(width) / width, mode="same") * math.sqrt(width)
        wave_ = 0.4 * np.sin(2 * np.pi * f0 * t) + noise
    pulse_hz = TEMPO_HZ[attrs["tempo"]] * float(r.uniform(0.9, 1.1))
    phase = (t * pulse_hz + float(r.uniform(0, 1))) % 1.0
    envelope = np.exp(-phase * 6.0)
    signal = wave_ * envelope + r.normal(0.0, 0.003, size=n)
    return 0.8 * signal / (np.abs(signal).max() + 1e-9)


def render_video(r: np.random.Generator, attrs: dict[str, str], n_frames: int, size: int) -> list[np.ndarray]:
    """RGB frames of the item's shape moving in its direction at its speed over a plain backdrop."""
    from PIL import Image, ImageDraw

    backdrop = np.clip(
        np.array([200, 200, 205], dtype=np.float64)
        + r.integers(-15, 16, size=3)
        + r.normal(0, 4.0, size=(size, size, 1)),
        0,
        255,
    ).astype(np.uint8)
    fill = jitter_colour(r, attrs["colour"])
    radius = size * float(r.uniform(0.14, 0.2))
    dx, dy = DIRECTION_VEC[attrs["direction"]]
    step = SPEED_FRAC[attrs["speed"]] * size * float(r.uniform(0.85, 1.15))
    span = step * (n_frames - 1)
    cx0 = size / 2 - dx * span / 2 + float(r.uniform(-0.05, 0.05)) * size
    cy0 = size / 2 - dy * span / 2 + float(r.uniform(-0.05, 0.05)) * size
    angle = float(r.uniform(-0.3, 0.3))
    frames = []
    for f in range(n_frames):
        img = Image.fromarray(backdrop, mode="RGB")
        draw_shape(ImageDraw.Draw(img), attrs["shape"], cx0 + dx * step * f, cy0 + dy * step * f, radius, angle, fill)
        frames.append(np.asarray(img))
    return frames
