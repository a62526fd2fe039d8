"""The auditor: match imaging orders to notes and judge each one against the guideline in force.

Pure functions of note summaries, orders and rule data (dates are passed in): no spaCy, no I/O.
"""
from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from .orders import PRIORITIES, OrderRules, Procedure, normalise, normalise_priority, same_modality
from .scenarios import RATED, URGENCIES, Edition, Recommendation, advisories, choose_edition, recommend

AUDIT_FIELDS = ("note_id", "order_id", "procedure", "verdict", "scenarios", "urgency", "advisory", "rule_ids",
                "rationale", "edition", "matched_by", "patient_id", "encounter_id", "order_date", "priority",
                "description", "cpt", "provider", "site")
UNMATCHED_FIELDS = ("order_id", "reason")
VERDICTS = ("appropriate", "may_be_appropriate", "not_indicated", "wrong_modality", "wrong_protocol",
            "missed_imaging", "not_lumbar_imaging", "out_of_scope")
NEEDS_IMAGING = ("urgent", "emergent")
DEFAULT_WINDOW_DAYS = 28
_VERDICT_WORDS = {
    "appropriate": "appropriate",
    "may_be_appropriate": "may be appropriate",
    "not_indicated": "not indicated (overuse)",
    "wrong_modality": "wrong modality",
    "wrong_protocol": "wrong contrast protocol",
}


def parse_date(value) -> dt.date | None:
    """A date from an ISO date or datetime string, a `datetime`/`date` or a pandas Timestamp; else None."""
    if value is None or value != value:  # None or NaN/NaT
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        return None


def text_or_none(value) -> str | None:
    """A field as stripped text; None when missing, NaN or blank."""
    if value is None or value != value:
        return None
    text = str(value).strip()
    return text or None


def _shared(value) -> str | None:
    """`text_or_none`, one string object for each value (descriptions, codes, providers and sites repeat
    across an archive's orders, all held until a run ends)."""
    text = text_or_none(value)
    return sys.intern(text) if text is not None else None


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    description: str | None = None
    cpt: str | None = None
    note_id: str | None = None
    encounter_id: str | None = None
    patient_id: str | None = None
    order_date: dt.date | None = None
    priority: str | None = None
    provider: str | None = None
    site: str | None = None
    order_date_invalid: bool = False  # an order_date was given but is not a date (then order_date is None)

    @classmethod
    def from_record(cls, record: Mapping) -> "Order":
        cpt = record.get("cpt")
        if isinstance(cpt, float) and cpt.is_integer():
            cpt = str(int(cpt))  # a CSV reader's 72148.0 (not NaN or infinity: those stay as they are)
        order_date = parse_date(record.get("order_date"))
        return cls(order_id=str(record["order_id"]), description=_shared(record.get("description")),
                   cpt=_shared(cpt), note_id=text_or_none(record.get("note_id")),
                   encounter_id=text_or_none(record.get("encounter_id")),
                   patient_id=text_or_none(record.get("patient_id")), order_date=order_date,
                   priority=_shared(record.get("priority")), provider=_shared(record.get("provider")),
                   site=_shared(record.get("site")),
                   order_date_invalid=order_date is None and text_or_none(record.get("order_date")) is not None)


class CompactSummary(Mapping):
    """A note summary as one tuple of values and a key tuple shared by all summaries of that shape: the
    auditor keeps one per imaging order until a run ends, so this is what its memory grows with."""

    __slots__ = ("_keys", "_values")
    _SHAPES: dict[tuple, tuple[tuple, dict]] = {}

    def __init__(self, summary: Mapping):
        keys = tuple(summary)
        self._keys = self._SHAPES.setdefault(keys, (keys, {k: i for i, k in enumerate(keys)}))
        self._values = tuple(summary.values())

    def __getitem__(self, key):
        return self._values[self._keys[1][key]]

    def __iter__(self):
        return iter(self._keys[0])

    def __len__(self) -> int:
        return len(self._values)

    def __reduce__(self):
        return CompactSummary, (dict(zip(self._keys[0], self._values)),)


