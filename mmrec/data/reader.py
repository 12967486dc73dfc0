"""Read raw delimited and JSON-lines files line by line, so that every line is accounted for.

Python's csv module (the parser) recovers badly from a malformed line: one stray quote makes it
swallow every following line into one field until its field-size limit, and the data after it is
silently lost. So the file is first split into physical lines (streamed in blocks, decoded with
the declared encoding), and a line-splitting pre-pass groups them into candidate records:

- a line with balanced quotes is one record;
- a line with an odd number of quotes either holds a literal quote inside an unquoted field (the
  strict parser accepts the line alone) or opens a quoted field that continues on the next lines;
  the record is then the shortest run of lines that closes the quote, and it is accepted only if
  the strict parser reads it as exactly one row with the header's field count. Otherwise the
  opening line alone is rejected ("unclosed quote") and reading restarts on the next line.

Each candidate record is handed to the csv module on its own, so a bad record costs exactly its
own line(s); runs of plain one-line records (the common case) go through one csv reader, each row
checked to have consumed exactly its own line (`_fast_rows`). Every physical line ends up in
exactly one bucket (header, blank, parsed record, rejected record), and `LineCounts.check()`
proves it before anything is written.

Limitation: a quoted value spanning more than `csv.field_size_limit()` characters (128 KiB) is
not joined; its first line is rejected as an unclosed quote and its continuation lines are read
as records of their own (usually rejected for their field count).
"""

from __future__ import annotations

import codecs
import csv
import itertools
import json
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmrec.errors import ConfigError, DataError

BLOCK_BYTES = 8 << 20  # read size; memory is one block plus the rows read so far
FAST_LINES = 4096  # lines parsed by one csv reader when they are plain one-line records
MAX_RAW_CHARS = 10_000  # a rejected line's raw text is kept up to this length in the quarantine
_QUOTE = '"'
_BAD_BYTE = re.compile("[\udc80-\udcff]")  # undecodable bytes, as surrogateescape maps them
_BOMS = {
    codecs.BOM_UTF32_LE: "utf-32",  # before UTF-16 LE: it starts with the same two bytes
    codecs.BOM_UTF32_BE: "utf-32",
    codecs.BOM_UTF16_LE: "utf-16",
    codecs.BOM_UTF16_BE: "utf-16",
}


@dataclass
class LineCounts:
    """Where every physical line of a file went.

    Attributes:
        lines: physical lines in the file (a final line without a newline counts).
        header_lines: the header line (delimited files) plus blank lines before it.
        blank_lines: empty or whitespace-only lines after the header (nothing to read).
        records: data records read: `parsed` + `rejected`; the rows validation must account for.
        record_lines: physical lines those records span (more than `records` when quoted fields
            hold newlines).
    """

    lines: int = 0
    header_lines: int = 0
    blank_lines: int = 0
    records: int = 0
    record_lines: int = 0
    parsed: int = 0
    rejected: int = 0

    def check(self, path: Path) -> None:
        """Raise if some line is in no bucket (or two): the reader must never lose a line."""
        if self.header_lines + self.blank_lines + self.record_lines != self.lines or (
            self.parsed + self.rejected != self.records
        ):
            raise DataError(
                f"{path}: line accounting does not add up ({self.to_dict()}); this is a bug in mmrec's reader"
            )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class Reject:
    """One data record that could not be read: where it is, its text and why."""

    source_row: int  # 1-based data record number (the header is not a record)
    line: int  # 1-based physical line number where the record starts (the header is line 1)
    raw: str
    reason: str
    fields: list[str] | None = None  # best-effort fields, to recover ids for the quarantine


