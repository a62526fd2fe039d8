"""Per-note extraction: text → `Doc` → findings → summary. No I/O here."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .findings import Finding, findings_from_doc
from .nlp import build
from .rules import RuleSet, load_rules
from .summary import summarise


@dataclass(frozen=True)
class NoteResult:
    note_id: str
    findings: tuple[Finding, ...]
    summary: dict


class Extractor:
    """Builds the pipeline once; `extract` one note or `pipe` many."""

    def __init__(self, rules: RuleSet | None = None, rules_dir: str | Path | None = None):
        self.rules = rules or load_rules(rules_dir)
        self.nlp = build(self.rules)

    def extract(self, text: str, note_id: str = "note") -> NoteResult:
        return next(self.pipe([(note_id, text)]))

    def pipe(self, notes: Iterable[tuple[str, str]], batch_size: int = 64) -> Iterator[NoteResult]:
        """(note_id, text) pairs in, results out in the same order. Only the sentences that hold a
        target match are tokenised and run through ConText (see `windows.py`)."""
        scanner = self.nlp.get_pipe("lbp_windows").scanner

        def docs():
            for note_id, text in notes:
                window = scanner.prepare(text)
                doc = self.nlp.make_doc(window.reduced)
                doc.user_data["lbp_window"] = window
                yield doc, (note_id, text)

        for doc, (note_id, text) in self.nlp.pipe(docs(), as_tuples=True, batch_size=batch_size):
            yield self.result(doc, note_id, text)

    def doc(self, text: str):
        """The processed spaCy `Doc` of the whole text (for notebooks and visualisation)."""
        return self.nlp(text)

    @staticmethod
    def result(doc, note_id: str, text: str) -> NoteResult:
        """The findings and summary of a processed `Doc` of `text` (from `pipe` or `doc`)."""
        findings = tuple(findings_from_doc(doc, note_id))
        return NoteResult(note_id, findings, summarise(note_id, text, list(findings)))
