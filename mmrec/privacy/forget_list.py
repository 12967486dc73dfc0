"""The forget list of a dataset: pseudonyms of the users who asked to be forgotten.

Raw data is never modified, so a forgotten user's rows are still in the raw folder; ingest drops
them with this list from then on. The list stores only keyed digests (HMAC-SHA256 under a random
per-dataset salt), never the raw id: the list itself reveals nobody, and the digest of a guessed id
cannot be checked without the salt. Layout, under the workspace:

    privacy/<dataset>/salt          32 random bytes, hex (created by the first forget; 0600)
    privacy/<dataset>/forget.json   {"dataset", "scheme": "hmac-sha256", "pseudonyms": [...]}
    privacy/<dataset>/audit.jsonl   one record per forget (mmrec.privacy.audit)

`privacy/` is no DVC output and no stage writes it, so neither `dvc repro` nor a fresh pipeline
run removes the list.

Stores outside `privacy/` that must recognise a forgotten user (the event store's tombstones,
mmrec/events/store.py) use `Pseudonymiser`: the same HMAC under a key derived from the salt for
their purpose, so what they hold cannot be joined with the audit log or this list.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mmrec.errors import DataError
from mmrec.io import atomic_path
from mmrec.paths import DatasetPaths

SCHEME = "hmac-sha256"
#: separators of a raw line in an ingest reject (CSV, TSV, JSON lines): a reject is dropped when
#: one of its fields is a forgotten id
_FIELD_SPLIT = re.compile(r"[,\t;|\"'\s{}\[\]:]+")


def privacy_dir(paths: DatasetPaths) -> Path:
    return paths.workspace / "privacy" / paths.name


def _read_salt(folder: Path, create: bool) -> bytes | None:
    f = folder / "salt"
    if f.is_file():
        text = f.read_text().strip()
        try:
            salt = bytes.fromhex(text)
        except ValueError as exc:
            raise DataError(
                f"{f}: not a hex salt; restore it from a backup (without it the forget list cannot be applied)"
            ) from exc
        if len(salt) < 16:
            raise DataError(f"{f}: salt of {len(salt)} bytes, expected 32; restore it from a backup")
        return salt
    if not create:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    salt = secrets.token_bytes(32)
    with atomic_path(f) as tmp:
        tmp.write_text(salt.hex() + "\n")
    os.chmod(f, 0o600)
    return salt


@dataclass
class ForgetList:
    """The pseudonyms of a dataset's forgotten users and the salt that makes them.

    An empty list (no forget yet) has no salt and matches nothing.
    """

    dataset: str
    folder: Path
    salt: bytes | None = None
    pseudonyms: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, paths: DatasetPaths, create: bool = False) -> ForgetList:
        """The dataset's list; `create` makes the salt when there is none (only `forget` does)."""
        folder = privacy_dir(paths)
        salt = _read_salt(folder, create)
        fl = cls(paths.name, folder, salt)
        f = folder / "forget.json"
        if f.is_file():
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
                fl.pseudonyms = {str(p) for p in data["pseudonyms"]}
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{f}: unreadable forget list ({exc}); restore it from a backup") from exc
            if fl.pseudonyms and salt is None:
                raise DataError(
                    f"{f}: {len(fl.pseudonyms)} forgotten user(s) but no salt in {folder / 'salt'}; restore it"
                )
        return fl

    def pseudonym(self, user_id: str) -> str:
        if self.salt is None:
            raise DataError(f"{self.folder / 'salt'}: no salt yet; load the list with create=True to add users")
        return pseudonym(self.salt, user_id)

    def __contains__(self, user_id: object) -> bool:
        return self.salt is not None and bool(self.pseudonyms) and pseudonym(self.salt, str(user_id)) in self.pseudonyms

    def __len__(self) -> int:
        return len(self.pseudonyms)

    def add(self, user_id: str) -> str:
        """Add `user_id` (idempotent) and save the list atomically; returns its pseudonym."""
        p = self.pseudonym(user_id)
        if p not in self.pseudonyms:
            self.pseudonyms.add(p)
            self.save()
        return p

    def save(self) -> None:
        body = {"dataset": self.dataset, "scheme": SCHEME, "pseudonyms": sorted(self.pseudonyms)}
        with atomic_path(self.folder / "forget.json") as tmp:
            tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")

    def mask(self, ids: Iterable[object]) -> list[bool]:
        """Per id: is it forgotten? (one digest per distinct id)."""
        if self.salt is None or not self.pseudonyms:
            return [False for _ in ids]
        salt, seen = self.salt, self.pseudonyms
        cache: dict[str, bool] = {}
        out = []
        for v in ids:
            s = "" if v is None else str(v)
            if s not in cache:
                cache[s] = pseudonym(salt, s) in seen
            out.append(cache[s])
        return out

    def raw_line_forgotten(self, raw: object) -> bool:
        """Does a raw source line (an ingest reject) hold a forgotten id as one of its fields?"""
        if raw is None or self.salt is None or not self.pseudonyms:
            return False
        return any(self.mask(t for t in _FIELD_SPLIT.split(str(raw)) if t))