class CompactEvidence(Mapping):
    """Evidence texts per label packed in one string (label, then its texts, separated by the ASCII unit
    and record separators, which never occur in evidence: its whitespace is collapsed to single spaces)."""

    __slots__ = ("_packed",)

    def __init__(self, evidence: Mapping[str, Sequence[str]]):
        self._packed = "\x1e".join("\x1f".join((label, *texts)) for label, texts in evidence.items())

    def _items(self):
        for record in self._packed.split("\x1e") if self._packed else ():
            label, *texts = record.split("\x1f")
            yield label, texts

    def __getitem__(self, key):
        for label, texts in self._items():
            if label == key:
                return texts
        raise KeyError(key)

    def __iter__(self):
        return (label for label, _ in self._items())

    def __len__(self) -> int:
        return self._packed.count("\x1e") + 1 if self._packed else 0

    def __reduce__(self):
        return CompactEvidence, (dict(self._items()),)


@dataclass(frozen=True, slots=True, weakref_slot=True)
class NoteRef:
    """What the auditor needs of a note: its ids, date, summary and the evidence texts per label."""

    note_id: str
    summary: Mapping
    patient_id: str | None = None
    encounter_id: str | None = None
    note_date: dt.date | None = None
    evidence: Mapping[str, Sequence[str]] | None = None
    seq: int = 0

    def __post_init__(self):  # kept per order until a run ends: as small as it can be
        if not isinstance(self.summary, CompactSummary):
            object.__setattr__(self, "summary", CompactSummary(self.summary))
        if self.evidence is not None and not isinstance(self.evidence, CompactEvidence) and \
                not any("\x1e" in t or "\x1f" in t for texts in self.evidence.values() for t in texts):
            object.__setattr__(self, "evidence", CompactEvidence(self.evidence))

    def as_json(self) -> dict:
        return {"note_id": self.note_id, "summary": dict(self.summary), "patient_id": self.patient_id,
                "encounter_id": self.encounter_id, "note_date": self.note_date.isoformat() if self.note_date else None,
                "evidence": {k: list(v) for k, v in self.evidence.items()} if self.evidence is not None else None,
                "seq": self.seq}

    @classmethod
    def from_json(cls, data: Mapping) -> "NoteRef":
        return cls(data["note_id"], data["summary"], data.get("patient_id"), data.get("encounter_id"),
                   parse_date(data.get("note_date")), data.get("evidence"), data.get("seq", 0))


# ---------------------------------------------------------------- matching


def match_orders(notes: Sequence[NoteRef], orders: Iterable[Order], window_days: int = DEFAULT_WINDOW_DAYS):
    """Each order's note: by note_id, else by encounter_id (the encounter's latest note), else the patient's
    latest note dated 0–`window_days` days before the order. Returns (matched, unmatched):
    matched is [(order, note, how)], unmatched is [(order, reason)]."""
    by_id = {n.note_id: n for n in notes}
    by_encounter: dict[str, list[NoteRef]] = {}
    by_patient: dict[str, list[NoteRef]] = {}
    for note in notes:
        if note.encounter_id:
            by_encounter.setdefault(note.encounter_id, []).append(note)
        if note.patient_id:
            by_patient.setdefault(note.patient_id, []).append(note)
    latest = lambda candidates: max(candidates, key=_recency) if candidates else None
    matched, unmatched = [], []
    for order in orders:
        encounter = latest([n for n in by_encounter.get(order.encounter_id, []) if _same_patient(order, n)]) \
            if order.encounter_id else None
        window = latest([n for n in by_patient.get(order.patient_id, []) if _in_window(order, n, window_days)]) \
            if order.patient_id else None
        note, how = _choose(order, by_id.get(order.note_id) if order.note_id else None, encounter, window, window_days)
        if note is None:
            unmatched.append((order, how))
        else:
            matched.append((order, note, how))
    return matched, unmatched


def _recency(note: NoteRef):
    return note.note_date or dt.date.min, note.seq


def _same_patient(order: Order, note: NoteRef) -> bool:
    return not (order.patient_id and note.patient_id and note.patient_id != order.patient_id)


