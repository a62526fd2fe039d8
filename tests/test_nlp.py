from pipeline.corpus import load_corpus
from pipeline.findings import findings_from_doc
from pipeline.nlp import build


def test_nlp_fast_regex_matching_gives_medspacys_results(rules, extractor):
    slow = build(rules, fast=False)
    for note in load_corpus()[:40]:
        fast_rows = [f.as_row() for f in findings_from_doc(extractor.nlp(note.text), note.note_id)]
        slow_rows = [f.as_row() for f in findings_from_doc(slow(note.text), note.note_id)]
        assert fast_rows == slow_rows, note.note_id
