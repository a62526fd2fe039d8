"""What the manifest records so a run can be reproduced and checked: the content hash of every input and
output file, the software that ran. Reads files only (in blocks: memory stays flat); never note text.

- a file: `sha256` of its bytes and its size;
- a folder (of `.txt` notes or Parquet parts): `sha256` over one line `<name>\\0<sha256 of the file>\\n` per
  regular file, in name order, with the number of files and their total size;
- a database: the data cannot be hashed cheaply, so the fingerprint `pipeline.sql` already takes (the
  masked URL, the table, the `query_sha256` of the query text and the row count) stands for it;
- a Spark catalog table or a URI on distributed storage (`--engine spark`): not hashed (`sha256` null).
"""
from __future__ import annotations

import hashlib
import os
import platform
from importlib import metadata
from pathlib import Path

BLOCK = 1 << 20
PACKAGES = ("spacy", "medspacy", "numpy", "pandas", "pyarrow", "pyahocorasick", "duckdb", "sqlalchemy")


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(path: str | Path) -> tuple[str, int, int]:
    """(sha256 over the name and sha256 of each regular file, in name order; files; total bytes)."""
    digest = hashlib.sha256()
    files = size = 0
    for entry in sorted((e for e in os.scandir(path) if e.is_file()), key=lambda e: e.name):
        digest.update(f"{entry.name}\0{file_sha256(entry.path)}\n".encode("utf-8", "surrogateescape"))
        files += 1
        size += entry.stat().st_size
    return digest.hexdigest(), files, size


def input_content(spec, fingerprint: dict | None, records: int) -> dict:
    """An input's content hash and size (see the module docstring) and the records read from it."""
    fingerprint = fingerprint or {}
    if "database" in fingerprint:
        return {**fingerprint, "records": records}
    path = Path(spec)
    if "spark_table" in fingerprint or not path.exists():
        return {**fingerprint, "sha256": None, "records": records}
    if path.is_dir():
        sha256, files, size = folder_sha256(path)
        return {"sha256": sha256, "files": files, "bytes": size, "records": records}
    return {"sha256": file_sha256(path), "bytes": path.stat().st_size, "records": records}


def environment() -> dict:
    """The Python and the versions of the libraries whose behaviour decides the tables."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "packages": versions}
