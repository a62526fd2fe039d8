"""Streaming readers: one record (a dict) at a time from CSV, JSONL, Parquet or a folder of `.txt` files.

Memory stays flat whatever the size of the input: CSV is read in blocks of rows, JSONL line by line,
Parquet by record batches, a folder one file at a time. A record a reader cannot read (a malformed JSON
line, a CSV row with too many fields, a `.txt` file that is not UTF-8) comes out as a record with a
`READ_ERROR` reason instead of stopping the file. No message here ever contains note text.
"""
from __future__ import annotations

import gzip
import hashlib
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


class Source:
    """The records of one input, read lazily when iterated (once).

    `total`: the number of records when known up front (Parquet, a folder), else None.
    `fraction()`: how much of the input has been consumed (0–1), or None when unknown.
    `fingerprint`: what identifies the input (path, size, modification time) for resuming a run.
    """

    def __init__(self, records: Iterator[dict], total: int | None = None,
                 fraction: Callable[[], float | None] | None = None, fingerprint: dict | None = None):
        self._records = records
        self.total = total
        self._fraction = fraction
        self.fingerprint = fingerprint or {}

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
        raise InputError(f"{path.name}: unknown input format {suffix!r} "
                         f"(use .csv, .jsonl, .parquet, .csv.gz, .jsonl.gz or a folder of .txt or .parquet files)")
    return FORMATS[suffix]


def open_source(path: str | Path, columns: dict[str, str] | None = None, required: Iterable[str] = (),
                keep: Iterable[str] | None = None) -> Source:
    """A lazy `Source` over `path`.

    `columns` maps our column names to the file's (e.g. {"text": "note_text"}); `required` are our names
    that must be columns (checked now: `InputError` if one is missing); `keep` limits records to these
    of our names (None: every column).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    fmt = format_of(path)
    rename = Renamer(columns, keep)
    required = tuple(required)
    if fmt == "txt":
        return _txt_source(path)
    if fmt == "parquet":
        return _parquet_source(path, rename, required)
    if fmt == "csv":
        return _csv_source(path, rename, required)
    return _jsonl_source(path, rename, required)


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
        names = self.names(file_columns)
        missing = [r for r in required if r not in names.values()]
        if missing:
            hint = "; map it with --id-column / --text-column" if set(missing) & {"note_id", "text"} else ""
            raise InputError(f"{where}: no {' or '.join(repr(m) for m in missing)} column{hint}")
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


def _csv_source(path: Path, rename: Renamer, required: tuple[str, ...]) -> Source:
    raw, stream = _open_bytes(path)
    try:
        with stream:
            header = pd.read_csv(stream, nrows=0, dtype=str, encoding="utf-8").columns
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputError(f"{path.name}: cannot be read as csv ({type(err).__name__})") from None
    finally:
        raw.close()
    names = rename.check([str(c) for c in header], required, path.name)
    counter = _ByteCounter(path.stat().st_size)
    return Source(_csv_records(path, names, counter), fraction=counter, fingerprint=fingerprint(path))


def _csv_records(path: Path, names: dict[str, str], counter: _ByteCounter) -> Iterator[dict]:
    raw, stream = _open_bytes(path)
    counter.handle = raw
    with raw, stream:
        try:
            reader = pd.read_csv(stream, dtype=str, keep_default_na=False, na_values=[], chunksize=BLOCK_ROWS,
                                 on_bad_lines="warn", encoding="utf-8")
            while True:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", pd.errors.ParserWarning)
                    try:
                        block = next(reader)
                    except StopIteration:
                        block = None
                bad = [m for w in caught for m in _BAD_CSV_LINE.finditer(str(w.message))]
                if block is not None:  # (no usecols: with it, pandas drops a row's extra fields silently)
                    block = block[[c for c in block.columns if str(c) in names]].rename(columns=names)
                    yield from (_clean(row) for row in block.to_dict(orient="records"))
                for m in bad:  # after the good rows of the same block: deterministic, input-only
                    yield {"note_id": None, READ_ERROR: f"malformed CSV row (line {m[1]}: expected {m[2]} fields, "
                                                        f"saw {m[3]})"}
                if block is None:
                    return
        except (ValueError, OSError, pd.errors.ParserError) as err:
            raise InputError(f"{path.name}: cannot be read as csv ({_parser_problem(err)})") from None


def _parser_problem(err: Exception) -> str:
    """The kind of a parser error, with its line number when pandas gives one (never the row's content)."""
    line = re.search(r"\bline (\d+)", str(err))
    if isinstance(err, UnicodeDecodeError):
        return "not UTF-8 text"
    return type(err).__name__ + (f" at line {line[1]}" if line else "")


# ---------------------------------------------------------------- JSONL


def _jsonl_source(path: Path, rename: Renamer, required: tuple[str, ...]) -> Source:
    first = _first_json_object(path)
    if first is not None:
        rename.check(first.keys(), required, f"{path.name} (first record)")
    counter = _ByteCounter(path.stat().st_size)
    return Source(_jsonl_records(path, rename, counter), fraction=counter, fingerprint=fingerprint(path))


def _first_json_object(path: Path) -> dict | None:
    raw, stream = _open_bytes(path)
    try:
        with raw, stream:
            for line in stream:
                if line.strip():
                    try:
                        value = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(value, dict):
                        return value
    except (OSError, EOFError) as err:
        raise InputError(f"{path.name}: cannot be read as jsonl ({type(err).__name__})") from None
    return None


def _jsonl_records(path: Path, rename: Renamer, counter: _ByteCounter) -> Iterator[dict]:
    id_key = next((theirs for theirs, ours in rename.to_ours.items() if ours == "note_id"), "note_id")
    raw, stream = _open_bytes(path)
    counter.handle = raw
    with raw, stream:
        try:
            for line_no, line in enumerate(stream, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except ValueError:
                    yield {"note_id": _id_in_broken_json(line, id_key), READ_ERROR: f"malformed JSON (line {line_no})"}
                    continue
                if not isinstance(value, dict):
                    yield {"note_id": None, READ_ERROR: f"JSON line {line_no} is not an object"}
                    continue
                yield _clean(rename.record(value))
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
    return str(value) if str(value).strip() else None


# ---------------------------------------------------------------- Parquet


def _parquet_source(path: Path, rename: Renamer, required: tuple[str, ...]) -> Source:
    import pyarrow.parquet as pq

    files = sorted(p for p in path.iterdir() if p.suffix == ".parquet") if path.is_dir() else [path]
    total = 0
    for file in files:
        try:
            metadata = pq.read_metadata(file)
        except (OSError, ValueError) as err:
            raise InputError(f"{file.name}: cannot be read as parquet ({type(err).__name__})") from None
        rename.check(metadata.schema.names, required, file.name)
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
                  fingerprint=fingerprint(path))


# ---------------------------------------------------------------- a folder of .txt files


def _txt_source(path: Path) -> Source:
    names = sorted(e.name for e in os.scandir(path) if e.name.endswith(".txt") and e.is_file())
    if not names:
        raise InputError(f"{path}: a folder without .txt or .parquet files")
    done = [0]

    def records() -> Iterator[dict]:
        for name in names:
            done[0] += 1
            note_id = name[:-len(".txt")]
            try:
                text = (path / name).read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                yield {"note_id": note_id, READ_ERROR: "file is not UTF-8 text"}
                continue
            except OSError as err:
                yield {"note_id": note_id, READ_ERROR: f"file cannot be read ({type(err).__name__})"}
                continue
            yield {"note_id": note_id, "text": text}

    return Source(records(), total=len(names), fraction=lambda: done[0] / len(names), fingerprint=fingerprint(path))
