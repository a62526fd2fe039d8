"""Findings as OMOP CDM v5.4 `NOTE_NLP` rows: one row per mention.

The mapping is data (`patterns/omop.json`, key `omop_mapping`), checked by `check_mapping` when
the rules load and when it is read here. The choices:

- `term_exists`: `Y` for present and historical mentions; `N` for negated, family (subject other
  than the patient), hypothetical (conditional) and possible ones. Our `possible` covers "possible",
  "suspected", "concern for" and "r/o" alike, and OHDSI says N for rule-out or low certainty, so
  possible is N; `certainty=low` in `term_modifiers` tells it apart from a negation.
- `term_temporal`: `past` for historical mentions (a history cue or a PMH / PSH section), else `present`.
- `term_modifiers`: `key=value` pairs joined by commas: `label`, `assertion`, `negated`, `subject`,
  `conditional`, `certainty`, `laterality`, `progressive`, `section`, `rule` (target rule id),
  `cue_rule` (the ConText or section rule that set the assertion), `end` (end offset) and `snomed`
  (the label's SNOMED CT code, when verified). Never note text.
- `offset`: the start character offset of the mention in the note (0-based, as Python counts
  characters); the end offset is `end=` in `term_modifiers`.
- `lexical_variant`: the matched words; `snippet`: the findings table's `snippet` column when it
  has one, else the matched words (the findings table keeps no wider window). When the findings
  have no `text` (`run --no-text`) `lexical_variant` is the label and `snippet` is empty: no
  note text is written.
- `note_nlp_concept_id`: the OMOP standard concept of the label's SNOMED code, from `concepts`
  (SNOMED code → concept_id, which `pipeline.sql.publish` reads from the target database's
  `CONCEPT` table when it has one), else 0: a SNOMED code is not an OMOP concept_id, and none is
  invented. `note_nlp_source_concept_id` is 0 (our labels are in no OMOP vocabulary).
- `section_concept_id`: from `sections` (our section category → concept id) when given, else 0.
- `note_id`: an integer when the note id is one; other ids are kept as given, and
  `pipeline.sql.publish` refuses to write them into a NOTE_NLP table (its note_id is an integer).
"""
from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .labels import ASSERTIONS, LABELS

NOTE_NLP_COLUMNS = (
    "note_nlp_id", "note_id", "section_concept_id", "snippet", "offset", "lexical_variant",
    "note_nlp_concept_id", "note_nlp_source_concept_id", "nlp_system", "nlp_date", "nlp_datetime",
    "term_exists", "term_temporal", "term_modifiers",
)
# OMOP CDM v5.4 column types (PostgreSQL spelling), for creating the table when it is missing.
NOTE_NLP_TYPES = {
    "note_nlp_id": "INTEGER NOT NULL", "note_id": "INTEGER NOT NULL", "section_concept_id": "INTEGER",
    "snippet": "VARCHAR(250)", "offset": "VARCHAR(50)", "lexical_variant": "VARCHAR(250) NOT NULL",
    "note_nlp_concept_id": "INTEGER", "note_nlp_source_concept_id": "INTEGER", "nlp_system": "VARCHAR(250)",
    "nlp_date": "DATE NOT NULL", "nlp_datetime": "TIMESTAMP", "term_exists": "VARCHAR(1)",
    "term_temporal": "VARCHAR(50)", "term_modifiers": "VARCHAR(2000)",
}
MAX_LENGTHS = {"snippet": 250, "offset": 50, "lexical_variant": 250, "nlp_system": 250, "term_modifiers": 2000}
MODIFIER_KEYS = ("negated", "subject", "conditional", "certainty")
MAPPING_FILE = "omop.json"

_SNOMED_CODE = re.compile(r"^[1-9][0-9]{5,17}$")
_INTEGER = re.compile(r"^[+-]?[0-9]+$")