def _in_window(order: Order, note: NoteRef, window_days: int) -> bool:
    return order.order_date is not None and note.note_date is not None and \
        0 <= (order.order_date - note.note_date).days <= window_days


def _choose(order: Order, by_id, encounter, window, window_days: int) -> tuple:
    """(note, how it matched) from an order's candidates in rule order (notes, or handles of notes), or
    (None, why none matched)."""
    reasons = []
    if order.note_id:
        if by_id is not None:
            return by_id, "note_id"
        reasons.append(f"note_id {order.note_id} is not among the notes")
    if order.encounter_id:
        if encounter is not None:
            return encounter, "encounter_id"
        reasons.append(f"no note of encounter {order.encounter_id}")
    if order.patient_id:
        if order.order_date is None:
            reasons.append("order_date is not a YYYY-MM-DD date, so no match by patient" if order.order_date_invalid
                           else "no order_date to match by patient")
        else:
            if window is not None:
                return window, "patient_window"
            reasons.append(f"no note of the patient dated 0-{window_days} days before the order")
    if not reasons:
        reasons.append("no note_id, encounter_id or patient_id to match by")
    return None, "; ".join(reasons)


# ---------------------------------------------------------------- verdicts


def verdict_of(procedure: Procedure, recommendation: Recommendation) -> tuple[str, str]:
    """(verdict, rating) of one normalised order under one recommendation (rating '' when not judged)."""
    if not procedure.lumbar:
        return "not_lumbar_imaging", ""
    if not recommendation.in_scope:
        return "out_of_scope", ""
    rating, _ = recommendation.rating(procedure.procedure)
    if rating == "UA":
        return "appropriate", rating
    if rating == "MBA":
        return "may_be_appropriate", rating
    indicated = recommendation.usually_appropriate
    if not indicated:
        return "not_indicated", rating
    if any(same_modality(p, procedure.procedure) for p in indicated):
        return "wrong_protocol", rating
    return "wrong_modality", rating


def _quote(labels: Iterable[str], evidence: Mapping[str, Sequence[str]] | None) -> str:
    parts = []
    for label in labels:
        texts = (evidence or {}).get(label) or ()
        words = label.replace("_", " ").lower()
        parts.append(f'{words} "{texts[0]}"' if texts else words)
    return ", ".join(parts)


def scenario_phrase(recommendation: Recommendation, evidence: Mapping[str, Sequence[str]] | None,
                    edition: Edition, only: Sequence | None = None) -> str:
    """'NEURO (ACR21-NEURO: foot drop "R foot drop")' for each scenario (or those in `only`)."""
    matches = only if only is not None else recommendation.scenarios
    return "; ".join(f"{m.scenario} ({m.rule_id}: {_quote(m.evidence, evidence)})" for m in matches)


def note_rationale(recommendation: Recommendation, edition: Edition,
                   evidence: Mapping[str, Sequence[str]] | None = None) -> str:
    """One line for the notes table: the scenarios, their evidence and what the edition supports."""
    if not recommendation.in_scope:
        return "not a back-pain note: no scenario applies"
    if not recommendation.scenarios:
        return "in scope but no scenario applies"
    ua = recommendation.usually_appropriate
    supported = (f"{recommendation.urgency} {' or '.join(ua)}" if ua else
                 "no imaging usually appropriate" + (
                     f" ({' or '.join(recommendation.may_be_appropriate)} may be appropriate)"
                     if recommendation.may_be_appropriate else ""))
    return f"{scenario_phrase(recommendation, evidence, edition)} → {supported} " \
           f"[{_sources(edition, recommendation.scenarios)}]"


