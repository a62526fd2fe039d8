"""Clinical sentence splitting: punctuation, line structure, lists and section headers.

Notes are templated, wrapped, bulleted and often unpunctuated. A newline ends a sentence
unless the next line plainly continues it (starts in lower case after a long line, wrapped
prose, that does not end a clause). Semicolons end a sentence too: "no bowel incontinence; + urinary retention".
"""
from __future__ import annotations

import re

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


def set_sentence_starts(doc, starts: list[int]) -> None:
    """Mark `token.is_sent_start` from character offsets (an offset inside a token marks that token)."""
    if not len(doc):
        return
    marks = set()
    i = 0
    ordered = sorted(starts)
    for token in doc:
        token_end = token.idx + len(token.text)
        while i < len(ordered) and ordered[i] < token_end:
            marks.add(token.i)
            i += 1
    for token in doc:
        token.is_sent_start = token.i == 0 or token.i in marks
