"""The Python API for notebooks: build the pipeline once, run it on texts or a DataFrame, get the tables
of `lbp-audit run` as DataFrames, and show one note with its findings, ConText cues and sections.

`Auditor.run` checks records with `NoteValidator`, processes them chunk by chunk with `process_chunk` and
judges the orders with `OrderMatcher`: the functions `lbp-audit run` uses, so the rows are the ones it
writes. Given a Spark DataFrame it hands over to `pipeline.spark.audit_dataframe` (pyspark imported only then).
"""
from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pandas as pd

from .audit import DEFAULT_WINDOW_DAYS, OrderMatcher, parse_date
from .batch import (DEFAULT_CHUNK_SIZE, DEFAULT_MAX_CHARS, NOTE_COLUMNS, ChunkSettings, NoteValidator, audit_key,
                    chunks_of, process_chunk, read_orders, table_schemas)
from .findings import FINDING_FIELDS
from .rules import load_rules
from .scenarios import choose_edition
from .sources import Renamer, open_source
from .tables import InputError, to_arrow

TABLE_NAMES = ("findings", "notes", "errors", "audit", "unmatched_orders")
# displaCy background of a finding, by its assertion
ASSERTION_COLORS = {"present": "#f7a8a8", "negated": "#b9e4b9", "possible": "#ffe08a", "hypothetical": "#c6d8f5",
                    "historical": "#ddd0ee", "family": "#e3e3e3"}
CUE_COLOR = "#f0f0f0"


@dataclass
class Tables:
    """The tables of one run: pandas DataFrames (Spark DataFrames when the notes were one). `audit` and
    `unmatched_orders` are None when no orders were given."""

    findings: Any
    notes: Any
    errors: Any
    audit: Any = None
    unmatched_orders: Any = None

    def __repr__(self) -> str:
        if not isinstance(self.notes, pd.DataFrame):
            given = [name for name in TABLE_NAMES if getattr(self, name) is not None]
            return f"Tables of Spark DataFrames: {', '.join(given)}"
        lines = [f"Tables: {len(self.notes)} notes, {len(self.errors)} errors, {len(self.findings)} findings"]
        if self.audit is not None:
            verdicts = Counter(self.audit["verdict"])
            shown = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items(), key=lambda kv: (-kv[1], kv[0])))
            rows, matched = len(self.audit), int((self.audit["order_id"] != "").sum())
            lines.append(f"audit: {rows} row{'s' * (rows != 1)} ({matched} order{'s' * (matched != 1)} matched, "
                         f"{len(self.unmatched_orders)} unmatched); verdicts: {shown or 'none'}")
        return "\n".join(lines)


