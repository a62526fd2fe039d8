"""The per-note summary of the findings contract: statuses, age, duration, bilateral and progressive deficits."""
from __future__ import annotations

import re
from typing import Iterable

from .findings import Finding
from .labels import COUNTS_WHEN_HISTORICAL, LABELS, NEURO_DEFICITS
from .sections import COPIED

SUMMARY_FIELDS = ("note_id", *LABELS, "age", "duration_days", "duration_class",
                  "bilateral_deficit", "progressive_deficit", "in_scope")
_RANK = {"present": 3, "possible": 2, "absent": 1}
PAIN_LABELS = ("LOW_BACK_PAIN", "RADICULOPATHY", "NEUROGENIC_CLAUDICATION")


def mention_status(finding: Finding) -> str | None:
    """What one mention says about its label for the patient now (None: nothing)."""
    if finding.assertion == "present":
        return "present"
    if finding.assertion == "historical":
        return "present" if finding.label in COUNTS_WHEN_HISTORICAL else None
    if finding.assertion == "possible":
        return "possible"
    if finding.assertion == "negated":
        return "absent"
    return None  # hypothetical, family


def label_statuses(findings: Iterable[Finding]) -> dict[str, str | None]:
    """Per label: present beats possible beats absent; None when the note says nothing about it."""
    statuses: dict[str, str | None] = dict.fromkeys(LABELS)
    for finding in findings:
        status = mention_status(finding)
        current = statuses[finding.label]
        if status and (current is None or _RANK[status] > _RANK[current]):
            statuses[finding.label] = status
    return statuses


_NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                 "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "several": 3, "few": 3,
                 "a few": 3, "couple": 2, "couple of": 2, "a couple of": 2, "a couple": 2}
_UNIT_DAYS = {"d": 1, "day": 1, "wk": 7, "week": 7, "w": 7, "mo": 30, "mos": 30, "month": 30, "m": 30, "yr": 365, "year": 365, "y": 365}
_QUANTITY = r"(?P<n>\d+(?:\.\d+)?|a couple of|a couple|couple of|a few|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|several|few|an|a)"
_UNIT = r"(?P<unit>days?|d|wks?|weeks?|w|mos?|months?|yrs?|years?)"
_DURATIONS = tuple(re.compile(p, re.IGNORECASE) for p in (
    r"\b(?:x|for|over|past|last|since|about|approximately|approx|~|×|of|lasting|ongoing for|now)\s*(?:the\s+)?"
    r"(?:past\s+|last\s+|about\s+|approximately\s+|~\s*)?" + _QUANTITY + r"\s*(?:(?:-|to)\s*\d+\s*)?-?\s*" + _UNIT + r"\b",
    r"\b" + _QUANTITY + r"[- ]" + _UNIT + r"[- ](?:h/o|hx|history|duration|of)\b",
    r"\b" + _QUANTITY + r"\s+" + _UNIT + r"\s+ago\b",
))


def _first_duration(text: str, start: int = 0, end: int | None = None) -> re.Match | None:
    end = len(text) if end is None else end
    matches = [m for m in (p.search(text, start, end) for p in _DURATIONS) if m]
    return min(matches, key=lambda m: m.start()) if matches else None


_YESTERDAY = re.compile(r"\b(?:since|onset|began|started|starting|this|last)\s+(?:yesterday|this morning|last night|today|morning|night|evening)\b|\byesterday\b", re.IGNORECASE)
_CHRONIC = re.compile(r"\b(?:chronic|longstanding|long-standing|for (?:many )?years|for decades|lifelong)\b", re.IGNORECASE)
_ACUTE = re.compile(r"\b(?:acute|new[- ]onset|sudden(?:[- ]onset)?)\b", re.IGNORECASE)
_AGE = re.compile(
    r"\b(?P<age>\d{1,3})\s*(?:-|\s)?\s*(?:y/?o|yo|y\.o\.|yrs?[- ]old|years?[- ]old|year-old|yr-old|yom|yof|ym|yf)(?![a-z])"
    r"|\b(?P<age2>\d{1,3})(?:M|F|m|f)\b(?![/\d])"
    r"|\b(?:age|aged|age:)\s*(?P<age3>\d{1,3})\b", re.IGNORECASE)


