"""Streaming readers: one record (a dict) at a time from CSV, JSONL, Parquet or a folder of `.txt` files.

Memory stays flat whatever the size of the input: CSV is read in blocks of rows, JSONL line by line,
Parquet by record batches, a folder one file at a time. A record a reader cannot read (a malformed JSON
line, a CSV row with too many fields, a row or `.txt` file that is not valid in the input's encoding)
comes out as a record with a `READ_ERROR` reason instead of stopping the file; a file that cannot be a
table at all (empty, UTF-16, no header, an unterminated quote) is an `InputError`. NUL characters are
read as spaces (one for one, so offsets are unchanged: pandas' CSV parser would end a field at a NUL).
No message here ever contains note text.
"""
from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
import os
import re
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pandas as pd

from .tables import InputError

READ_ERROR = "_read_error"  # key of a record the reader could not read; its value is the reason
BLOCK_ROWS = 2_000  # rows per CSV block / Parquet batch (fixed: chunking never depends on it)
FORMATS = {".csv": "csv", ".csv.gz": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
           ".jsonl.gz": "jsonl", ".ndjson.gz": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_BAD_CSV_LINE = re.compile(r"Skipping line (\d+): expected (\d+) fields, saw (\d+)")
_SURROGATE = re.compile("[\ud800-\udfff]")  # an undecodable byte (surrogateescape) or a lone surrogate
_COLUMN_NAME = re.compile(r"[A-Za-z_][\w.#-]{0,39}")  # what a column name looks like (shown in messages)
_UTF16_32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
DEFAULT_ENCODING = "utf-8"


class Source:
    """The records of one input, read lazily when iterated (once).

    `total`: the number of records when known up front (Parquet, a folder), else None.
    `fraction()`: how much of the input has been consumed (0–1), or None when unknown.
    `fingerprint`: what identifies the input (path, size, modification time) for resuming a run.
    `columns`: our names of the input's columns when known up front (a header, a schema, the first JSON
    object), else None.
    """

    def __init__(self, records: Iterator[dict], total: int | None = None,
                 fraction: Callable[[], float | None] | None = None, fingerprint: dict | None = None,
                 columns: list[str] | None = None):
        self._records = records
        self.total = total
        self._fraction = fraction
        self.fingerprint = fingerprint or {}
        self.columns = columns

    def __iter__(self) -> Iterator[dict]:
        return self._records

    def fraction(self) -> float | None:
        return self._fraction() if self._fraction else None


def format_of(path: Path) -> str:
    """csv / jsonl / parquet, or txt for a folder of `.txt` files (parquet for a folder of `.parquet` parts)."""
    if path.is_dir():
        return "parquet" if any(p.suffix == ".parquet" for p in path.iterdir()) else "txt"
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"{path.name}: unknown input format {repr(suffix) if suffix else '(no file extension)'} "
                         f"(use .csv, .jsonl, .parquet, .csv.gz, .jsonl.gz or a folder of .txt or .parquet files)")
    return FORMATS[suffix]