class Auditor:
    """Loads the rules and builds the pipeline once; `run` many notes, `show` one.

    `rules_dir`: another folder of rule files (default: the shipped `patterns/`); `edition`: force one
    guideline edition (e.g. "ACR-2021"); `window_days`: how far back an order finds its patient's note;
    `snippets=False` leaves note text out of the findings table and the rationales; a note longer than
    `max_chars` characters is an error row. As `lbp-audit run` (`--no-text`, `--max-chars`).
    """

    def __init__(self, rules_dir: str | Path | None = None, edition: str | None = None,
                 window_days: int = DEFAULT_WINDOW_DAYS, snippets: bool = True,
                 max_chars: int = DEFAULT_MAX_CHARS):
        from .extract import Extractor

        self.rules_dir = str(rules_dir) if rules_dir is not None else None
        self.rules = load_rules(rules_dir)
        if edition:
            choose_edition(self.rules.editions, forced=edition)  # an unknown edition fails here
        self.edition, self.window_days, self.snippets, self.max_chars = edition, window_days, snippets, max_chars
        self.extractor = Extractor(rules=self.rules)

    def run(self, notes, orders=None, *, columns: Mapping[str, str] | None = None,
            order_columns: Mapping[str, str] | None = None) -> Tables:
        """The findings, notes and errors tables of `notes`, and with `orders` the audit and unmatched orders.

        `notes`: one text, a list of texts (ids n1, n2, …), a dict {note_id: text}, a list of dicts or a
        pandas DataFrame (`note_id`, `text`; optional `patient_id`, `note_date`, `encounter_id`; without a
        `note_id` column the rows are n1, n2, …), a `Path` of a file or folder `lbp-audit run` reads, or a
        Spark DataFrame. `orders`: a pandas DataFrame, a list of dicts or a `Path` (columns as for `run`); an
        empty list audits with no orders (a missed_imaging row for each note in urgent need). `columns` /
        `order_columns` map our column names to yours, e.g. {"text": "note_body"}. A record that cannot be
        processed (no id, repeated id, missing or empty text) is a row of `errors`, not an exception."""
        if _is_spark(notes):
            return self._run_spark(notes, orders, columns, order_columns)
        matcher = problems = None
        if orders is not None:
            order_list, problems = read_orders(orders, order_columns) if isinstance(orders, Path) else \
                read_orders(None, records=_order_records(orders, order_columns))
            matcher = OrderMatcher(order_list, self.rules.editions, self.rules.orders, self.window_days, self.edition)
        settings = ChunkSettings(None, self.rules.digest, self.snippets, self.edition,
                                 matcher.keys if matcher else None, self.max_chars)
        rows: dict[str, list] = {"findings": [], "notes": [], "errors": [], "missed": []}
        for chunk in chunks_of(_note_records(notes, columns), DEFAULT_CHUNK_SIZE, NoteValidator()):
            output = process_chunk(chunk, settings, self.extractor)
            for name in rows:
                rows[name].extend(getattr(output, name))
            if matcher is not None:
                for ref in output.refs:
                    matcher.offer(ref)
        schemas = table_schemas(self.snippets)
        tables = Tables(*(_frame(rows[name], schemas[name]) for name in ("findings", "notes", "errors")))
        if matcher is not None:
            matched, unmatched = matcher.finish()  # then in the published table's order, as run merges them
            audit = sorted(matched + rows["missed"], key=audit_key)
            tables.audit = _frame(audit, schemas["audit"])
            tables.unmatched_orders = _frame(problems + unmatched, schemas["unmatched_orders"])
        return tables

    def _run_spark(self, notes_df, orders, columns, order_columns) -> Tables:
        from .spark import audit_dataframe

        if orders is not None and not _is_spark(orders):
            orders = _spark_frame(notes_df.sparkSession, _order_records(orders, order_columns))
        tables = audit_dataframe(notes_df, orders, snippets=self.snippets, edition=self.edition,
                                 window_days=self.window_days, columns=columns, rules_dir=self.rules_dir)
        return Tables(**tables)

    def show(self, note, *, orders: Sequence[str] = (), date: str | None = None) -> "NoteView":
        """One note (a text, or a record / DataFrame row with `text` and optional `note_id`, `note_date`)
        with its findings highlighted, the ConText cues and sections found, and its guideline view;
        `orders` (texts or CPT codes) are judged as `lbp-audit explain --order` does. Displays itself in
        Jupyter; `str()` is what `lbp-audit explain` prints."""
        from .explain import assess

        if isinstance(note, str):
            text, note_id = note, "note"
        else:
            text, note_id = note.get("text"), str(note.get("note_id") or "note")
            note_date = _text(note.get("note_date"))
            date = date or (note_date if parse_date(note_date) else None)
        if not isinstance(text, str) or not text.strip():
            raise InputError("show() needs a note with text")
        doc = self.extractor.doc(text)  # one pass: the findings and the cues shown come from the same Doc
        result = self.extractor.result(doc, note_id, text)
        assessment = assess(result, self.rules, list(orders), date=date, edition=self.edition)
        return NoteView(result, assessment, text, _modifiers(doc), _sections(doc, text))

    def rule(self, rule_id: str) -> dict:
        """A target, ConText or section rule by its id, as its rule file gives it: why a finding or a cue fired."""
        for rule in (*self.rules.target_rules, *self.rules.context_rules):
            if rule["metadata"]["id"] == rule_id:
                return rule
        for section in self.rules.section_rules:
            if section.id == rule_id:
                return {"id": section.id, "category": section.category, "pattern": section.regex.pattern,
                        "examples": list(section.examples)}
        raise KeyError(f"no target, ConText or section rule {rule_id!r}")

    def evaluate(self, corpus: str | Path | None = None) -> dict:
        """The report of `lbp-audit evaluate` for these rules on an annotated corpus (default `corpora/lbp`):
        `per_label` P/R/F1 of note-level `present`, `micro`, `status_accuracy`, `mentions`, `audit`, …"""
        from .corpus import load_corpus
        from .evaluate import evaluate_corpus

        return evaluate_corpus(load_corpus(corpus), self.extractor, edition=self.edition)


