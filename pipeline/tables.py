"""Readers and writers for the input and output tables. They know nothing about spaCy.

Output tables have a fixed Arrow schema, so parts written by different processes (or an empty part)
join into one table: a part is one Parquet file written atomically; a published table is its parts in
order, one row group per part in Parquet, or appended in CSV.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import pandas as pd

PASSTHROUGH_NOTE_COLUMNS = ("patient_id", "note_date", "encounter_id")  # optional, copied to the notes table


class UsageError(ValueError):
    """A command-line value that cannot be used (unknown edition, bad date, ...)."""


class InputError(ValueError):
    """The input file cannot be read as a table of notes (the message never contains note text)."""


def read_records(path: str | Path, columns: dict[str, str] | None = None) -> Iterator[dict]:
    """Rows of a CSV / JSONL / Parquet file (or folder of Parquet parts), or one row per `.txt` file in a
    folder, read lazily. `columns` maps our column names to the file's (e.g. {"text": "note_text"})."""
    from .sources import open_source

    return iter(open_source(path, columns))


# ---------------------------------------------------------------- schemas

_ARROW_TYPES = {"str": "string", "int": "int64", "bool": "bool", "float": "float64"}


def arrow_schema(fields: Sequence[str], types: Mapping[str, str] | None = None):
    """An Arrow schema of `fields`; `types` gives "int" / "bool" / "float" per field (default "str")."""
    import pyarrow as pa

    return pa.schema([(name, pa.type_for_alias(_ARROW_TYPES[(types or {}).get(name, "str")])) for name in fields])


def to_arrow(rows: Sequence[Mapping], schema):
    """`rows` as an Arrow table of `schema`: missing keys are null, strings are made of dates and numbers."""
    import pyarrow as pa

    arrays = []
    for field in schema:
        values = [row.get(field.name) for row in rows]
        if pa.types.is_string(field.type):
            values = [_as_text(v) for v in values]
        elif pa.types.is_boolean(field.type):
            values = [None if _missing(v) else bool(v) for v in values]
        elif pa.types.is_integer(field.type):
            values = [None if _missing(v) else int(v) for v in values]
        arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _as_text(value) -> str | None:
    if isinstance(value, str) or value is None:
        return value
    if _missing(value) or value is pd.NaT:
        return None
    if isinstance(value, (dt.datetime, dt.date)):  # pandas Timestamps too
        return value.isoformat()
    return str(value)


# ---------------------------------------------------------------- writing


def write_part(table, path: Path) -> Path:
    """One Parquet part, atomically: written under a temporary name, then renamed."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def read_parts(paths: Iterable[Path], schema=None) -> Iterator:
    """The Arrow tables of Parquet parts, in order (read as `schema` when given)."""
    import pyarrow.parquet as pq

    for path in paths:
        yield pq.read_table(path, schema=schema)


class TableWriter:
    """One output table written piece by piece (`write` Arrow tables of one schema), published atomically
    by `close()` as DIR/NAME.parquet (one row group per piece) or DIR/NAME.csv."""

    def __init__(self, out_dir: Path, name: str, fmt: str, schema):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / f"{name}.{'csv' if fmt == 'csv' else 'parquet'}"
        self.tmp = out_dir / f".{self.path.name}.{os.getpid()}.tmp"
        self.fmt, self.schema, self.rows = fmt, schema, 0
        if fmt == "csv":
            self._file = open(self.tmp, "w", encoding="utf-8", newline="")
            pd.DataFrame(columns=list(schema.names)).to_csv(self._file, index=False)
        else:
            import pyarrow.parquet as pq

            self._file = pq.ParquetWriter(self.tmp, schema)

    def write(self, table) -> None:
        if self.fmt == "csv":
            if table.num_rows:
                frame = table.to_pandas(integer_object_nulls=True)
                frame.to_csv(self._file, index=False, header=False)
        else:
            self._file.write_table(table.cast(self.schema))
        self.rows += table.num_rows

    def close(self) -> Path:
        self._file.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def private_files(private: bool = True) -> Iterator[None]:
    """While the block runs, every file and folder this process (and the worker processes and programs it
    starts) creates is readable by its owner only: the umask also masks the group and other bits (0o077),
    so pyarrow, pandas, DuckDB and Spark create them so, with no moment when they are readable by others.
    `private=False` leaves the user's umask alone (which then decides, as for any Unix program)."""
    if not private:
        yield
        return
    old = os.umask(0o077)
    os.umask(old | 0o077)
    try:
        yield
    finally:
        os.umask(old)


def write_json(data: dict, path: Path) -> Path:
    """`data` as indented JSON, atomically (a reader never sees half a file)."""
    return write_text(json.dumps(data, indent=2, default=str) + "\n", path)


def write_text(text: str, path: Path) -> Path:
    """`text` as a UTF-8 file, atomically: written under a temporary name in the same folder (made if
    missing), then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