def _norm(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError as exc:
        raise ConfigError(f"unknown encoding {encoding!r} in dataset.yaml (e.g. utf-8, latin-1, utf-16)") from exc


def check_start(path: Path, encoding: str) -> str:
    """The codec to decode `path` with; raises when its first bytes show the encoding is wrong.

    A UTF-16/32 file read as UTF-8 has a NUL in every other byte: each line would be rejected as
    garbage, so the whole file is refused with the fix instead.
    """
    name = _norm(encoding)
    with path.open("rb") as fh:
        head = fh.read(4096)
    if not head.strip():
        raise DataError(f"{path}: file is empty (expected a header row and data rows)")
    if not name.startswith(("utf-16", "utf-32")):
        for bom, enc in _BOMS.items():
            if head.startswith(bom):
                raise DataError(
                    f"{path}: starts with a {enc.upper()} byte-order mark but is read as {encoding!r}; "
                    f"set `encoding: {enc}` for this table in dataset.yaml (or re-save the file as UTF-8)"
                )
        nuls = head.count(b"\x00")
        if nuls > len(head) // 4:
            raise DataError(
                f"{path}: {nuls} of its first {len(head)} bytes are NUL, so it is not {encoding!r} "
                f"text; if it is UTF-16 without a byte-order mark set `encoding: utf-16-le` (or utf-16-be) "
                f"for this table in dataset.yaml"
            )
    return "utf-8-sig" if name == "utf-8" else name  # a UTF-8 BOM is not part of the header


def physical_lines(path: Path, encoding: str, block: int = BLOCK_BYTES) -> Iterator[str]:
    """The file's lines without their "\\n", decoded block by block (bad bytes kept as surrogates)."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="surrogateescape")
    tail = ""
    with path.open("rb") as fh:
        while True:
            data = fh.read(block)
            text = tail + decoder.decode(data, final=not data)
            if not data:
                if text:
                    yield text
                return
            parts = text.split("\n")
            tail = parts.pop()
            yield from parts


def bad_byte_reason(line: str, encoding: str) -> str | None:
    """Why a decoded line is not text: undecodable bytes (with the byte offset) or a NUL."""
    encoding = encoding.removesuffix("-sig")  # offsets within the line: no byte-order mark
    m = _BAD_BYTE.search(line)
    if m is not None:
        offset = len(line[: m.start()].encode(encoding, errors="surrogateescape")) + 1
        byte = ord(m.group()) - 0xDC00
        return (
            f"invalid {encoding} at byte {offset} (0x{byte:02x}); set `encoding:` for this "
            f"table in dataset.yaml (e.g. latin-1, cp1252)"
        )
    nul = line.find("\x00")
    if nul >= 0:
        offset = len(line[:nul].encode(encoding, errors="surrogateescape")) + 1
        return f"NUL byte at byte {offset} (binary data, or a UTF-16 file: set `encoding:` in dataset.yaml)"
    return None


def printable(line: str) -> str:
    """A line as it can be shown and stored: bad bytes as U+FFFD, NULs as \\0, cut at MAX_RAW_CHARS."""
    text = _BAD_BYTE.sub("\ufffd", line).replace("\x00", "\\0").rstrip("\r")
    if len(text) > MAX_RAW_CHARS:
        text = f"{text[:MAX_RAW_CHARS]}… ({len(text)} characters)"
    return text


def _parse(record: str, sep: str, strict: bool) -> list[str] | str:
    """One record through the csv module: its fields, or the parser's error message."""
    try:
        return next(csv.reader([record], delimiter=sep, strict=strict))
    except csv.Error as exc:
        return str(exc)
    except StopIteration:  # pragma: no cover - callers never pass an empty record
        return []


def _field_error(msg: str) -> str:
    if "field larger than field limit" in msg:
        return f"a field is longer than the csv limit of {csv.field_size_limit()} characters"
    if "new-line character seen in unquoted field" in msg:
        return "carriage return (\\r) inside an unquoted field"
    return f"unparseable line: {msg}"


class _Lookahead:
    """Physical lines with a small look-ahead buffer, numbered from 1."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._it = lines
        self._buf: deque[str] = deque()
        self.next_no = 1  # line number of peek(0)

    def peek(self, k: int) -> str | None:
        while len(self._buf) <= k:
            nxt = next(self._it, None)
            if nxt is None:
                return None
            self._buf.append(nxt)
        return self._buf[k]

    def peek_many(self, n: int) -> list[str]:
        """Up to n lines from the current one (fewer at the end of the file)."""
        self.peek(n - 1)
        return list(itertools.islice(self._buf, 0, n))

    def take(self, n: int) -> list[str]:
        out = [self._buf.popleft() for _ in range(n)]
        self.next_no += n
        return out


def read_delimited_records(
    path: Path, encoding: str, sep: str, max_record_lines: int = 10_000
) -> tuple[list[str], Iterator[tuple[int, int, list[str] | Reject]], LineCounts]:
    """Header and records of a delimited file.

    Returns:
        (header fields, iterator of (source_row, line, fields-or-Reject), counts). The counts are
        complete once the iterator is exhausted.
    """
    codec = check_start(path, encoding)
    counts = LineCounts()
    lines = _Lookahead(physical_lines(path, codec))
    while (first := lines.peek(0)) is not None and not first.strip():
        lines.take(1)
        counts.header_lines += 1
    if first is None:  # pragma: no cover - check_start refuses blank files
        raise DataError(f"{path}: file is empty (expected a header row and data rows)")
    lines.take(1)
    counts.header_lines += 1
    bad = bad_byte_reason(first, codec)
    header = _parse(first, sep, strict=False)
    if "\r" in first.rstrip("\r"):
        raise DataError(
            f"{path}: lines end with a bare carriage return (\\r, old Mac style), so the whole file reads as one "
            f"line; convert it to \\n or \\r\\n line endings (e.g. `tr '\\r' '\\n'`)"
        )
    if bad or isinstance(header, str):
        raise DataError(f"{path}: cannot read the header (line {lines.next_no - 1}): {bad or header}; fix the file")
    header = [h.strip() for h in header]
    n_fields = len(header)
    limit = csv.field_size_limit()

    def records() -> Iterator[tuple[int, int, list[str] | Reject]]:
        row = 0
        size = 64  # lines offered to the fast path: doubles while it takes them all, so a file
        # of mostly bad lines is not re-scanned 4096 lines at a time for each of them
        while (line := lines.peek(0)) is not None:
            line_no = lines.next_no
            chunk = lines.peek_many(size)
            good = _fast_rows(chunk, n_fields, sep)
            size = min(FAST_LINES, size * 2) if len(good) == len(chunk) else max(1, len(good))
            if good:  # a run of one-line records: parsed by one reader, each checked for its line
                lines.take(len(good))
                counts.records += len(good)
                counts.record_lines += len(good)
                counts.parsed += len(good)
                for i, fields in enumerate(good):
                    yield row + i + 1, line_no + i, fields
                row += len(good)
                continue
            if not line.strip():
                lines.take(1)
                counts.blank_lines += 1
                continue
            row += 1
            span, result = _one_record(lines, line, n_fields, sep, codec, limit, max_record_lines)
            lines.take(span)
            counts.records += 1
            counts.record_lines += span
            if isinstance(result, list):
                counts.parsed += 1
                yield row, line_no, result
            else:
                counts.rejected += 1
                yield row, line_no, Reject(row, line_no, printable(line), result[0], result[1])
        counts.lines = lines.next_no - 1
        counts.check(path)

    return header, records(), counts


def _fast_rows(chunk: list[str], n_fields: int, sep: str) -> list[list[str]]:
    """The leading lines of `chunk` that are complete records of `n_fields` fields, parsed at once.

    One csv reader over many lines is several times faster than one reader per line, but it
    would let a line that ends inside a quoted field run on into the next ones. So each row is
    checked to have consumed exactly one line (`reader.line_num`), to have the header's field
    count and balanced quotes; the run stops before the first line that is not plainly fine
    (undecodable bytes, NUL, blank, parser error, an open quote, wrong field count), which the
    careful path (`_one_record`) then reads.
    """
    if not chunk:
        return []
    joined = "\n".join(chunk)
    stop = len(chunk)
    bad = _BAD_BYTE.search(joined)
    if bad is not None:
        stop = joined.count("\n", 0, bad.start())
    nul = joined.find("\x00", 0, None if bad is None else bad.start())
    if nul >= 0:
        stop = min(stop, joined.count("\n", 0, nul))
    out: list[list[str]] = []
    reader = csv.reader(chunk[:stop], delimiter=sep)
    try:
        for fields in reader:
            # An odd number of quotes: a literal quote, or one left open (at the chunk's end the
            # reader cannot tell); the careful path decides.
            n = len(out)
            if reader.line_num != n + 1 or len(fields) != n_fields or chunk[n].count(_QUOTE) % 2:
                break
            out.append(fields)
    except csv.Error:
        pass
    return out


def _one_record(
    lines: _Lookahead, line: str, n_fields: int, sep: str, codec: str, limit: int, max_lines: int
) -> tuple[int, list[str] | tuple[str, list[str] | None]]:
    """How many lines the record starting at `line` spans, and its fields or (reason, fields)."""
    bad = bad_byte_reason(line, codec)
    if bad:
        guess = _parse(printable(line), sep, strict=False)
        return 1, (bad, guess if isinstance(guess, list) else None)
    quotes = line.count(_QUOTE)
    if quotes % 2 == 0:
        fields = _parse(line, sep, strict=False)
        if isinstance(fields, str):
            return 1, (_field_error(fields), None)
        if len(fields) != n_fields:
            return 1, (
                f"wrong field count: expected {n_fields} fields ({sep!r}-separated), found {len(fields)}",
                fields,
            )
        return 1, fields
    alone = _parse(line, sep, strict=True)
    if isinstance(alone, list) and len(alone) == n_fields:
        return 1, alone  # a literal quote inside an unquoted field, e.g. 5" screen
    # An opened quoted field: the record may continue on the next lines (a newline in a value).
    size, k = len(line), 1
    while k < max_lines and size <= limit:
        nxt = lines.peek(k)
        if nxt is None or bad_byte_reason(nxt, codec):
            break
        quotes += nxt.count(_QUOTE)
        size += len(nxt) + 1
        k += 1
        if quotes % 2 == 0:
            fields = _parse("\n".join(lines.peek(i) or "" for i in range(k)), sep, strict=True)
            if isinstance(fields, list) and len(fields) == n_fields:
                return k, fields
            break
    col = _open_quote_column(line)
    # Only the fields before the open quote are trustworthy (ids usually come first).
    guess = _parse(line[: col - 1], sep, strict=False) if col > 1 else []
    return 1, (
        f"unclosed quote (opened at character {col}; no following line closes it into a record of {n_fields} fields)",
        guess[:-1] if isinstance(guess, list) else None,
    )


def _open_quote_column(line: str) -> int:
    """1-based position of the quote left open at the end of the line (the last unmatched one)."""
    pos, open_at = -1, 0
    while (pos := line.find(_QUOTE, pos + 1)) >= 0:
        open_at = 0 if open_at else pos + 1
    return open_at or line.find(_QUOTE) + 1


def read_jsonl_records(path: Path, encoding: str) -> tuple[Iterator[tuple[int, dict[str, Any] | Reject]], LineCounts]:
    """Records of a JSON-lines file: (line number, object-or-Reject); blank lines are counted, skipped."""
    codec = check_start(path, encoding)
    counts = LineCounts()

    def records() -> Iterator[tuple[int, dict[str, Any] | Reject]]:
        line_no = 0
        for line in physical_lines(path, codec):
            line_no += 1
            if not line.strip():
                counts.blank_lines += 1
                continue
            counts.records += 1
            counts.record_lines += 1
            reason = bad_byte_reason(line, codec)
            obj: Any = None
            if reason is None:
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    reason = f"invalid JSON: {exc}"
                else:
                    if not isinstance(obj, dict):
                        reason = f"not a JSON object (a {type(obj).__name__})"
            if reason is None:
                counts.parsed += 1
                yield line_no, obj
                continue
            counts.rejected += 1
            yield line_no, Reject(line_no, line_no, printable(line), reason, None)
        counts.lines = line_no
        counts.check(path)

    return records(), counts


def recover_json_field(raw: str, key: str) -> str | None:
    """A string/number value of `key` from a JSON line that did not parse (best effort)."""
    m = re.search(rf'"{re.escape(key)}"\s*:\s*(?:"([^"\\]*)"|(-?[\w.]+))', raw)
    if m is None:
        return None
    return m.group(1) if m.group(1) is not None else m.group(2)