def open_source(path: str | Path, columns: dict[str, str] | None = None, required: Iterable[str] = (),
                keep: Iterable[str] | None = None, encoding: str = DEFAULT_ENCODING) -> Source:
    """A lazy `Source` over `path`.

    `columns` maps our column names to the file's (e.g. {"text": "note_text"}); `required` are our names
    that must be columns (checked now: `InputError` if one is missing); `keep` limits records to these
    of our names (None: every column); `encoding` is that of CSV, JSONL and `.txt` input (an ASCII-compatible
    one: utf-8, cp1252, latin-1, ...): a row not valid in it becomes a `READ_ERROR` record.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    fmt = format_of(path)
    encoding = check_encoding(encoding)
    if not path.is_dir():
        _check_start(path, fmt)
    rename = Renamer(columns, keep)
    required = tuple(required)
    if fmt == "txt":
        return _txt_source(path, encoding)
    if fmt == "parquet":
        return _parquet_source(path, rename, required)
    if fmt == "csv":
        return _csv_source(path, rename, required, encoding)
    return _jsonl_source(path, rename, required, encoding)


def check_encoding(encoding: str | None) -> str:
    """The codec name of `encoding` (None: UTF-8); `InputError` unless it is a known encoding in which the
    ASCII characters are single bytes as in UTF-8 (lines and separators can then be found in the bytes)."""
    try:
        name = codecs.lookup(encoding or DEFAULT_ENCODING).name
    except LookupError:
        raise InputError(f"--encoding {encoding}: unknown encoding (e.g. utf-8, cp1252, latin-1)") from None
    if name == "utf-8-sig":
        name = "utf-8"
    if "\n,\"{}:".encode(name, errors="replace") != b'\n,"{}:':
        raise InputError(f"--encoding {encoding}: not supported (save the file as UTF-8, or use an encoding "
                         f"such as cp1252 or latin-1)")
    return name


def encoding_name(encoding: str) -> str:
    """How messages name an encoding: UTF-8, cp1252, ..."""
    return "UTF-8" if encoding == "utf-8" else encoding


def undecodable(err: UnicodeDecodeError, encoding: str, where: str = "") -> str:
    """The reason for bytes not valid in `encoding`: the first bad byte and its offset (never the text)."""
    return (f"not valid {encoding_name(encoding)} ({where}byte 0x{err.object[err.start]:02X} at offset "
            f"{err.start})")


def unreadable_field(record: dict, encoding: str, escaped: bool = True) -> str | None:
    """The reason when a string of `record` holds a byte its encoding could not decode (read with
    surrogateescape when `escaped`) or a lone surrogate (a JSON escape such as \\ud800), else None."""
    for key, value in record.items():
        if isinstance(value, str) and (match := _SURROGATE.search(value)):
            code = ord(match.group())
            if escaped and 0xDC80 <= code <= 0xDCFF:
                return (f"not valid {encoding_name(encoding)} (byte 0x{code - 0xDC00:02X} in {key} at character "
                        f"{match.start()})")
            return f"not valid Unicode (lone surrogate in {key} at character {match.start()})"
    return None


def _check_start(path: Path, fmt: str) -> None:
    """`InputError` for an empty file or a UTF-16 / UTF-32 one (its byte order mark)."""
    if path.stat().st_size == 0:
        raise InputError(f"{path.name}: empty file (no header and no records)")
    if fmt in ("csv", "jsonl") and path.suffix.lower() != ".gz":
        try:
            with open(path, "rb") as handle:
                head = handle.read(4)
        except OSError as err:
            raise InputError(f"{path.name}: cannot be read ({err.strerror or type(err).__name__})") from None
        if head.startswith(_UTF16_32_BOMS):
            raise InputError(f"{path.name}: UTF-16 or UTF-32 text (it starts with that byte order mark); "
                             f"save it as UTF-8")


def shown_columns(names: Iterable[str], limit: int = 12) -> str:
    """'columns found: ...' for a message. Only names that look like column names are shown: a file
    without a header line has note text for 'names', which must never reach a message."""
    names = [str(n) for n in names]
    shown = [n for n in names if _COLUMN_NAME.fullmatch(n)]
    hidden = len(names) - len(shown)
    if not shown:
        return (f"columns found: {len(names)}, none named like a column: is the header line missing, or is it "
                f"not a CSV file?")
    text = ", ".join(shown[:limit]) + (f" and {len(shown) - limit} more" if len(shown) > limit else "")
    return f"columns found: {text}" + (f" and {hidden} not named like a column: is the header line missing?"
                                       if hidden else "")


def fingerprint(path: str | Path) -> dict:
    """Path, size and modification time of a file; for a folder, a digest of its files' names, sizes and times."""
    path = Path(path)
    stat = path.stat()
    if not path.is_dir():
        return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    digest = hashlib.sha256()
    files = 0
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_file():
            info = entry.stat()
            digest.update(f"{entry.name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
            files += 1
    return {"path": str(path.resolve()), "files": files, "listing_sha256": digest.hexdigest()}


class Renamer:
    """Applies a column mapping to records: the file's names → ours, keeping only `keep` when given."""

    def __init__(self, columns: dict[str, str] | None, keep: Iterable[str] | None = None):
        self.to_ours = {theirs: ours for ours, theirs in (columns or {}).items() if theirs}
        self.replaced = set(self.to_ours.values()) - set(self.to_ours)  # our names that another column now fills
        self.keep = set(keep) if keep is not None else None

    def name(self, theirs: str) -> str | None:
        """Our name for a file column, or None when it is not kept."""
        if theirs in self.replaced:
            return None
        ours = self.to_ours.get(theirs, theirs)
        return ours if self.keep is None or ours in self.keep else None

    def names(self, file_columns: Iterable[str]) -> dict[str, str]:
        return {c: ours for c in file_columns if (ours := self.name(str(c))) is not None}

    def check(self, file_columns: Iterable[str], required: tuple[str, ...], where: str) -> dict[str, str]:
        file_columns = [str(c) for c in file_columns]
        names = self.names(file_columns)
        missing = [r for r in required if r not in names.values()]
        if missing:
            options = [option for ours, option in (("note_id", "--id-column"), ("text", "--text-column"))
                       if ours in missing]
            hint = f"; map it with {' / '.join(options)} NAME" if options else ""
            raise InputError(f"{where}: no {' or '.join(repr(m) for m in missing)} column "
                             f"({shown_columns(file_columns)}){hint}")
        return names

    def record(self, row: dict) -> dict:
        return {ours: row[theirs] for theirs, ours in self.names(row).items()}


def _is_missing(value) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _clean(record: dict) -> dict:
    return {k: (None if _is_missing(v) else v) for k, v in record.items()}


class _ByteCounter:
    """The fraction of a file consumed, from the position of its (compressed) byte stream."""

    def __init__(self, size: int):
        self.size = size
        self.handle = None

    def __call__(self) -> float | None:
        if not self.size or self.handle is None:
            return None
        return 1.0 if self.handle.closed else min(1.0, self.handle.tell() / self.size)


def _open_bytes(path: Path):
    raw = open(path, "rb")
    if path.suffix.lower() == ".gz":
        return raw, gzip.GzipFile(fileobj=raw, mode="rb")
    return raw, raw


# ---------------------------------------------------------------- CSV


def _csv_source(path: Path, rename: Renamer, required: tuple[str, ...], encoding: str) -> Source:
    raw, stream = _open_bytes(path)
    try:
        with stream:
            header = pd.read_csv(_nul_as_space(stream), nrows=0, dtype=str, encoding=encoding,
                                 encoding_errors="surrogateescape").columns
    except pd.errors.EmptyDataError:
        raise InputError(f"{path.name}: empty file (no header and no records)") from None
    except (ValueError, OSError, EOFError, pd.errors.ParserError) as err:
        raise InputError(f"{path.name}: cannot be read as csv ({_parser_problem(err)})") from None
    finally:
        raw.close()
    header = [str(c).strip() for c in header]  # ' note_id ' is note_id
    _check_separator(header, rename, required, path)
    names = rename.check(header, required, path.name)
    counter = _ByteCounter(path.stat().st_size)
    return Source(_csv_records(path, names, counter, encoding), fraction=counter, fingerprint=fingerprint(path),
                  columns=list(names.values()))


def _check_separator(header: list[str], rename: Renamer, required: tuple[str, ...], path: Path) -> None:
    """`InputError` for a file separated by semicolons, tabs or bars: one 'column' that holds every name."""
    if len(header) != 1:
        return
    for sep, word in ((";", "semicolons"), ("\t", "tabs"), ("|", "'|'")):
        split = [c.strip() for c in header[0].split(sep)]
        if len(split) > 1 and all(r in rename.names(split).values() for r in required):
            raise InputError(f"{path.name}: separated by {word}, not commas; save it as comma-separated CSV")


class _NulAsSpace(io.RawIOBase):
    """A byte stream whose NUL bytes read as spaces: pandas' C parser ends a field at a NUL and silently
    drops the rest of it. One byte for one, so every offset into the text is unchanged."""

    def __init__(self, stream):
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.stream.read(len(buffer))
        buffer[:len(data)] = data.replace(b"\0", b" ")
        return len(data)


def _nul_as_space(stream) -> io.BufferedReader:
    return io.BufferedReader(_NulAsSpace(stream), buffer_size=1 << 16)


def _csv_records(path: Path, names: dict[str, str], counter: _ByteCounter, encoding: str) -> Iterator[dict]:
    raw, stream = _open_bytes(path)
    counter.handle = raw
    with raw, stream:
        try:
            reader = pd.read_csv(_nul_as_space(stream), dtype=str, keep_default_na=False, na_values=[],
                                 chunksize=BLOCK_ROWS, on_bad_lines="warn", encoding=encoding,
                                 encoding_errors="surrogateescape")
            while True:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", pd.errors.ParserWarning)
                    try:
                        block = next(reader)
                    except StopIteration:
                        block = None
                bad = [m for w in caught for m in _BAD_CSV_LINE.finditer(str(w.message))]
                if block is not None:  # (no usecols: with it, pandas drops a row's extra fields silently)
                    block.columns = [str(c).strip() for c in block.columns]
                    block = block[[c for c in block.columns if c in names]].rename(columns=names)
                    for row in block.to_dict(orient="records"):
                        reason = unreadable_field(row, encoding)
                        yield _clean(row) if reason is None else {"note_id": _readable_id(row), READ_ERROR: reason}
                for m in bad:  # after the good rows of the same block: deterministic, input-only
                    yield {"note_id": None, READ_ERROR: f"malformed CSV row (line {m[1]}: expected {m[2]} fields, "
                                                        f"saw {m[3]})"}
                if block is None:
                    return
        except (ValueError, OSError, EOFError, pd.errors.ParserError) as err:
            raise InputError(f"{path.name}: cannot be read as csv ({_parser_problem(err)})") from None


def _readable_id(record: dict) -> str | None:
    """A record's note_id when it can be written (no undecodable byte in it), else None."""
    note_id = record.get("note_id")
    return None if isinstance(note_id, str) and _SURROGATE.search(note_id) else note_id


def _parser_problem(err: Exception) -> str:
    """The kind of a parser error, with its line or record number when pandas gives one (never the row's
    content)."""
    message = str(err)
    if quote := re.search(r"EOF inside string starting at row (\d+)", message):
        return f"unterminated quoted field starting in record {quote[1]}"
    if isinstance(err, UnicodeDecodeError):
        return "not UTF-8 text"
    line = re.search(r"\bline (\d+)", message)
    return type(err).__name__ + (f" at line {line[1]}" if line else "")


# ---------------------------------------------------------------- JSONL


def _jsonl_source(path: Path, rename: Renamer, required: tuple[str, ...], encoding: str) -> Source:
    if _is_json_document(path):
        return _json_document_source(path, rename, required, encoding)
    first = _first_json_object(path, encoding)
    if first is not None:
        rename.check(first.keys(), required, f"{path.name} (first record)")
    counter = _ByteCounter(path.stat().st_size)
    return Source(_jsonl_records(path, rename, counter, encoding), fraction=counter, fingerprint=fingerprint(path),
                  columns=list(rename.names(first).values()) if first is not None else None)


def _is_json_document(path: Path) -> bool:
    """Whether the file is one JSON document rather than JSON Lines: its first line that is not blank opens
    an array (`[...]`) or is a lone `{` (a pretty-printed object)."""
    raw, stream = _open_bytes(path)
    try:
        with raw, stream:
            line = next((line for _, line in _json_lines(stream)), b"")
    except (OSError, EOFError):
        return False  # the JSON Lines reader reports it
    return line.lstrip().startswith(b"[") or line.strip() == b"{"


def _json_document_source(path: Path, rename: Renamer, required: tuple[str, ...], encoding: str) -> Source:
    """A JSON array of note objects (or one object), read whole: each item is a record, an item that is not
    an object a `READ_ERROR` record."""
    raw, stream = _open_bytes(path)
    try:
        with raw, stream:
            data = stream.read()
        value = json.loads(data.removeprefix(codecs.BOM_UTF8).decode(encoding))
    except UnicodeDecodeError as err:
        raise InputError(f"{path.name}: {undecodable(err, encoding)}") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path.name}: malformed JSON document (line {err.lineno}, column {err.colno}: "
                         f"{err.msg}); lbp-audit reads JSON Lines or a JSON array of objects") from None
    except (OSError, EOFError) as err:
        raise InputError(f"{path.name}: cannot be read as json ({type(err).__name__})") from None
    items = value if isinstance(value, list) else [value]
    first = next((item for item in items if isinstance(item, dict)), None)
    if first is not None:
        rename.check(first.keys(), required, f"{path.name} (first object)")
    done = [0]

    def records() -> Iterator[dict]:
        for number, item in enumerate(items, 1):
            done[0] = number
            yield _json_record(item, rename, encoding, f"item {number}")

    return Source(records(), total=len(items), fraction=lambda: done[0] / len(items) if items else None,
                  fingerprint=fingerprint(path), columns=list(rename.names(first).values()) if first else None)


