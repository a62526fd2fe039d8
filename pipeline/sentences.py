"""Clinical sentence splitting: punctuation, line structure, lists and section headers.

Notes are templated, wrapped, bulleted and often unpunctuated. A newline ends a sentence
unless the next line plainly continues it (starts in lower case after a long line, wrapped
prose, that does not end a clause). Semicolons end a sentence too: "no bowel incontinence; + urinary retention".
"""
from __future__ import annotations

import re

import numpy
from spacy.attrs import IDX, SENT_START

_ABBREVIATIONS = {"dr", "mr", "mrs", "ms", "vs", "e.g", "i.e", "approx", "st", "no", "fig", "pt", "inc", "etc"}
_PUNCT_END = re.compile(r"[.!?]+[\"')\]]*[ \t]+(?=[A-Z0-9(\-\*•#+])")
_SEMICOLON = re.compile(r";[ \t]*")
_NEWLINE = re.compile(r"\n")
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*)$")
_WRAP_WIDTH = 45


def sentence_starts(text: str, header_starts: list[int] = ()) -> list[int]:
    """Character offsets where sentences start (always including 0 for non-empty text)."""
    starts = {0} if text else set()
    starts.update(header_starts)
    for match in _PUNCT_END.finditer(text):
        word = _WORD_BEFORE.search(text[max(0, match.start() - 12):match.start()])
        if word and word.group(1).lower().rstrip(".") in _ABBREVIATIONS and text[match.start()] == ".":
            continue
        starts.add(match.end())
    for match in _SEMICOLON.finditer(text):
        starts.add(match.end())
    for match in _NEWLINE.finditer(text):
        line_end = match.start()
        nxt = match.end()
        while nxt < len(text) and text[nxt] in " \t\r":
            nxt += 1
        if nxt >= len(text):
            continue
        prev_line = text[text.rfind("\n", 0, line_end) + 1:line_end].rstrip()
        # A wrapped line of prose is long; a short line is a list item or a template field.
        continues = text[nxt].islower() and len(prev_line) >= _WRAP_WIDTH and prev_line[-1] not in ".:;!?"
        if not continues:
            starts.add(nxt)
    return sorted(s for s in starts if s < len(text))


_NOT_START = numpy.uint64(2**64 - 1)  # spaCy's -1 for SENT_START, as the uint64 `from_array` takes


def sentence_token_starts(doc, starts: list[int]) -> list[int]:
    """Token indices where sentences start, from character offsets (an offset inside a token marks
    that token); always 0 for a non-empty doc."""
    if not len(doc):
        return []
    ends = doc.to_array([IDX]).astype("int64") + numpy.array([len(t) for t in doc], dtype="int64")
    marks = numpy.searchsorted(ends, numpy.asarray(sorted(starts), dtype="int64"), side="right")
    return sorted({0, *(int(m) for m in marks if m < len(doc))})


def set_sentence_starts(doc, starts: list[int]) -> list[int]:
    """Mark `token.is_sent_start` from character offsets; returns the starting token indices."""
    tokens = sentence_token_starts(doc, starts)
    if tokens:
        values = numpy.full((len(doc), 1), _NOT_START, dtype="uint64")
        values[tokens] = 1
        doc.from_array([SENT_START], values)
    return tokens