def judge(procedure: Procedure, recommendation: Recommendation, edition: Edition,
          evidence: Mapping[str, Sequence[str]] | None = None, priority: str | None = None,
          priority_rules: OrderRules | None = None) -> dict:
    """The verdict, advisories, rule ids and one-line rationale of one order."""
    verdict, rating = verdict_of(procedure, recommendation)
    rule_ids = list(procedure.rule_ids)
    advisory: list[str] = []
    if procedure.conflict:
        advisory.append(procedure.conflict)
    if verdict == "not_lumbar_imaging":
        rationale = f"not lumbar imaging ({procedure.reason or 'not recognised'}); not judged"
    elif verdict == "out_of_scope":
        rationale = "lumbar imaging on a note that is not about back pain (no back pain, radicular or cauda " \
                    "equina finding); not judged against the back-pain criteria"
    else:
        rule_ids += recommendation.rule_ids
        advisory += list(procedure.notes)
        for rule_id, text in advisories(procedure.procedure, recommendation, edition):
            advisory.append(text)
            rule_ids.append(rule_id)
        level = normalise_priority(priority, priority_rules) if priority else None
        if level and recommendation.urgency in NEEDS_IMAGING and \
                PRIORITIES.index(level) < URGENCIES.index(recommendation.urgency) - 1:
            advisory.append(f"ordered as {priority.strip().lower()}; guideline urgency is {recommendation.urgency}")
        rationale = _order_rationale(verdict, rating, procedure.procedure, recommendation, edition, evidence)
    return {"verdict": verdict, "advisory": "; ".join(dict.fromkeys(advisory)),
            "rule_ids": ";".join(dict.fromkeys(rule_ids)), "rationale": rationale}


def _order_rationale(verdict, rating, procedure, recommendation, edition, evidence) -> str:
    _, giving = recommendation.rating(procedure)
    scenarios = scenario_phrase(recommendation, evidence, edition, giving or None)
    head = f"{_VERDICT_WORDS[verdict]}: {procedure} {RATED[rating]} for {scenarios}"
    if verdict in ("wrong_modality", "wrong_protocol"):
        head += f"; usually appropriate instead: {' or '.join(recommendation.usually_appropriate)}"
    if recommendation.urgency in NEEDS_IMAGING:
        head += f"; urgency {recommendation.urgency}"
    return f"{head} [{_sources(edition, giving or recommendation.scenarios)}]"


def _sources(edition: Edition, matches) -> str:
    """The edition, and in words where a cited scenario's rating does not come from its own table."""
    return "; ".join([edition.name, *dict.fromkeys(m.basis for m in matches if m.basis)])


def missed_row(note: NoteRef, recommendation: Recommendation, edition: Edition) -> dict:
    ua = recommendation.usually_appropriate
    rationale = (f"missed imaging: no lumbar imaging order for {scenario_phrase(recommendation, note.evidence, edition)}"
                 f"; {recommendation.urgency} {' or '.join(ua) or 'imaging'} is usually appropriate "
                 f"[{_sources(edition, recommendation.scenarios)}]")
    return {"note_id": note.note_id, "order_id": "", "procedure": "", "verdict": "missed_imaging",
            "scenarios": ";".join(recommendation.scenario_ids), "urgency": recommendation.urgency, "advisory": "",
            "rule_ids": ";".join(recommendation.rule_ids), "rationale": rationale, "edition": edition.id,
            "matched_by": "", "patient_id": note.patient_id, "encounter_id": note.encounter_id,
            "order_date": None, "priority": None, "description": None, "cpt": None, "provider": None, "site": None}


def needs_imaging(recommendation: Recommendation) -> bool:
    return recommendation.in_scope and recommendation.urgency in NEEDS_IMAGING


def audit(notes: Sequence[NoteRef], orders: Iterable[Order], editions: Sequence[Edition], order_rules: OrderRules,
          window_days: int = DEFAULT_WINDOW_DAYS, forced_edition: str | None = None,
          parameters: Mapping | None = None) -> tuple[list[dict], list[dict]]:
    """Verdict rows (one per matched order, one missed_imaging row per note in need without a lumbar
    order) and unmatched-order rows."""
    matched, unmatched = match_orders(notes, orders, window_days)
    rows: list[dict] = []
    imaged: set[str] = set()
    for order, note, how in matched:
        row, lumbar = _order_row(order, note, how, editions, order_rules, forced_edition, parameters)
        if lumbar:
            imaged.add(note.note_id)
        rows.append(row)
    for note in notes:
        if note.note_id in imaged:
            continue
        row = _missed_row_if_needed(note, editions, forced_edition, parameters)
        if row is not None:
            rows.append(row)
    rows = [{k: row.get(k) for k in AUDIT_FIELDS} for row in rows]
    return rows, [{"order_id": order.order_id, "reason": reason} for order, reason in unmatched]


