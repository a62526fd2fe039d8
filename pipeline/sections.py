"""Section detection: header rules (patterns/sections.json) → (start, end, category) spans.

A block copied forward from an earlier note ("--- Interval history copied from visit of 3/2/24 ---",
"HPI (copied from clinic note 11/27/2017):", "*** copied text ***") is a section of its own, `copied`,
whatever headers it holds, up to its end marker ("--- end of copied text ---", section rules of category
`copied_end`). Without an end marker it ends at the first blank line, or at the next header; a block
that starts with a header of its own (a copied note: "HPI: ...", "Exam: ...") ends at the first blank line
or at a header of a kind it already had. After it, the section it interrupted goes on.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from .rules import SectionRule

# A header counts at the start of the text, of a line (after bullets/spaces), or after a sentence end.
_HEADER_CONTEXT = re.compile(r"(?:^|\n)[ \t\-\*•>#]*$|[.;!?)][ \t]+$")
_BLANK_LINE = re.compile(r"\n[ \t\r]*\n\s*")
_SPACE = re.compile(r"\s*")

COPIED = "copied"           # text copied forward from an earlier note: it describes that visit
COPIED_END = "copied_end"   # the end marker of a copied block


@dataclass(frozen=True)
class Section:
    start: int        # the header's first character
    body_start: int   # first character after the header
    end: int
    category: str
    rule_id: str


def find_sections(text: str, rules: list[SectionRule]) -> list[Section]:
    """The note's sections in order; text before the first header belongs to no section."""
    return sections_from_matches(text, [(rule, match.start(), match.end())
                                        for rule in rules for match in rule.regex.finditer(text)])


def sections_from_matches(text: str, matches) -> list[Section]:
    """Sections from the header rules' matches, given as (rule, start, end) in rule order."""
    headers: dict[int, tuple[int, SectionRule]] = {}
    for rule, start, end in matches:
        while start < end and text[start] in " \t\n":
            start += 1
        if not _HEADER_CONTEXT.search(text[max(0, start - 40):start]) and start != 0:
            continue
        previous = headers.get(start)
        if previous is None or end > previous[0]:
            headers[start] = (end, rule)
    kept: list[tuple[int, int, SectionRule]] = []
    for start in sorted(headers):
        body_start, rule = headers[start]
        if kept and start < kept[-1][1]:
            continue  # a header inside another header ("Assessment and Plan:" contains "Plan:")
        kept.append((start, body_start, rule))
    if any(rule.category in (COPIED, COPIED_END) for _, _, rule in kept):
        return _with_copied_blocks(text, kept)
    ends = [start for start, _, _ in kept[1:]] + [len(text)]
    return [Section(start, body_start, end, rule.category, rule.id)
            for (start, body_start, rule), end in zip(kept, ends)]


def _with_copied_blocks(text: str, kept: list[tuple[int, int, SectionRule]]) -> list[Section]:
    """Sections from headers in order when some open or close a copied block (see the module's doc)."""
    sections: list[Section] = []
    current: Section | None = None  # the section a copied block interrupts, to go on after it

    def close(at: int) -> None:
        if sections and sections[-1].end > at:
            last = sections.pop()
            if last.start < at:  # else an interrupted section that had no text left before the next header
                sections.append(Section(last.start, last.body_start, at, last.category, last.rule_id))

    i = 0
    while i < len(kept):
        start, body_start, rule = kept[i]
        if rule.category == COPIED_END:  # an end marker without its block: not a header
            i += 1
            continue
        if rule.category != COPIED:
            close(start)
            current = Section(start, body_start, len(text), rule.category, rule.id)
            sections.append(current)
            i += 1
            continue
        inner, end, resume, i = _copied_block(text, kept, i)
        for inner_start, inner_body in [(start, body_start)] + inner:
            close(inner_start)
            sections.append(Section(inner_start, inner_body, len(text), COPIED, rule.id))
        if end is not None:
            close(end)
            if current is not None:  # the interrupted section goes on after the block (or its end marker)
                sections.append(Section(resume[0], resume[1], len(text), current.category, current.rule_id))
    return sections


def _copied_block(text: str, kept: list[tuple[int, int, SectionRule]], i: int):
    """The copied block opened by header `i`: (start, body start) of the headers inside it; where it ends
    and (start, body start) of the interrupted section going on after it (None, None when the next header
    ends it); and the index of the next header to read."""
    body_start = kept[i][1]
    marker = next((j for j in range(i + 1, len(kept)) if kept[j][2].category in (COPIED, COPIED_END)), None)
    if marker is not None and kept[marker][2].category == COPIED_END:
        # delimited: everything up to the end marker, headers included
        end_start, end_body, _ = kept[marker]
        return [(s, b) for s, b, _ in kept[i + 1:marker]], end_start, (end_start, end_body), marker + 1
    limit = kept[marker][0] if marker is not None else len(text)
    content = _SPACE.match(text, body_start).end()
    blank = _BLANK_LINE.search(text, content, limit)
    after_blank = (blank.end(), blank.end()) if blank else None
    stop = blank.start() if blank else limit
    j = i + 1
    if j < len(kept) and kept[j][0] == content and kept[j][0] < stop:
        # a copied note with its own headers ("Copied from 2/27 note:" then "HPI: ..."): up to a blank
        # line, or to a header of a kind the block already had (the current note's own "Exam:")
        seen: set[str] = set()
        while j < len(kept) and kept[j][0] < stop and kept[j][2].category not in seen | {COPIED, COPIED_END}:
            seen.add(kept[j][2].category)
            j += 1
        inner = [(s, b) for s, b, _ in kept[i + 1:j]]
        if j < len(kept) and kept[j][0] < stop:
            return inner, None, None, j
        return inner, (blank.start() if blank else None), after_blank, j
    # copied prose: up to the next header or the first blank line after it
    if blank and (j >= len(kept) or blank.start() < kept[j][0]):
        return [], blank.start(), after_blank, j
    return [], None, None, j


def section_at(sections: list[Section], char: int) -> Section | None:
    """The section containing character offset `char`, or None outside every section."""
    i = bisect.bisect_right(sections, char, key=lambda s: s.start) - 1
    return sections[i] if i >= 0 and char < sections[i].end else None
