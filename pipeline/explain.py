"""One note, rendered for a clinician in the terminal."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .audit import NEEDS_IMAGING, judge, parse_date
from .extract import NoteResult
from .labels import LABELS
from .orders import Procedure, normalise
from .rules import RuleSet
from .scenarios import Edition, Recommendation, choose_edition, recommend
from .summary import evidence_by_label
from .tables import UsageError

_CUE_NAMES = {"fhx": "family history section", "pmh": "past history section", "psh": "past surgical history section",
              "instructions": "instructions section"}


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render(result: NoteResult, assessment: "Assessment | None" = None) -> str:
    s = result.summary
    lines = []
    facts = [f"age {s['age']}" if s["age"] is not None else "age not stated"]
    if s["duration_days"] is not None:
        facts.append(f"duration {s['duration_days']} days ({s['duration_class']})")
    else:
        facts.append(f"duration {s['duration_class']}")
    facts.append("in scope for the imaging audit" if s["in_scope"] else "not a back-pain note (out of scope)")
    lines.append("Note " + result.note_id + ": " + ", ".join(facts))
    lines.append("")
    if not result.findings:
        lines.append("No findings.")
    else:
        lines.append(f"{'FINDING':<28}{'ASSERTION':<14}{'SIDE':<12}{'SECTION':<14}EVIDENCE")
        for f in sorted(result.findings, key=lambda f: (f.start, f.label)):
            side = f.laterality if f.laterality != "unspecified" else "-"
            evidence = f'"{_clip(f.text, 40)}"'
            if f.assertion != "present" and f.cue:
                cue = _CUE_NAMES.get(f.cue, None) if f.cue_rule_id and f.cue_rule_id.startswith("SEC-") else None
                evidence += f"  ← {cue or repr(_clip(f.cue, 30))}"
            if f.progressive:
                evidence += "  [progressive]"
            lines.append(f"{f.label:<28}{f.assertion:<14}{side:<12}{(f.section or '-'):<14}{evidence}  {f.rule_id}")
    lines.append("")
    lines.append("Summary for the patient now")
    for status in ("present", "possible", "absent"):
        labels = [label for label in LABELS if s[label] == status]
        lines.append(f"  {status + ':':<14}{', '.join(labels) if labels else '-'}")
    silent = sorted({f.label for f in result.findings if s[f.label] is None})
    if silent:
        lines.append(f"  {'not counted:':<14}{', '.join(silent)} (family, hypothetical or past mentions only)")
    lines.append(f"  bilateral deficit: {'yes' if s['bilateral_deficit'] else 'no'};"
                 f" progressive deficit: {'yes' if s['progressive_deficit'] else 'no'}")
    if assessment is not None:
        lines += render_assessment(assessment)
    return "\n".join(lines)


@dataclass(frozen=True)
class Assessment:
    """The guideline view of one note: its recommendation and, for each order typed in, a verdict."""

    edition: Edition
    recommendation: Recommendation
    verdicts: tuple[tuple[str, Procedure, dict], ...] = ()

    def as_json(self) -> dict:
        r = self.recommendation
        return {
            "edition": self.edition.id,
            "scenarios": [{"scenario": m.scenario, "rule_id": m.rule_id, "urgency": m.urgency,
                           "evidence": list(m.evidence), "usually_appropriate": list(m.usually_appropriate),
                           "may_be_appropriate": list(m.may_be_appropriate), "source": m.source}
                          for m in r.scenarios],
            "urgency": r.urgency if r.in_scope else None,
            "recommended": list(r.usually_appropriate),
            "may_be_appropriate": list(r.may_be_appropriate),
            "orders": [{"order": text, "procedure": p.procedure, "procedure_rule_ids": list(p.rule_ids),
                        "reason": p.reason, **judged} for text, p, judged in self.verdicts],
        }


def assess(result: NoteResult, rules: RuleSet, orders: Sequence[str] = (), date: str | None = None,
           edition: str | None = None, priority: str | None = None) -> Assessment:
    """Recommend for one note and judge each typed-in order (text or CPT code) against it.

    An order that names no body region is read as lumbar spine here (the note is about the back)."""
    when = parse_date(date) if date else None
    if date and when is None:
        raise UsageError(f"--date {date!r} is not a YYYY-MM-DD date")
    chosen = choose_edition(rules.editions, when, edition)
    recommendation = recommend(result.summary, chosen)
    evidence = evidence_by_label(result.findings)
    verdicts = []
    for order in orders:
        code = order.strip() if order.strip().isdigit() else None
        procedure = normalise(None if code else order, code, rules.orders, assume_lumbar=True)
        verdicts.append((order, procedure, judge(procedure, recommendation, chosen, evidence, priority, rules.orders)))
    return Assessment(chosen, recommendation, tuple(verdicts))


def render_assessment(assessment: Assessment) -> list[str]:
    r = assessment.recommendation
    lines = ["", f"Guideline: {assessment.edition.name} ({assessment.edition.citation})"]
    if not r.in_scope:
        lines.append("  not a back-pain note: no scenario applies, imaging orders are not judged")
    for m in r.scenarios:
        lines.append(f"  {m.scenario:<20}{m.urgency:<10}{m.rule_id:<26}{m.title}")
        lines.append(f"  {'':<20}because: {', '.join(e.replace('_', ' ').lower() for e in m.evidence)}")
    if r.in_scope:
        ua = ", ".join(r.usually_appropriate) or "none (imaging not indicated)"
        lines.append(f"  urgency: {r.urgency}")
        lines.append(f"  usually appropriate: {ua}")
        if r.may_be_appropriate:
            lines.append(f"  may be appropriate:  {', '.join(r.may_be_appropriate)}")
        for note in r.notes:
            lines.append(f"  note: {note}")
        if r.urgency in NEEDS_IMAGING and not assessment.verdicts:
            lines.append(f"  if no lumbar imaging is ordered: MISSED_IMAGING ({r.urgency} need)")
    for text, procedure, judged in assessment.verdicts:
        lines.append("")
        lines.append(f"Order \"{text}\" → {procedure.procedure}: {judged['verdict'].upper()}")
        if judged["advisory"]:
            lines.append(f"  advisory: {judged['advisory']}")
        lines.append(f"  why: {judged['rationale']}")
        lines.append(f"  rules: {judged['rule_ids'].replace(';', ', ')}")
    return lines