class MappingError(ValueError):
    """`patterns/omop.json` is not a valid mapping (every problem, one per line)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the OMOP mapping:\n" + "\n".join(problems))


@dataclass(frozen=True)
class Mapping:
    snomed: dict          # label -> SNOMED CT code (str)
    assertions: dict      # assertion -> {"term_exists", "term_temporal", "modifiers": {...}}


def check_mapping(data, where: str, problems: list[str]) -> None:
    """Append to `problems` everything wrong with an `omop_mapping` object."""
    if not isinstance(data, dict):
        problems.append(f"{where}: must be an object")
        return
    for key in set(data) - {"snomed", "assertions"}:
        problems.append(f"{where}: unknown key {key!r}")
    snomed = data.get("snomed", {})
    if not isinstance(snomed, dict):
        problems.append(f"{where}.snomed: must be an object")
        snomed = {}
    for label, entry in snomed.items():
        if label not in LABELS:
            problems.append(f"{where}.snomed.{label}: not a canonical label")
        if not isinstance(entry, dict) or set(entry) - {"code", "term"}:
            problems.append(f"{where}.snomed.{label}: must be {{\"code\", \"term\"}}")
        elif not _SNOMED_CODE.match(str(entry.get("code", ""))):
            problems.append(f"{where}.snomed.{label}: code {entry.get('code')!r} is not a SNOMED CT identifier")
    assertions = data.get("assertions")
    if not isinstance(assertions, dict):
        problems.append(f"{where}.assertions: must be an object with one entry per assertion")
        return
    for name in sorted(set(ASSERTIONS) - set(assertions)):
        problems.append(f"{where}.assertions: no entry for {name!r}")
    for name, entry in assertions.items():
        at = f"{where}.assertions.{name}"
        if name not in ASSERTIONS:
            problems.append(f"{at}: not an assertion")
        if not isinstance(entry, dict):
            problems.append(f"{at}: must be an object")
            continue
        for key in set(entry) - {"term_exists", "term_temporal", "modifiers"}:
            problems.append(f"{at}: unknown key {key!r}")
        if entry.get("term_exists") not in ("Y", "N"):
            problems.append(f"{at}.term_exists: must be 'Y' or 'N'")
        if entry.get("term_temporal") not in ("present", "past"):
            problems.append(f"{at}.term_temporal: must be 'present' or 'past'")
        modifiers = entry.get("modifiers")
        if not isinstance(modifiers, dict) or set(modifiers) != set(MODIFIER_KEYS):
            problems.append(f"{at}.modifiers: must give exactly {', '.join(MODIFIER_KEYS)}")
        elif any(not isinstance(v, str) or not re.fullmatch(r"[a-z_]+", v) for v in modifiers.values()):
            problems.append(f"{at}.modifiers: values must be lower-case words")


def load_mapping(rules_dir: str | Path | None = None) -> Mapping:
    """The validated mapping from `<rules_dir>/omop.json` (default: the shipped `patterns/`)."""
    from .rules import default_rules_dir

    path = Path(rules_dir or default_rules_dir()) / MAPPING_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise MappingError([f"{path.name}: cannot be read ({type(err).__name__})"]) from None
    problems: list[str] = []
    mapping = data.get("omop_mapping") if isinstance(data, dict) else None
    check_mapping(mapping, f"{path.name}:omop_mapping", problems)
    if problems:
        raise MappingError(problems)
    return Mapping(snomed={label: entry["code"] for label, entry in mapping.get("snomed", {}).items()},
                   assertions=mapping["assertions"])


def note_nlp_frame(findings: pd.DataFrame, *, nlp_system: str, nlp_date, first_id: int = 1,
                   sections: dict | None = None, concepts: dict | None = None,
                   mapping: Mapping | None = None) -> pd.DataFrame:
    """The findings table as OMOP CDM v5.4 `NOTE_NLP` rows, columns in spec order, ids from `first_id`.

    `sections` maps our section categories to section_concept_id; `concepts` maps SNOMED codes to OMOP
    concept_ids (see the module docstring for every other choice)."""
    mapping = mapping or load_mapping()
    sections = sections or {}
    concepts = {str(k): int(v) for k, v in (concepts or {}).items()}
    nlp_date = _as_date(nlp_date)
    with_text = "text" in findings.columns
    rows = []
    for offset_in_part, finding in enumerate(findings.to_dict(orient="records")):
        label = finding["label"]
        assertion = mapping.assertions[finding["assertion"]]
        code = mapping.snomed.get(label)
        modifiers = {"label": label, "assertion": finding["assertion"], **assertion["modifiers"],
                     "laterality": finding.get("laterality"), "progressive": _flag(finding.get("progressive")),
                     "section": finding.get("section"), "rule": finding.get("rule_id"),
                     "cue_rule": finding.get("cue_rule_id"), "end": _int_text(finding.get("end")), "snomed": code}
        if with_text:
            lexical = _text(finding.get("text")) or label
            snippet = _text(finding.get("snippet")) or _text(finding.get("text"))
        else:
            lexical, snippet = label, None
        rows.append({
            "note_nlp_id": first_id + offset_in_part,
            "note_id": _note_id(finding["note_id"]),
            "section_concept_id": int(sections.get(finding.get("section"), 0) or 0),
            "snippet": _clip(snippet, "snippet"),
            "offset": _clip(_int_text(finding.get("start")), "offset"),
            "lexical_variant": _clip(lexical, "lexical_variant"),
            "note_nlp_concept_id": concepts.get(code, 0) if code else 0,
            "note_nlp_source_concept_id": 0,
            "nlp_system": _clip(nlp_system, "nlp_system"),
            "nlp_date": nlp_date,
            "nlp_datetime": None,
            "term_exists": assertion["term_exists"],
            "term_temporal": assertion["term_temporal"],
            "term_modifiers": _clip(",".join(f"{k}={_modifier_value(v)}" for k, v in modifiers.items()
                                             if _text(v) is not None), "term_modifiers"),
        })
    frame = pd.DataFrame(rows, columns=list(NOTE_NLP_COLUMNS))
    for column in ("note_nlp_id", "section_concept_id", "note_nlp_concept_id", "note_nlp_source_concept_id"):
        frame[column] = frame[column].astype("int64")
    return frame


def integer_note_ids(frame: pd.DataFrame) -> bool:
    """True when every note_id of a NOTE_NLP frame is an integer (what the CDM's column holds)."""
    return all(isinstance(v, int) for v in frame["note_id"])


def _as_date(value) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _note_id(value):
    text = _text(value)
    if text is not None and _INTEGER.match(text) and abs(int(text)) < 2**63:
        return int(text)
    return text


def _text(value) -> str | None:
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return None
    text = str(value)
    return text if text.strip() else None


def _int_text(value) -> str | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return str(int(float(text)))
    except ValueError:
        return text


def _flag(value) -> str | None:
    if _text(value) is None:
        return None
    return "true" if value in (True, 1, "true", "True", "1") else "false"


def _modifier_value(value) -> str:
    """A modifier value that cannot break the `k=v,k=v` list."""
    return re.sub(r"[,=\s]+", "_", str(value))


def _clip(value, column: str):
    if value is None:
        return None
    return value[:MAX_LENGTHS[column]]
