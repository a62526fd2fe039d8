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
from .audit import (AUDIT_FIELDS, DEFAULT_WINDOW_DAYS, UNMATCHED_FIELDS, NoteRef, Order, audit, missed_row,
                    needs_imaging, note_rationale, parse_date, text_or_none)
from .extract import Extractor
from .findings import FINDING_FIELDS
from .scenarios import Edition, Recommendation, choose_edition, recommend
from .summary import SUMMARY_FIELDS, evidence_by_label
from .tables import PASSTHROUGH_NOTE_COLUMNS, read_records, write_json, write_table

AUDIT_NOTE_FIELDS = ("scenarios", "urgency", "recommended", "rationale", "edition")
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


def note_audit_fields(result, extra: dict, editions, forced_edition=None, parameters=None,
                      evidence: dict | None = None) -> tuple[dict, Recommendation | None, Edition | None]:
    """The notes table's scenarios / urgency / recommended / rationale / edition columns for one note."""
    if not editions:
        return dict.fromkeys(AUDIT_NOTE_FIELDS), None, None
    edition = choose_edition(editions, parse_date(extra.get("note_date")), forced_edition)
    recommendation = recommend(result.summary, edition, parameters)
    return {
        "scenarios": ";".join(recommendation.scenario_ids),
        "urgency": recommendation.urgency if recommendation.in_scope else None,
        "recommended": ";".join(recommendation.usually_appropriate),
        "rationale": note_rationale(recommendation, edition, evidence),
        "edition": edition.id,
    }, recommendation, edition


ORDER_COLUMN_ALIASES = {
    "description": ("order_description", "order_name", "order_text", "procedure_name", "procedure_description"),
    "cpt": ("cpt_code", "procedure_code", "cpt4"),
    "order_date": ("order_datetime", "ordered_date", "ordered_at", "order_time"),
    "priority": ("order_priority",),
}


def read_orders(path: str | Path, columns: dict | None = None) -> tuple[list[Order], list[dict]]:
    """The orders file as `Order`s; rows that cannot be orders go to the second list with a reason.
    Common alternative column names (`cpt_code`, `order_description`, ...) are read when ours are absent."""
    orders, problems, seen = [], [], set()
    for row_number, record in enumerate(read_records(path, columns), 1):
        for ours, theirs in ORDER_COLUMN_ALIASES.items():
            if record.get(ours) is None:
                record[ours] = next((record[t] for t in theirs if record.get(t) is not None), None)
        order_id = record.get("order_id")
        if order_id is None or str(order_id).strip() == "":
            problems.append({"order_id": f"row:{row_number}", "reason": "missing order_id"})
            continue
        order = Order.from_record({**record, "order_id": str(order_id).strip()})
        if order.order_id in seen:
            problems.append({"order_id": order.order_id, "reason": "duplicate order_id (first occurrence kept)"})
            continue
        seen.add(order.order_id)
        orders.append(order)
    return orders, problems


