"""The annotated corpus: gold notes (note level, and mention level for a subset). Read-only input."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .labels import ASSERTIONS, LABELS, LATERALITIES, STATUSES
from .rules import ProblemsError, packaged_dir


class CorpusError(ProblemsError):
    subject = "the corpus"


@dataclass(frozen=True)
class GoldMention:
    label: str
    assertion: str
    start: int
    end: int
    laterality: str | None = None


@dataclass
class GoldNote:
    note_id: str
    text: str
    note_type: str | None
    labels: dict[str, str]
    gold: dict
    mentions: list[GoldMention] | None = None
    orders: list[dict] = field(default_factory=list)
    traps: list[str] = field(default_factory=list)
    patient_id: str | None = None
    note_date: str | None = None


def default_corpus_dir() -> Path:
    return packaged_dir("corpora", "pipeline.corpora") / "lbp"


def load_corpus(path: str | Path | None = None) -> list[GoldNote]:
    """Every `*.jsonl` under `path` (default: the project's corpus), validated; all problems at once."""
    root = Path(path) if path else default_corpus_dir()
    files = [root] if root.is_file() else sorted(root.rglob("*.jsonl"))
    if not files:
        raise CorpusError([f"{root}: no .jsonl files"])
    problems: list[str] = []
    notes: list[GoldNote] = []
    seen: set[str] = set()
    for file in files:
        for line_no, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{file.name}:{line_no}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                problems.append(f"{where}: invalid JSON ({err.msg})")
                continue
            note = _gold_note(record, where, problems)
            if note is None:
                continue
            if note.note_id in seen:
                problems.append(f"{where}: duplicate note_id {note.note_id}")
            seen.add(note.note_id)
            notes.append(note)
    if problems:
        raise CorpusError(problems)
    return notes


def _gold_note(record: dict, where: str, problems: list[str]) -> GoldNote | None:
    before = len(problems)
    note_id, text = record.get("note_id"), record.get("text")
    if not note_id or not isinstance(text, str) or not text.strip():
        problems.append(f"{where}: note_id and text are required")
        return None
    gold = record.get("gold") or {}
    labels = gold.get("labels") or {}
    for label, status in labels.items():
        if label not in LABELS:
            problems.append(f"{where} {note_id}: unknown label {label}")
        if status not in STATUSES:
            problems.append(f"{where} {note_id}: bad status {label}={status}")
    mentions = None
    if record.get("mentions") is not None:
        mentions = []
        for m in record["mentions"]:
            occurrence = m.get("occurrence", 1)
            start = -1
            for _ in range(occurrence):
                start = text.find(m.get("text", "\0"), start + 1)
                if start < 0:
                    break
            if start < 0 or not m.get("text"):
                problems.append(f"{where} {note_id}: mention {m.get('label')} not found at occurrence {occurrence}")
                continue
            if m.get("label") not in LABELS or m.get("assertion") not in ASSERTIONS:
                problems.append(f"{where} {note_id}: mention label/assertion invalid")
                continue
            if m.get("laterality") not in (None, *LATERALITIES):
                problems.append(f"{where} {note_id}: mention laterality invalid")
                continue
            mentions.append(GoldMention(m["label"], m["assertion"], start, start + len(m["text"]), m.get("laterality")))
    if len(problems) != before:
        return None
    return GoldNote(
        note_id=str(note_id), text=text, note_type=record.get("note_type"), labels=dict(labels), gold=gold,
        mentions=mentions, orders=list(record.get("orders") or []), traps=list(record.get("traps") or []),
        patient_id=record.get("patient_id"), note_date=record.get("note_date"),
    )
