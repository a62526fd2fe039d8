"""The fast pipeline (windows, gated regexes, phrase-expanded ConText) against medspaCy's own."""
import re

import pytest

from pipeline.corpus import load_corpus
from pipeline.findings import findings_from_doc
from pipeline.literals import required_literals, with_first_characters
from pipeline.nlp import build


@pytest.fixture(scope="module")
def corpus_texts():
    return [note.text for note in load_corpus()]


def _rows(findings):
    return [f.as_row() for f in findings]


def test_nlp_windowed_extraction_equals_the_whole_text_pipeline(extractor):
    """Only sentences with a target match are tokenised; ConText never looks beyond a sentence, so
    running every sentence must give exactly the same findings."""
    notes = load_corpus()
    windowed = {r.note_id: _rows(r.findings) for r in extractor.pipe((n.note_id, n.text) for n in notes)}
    for note in notes:
        assert _rows(findings_from_doc(extractor.doc(note.text), note.note_id)) == windowed[note.note_id], note.note_id


def test_nlp_fast_pipeline_agrees_with_medspacy_pipeline(rules, extractor):
    """medspaCy's own matchers over the whole text. They differ only where a regex match runs across a
    sentence boundary (the fast pipeline looks within sentences): at most 2 % of notes."""
    slow = build(rules, fast=False)
    notes = load_corpus()
    fast = {r.note_id: _rows(r.findings) for r in extractor.pipe((n.note_id, n.text) for n in notes)}
    differing = [n.note_id for n in notes if _rows(findings_from_doc(slow(n.text), n.note_id)) != fast[n.note_id]]
    assert len(differing) <= 0.02 * len(notes), differing


def test_nlp_every_rule_match_contains_one_of_its_literals(rules, corpus_texts):
    """The literal filter may only skip text where the rule cannot match."""
    patterns = [r["pattern"] for r in rules.target_rules if isinstance(r.get("pattern"), str)] + \
               [r["pattern"] for r in rules.context_rules if isinstance(r.get("pattern"), str)] + \
               [rule.regex.pattern for rule in rules.section_rules]
    checked = 0
    for pattern in patterns:
        literals = required_literals(pattern, 1)
        if literals is None:
            continue
        regex = re.compile(pattern, re.IGNORECASE)
        for text in corpus_texts:
            lower = text.lower()
            for match in regex.finditer(text):
                checked += 1
                assert any(lit.at(lower, i) for lit in literals
                           for i in _occurrences(lower, lit.text, match.start(), match.end())), (pattern, match.group())
    assert checked > 1000


def _occurrences(lower, literal, start, end):
    i = lower.find(literal, start)
    while 0 <= i and i + len(literal) <= end:
        yield i
        i = lower.find(literal, i + 1)


@pytest.mark.parametrize("pattern,literals", [
    (r"\bfoot ?drop\b", {("footdrop", True, True), ("foot drop", True, True)}),
    (r"radiat(?:es|ing)\s+down", {("radiates", False, True), ("radiating", False, True)}),
    (r"(?<![\w/])(?:pmh|past medical history)\s*:", {("pmh", True, False), ("past medical history", True, False)}),
    (r"\b(?:T|temp)\s*(?:3[89]|4[0-2])", {("38", False, False), ("39", False, False), ("40", False, False),
                                             ("41", False, False), ("42", False, False)}),
])
def test_nlp_required_literals(pattern, literals):
    assert {tuple(lit) for lit in required_literals(pattern)} == literals


@pytest.mark.parametrize("pattern", [r"\w+\s+\d", r"(?:foo)?", r"[^a]+d", r"x*"])
def test_nlp_no_literals_when_none_are_required(pattern):
    assert required_literals(pattern) is None


def test_nlp_first_character_lookahead_finds_the_same_matches(rules, corpus_texts):
    text = "\n".join(corpus_texts[:60])
    patterns = [r["pattern"] for r in rules.target_rules if isinstance(r.get("pattern"), str)] + \
               [r["pattern"] for r in rules.context_rules if isinstance(r.get("pattern"), str)]
    faster = 0
    for pattern in patterns:
        regex = re.compile(pattern, re.IGNORECASE)
        quick = with_first_characters(regex)
        faster += quick.pattern != regex.pattern
        assert [m.span() for m in quick.finditer(text)] == [m.span() for m in regex.finditer(text)], pattern
    assert faster > len(patterns) // 2