def run(notes_path: str | Path, out_dir: str | Path, fmt: str = "parquet", columns: dict | None = None,
        snippets: bool = True, extractor: Extractor | None = None, orders_path: str | Path | None = None,
        edition: str | None = None, window_days: int = DEFAULT_WINDOW_DAYS, order_columns: dict | None = None) -> dict:
    """Extract findings from every note of `notes_path`, audit the orders of `orders_path` (if given)
    and write the tables to `out_dir`."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    extractor = extractor or Extractor()
    editions = extractor.rules.editions
    if edition:
        choose_edition(editions, forced=edition)  # an unknown edition fails before any work
    orders, order_problems = read_orders(orders_path, order_columns) if orders_path else ([], [])
    linked_notes = {o.note_id for o in orders if o.note_id}
    linked_encounters = {o.encounter_id for o in orders if o.encounter_id}
    linked_patients = {o.patient_id for o in orders if o.patient_id}
    errors: list[dict] = []
    extras: dict[str, dict] = {}
    notes_read = Counter()
    editions_used: Counter = Counter()

    def texts():
        for record in validate_notes(_counted(read_records(notes_path, columns), notes_read), errors):
            extras[record["note_id"]] = {k: record.get(k) for k in PASSTHROUGH_NOTE_COLUMNS}
            yield record["note_id"], record["text"]

    finding_rows, note_rows, refs, missed = [], [], [], []
    for seq, result in enumerate(extractor.pipe(texts())):
        finding_rows.extend(f.as_row() for f in result.findings)
        extra = extras.pop(result.note_id, {})
        evidence = evidence_by_label(result.findings) if snippets else None
        fields, recommendation, note_edition = note_audit_fields(result, extra, editions, edition, evidence=evidence)
        note_rows.append({**result.summary, **extra, **fields})
        if not orders_path or recommendation is None:
            continue
        ref = NoteRef(result.note_id, result.summary, text_or_none(extra.get("patient_id")), text_or_none(extra.get("encounter_id")),
                      parse_date(extra.get("note_date")), evidence, seq)
        if ref.note_id in linked_notes or ref.encounter_id in linked_encounters or ref.patient_id in linked_patients:
            refs.append(ref)  # an order may match it: judged once every note is read
        elif needs_imaging(recommendation):
            missed.append(missed_row(ref, recommendation, note_edition))
    findings = pd.DataFrame(finding_rows, columns=list(FINDING_FIELDS))
    if not snippets:
        findings = findings.drop(columns=list(TEXT_FIELDS))
    notes = pd.DataFrame(note_rows, columns=list(NOTE_TABLE_FIELDS))
    error_table = pd.DataFrame(errors, columns=list(ERROR_FIELDS))
    tables = [("findings", findings), ("notes", notes), ("errors", error_table)]
    counts = {"notes_read": notes_read["n"], "notes_written": len(notes), "errors": len(error_table),
              "findings": len(findings)}
    if orders_path:
        rows, unmatched = audit(refs, orders, editions, extractor.rules.orders, window_days, edition)
        audit_table = pd.DataFrame(rows + missed, columns=list(AUDIT_FIELDS))
        audit_table = audit_table.sort_values(["note_id", "order_id"], kind="stable", ignore_index=True)
        unmatched_table = pd.DataFrame(order_problems + unmatched, columns=list(UNMATCHED_FIELDS))
        tables += [("audit", audit_table), ("unmatched_orders", unmatched_table)]
        editions_used.update(audit_table["edition"].dropna())
        counts.update({"orders_read": len(orders) + len(order_problems), "orders_judged": int(
            (audit_table["order_id"] != "").sum()), "orders_unmatched": len(unmatched_table),
            "verdicts": {k: int(v) for k, v in audit_table["verdict"].value_counts().items()}})
    paths = {name: str(write_table(frame, out_dir, name, fmt)) for name, frame in tables}
    editions_used.update(notes["edition"].dropna())
    manifest = {
        "tool": "lbp-audit",
        "version": __version__,
        "pipeline": extractor.nlp.meta.get("lbp_pipeline"),
        "rules_digest": extractor.rules.digest,
        "rule_files": extractor.rules.file_digests,
        "guideline_editions": {e.id: {"citation": e.citation, "effective_from": e.effective_from,
                                      "file": e.file, "rows": editions_used.get(e.id, 0)} for e in editions},
        "edition_forced": edition,
        "match_window_days": window_days,
        "inputs": {"notes": str(notes_path), **({"orders": str(orders_path)} if orders_path else {})},
        "format": fmt,
        "counts": counts,
        "outputs": paths,
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json(manifest, out_dir / "manifest.json")
    return manifest


def _counted(records: Iterable[dict], counter: Counter) -> Iterator[dict]:
    for record in records:
        counter["n"] += 1
        yield record
