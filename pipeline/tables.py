"""Readers and writers for the input and output tables. They know nothing about spaCy."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pandas as pd

PASSTHROUGH_NOTE_COLUMNS = ("patient_id", "note_date", "encounter_id")  # optional, copied to the notes table


class UsageError(ValueError):
    """A command-line value that cannot be used (unknown edition, bad date, ...)."""


class InputError(ValueError):
    """The input file cannot be read as a table of notes (the message never contains note text)."""


def _format_of(path: Path) -> str:
    if path.is_dir():
        return "txt"
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    formats = {".csv": "csv", ".csv.gz": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
               ".jsonl.gz": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
    if suffix not in formats:
        raise InputError(f"{path.name}: unknown input format {suffix!r} (use .csv, .jsonl, .parquet or a folder of .txt)")
    return formats[suffix]


def read_records(path: str | Path, columns: dict[str, str] | None = None) -> Iterator[dict]:
    """Rows of a CSV / JSONL / Parquet file, or one row per `.txt` file in a folder.

    `columns` maps our column names to the file's (e.g. {"text": "note_text"}).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    fmt = _format_of(path)
    rename = {theirs: ours for ours, theirs in (columns or {}).items()}
    if fmt == "txt":
        for file in sorted(path.glob("*.txt")):
            try:
                text = file.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                text = None
            yield {"note_id": file.stem, "text": text}
        return
    try:
        if fmt == "csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
        elif fmt == "jsonl":
            frame = pd.read_json(path, lines=True, dtype=False)
        else:
            frame = pd.read_parquet(path)
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise InputError(f"{path.name}: cannot be read as {fmt} ({type(err).__name__})") from None
    frame = frame.rename(columns=rename)
    for row in frame.to_dict(orient="records"):
        yield {k: (None if _is_missing(v) else v) for k, v in row.items()}


def _is_missing(value) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def write_table(frame: pd.DataFrame, out_dir: Path, name: str, fmt: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        path = out_dir / f"{name}.csv"
        frame.to_csv(path, index=False)
    else:
        path = out_dir / f"{name}.parquet"
        frame.to_parquet(path, index=False)
    return path


def write_json(data: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path
