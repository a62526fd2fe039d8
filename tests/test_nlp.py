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


# ---------------------------------------------------------------- segments and their cache


def _segment_mentions(extractor, scan, segments):
    """What the pipeline finds in each of `segments`, run together in one doc."""
    from pipeline.extract import mentions_by_segment

    window = extractor.nlp.get_pipe("lbp_windows").scanner.window(scan, segments)
    doc = extractor.nlp.make_doc(window.reduced)
    doc.user_data["lbp_window"] = window
    return mentions_by_segment(extractor.nlp(doc))


def test_nlp_a_segment_gives_the_same_mentions_alone_or_among_others(extractor):
    """The segment cache is sound only if a segment's findings do not depend on its neighbours: every
    segment of every corpus note, run alone, with all the note's segments, and in reverse order."""
    scanner = extractor.nlp.get_pipe("lbp_windows").scanner
    checked = 0
    for note in load_corpus():
        scan = scanner.scan(note.text)
        segments = list(scan.segments)
        together = _segment_mentions(extractor, scan, segments)
        backwards = _segment_mentions(extractor, scan, segments[::-1])[::-1]
        alone = [_segment_mentions(extractor, scan, [segment])[0] for segment in segments]
        assert together == alone == backwards, note.note_id
        checked += sum(map(len, alone))
    assert checked > 2000


def test_nlp_the_segment_cache_changes_no_finding(rules, extractor):
    """Notes whose segments were seen before (the same note again, a note later in the run sharing a
    template) give exactly what a pipeline with no cache gives."""
    from pipeline.extract import Extractor

    uncached = Extractor(rules=rules, cache_size=0)
    notes = [(n.note_id, n.text) for n in load_corpus()]
    expected = {r.note_id: (r.findings, r.summary) for r in uncached.pipe(notes)}
    assert uncached.cache.hits == 0
    cached = Extractor(rules=rules)
    mixed = notes + notes[::-1] + [(f"{a[0]}+{b[0]}", a[1] + "\n\n" + b[1]) for a, b in zip(notes, notes[1:])]
    results = list(cached.pipe(mixed, batch_size=16))
    assert cached.cache.hits > len(notes)
    for result in results:
        if "+" in result.note_id:
            assert result.findings == tuple(uncached.extract(*next(
                (text, note_id) for note_id, text in mixed if note_id == result.note_id)).findings)
        else:
            assert (result.findings, result.summary) == expected[result.note_id]


def test_nlp_the_segment_cache_keeps_at_most_its_size(rules):
    from pipeline.extract import Extractor

    small = Extractor(rules=rules, cache_size=10)
    list(small.pipe((n.note_id, n.text) for n in load_corpus()))
    assert len(small.cache) == 10 and small.cache.misses > 10


def test_nlp_a_remembered_window_is_reused_only_where_look_behinds_see_the_same():
    """The scanner remembers each line's and sentence's matches by the window's text and the characters
    before it that a look-behind (or `\\b`, `^`) reads: the same window after other words is searched again."""
    from pipeline.windows import GatedRegexes

    patterns = [(r"(?<=ED\s)for\s+back\s+pain", 2), (r"(?<![\w/])foot\s+drop", 2), (r"^numb\w*", 2 | 8)]
    cases = [("ED for back pain", [0, 3]), ("EX for back pain", [0, 3]), ("ED for back pain", [0, 3]),
             ("L foot drop", [0, 2]), ("L/foot drop", [0, 2]), ("foot drop", [0]),
             ("x\nnumbness", [0, 2]), ("xxnumbness", [0, 2]), ("numbness", [0])]
    remembering, forgetting = GatedRegexes(patterns, window_cache=100), GatedRegexes(patterns)
    found = []
    for text, windows in cases:
        found.append(remembering.matches(text, windows))
        assert found[-1] == forgetting.matches(text, windows), text
    assert [bool(f) for f in found] == [True, False, True, True, False, True, True, False, True]
    assert remembering.recent.hits >= 1 and forgetting.recent.hits == 0