def _json_record(value, rename: Renamer, encoding: str, where: str) -> dict:
    """One decoded JSON value as a record in our column names, or an error record when it is not an object
    or a field cannot be read (`where`: "line N" / "item N")."""
    if not isinstance(value, dict):
        return {"note_id": None, READ_ERROR: f"not a JSON object ({where})"}
    record = rename.record(value)
    reason = unreadable_field(record, encoding, escaped=False)
    return _clean(record) if reason is None else {"note_id": _readable_id(record), READ_ERROR: reason}


def _json_lines(stream) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of every line that is not blank, a UTF-8 byte order mark before the first removed."""
    for line_no, line in enumerate(stream, 1):
        if line_no == 1 and line.startswith(codecs.BOM_UTF8):
            line = line[len(codecs.BOM_UTF8):]
        if line.strip():
            yield line_no, line


def _first_json_object(path: Path, encoding: str) -> dict | None:
    """The first line that is a JSON object (its keys name the columns); `InputError` when the file has
    no line that is not blank."""
    raw, stream = _open_bytes(path)
    seen = False
    try:
        with raw, stream:
            for _, line in _json_lines(stream):
                seen = True
                try:
                    value = json.loads(line.decode(encoding, errors="replace"))
                except ValueError:
                    continue
                if isinstance(value, dict):
                    return value
    except (OSError, EOFError) as err:
        raise InputError(f"{path.name}: cannot be read as jsonl ({type(err).__name__})") from None
    if not seen:
        raise InputError(f"{path.name}: empty file (no records)")
    return None


def _jsonl_records(path: Path, rename: Renamer, counter: _ByteCounter, encoding: str) -> Iterator[dict]:
    id_key = next((theirs for theirs, ours in rename.to_ours.items() if ours == "note_id"), "note_id")
    raw, stream = _open_bytes(path)
    counter.handle = raw
    with raw, stream:
        try:
            for line_no, line in _json_lines(stream):
                try:
                    value = json.loads(line.decode(encoding))
                except UnicodeDecodeError as err:
                    yield {"note_id": _id_in_broken_json(line, id_key),
                           READ_ERROR: undecodable(err, encoding, f"line {line_no}, ")}
                    continue
                except ValueError:
                    yield {"note_id": _id_in_broken_json(line, id_key), READ_ERROR: f"malformed JSON (line {line_no})"}
                    continue
                yield _json_record(value, rename, encoding, f"line {line_no}")
        except (OSError, EOFError) as err:
            raise InputError(f"{path.name}: cannot be read as jsonl ({type(err).__name__})") from None


def _id_in_broken_json(line: bytes, key: str) -> str | None:
    """The note id of a malformed JSON line, when it can still be read; else None."""
    match = re.search(rb'"' + re.escape(key.encode()) + rb'"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+)', line)
    if not match:
        return None
    try:
        value = json.loads(match[1])
    except ValueError:
        return None
    return str(value) if str(value).strip() and not _SURROGATE.search(str(value)) else None


# ---------------------------------------------------------------- Parquet


def _parquet_source(path: Path, rename: Renamer, required: tuple[str, ...]) -> Source:
    import pyarrow.parquet as pq

    files = sorted(p for p in path.iterdir() if p.suffix == ".parquet") if path.is_dir() else [path]
    total, columns = 0, None
    for file in files:
        try:
            metadata = pq.read_metadata(file)
        except (OSError, ValueError) as err:
            raise InputError(f"{file.name}: cannot be read as parquet ({type(err).__name__})") from None
        names = rename.check(metadata.schema.names, required, file.name)
        columns = columns or list(names.values())
        total += metadata.num_rows
    done = [0]

    def records() -> Iterator[dict]:
        for file in files:
            parquet = pq.ParquetFile(file)
            names = rename.names(parquet.schema_arrow.names)
            try:
                for batch in parquet.iter_batches(batch_size=BLOCK_ROWS, columns=list(names), use_threads=False):
                    for row in batch.to_pylist():
                        done[0] += 1
                        yield _clean({names[k]: v for k, v in row.items()})
            except (OSError, ValueError) as err:
                raise InputError(f"{file.name}: cannot be read as parquet ({type(err).__name__})") from None

    return Source(records(), total=total, fraction=lambda: done[0] / total if total else None,
                  fingerprint=fingerprint(path), columns=columns)


# ---------------------------------------------------------------- a folder of .txt files


def _txt_source(path: Path, encoding: str) -> Source:
    names = sorted(e.name for e in os.scandir(path) if e.name.endswith(".txt") and e.is_file())
    if not names:
        raise InputError(f"{path}: a folder without .txt or .parquet files")
    done = [0]
    codec = "utf-8-sig" if encoding == "utf-8" else encoding  # a byte order mark is not part of the note

    def records() -> Iterator[dict]:
        for name in names:
            done[0] += 1
            note_id = name[:-len(".txt")]
            if _SURROGATE.search(note_id):
                yield {"note_id": None, READ_ERROR: "file name is not valid UTF-8"}
                continue
            try:
                text = (path / name).read_bytes().decode(codec)
            except UnicodeDecodeError as err:
                yield {"note_id": note_id, READ_ERROR: undecodable(err, encoding)}
                continue
            except OSError as err:
                yield {"note_id": note_id, READ_ERROR: f"file cannot be read ({type(err).__name__})"}
                continue
            yield {"note_id": note_id, "text": text}

    return Source(records(), total=len(names), fraction=lambda: done[0] / len(names), fingerprint=fingerprint(path))
