"""The batch job: notes in, findings / notes / errors tables and a manifest out.

A thin shell around per-note extraction: every input note ends in the notes table or in the
errors table with a reason, and no note text ever reaches an error message.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd

from . import __version__
from .extract import Extractor
from .findings import FINDING_FIELDS
from .summary import SUMMARY_FIELDS
from .tables import PASSTHROUGH_NOTE_COLUMNS, read_records, write_json, write_table

AUDIT_NOTE_FIELDS = ("scenarios", "urgency", "recommended", "rationale")
NOTE_TABLE_FIELDS = (*SUMMARY_FIELDS, *PASSTHROUGH_NOTE_COLUMNS, *AUDIT_NOTE_FIELDS)
ERROR_FIELDS = ("note_id", "reason")
TEXT_FIELDS = ("text", "cue")


def validate_notes(records: Iterable[dict], errors: list[dict]) -> Iterator[dict]:
    """Pass on well-formed notes; record every other one in `errors` with a reason."""
    seen: set[str] = set()
    for row_number, record in enumerate(records, 1):
        note_id = record.get("note_id")
        if note_id is None or str(note_id).strip() == "":
            errors.append({"note_id": f"row:{row_number}", "reason": "missing note_id"})
            continue
        note_id = str(note_id)
        text = record.get("text")
        if note_id in seen:
            errors.append({"note_id": note_id, "reason": "duplicate note_id (first occurrence kept)"})
            continue
        seen.add(note_id)
        if not isinstance(text, str):
            reason = "missing text" if text is None else f"text is not a string ({type(text).__name__})"
            errors.append({"note_id": note_id, "reason": reason})
            continue
        if not text.strip():
            errors.append({"note_id": note_id, "reason": "empty text"})
            continue
        yield {**record, "note_id": note_id}


def run(notes_path: str | Path, out_dir: str | Path, fmt: str = "parquet", columns: dict | None = None,
        snippets: bool = True, extractor: Extractor | None = None) -> dict:
    """Extract findings from every note of `notes_path` and write the tables to `out_dir`."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    extractor = extractor or Extractor()
    errors: list[dict] = []
    extras: dict[str, dict] = {}
    notes_read = Counter()

    def texts():
        for record in validate_notes(_counted(read_records(notes_path, columns), notes_read), errors):
            extras[record["note_id"]] = {k: record.get(k) for k in PASSTHROUGH_NOTE_COLUMNS}
            yield record["note_id"], record["text"]

    finding_rows, note_rows = [], []
    for result in extractor.pipe(texts()):
        finding_rows.extend(f.as_row() for f in result.findings)
        note_rows.append({**result.summary, **extras.pop(result.note_id, {}),
                          **dict.fromkeys(AUDIT_NOTE_FIELDS)})
    findings = pd.DataFrame(finding_rows, columns=list(FINDING_FIELDS))
    if not snippets:
        findings = findings.drop(columns=list(TEXT_FIELDS))
    notes = pd.DataFrame(note_rows, columns=list(NOTE_TABLE_FIELDS))
    error_table = pd.DataFrame(errors, columns=list(ERROR_FIELDS))
    paths = {name: str(write_table(frame, out_dir, name, fmt))
             for name, frame in (("findings", findings), ("notes", notes), ("errors", error_table))}
    manifest = {
        "tool": "lbp-audit",
        "version": __version__,
        "pipeline": extractor.nlp.meta.get("lbp_pipeline"),
        "rules_digest": extractor.rules.digest,
        "inputs": {"notes": str(notes_path)},
        "format": fmt,
        "counts": {"notes_read": notes_read["n"], "notes_written": len(notes), "errors": len(error_table),
                   "findings": len(findings)},
        "outputs": paths,
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json(manifest, out_dir / "manifest.json")
    return manifest


def _counted(records: Iterable[dict], counter: Counter) -> Iterator[dict]:
    for record in records:
        counter["n"] += 1
        yield record