def _order_row(order: Order, note: NoteRef, how: str, editions: Sequence[Edition], order_rules: OrderRules,
               forced_edition: str | None, parameters: Mapping | None) -> tuple[dict, bool]:
    """The audit row of one matched order, and whether it is lumbar imaging."""
    edition = choose_edition(editions, order.order_date or note.note_date, forced_edition)
    recommendation = recommend(note.summary, edition, parameters)
    procedure = normalise(order.description, order.cpt, order_rules)
    judged = judge(procedure, recommendation, edition, note.evidence, order.priority, order_rules)
    return {"note_id": note.note_id, "order_id": order.order_id, "procedure": procedure.procedure,
            **judged, "scenarios": ";".join(recommendation.scenario_ids),
            "urgency": recommendation.urgency, "edition": edition.id, "matched_by": how,
            "patient_id": order.patient_id or note.patient_id, "encounter_id": order.encounter_id,
            "order_date": order.order_date.isoformat() if order.order_date else None,
            "priority": order.priority, "description": order.description, "cpt": order.cpt,
            "provider": order.provider, "site": order.site}, procedure.lumbar


def _missed_row_if_needed(note: NoteRef, editions: Sequence[Edition], forced_edition: str | None,
                          parameters: Mapping | None) -> dict | None:
    edition = choose_edition(editions, note.note_date, forced_edition)
    recommendation = recommend(note.summary, edition, parameters)
    return missed_row(note, recommendation, edition) if needs_imaging(recommendation) else None


# ---------------------------------------------------------------- streaming


@dataclass(frozen=True)
class LinkKeys:
    """The ids by which some order could link to a note (picklable, for worker processes)."""

    note_ids: frozenset = frozenset()
    encounter_ids: frozenset = frozenset()
    patient_ids: frozenset = frozenset()

    @classmethod
    def of(cls, orders: Iterable[Order]) -> "LinkKeys":
        orders = list(orders)
        return cls(frozenset(o.note_id for o in orders if o.note_id),
                   frozenset(o.encounter_id for o in orders if o.encounter_id),
                   frozenset(o.patient_id for o in orders if o.patient_id))

    def links(self, note: NoteRef) -> bool:
        return note.note_id in self.note_ids or note.encounter_id in self.encounter_ids or \
            note.patient_id in self.patient_ids


