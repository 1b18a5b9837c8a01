"""The raw reader: split a CSV or JSON-lines file into records before DuckDB sees it.

DuckDB's CSV reader guesses the dialect from a sample; one unterminated quote changes the
guess (every row of the file is then wrong) or swallows the rest of the file into one value,
and its errors echo the offending line (``Original Line: ...``). This reader instead:

* decodes the file with an explicit encoding (``utf-8`` by default, a UTF-8 byte-order mark
  is accepted) and says so when it is not that encoding (UTF-16 byte-order mark, NUL bytes,
  an invalid byte sequence: file and line number, never content);
* splits records itself with the fixed dialect of RFC 4180 (``,`` delimiter, ``"`` quote,
  ``""`` escape, quoted newlines allowed): a quoted value left open is a bad record of its
  own first line only, and the lines after it are read again as records;
* rejects records with the wrong number of fields or longer than ``max_record_bytes``;
* writes the good records to a normalized file (CSV with a leading ``__line`` column, or JSON
  lines with a ``__line`` key) that DuckDB reads with a fixed schema, and returns the bad
  ones as ``(line, reason)`` plus its own count of records, which ingestion reconciles
  against (an independent count: rows dropped anywhere later make the run fail).

Nothing here returns or logs a value read from the file, except header names that the
caller recognises as its own column names.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from opencity.errors import DataQualityError

MAX_RECORD_BYTES = 2 * 1024 * 1024
MAX_LINES_PER_RECORD = 200  # a quoted value spanning more lines is taken as unterminated
LINE_COLUMN = "__line"

csv.field_size_limit(2**31 - 1)


@dataclass
class RawScan:
    """What the reader found.

    Attributes:
        normalized: the good records, rewritten (CSV or JSON lines) for DuckDB.
        columns: the header (CSV) or the union of keys (JSON lines), in file order.
        records: every data record the file holds (good + bad), counted by this reader.
        bad: (line, reason) of each record that could not be split into fields.
    """

    normalized: Path
    columns: list[str]
    records: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)

    @property
    def good(self) -> int:
        return self.records - len(self.bad)


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def check_encoding(path: Path, encoding: str) -> str:
    """The codec to decode ``path`` with; raise when the bytes clearly are another encoding."""
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise DataQualityError(f"unknown encoding {encoding!r}; use e.g. utf-8, utf-16, "
                               "latin-1, cp1252") from None
    try:
        with _open_bytes(path) as f:
            head = f.read(65536)
    except OSError as err:
        raise DataQualityError(f"{path}: cannot read the file ({err.strerror or err})") from err
    if not head.strip():
        raise DataQualityError(f"{path}: the file is empty (no header line, no records)")
    if codec.startswith(("utf-16", "utf-32")):
        return codec
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataQualityError(
            f"{path}: the file is UTF-16 encoded (byte-order mark), not {encoding}; pass "
            "--encoding utf-16 (or encoding='utf-16')")
    if b"\x00" in head:
        raise DataQualityError(
            f"{path}: the file contains NUL bytes: it is binary or UTF-16/UTF-32 without a "
            f"byte-order mark, not {encoding} text; pass --encoding with its encoding")
    if codec == "utf-8":
        return "utf-8-sig"  # accepts (and drops) a UTF-8 byte-order mark
    return codec


def _lines(path: Path, codec: str) -> Iterator[str]:
    """Physical lines (line ends kept); a decoding error names the line, not its content."""
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    n = 0
    buf = ""
    with _open_bytes(path) as raw:
        for chunk in raw:
            try:
                buf += decoder.decode(chunk)
            except UnicodeDecodeError as err:
                raise DataQualityError(
                    f"{path}: line {n + buf.count(chr(10)) + 1} is not valid "
                    f"{codec.removesuffix('-sig')} text (byte 0x{err.object[err.start]:02x}); "
                    "pass --encoding with the file's encoding (e.g. latin-1, cp1252, utf-16)"
                ) from None
            if "\n" not in buf:
                continue
            *complete, buf = buf.split("\n")
            for line in complete:
                n += 1
                yield line + "\n"
        try:
            buf += decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise DataQualityError(f"{path}: the file ends in the middle of a {codec} "
                                   "character (truncated?)") from None
        for line in buf.splitlines(keepends=True) if buf else ():
            n += 1
            yield line


def _split_fields(record: str) -> list[str] | None:
    try:
        rows = list(csv.reader(io.StringIO(record, newline=""), strict=True))
    except csv.Error:
        return None
    if len(rows) != 1:
        return None
    return rows[0]


def _unique(names: list[str]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for i, name in enumerate(names):
        base = name.strip() or f"column{i}"
        cand, n = base, 2
        while cand in seen:
            cand, n = f"{base}_{n}", n + 1
        seen.add(cand)
        out.append(cand)
    return out


def scan_csv(path: Path, normalized: Path, *, encoding: str = "utf-8",
             max_record_bytes: int = MAX_RECORD_BYTES) -> RawScan:
    """Split ``path`` into records (see the module docstring); write the good ones."""
    codec = check_encoding(path, encoding)
    lines = _lines(path, codec)
    pending: deque[tuple[int, str]] = deque()
    counter = iter(range(1, 1 << 62))

    def next_line() -> tuple[int, str] | None:
        if pending:
            return pending.popleft()
        line = next(lines, None)
        return None if line is None else (next(counter), line)

    header: list[str] | None = None
    scan: RawScan | None = None
    with open(normalized, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        while True:
            first = next_line()
            if first is None:
                break
            start, line = first
            if not line.strip():
                continue  # blank lines hold no record
            parts, quotes, size = [line], line.count('"'), len(line)
            unterminated = False
            while quotes % 2 == 1:
                nxt = next_line()
                if nxt is None or len(parts) >= MAX_LINES_PER_RECORD or size > max_record_bytes:
                    if nxt is not None:
                        pending.appendleft(nxt)
                    unterminated = True
                    break
                parts.append(nxt[1])
                quotes += nxt[1].count('"')
                size += len(nxt[1])
            record = "".join(parts)
            if header is None:
                if unterminated:
                    raise DataQualityError(f"{path}: the header line has an unterminated quote")
                fields = _split_fields(record)
                if fields is None:
                    raise DataQualityError(f"{path}: the header line is not valid CSV")
                header = _unique(fields)
                writer.writerow([LINE_COLUMN, *header])
                scan = RawScan(normalized, header)
                continue
            assert scan is not None
            scan.records += 1
            reason = None
            fields = None
            if size > max_record_bytes:
                reason = f"record longer than {max_record_bytes // (1024 * 1024)} MiB"
            elif unterminated:
                reason = "unterminated quote"
            else:
                fields = _split_fields(record)
                if fields is None:
                    reason = "malformed quoting"
                elif len(fields) != len(header):
                    reason = f"expected {len(header)} fields, found {len(fields)}"
            if reason is not None and len(parts) > 1:
                # Only the first line is bad: read the others again as records.
                for extra in reversed([(start + i, p) for i, p in enumerate(parts) if i]):
                    pending.appendleft(extra)
            if reason is not None:
                scan.bad.append((start, f"malformed CSV line: {reason}"))
                continue
            writer.writerow([start, *fields])
    if scan is None:
        raise DataQualityError(f"{path}: the file is empty (no header line, no records)")
    return scan


def scan_jsonl(path: Path, normalized: Path, *, encoding: str = "utf-8",
               max_record_bytes: int = MAX_RECORD_BYTES) -> RawScan:
    """Read JSON lines: one object per line; other lines are bad records of their own."""
    codec = check_encoding(path, encoding)
    keys: dict[str, None] = {}
    scan = RawScan(normalized, [])
    first_char = None
    with open(normalized, "w", encoding="utf-8") as out:
        for lineno, line in enumerate(_lines(path, codec), start=1):
            stripped = line.strip()
            if not stripped:
                continue
            if first_char is None:
                first_char = stripped[0]
            scan.records += 1
            if len(line) > max_record_bytes:
                mib = max_record_bytes // (1024 * 1024)
                scan.bad.append((lineno, f"malformed JSON line: longer than {mib} MiB"))
                continue
            try:
                obj = json.loads(stripped)
            except (json.JSONDecodeError, RecursionError):
                scan.bad.append((lineno, "malformed JSON line: not valid JSON"))
                continue
            if not isinstance(obj, dict):
                scan.bad.append((lineno, "malformed JSON line: not a JSON object"))
                continue
            for k in obj:
                keys.setdefault(str(k), None)
            obj = {str(k): v for k, v in obj.items() if k != LINE_COLUMN}
            obj[LINE_COLUMN] = lineno
            out.write(json.dumps(obj, ensure_ascii=False) + "\n")
    if scan.records and not scan.good:
        if first_char == "[":
            raise DataQualityError(
                f"{path}: the file is one JSON array, not JSON lines (one object per line); "
                "convert it, e.g. jq -c '.[]' file.json > file.jsonl")
        raise DataQualityError(
            f"{path}: not JSON lines: none of its {scan.records} line(s) is a JSON object "
            "(is it CSV or another format? name the file .csv / .parquet)")
    scan.columns = [k for k in keys if k != LINE_COLUMN]
    return scan