# ---------------------------------------------------------------- inputs


def _frame(rows: list[dict], schema) -> pd.DataFrame:
    """Rows as a DataFrame of a table's schema: the columns and types `run`'s Parquet tables read back as."""
    return to_arrow(rows, schema).to_pandas()


def _is_spark(value) -> bool:
    """A Spark DataFrame (classic or Connect), known without importing pyspark."""
    kind = type(value)
    return kind.__name__ == "DataFrame" and kind.__module__.startswith("pyspark.")


def _text(value) -> str | None:
    return None if value is None or (isinstance(value, float) and value != value) else str(value)


def _missing_as_none(record: Mapping) -> dict:
    """A record with pandas' missing values (NaN, NaT, None) as None."""
    out = {}
    for key, value in record.items():
        try:
            missing = value is None or bool(pd.isna(value))
        except (TypeError, ValueError):  # a list or an array
            missing = False
        out[key] = None if missing else value
    return out


def _note_records(notes, columns: Mapping[str, str] | None) -> Iterator[dict]:
    """Note records as `lbp-audit run` reads them: our column names, only the columns a note carries."""
    if isinstance(notes, Path):
        yield from open_source(notes, dict(columns or {}), required=("note_id", "text"), keep=NOTE_COLUMNS)
        return
    rename = Renamer(dict(columns or {}), keep=NOTE_COLUMNS)
    if isinstance(notes, pd.DataFrame):
        names = rename.names(str(c) for c in notes.columns)
        if "text" not in names.values():
            raise InputError("notes DataFrame: no 'text' column; map yours with columns={'text': ...}")
        numbered = "note_id" not in names.values()
        for i, row in enumerate(notes.to_dict(orient="records"), 1):
            record = _missing_as_none(rename.record({str(k): v for k, v in row.items()}))
            yield {"note_id": f"n{i}", **record} if numbered else record
        return
    if isinstance(notes, str):
        notes = [notes]
    elif isinstance(notes, Mapping):
        notes = [{"note_id": note_id, "text": text} for note_id, text in notes.items()]
    for i, note in enumerate(notes, 1):
        if isinstance(note, Mapping):
            yield _missing_as_none(rename.record(dict(note)))
        else:  # a text; anything else becomes a "text is not a string" error row
            yield {"note_id": f"n{i}", "text": _missing_as_none({"text": note})["text"]}


def _order_records(orders, columns: Mapping[str, str] | None) -> list[dict]:
    if isinstance(orders, Path):
        return list(open_source(orders, dict(columns or {})))
    rename = Renamer(dict(columns or {}))
    if isinstance(orders, pd.DataFrame):
        orders = orders.to_dict(orient="records")
    return [_missing_as_none(rename.record({str(k): v for k, v in dict(order).items()})) for order in orders]


def _spark_frame(spark, records: list[dict]):
    """Order records as a Spark DataFrame of text columns (what audit_dataframe reads orders from)."""
    from pyspark.sql.types import StringType, StructField, StructType

    names = list(dict.fromkeys(["order_id", *(k for record in records for k in record)]))
    rows = [tuple(_text(int(value) if isinstance(value, float) and value.is_integer() else value)
                  for value in map(record.get, names)) for record in records]
    return spark.createDataFrame(rows, StructType([StructField(name, StringType()) for name in names]))


# ---------------------------------------------------------------- one note


