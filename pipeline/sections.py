"""Section detection: header rules (patterns/sections.json) → (start, end, category) spans."""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from .rules import SectionRule

# A header counts at the start of the text, of a line (after bullets/spaces), or after a sentence end.
_HEADER_CONTEXT = re.compile(r"(?:^|\n)[ \t\-\*•>#]*$|[.;!?)][ \t]+$")


@dataclass(frozen=True)
class Section:
    start: int        # the header's first character
    body_start: int   # first character after the header
    end: int
    category: str
    rule_id: str


def find_sections(text: str, rules: list[SectionRule]) -> list[Section]:
    """The note's sections in order; text before the first header belongs to no section."""
    return sections_from_matches(text, [(rule, match) for rule in rules for match in rule.regex.finditer(text)])


def sections_from_matches(text: str, matches) -> list[Section]:
    """Sections from the header rules' matches, given as (rule, match) in rule order."""
    headers: dict[int, tuple[int, SectionRule]] = {}
    for rule, match in matches:
        start = match.start()
        while start < match.end() and text[start] in " \t\n":
            start += 1
        if not _HEADER_CONTEXT.search(text[max(0, start - 40):start]) and start != 0:
            continue
        previous = headers.get(start)
        if previous is None or match.end() > previous[0]:
            headers[start] = (match.end(), rule)
    kept: list[tuple[int, int, SectionRule]] = []
    for start in sorted(headers):
        body_start, rule = headers[start]
        if kept and start < kept[-1][1]:
            continue  # a header inside another header ("Assessment and Plan:" contains "Plan:")
        kept.append((start, body_start, rule))
    ends = [start for start, _, _ in kept[1:]] + [len(text)]
    return [Section(start, body_start, end, rule.category, rule.id)
            for (start, body_start, rule), end in zip(kept, ends)]


def section_at(sections: list[Section], char: int) -> Section | None:
    """The section containing character offset `char`, or None before the first header."""
    i = bisect.bisect_right(sections, char, key=lambda s: s.start) - 1
    return sections[i] if i >= 0 else None