class OrderMatcher:
    """`audit()` over notes offered one at a time, in any order: the same rows from `finish()`.

    Per order it keeps only its best candidate note for each matching rule (note_id; the encounter's
    latest; the patient's latest in the window, latest by (note_date, seq) as `match_orders` decides),
    and the notes that need imaging until the end knows whether a lumbar order matched them. A batch
    offers only the notes some order can link to (`keys.links(note)`).

    Offered with a `handle` (where the note can be read again), a note is kept as that handle alone,
    and `rows(load)` reads back only the notes it chose: memory then grows with the orders, not with
    the notes (`lbp-audit run`, whose handles point into the chunks' parts on disk).
    """

    def __init__(self, orders: Iterable[Order], editions: Sequence[Edition], order_rules: OrderRules,
                 window_days: int = DEFAULT_WINDOW_DAYS, forced_edition: str | None = None,
                 parameters: Mapping | None = None):
        self.orders = list(orders)
        self.editions, self.order_rules, self.window_days = editions, order_rules, window_days
        self.forced_edition, self.parameters = forced_edition, parameters
        self.keys = LinkKeys.of(self.orders)
        self._by_note: dict[str, list[int]] = {}
        self._by_encounter: dict[str, list[int]] = {}
        self._by_patient: dict[str, list[int]] = {}
        for i, order in enumerate(self.orders):
            for index, key in ((self._by_note, order.note_id), (self._by_encounter, order.encounter_id),
                               (self._by_patient, order.patient_id)):
                if key:
                    index.setdefault(key, []).append(i)
        for index in (self._by_note, self._by_encounter, self._by_patient):  # kept to the end: as small as can be
            for key, found in index.items():
                index[key] = tuple(found)
        n = len(self.orders)
        # per order and rule: (how recent, the note or its handle)
        self._by_id: list[tuple | None] = [None] * n
        self._encounter: list[tuple | None] = [None] * n
        self._window: list[tuple | None] = [None] * n
        self._missed: dict[str, tuple] = {}  # note_id: (seq, its missed_imaging row, or its handle)
        self.unmatched: list[dict] = []

    def offer(self, note: NoteRef, handle=None) -> None:
        """Consider one note for every order it could match; keep `handle` for it rather than the note."""
        kept = note if handle is None else handle
        for i in self._by_note.get(note.note_id, ()):
            current = self._by_id[i]
            if current is None or note.seq > current[0]:  # as a dict by note_id: the later note wins
                self._by_id[i] = (note.seq, kept)
        date, seq = _recency(note)
        recency = date.toordinal() << 40 | seq  # one int orders as the pair does (seq < 2**40): less to keep
        for i in self._by_encounter.get(note.encounter_id, ()) if note.encounter_id else ():
            if _same_patient(self.orders[i], note):
                current = self._encounter[i]
                if current is None or recency > current[0]:
                    self._encounter[i] = (recency, kept)
        for i in self._by_patient.get(note.patient_id, ()) if note.patient_id else ():
            if _in_window(self.orders[i], note, self.window_days):
                current = self._window[i]
                if current is None or recency > current[0]:
                    self._window[i] = (recency, kept)
        row = _missed_row_if_needed(note, self.editions, self.forced_edition, self.parameters)
        if row is not None:
            self._missed[note.note_id] = (note.seq, row if handle is None else handle)

    def finish(self) -> tuple[list[dict], list[dict]]:
        """The verdict rows and unmatched-order rows `audit()` gives for the notes offered (without handles)."""
        return list(self.rows()), self.unmatched

    def rows(self, load: Callable[[list], Iterator[tuple]] | None = None) -> Iterator[dict]:
        """The verdict rows, once: each order's row, then the missed_imaging rows of notes no lumbar order
        matched; `unmatched` holds the unmatched-order rows after. `load(handles)` gives (handle, NoteRef)
        for notes offered with handles, in any order. Candidates are let go as the orders are decided."""
        decided = []  # (order index, the chosen note, how it matched)
        waiting: dict = {}  # with `load`: the chosen note's handle: [(order index, how it matched)]
        self.unmatched = []
        for i, order in enumerate(self.orders):
            note, how = _choose(order, *(c[1] if c is not None else None
                                         for c in (self._by_id[i], self._encounter[i], self._window[i])),
                                self.window_days)
            self._by_id[i] = self._encounter[i] = self._window[i] = None
            if note is None:
                self.unmatched.append({"order_id": order.order_id, "reason": how})
            elif load is None:
                decided.append((i, note, how))
            else:
                waiting.setdefault(note, []).append((i, how))
        judged: Iterable[tuple] = decided
        if load is not None:  # each chosen note read once, however many orders chose it
            judged = ((i, note, how) for handle, note in load(list(waiting)) for i, how in waiting.pop(handle))
        imaged: set[str] = set()
        for i, note, how in judged:
            row, lumbar = _order_row(self.orders[i], note, how, self.editions, self.order_rules,
                                     self.forced_edition, self.parameters)
            if lumbar:
                imaged.add(note.note_id)
            yield {k: row.get(k) for k in AUDIT_FIELDS}
        missed = [kept for _, kept in sorted(self._missed.values(), key=lambda kv: kv[0])]
        self._missed = {}
        if load is not None:
            missed = (_missed_row_if_needed(note, self.editions, self.forced_edition, self.parameters)
                      for _, note in load(missed))
        for row in missed:
            if row["note_id"] not in imaged:
                yield {k: row.get(k) for k in AUDIT_FIELDS}