def _modifiers(doc) -> pd.DataFrame:
    """The ConText cues of a processed `Doc`: cue text, category, rule id, direction, note offsets and
    the targets each one modifies."""
    graph = doc._.context_graph
    modified: dict[int, list[str]] = {}
    for target, modifier in graph.edges:
        modified.setdefault(id(modifier), []).append(f"{target.text} ({target.label_})")
    window = doc.user_data.get("lbp_window")
    rows = []
    for modifier in graph.modifiers:
        span = doc[modifier.modifier_span[0]:modifier.modifier_span[1]]
        start, end = window.to_note_span(span.start_char, span.end_char) if window else (span.start_char, span.end_char)
        rows.append({"cue": span.text, "category": modifier.category, "rule_id": modifier.rule.metadata.get("id"),
                     "direction": modifier.direction, "start": start, "end": end,
                     "modifies": "; ".join(modified.get(id(modifier), []))})
    return pd.DataFrame(rows, columns=["cue", "category", "rule_id", "direction", "start", "end", "modifies"])


def _sections(doc, text: str) -> pd.DataFrame:
    rows = [{"section": s.category, "rule_id": s.rule_id, "header": text[s.start:s.body_start].strip(),
             "start": s.start, "end": s.end} for s in doc._.lbp_sections]
    return pd.DataFrame(rows, columns=["section", "rule_id", "header", "start", "end"])


@dataclass(repr=False)
class NoteView:
    """One note for a notebook: `result` (findings and summary), `assessment` (scenarios, urgency,
    verdicts), `findings`, `modifiers` (ConText cues) and `sections` as DataFrames, `html` the note
    marked up by displaCy. Jupyter shows `_repr_html_`; `str()` is the `lbp-audit explain` text."""

    result: Any
    assessment: Any
    text: str
    modifiers: pd.DataFrame
    sections: pd.DataFrame

    @property
    def findings(self) -> pd.DataFrame:
        return pd.DataFrame([f.as_row() for f in self.result.findings],
                            columns=[name for name in FINDING_FIELDS if name != "note_id"])

    def spans(self) -> list[dict]:
        """The highlighted spans: each finding labelled `LABEL · assertion` (findings on the same words
        share one span) and each ConText cue outside them labelled `cue: CATEGORY`; start-ordered, no overlap."""
        wanted = [(f.start, f.end, f"{f.label} · {f.assertion}", f.assertion) for f in self.result.findings]
        wanted += [(row.start, row.end, f"cue: {row.category}", "cue") for row in self.modifiers.itertuples()]
        spans: list[dict] = []
        for start, end, label, kind in sorted(wanted, key=lambda s: (s[0], s[3] == "cue", -s[1])):
            last = spans[-1] if spans else None
            if last is not None and start < last["end"]:  # overlapping words: one span, every label
                if kind != "cue" and label not in last["label"].split(" + "):
                    last["label"] += f" + {label}"
                last["end"] = max(last["end"], end)
                continue
            spans.append({"start": start, "end": end, "label": label, "kind": kind})
        return spans

    @property
    def html(self) -> str:
        from spacy import displacy

        spans = self.spans()
        colors = {s["label"]: CUE_COLOR if s["kind"] == "cue" else ASSERTION_COLORS.get(s["kind"], CUE_COLOR)
                  for s in spans}
        ents = [{k: s[k] for k in ("start", "end", "label")} for s in spans]
        return displacy.render({"text": self.text, "ents": ents, "title": f"Note {self.result.note_id}"},
                               style="ent", manual=True, jupyter=False, options={"colors": colors})

    def _repr_html_(self) -> str:
        parts = [self.html]
        for title, frame in (("Findings", self.findings), ("ConText modifiers", self.modifiers),
                             ("Sections", self.sections)):
            body = frame.to_html(index=False) if len(frame) else "<p>none</p>"
            parts.append(f"<h4>{title}</h4>{body}")
        parts.append(f"<details><summary>Summary and guideline (as <code>lbp-audit explain</code> prints it)"
                     f"</summary><pre>{html.escape(str(self))}</pre></details>")
        return "\n".join(parts)

    def __repr__(self) -> str:
        return (f"<NoteView of note {self.result.note_id!r}: {len(self.result.findings)} findings, "
                f"{len(self.modifiers)} ConText cue{'s' * (len(self.modifiers) != 1)}, {len(self.sections)} sections>")

    def __str__(self) -> str:
        from .explain import render

        return render(self.result, self.assessment)