def age_from_text(text: str) -> int | None:
    for match in _AGE.finditer(text):
        value = int(match.group("age") or match.group("age2") or match.group("age3"))
        if 0 < value < 120:
            return value
    return None


def _days(match: re.Match) -> int | None:
    n = match.group("n") or ""
    unit = (match.group("unit") or "").lower().rstrip("s")
    n = n.lower()
    value = _NUMBER_WORDS.get(n)
    if value is None:
        try:
            value = float(n)
        except ValueError:
            return None
    factor = _UNIT_DAYS.get(unit) or _UNIT_DAYS.get(unit[:2]) or _UNIT_DAYS.get(unit[:1])
    return int(round(value * factor)) if factor else None


def duration(text: str, findings: Iterable[Finding]) -> tuple[int | None, str]:
    """Back-pain episode duration in days and its class (acute / subacute / chronic / unknown). Text copied
    from an earlier note is read after the note's own: its durations were that visit's."""
    pain = [f for f in findings if f.label in PAIN_LABELS and f.assertion in ("present", "historical")]
    pain = sorted(pain, key=lambda f: (f.section == COPIED, f.start))
    days = None
    described = None
    for finding in pain:
        before = text[max(0, finding.start - 25):finding.start]
        line_end = text.find("\n", finding.end)
        after = text[finding.end:min(finding.end + 60, line_end if line_end != -1 else len(text))]
        if described is None and _CHRONIC.search(before + " " + finding.text):
            described = "chronic"
        elif described is None and _ACUTE.search(before + " " + finding.text):
            described = "acute"
        if days is None:
            match = _first_duration(after) or _first_duration(before)
            if match:
                days = _days(match)
            elif _YESTERDAY.search(after):
                days = 1
    if days is None and pain:
        first = pain[0].start
        match = _first_duration(text, max(0, first - 80), first + 200)
        if match:
            days = _days(match)
    if described == "chronic" or (days is not None and days > 84):
        return days, "chronic"
    if days is not None:
        return days, "subacute" if days >= 42 else "acute"
    return None, "acute" if described == "acute" else "unknown"


def in_scope(statuses) -> bool:
    """A back-pain note for the audit: low back, radicular or claudication pain present, or cauda
    equina present or possible (findings contract, "Scope")."""
    return any(statuses.get(label) == "present" for label in PAIN_LABELS) or \
        statuses.get("CAUDA_EQUINA") in ("present", "possible")


def summarise(note_id: str, text: str, findings: list[Finding]) -> dict:
    """The per-note summary row (one column per canonical label, then the derived fields)."""
    statuses = label_statuses(findings)
    deficits = [f for f in findings if f.label in NEURO_DEFICITS and mention_status(f) == "present"]
    sides = {f.laterality for f in deficits}
    bilateral = "bilateral" in sides or {"left", "right"} <= sides
    progressive = any(f.progressive for f in deficits) or any(
        f.progressive for f in findings if f.label == "SADDLE_ANESTHESIA" and mention_status(f) == "present")
    days, duration_class = duration(text, findings)
    return {
        "note_id": note_id,
        **statuses,
        "age": age_from_text(text),
        "duration_days": days,
        "duration_class": duration_class,
        "bilateral_deficit": bilateral,
        "progressive_deficit": progressive,
        "in_scope": in_scope(statuses),
    }


def evidence_by_label(findings: Iterable[Finding], limit: int = 3) -> dict[str, list[str]]:
    """Per label, the texts of up to `limit` mentions that make it present or possible (for rationales)."""
    evidence: dict[str, list[str]] = {}
    for finding in sorted(findings, key=lambda f: f.start):
        if mention_status(finding) in ("present", "possible"):
            texts = evidence.setdefault(finding.label, [])
            text = " ".join(finding.text.split())
            if text not in texts and len(texts) < limit:
                texts.append(text)
    return evidence
