"""The finding record, made in exactly one place (`findings_from_doc`) from a processed `Doc`.

Everything downstream (summary, tables, evaluation, explain) consumes `Finding` records.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields

from spacy.tokens import Doc, Span

from .labels import CONTEXT_ASSERTIONS, SECTION_ASSERTIONS
from .literals import with_first_characters
from .sections import COPIED, section_at


@dataclass(frozen=True)
class Finding:
    note_id: str
    label: str
    assertion: str
    laterality: str
    progressive: bool
    section: str | None
    start: int
    end: int
    text: str
    rule_id: str
    cue: str | None = None        # the ConText trigger or section that decided the assertion
    cue_rule_id: str | None = None

    def as_row(self) -> dict:
        return dict(self.__dict__)  # the fields are plain values: no need for asdict's deep copy


FINDING_FIELDS = tuple(f.name for f in fields(Finding))

_LEFT = r"(?:left|lt|l|lle|left-sided|l-sided)"
_RIGHT = r"(?:right|rt|r|rle|right-sided|r-sided)"
_BILATERAL = (r"(?:bilateral(?:ly)?|bilat|b/l|ble|both (?:legs|feet|lower extremities|lower legs|sides|les|calves|thighs)"
              r"|(?:rt|r)\s*(?:>|<|=)\s*(?:lt|l)|(?:lt|l)\s*(?:>|<|=)\s*(?:rt|r)"
              r"|(?:rt|r)\s*(?:and|&|/)\s*(?:lt|l)|(?:lt|l)\s*(?:and|&|/)\s*(?:rt|r)|left and right|right and left"
              r"|left\s*(?:>|<|=)\s*right|right\s*(?:>|<|=)\s*left|symmetric(?:al(?:ly)?)?)")
_SIDE_WORD = re.compile(rf"(?<![\w/-])(?:(?P<bilateral>{_BILATERAL})|(?P<left>{_LEFT})|(?P<right>{_RIGHT}))(?![\w/-])",
                        re.IGNORECASE)
# "LT" is also light touch, a sensory modality: "decreased LT", "intact to LT", "sensation to LT", "LT/PP",
# "PP and LT", "LT sensation". There it names no side ("decreased LT R lateral calf" is the right calf).
_MODALITY = r"(?:PP|pin ?prick|temp(?:erature)?|vibration|vibratory|proprioception|sharp(?:/dull)?|cold)"
_LIGHT_TOUCH_BEFORE = re.compile(
    r"(?:\b(?:decreased|decr|dec|diminished|dim|reduced|impaired|absent|altered|abnormal|intact|normal|nl|symmetric|"
    r"loss of)\s*(?:to\s+)?|↓\s*(?:to\s+)?"
    r"|\b(?:sensation|sensory|sens)\s+(?:(?:is|was|are)\s+)?(?:\w+\s+)?to\s+"
    rf"|\b{_MODALITY}\s*(?:/|,|and|&)\s*)$", re.IGNORECASE)
_LIGHT_TOUCH_AFTER = re.compile(rf"\s*(?:(?:/|,|and\b|&)\s*{_MODALITY}\b|sensation\b|sensory\b)", re.IGNORECASE)
_PROGRESSIVE = re.compile(
    r"\b(?:worsening|worsened|progressive(?:ly)?|progressing|progressed|progression|increasing(?:ly)?|spreading|"
    r"spread(?:s|ed)? (?:to|into|up)|getting worse|deteriorat\w+|now (?:up to|to the|into|involves|involving|also|extends)|"
    r"ascend\w+|was \d[+-]?/5,? (?:and )?now|(?:from|went from) \d[+-]?/5 to \d[+-]?/5|more (?:weak|numb)|weaker|worse (?:than|since))\b",
    re.IGNORECASE)
# "and" joins two clauses, but not two modalities ("decreased LT and PP over the R foot")
_CLAUSE_BREAK = re.compile(rf"[,;:()]|\band\b(?!\s+{_MODALITY}\b)|\bbut\b", re.IGNORECASE)
# told which characters a match starts with, they fail fast at most positions (literals.py)
_SIDE_WORD, _PROGRESSIVE, _CLAUSE_BREAK = map(with_first_characters, (_SIDE_WORD, _PROGRESSIVE, _CLAUSE_BREAK))


def _side_words(text: str, start: int, end: int):
    """The side words in text[start:end], less "LT" where it means light touch."""
    for match in _SIDE_WORD.finditer(text, start, end):
        if match.lastgroup == "left" and match.group().lower() == "lt" and (
                _LIGHT_TOUCH_BEFORE.search(text, max(0, match.start() - 40), match.start())
                or _LIGHT_TOUCH_AFTER.match(text, match.end())):
            continue
        yield match


def laterality(text: str, start: int, end: int, sent_start: int, sent_end: int) -> str:
    """left/right/bilateral from the mention itself, else the nearest side word in its clause."""
    inside = list(_side_words(text, start, end))
    if inside:
        kinds = {m.lastgroup for m in inside}
        if "bilateral" in kinds or kinds == {"left", "right"}:
            return "bilateral"
        return inside[0].lastgroup
    before_start = max(sent_start, start - 40)
    breaks = list(_CLAUSE_BREAK.finditer(text, before_start, start))
    if breaks:
        before_start = breaks[-1].end()
    after_end = min(sent_end, end + 30)
    cut = _CLAUSE_BREAK.search(text, end, after_end)
    if cut:
        after_end = cut.start()
    # side words are read in the note's text (not a slice), so "LT" sees the words around it
    candidates = [(start - m.end(), m.lastgroup) for m in _side_words(text, before_start, start)]
    candidates += [(m.start() - end + 0.5, m.lastgroup) for m in _side_words(text, end, after_end)]
    if not candidates:
        return "unspecified"
    return min(candidates)[1]


def is_progressive(text: str, start: int, end: int, sent_start: int, sent_end: int) -> bool:
    """Described as worsening/progressing/spreading near the mention, in the same sentence."""
    window = text[max(sent_start, start - 50):min(sent_end, end + 50)]
    return bool(_PROGRESSIVE.search(window))


def _outside_modifiers(ent: Span):
    """ConText modifiers of a span, less any cue inside the matched words themselves: in
    "completed 8 wks of PT, no relief" the "no" belongs to the finding, it does not negate it."""
    for modifier in ent._.modifiers:
        start, end = modifier.modifier_span
        if not (ent.start <= start and end <= ent.end):
            yield modifier


def context_categories(ent: Span) -> set[str]:
    """The ConText categories that modify a span (for scoring flags independently)."""
    return {modifier.category for modifier in _outside_modifiers(ent)}


def _context_assertion(ent: Span) -> tuple[str, str | None, str | None]:
    categories = {}
    for modifier in _outside_modifiers(ent):
        start, end = modifier.modifier_span
        categories.setdefault(modifier.category, (ent.doc[start:end].text, modifier.rule.metadata.get("id")))
    for category, assertion in CONTEXT_ASSERTIONS:
        if category in categories:
            cue, cue_id = categories[category]
            return assertion, cue, cue_id
    return "present", None, None


def entities(doc: Doc):
    """The doc's entities: the target matcher's own spans when it left them (`doc.ents` rebuilds its
    spans from every token on each call), else `doc.ents`."""
    spans = doc.user_data.get("lbp_ents")
    return spans if spans is not None else doc.ents


def target_mentions(doc: Doc) -> list[tuple]:
    """What the spaCy pipeline says of each matched target, in the doc's offsets: (start, end, target
    rule, ConText's (assertion, cue, cue rule id), or None for a rule that names a normal finding).
    Everything else about a finding comes from the note (`make_findings`)."""
    mentions = []
    for ent in entities(doc):
        rule = ent._.target_rule
        polarity = rule.metadata.get("polarity", "positive")
        if polarity == "mask":
            continue
        context = None if polarity == "normal" else _context_assertion(ent)
        mentions.append((ent.start_char, ent.end_char, rule, context))
    return mentions


def make_findings(note_id: str, text: str, sections, mentions) -> list[Finding]:
    """One `Finding` per (mention, label), with assertion, laterality, progression and section.
    `mentions`: (start, end, sentence start, sentence end, target rule, ConText's assertion or None)
    in the note's offsets."""
    findings = []
    for start, end, sent_start, sent_end, rule, context in mentions:
        meta = rule.metadata
        section = section_at(sections, start)
        section_name = section.category if section else None
        if context is None:  # a normal finding ("DF 5/5"): the words are the cue
            assertion, cue, cue_id = "negated", text[start:end], meta["id"]
        else:
            assertion, cue, cue_id = context
        by_section = SECTION_ASSERTIONS.get(section_name)
        if by_section == "historical":
            # "PMH: breast CA"; a negation there stays a negation. In text copied from an earlier note a
            # suspicion ("concern for epidural abscess") is that visit's too.
            if assertion == "present" or (assertion == "possible" and section_name == COPIED):
                assertion, cue, cue_id = "historical", section_name, section.rule_id
        elif by_section:  # family history, patient instructions: whatever the wording
            assertion, cue, cue_id = by_section, section_name, section.rule_id
        labels = meta.get("negated_labels") if assertion == "negated" and "negated_labels" in meta \
            else meta.get("labels", [rule.category])
        if not labels:
            continue
        side = laterality(text, start, end, sent_start, sent_end)
        progressive = is_progressive(text, start, end, sent_start, sent_end)
        for label in labels:
            findings.append(Finding(
                note_id=note_id, label=label, assertion=assertion, laterality=side, progressive=progressive,
                section=section_name, start=start, end=end, text=text[start:end],
                rule_id=meta["id"], cue=cue, cue_rule_id=cue_id,
            ))
    return findings


def findings_from_doc(doc: Doc, note_id: str) -> list[Finding]:
    """The findings of a processed `Doc` (of a whole note, or of a note's window)."""
    window = doc.user_data.get("lbp_window")
    mentions = []
    for start, end, rule, context in target_mentions(doc):
        if window:  # offsets in the note, not in the window's text
            start, end = window.to_note_span(start, end)
            sent_start, sent_end = window.scan.sentence_at(start)
        else:
            sent = doc.char_span(start, end, alignment_mode="expand").sent
            sent_start, sent_end = sent.start_char, sent.end_char
        mentions.append((start, end, sent_start, sent_end, rule, context))
    text, sections = (window.scan.text, window.scan.sections) if window else (doc.text, doc._.lbp_sections)
    return make_findings(note_id, text, sections, mentions)