def pseudonym(salt: bytes, user_id: str) -> str:
    """HMAC-SHA256 of the id under the dataset's salt, hex: stable, keyed, not reversible."""
    return hmac.new(salt, user_id.encode("utf-8"), hashlib.sha256).hexdigest()


def purpose_key(salt: bytes, purpose: str) -> bytes:
    """A key for the pseudonyms kept for `purpose`, derived from the dataset's salt (`pseudonym`
    as the KDF). The NUL prefix can start no id (ids hold no control characters), so the derived
    key is never the audit pseudonym of any user."""
    return bytes.fromhex(pseudonym(salt, "\x00" + purpose))


class Pseudonymiser:
    """Pseudonyms of user ids for one purpose, under `purpose_key` of the dataset's salt.

    Why a key per purpose: a store outside `privacy/` (the event store, possibly a Redis shared by
    several nodes) must recognise a forgotten user without holding the audit's pseudonym, the one
    handle that links the audit log, the forget list and that store. The salt stays the one secret
    to back up.

    The salt is read when first needed and then kept (it never changes), so a process started
    before the dataset's first forget picks it up at that forget; until then each call costs one
    `stat` of the salt file.

    Args:
        folder: the dataset's privacy folder (`privacy_dir`), where the salt lives.
        purpose: what the pseudonyms are for; another purpose gives unrelated pseudonyms.
    """

    def __init__(self, folder: Path, purpose: str) -> None:
        self.folder = Path(folder)
        self.purpose = purpose
        self._key: bytes | None = None

    def key(self, create: bool = False) -> bytes | None:
        """The derived key; None while the dataset has no salt (`create` makes one, as a forget does)."""
        if self._key is None:
            salt = _read_salt(self.folder, create)
            if salt is not None:
                self._key = purpose_key(salt, self.purpose)
        return self._key

    def __call__(self, user_id: str, create: bool = False) -> str | None:
        """The user's pseudonym for this purpose, or None while there is no salt (and not `create`)."""
        key = self.key(create)
        return None if key is None else pseudonym(key, user_id)


def drop_forgotten(frame: pd.DataFrame, column: str, forget: ForgetList) -> tuple[pd.DataFrame, int]:
    """`frame` without the rows whose `column` is a forgotten id, and how many were dropped."""
    if not len(forget) or column not in frame.columns or frame.empty:
        return frame, 0
    keep = ~pd.Series(forget.mask(frame[column].tolist()), index=frame.index)
    dropped = int((~keep).sum())
    return (frame[keep].reset_index(drop=True), dropped) if dropped else (frame, 0)


def drop_forgotten_rejects(
    rejects: pd.DataFrame, forget: ForgetList, raw_column: str = "raw"
) -> tuple[pd.DataFrame, int]:
    """Ingest rejects (unparsed lines) that name a forgotten id as a field, removed."""
    if not len(forget) or raw_column not in rejects.columns or rejects.empty:
        return rejects, 0
    hit = rejects[raw_column].map(forget.raw_line_forgotten).astype(bool)
    dropped = int(hit.sum())
    return (rejects[~hit].reset_index(drop=True), dropped) if dropped else (rejects, 0)
