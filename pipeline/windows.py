"""What of a note the spaCy pipeline needs to see: the sentences that hold a target match.

ConText modifies targets only within their sentence, so a sentence without any target match
cannot change a finding. `Scanner.prepare` finds sections, sentences and target matches on the raw
text (each rule's regex run only where one of its required literals occurs, see `literals.py`),
and keeps the sentences with a match as `pieces` of a shorter text. Tokenising, sentence marking
and ConText then run on that text alone; `Window` maps every offset back to the note.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

import ahocorasick

from .literals import UNFOLDABLE, analyse
from .rules import RuleSet
from .sections import Section, sections_from_matches
from .sentences import sentence_starts

CONTEXT_BEFORE = 24  # characters of the sentence before a kept one, for rules that look behind


@dataclass(frozen=True)
class Window:
    """A note cut down to the sentences the pipeline must see.

    `pieces` are (start, end, reduced_start): runs of consecutive kept sentences, in the note's
    offsets and where each begins in `reduced`. `matches` are (rule_index, start, end) target
    matches in `reduced` offsets, in rule order."""
    text: str
    sections: tuple[Section, ...]
    sentence_starts: tuple[int, ...]
    kept_starts: tuple[int, ...]          # sentence starts in `reduced` (kept sentences and the tails before them)
    pieces: tuple[tuple[int, int, int], ...]
    reduced: str
    matches: tuple[tuple[int, int, int], ...]
    _reduced_starts: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "_reduced_starts", tuple(p[2] for p in self.pieces))

    def to_note_span(self, start: int, end: int) -> tuple[int, int]:
        """A `reduced` span in the note's offsets, cut at the end of the piece it starts in."""
        i = bisect.bisect_right(self._reduced_starts, start) - 1
        piece_start, piece_end, reduced_start = self.pieces[max(i, 0)]
        return piece_start + start - reduced_start, min(piece_start + end - reduced_start, piece_end)

    def sentence_at(self, char: int) -> tuple[int, int]:
        """(start, end) of the note's sentence holding offset `char`."""
        return window_span(self.sentence_starts, bisect.bisect_right(self.sentence_starts, char) - 1, len(self.text))


def window_span(starts, i: int, length: int) -> tuple[int, int]:
    """(start, end) of window `i` of a text of `length` characters cut at `starts` (-1: before the first)."""
    return (starts[i] if i >= 0 else 0), (starts[i + 1] if i + 1 < len(starts) else length)


class GatedRegexes:
    """Regexes that run only inside the windows (sentences, lines) where one of their required
    literals occurs. One Aho-Corasick automaton finds every literal of every regex in one pass over
    the note with its non-word characters blanked, so a literal that needs a word boundary is looked
    for with a blank on that side ("ca" after a boundary → " ca") and rarely hits inside words."""

    def __init__(self, regexes: list[re.Pattern | tuple[str, int]], min_literal: int = 2):
        """`regexes`: compiled, or (pattern, flags) to be compiled here (once, with the lookahead)."""
        analysed = [analyse(*(r if isinstance(r, tuple) else (r.pattern, r.flags)), min_literal) for r in regexes]
        self.regexes = [regex for regex, _ in analysed]
        self.literals = [literals for _, literals in analysed]
        # literals with a letter or digit are looked for in the blanked note; "(-)", ":" as they are
        self.automaton, self.punctuation = ahocorasick.Automaton(), ahocorasick.Automaton()
        owners: dict[tuple[bool, str], list[int]] = {}
        for index, literals in enumerate(self.literals):
            for literal in literals or ():
                if _WORD_CHAR.search(literal.text):
                    word = (" " if literal.left else "") + blank(literal.text) + (" " if literal.right else "")
                    owners.setdefault((True, word), []).append(index)
                else:
                    owners.setdefault((False, literal.text), []).append(index)
        self._entries = []  # (length, blank first, regex indices) per automaton word
        for (blanked, word), indices in owners.items():
            automaton = self.automaton if blanked else self.punctuation
            automaton.add_word(word, len(self._entries))
            self._entries.append((len(word), blanked and word.startswith(" "), tuple(dict.fromkeys(indices))))
        for automaton in (self.automaton, self.punctuation):
            if len(automaton):
                automaton.make_automaton()

    def matches(self, text: str, windows: list[int], lower: str | None = None,
                blanked: str | None = None) -> list[tuple[int, re.Match]]:
        """(regex index, match) in regex order, then text order. `windows` are the starts of the
        windows; `lower` and `blanked` (`text.lower()` and `blank(lower)`) when the caller has them."""
        lower = text.lower() if lower is None else lower
        hits: dict[int, set[int]] | None = None
        if len(lower) == len(text) and not UNFOLDABLE.search(text):
            hits = self._hits(lower, blank(lower) if blanked is None else blanked, windows)
        found = []
        length = len(text)
        for index, regex in enumerate(self.regexes):
            if hits is None or self.literals[index] is None:  # literals cannot be trusted, or none
                found.extend((index, m) for m in regex.finditer(text))
                continue
            search = regex.search
            for w in sorted(hits.get(index, ())):
                start, end = window_span(windows, w, length)
                if search(text, start, end) is not None:  # most gated windows hold no match: no iterator
                    found.extend((index, m) for m in regex.finditer(text, start, end))
        return found

    def _hits(self, lower: str, blanked: str, windows: list[int]) -> dict[int, set[int]]:
        """The windows holding a literal of each regex."""
        pairs = set()
        entries = self._entries
        for automaton, haystack in ((self.automaton, " " + blanked + " "), (self.punctuation, " " + lower)):
            if automaton.kind != ahocorasick.AHOCORASICK:
                continue
            for end, entry in automaton.iter(haystack):  # boundaries at both ends of the note too
                length, blank_first, _ = entries[entry]
                start = end - length  # in `text`: the haystacks have one more character in front
                pairs.add((entry, bisect.bisect_right(windows, start if start > 0 else 0) - 1))
                if blank_first:  # the literal may start after the blank
                    pairs.add((entry, bisect.bisect_right(windows, start + 1) - 1))
        hits: dict[int, set[int]] = {}
        for entry, window in pairs:
            for index in entries[entry][2]:
                found_in = hits.get(index)
                if found_in is None:
                    hits[index] = {window}
                else:
                    found_in.add(window)
        return hits


_NON_WORD = re.compile(r"\W")
_WORD_CHAR = re.compile(r"\w")
_ASCII_BLANKS = str.maketrans({c: " " for c in map(chr, range(128)) if not _WORD_CHAR.match(c)})


def blank(text: str) -> str:
    """Every non-word character as a blank (same length)."""
    return text.translate(_ASCII_BLANKS) if text.isascii() else _NON_WORD.sub(" ", text)


class Scanner:
    """Sections, sentences and target matches of raw note text, from a rule set."""

    def __init__(self, rules: RuleSet, target_patterns: list[str]):
        """`target_patterns`: one regex per target rule, in the order the target matcher holds them."""
        self.section_rules = list(rules.section_rules)
        self.sections = GatedRegexes([rule.regex for rule in self.section_rules], min_literal=1)
        self.targets = GatedRegexes([(p, re.IGNORECASE) for p in target_patterns])

    def prepare(self, text: str, keep_all: bool = False) -> Window:
        """The note's window: every sentence when `keep_all`, else those holding a target match."""
        lower = text.lower()
        blanked = blank(lower)
        section_matches = [(self.section_rules[i], m)
                           for i, m in self.sections.matches(text, _line_starts(text), lower, blanked)]
        sections = tuple(sections_from_matches(text, section_matches))
        starts = sentence_starts(text, [s.start for s in sections])
        found = [(i, m.start(), m.end()) for i, m in self.targets.matches(text, starts, lower, blanked)]
        if keep_all:
            kept = list(range(len(starts)))
        else:
            hit = set()
            for _, start, end in found:
                first = bisect.bisect_right(starts, start) - 1
                last = bisect.bisect_left(starts, end) - 1
                hit.update(range(max(first, 0), max(last, first) + 1))
            kept = sorted(hit)
        pieces, parts, length, kept_starts = [], [], 0, []
        for i in kept:
            start, end = window_span(starts, i, len(text))
            if pieces and pieces[-1][1] == start:
                pieces[-1] = (pieces[-1][0], end, pieces[-1][2])
                kept_starts.append(length)
            else:
                # a piece starts with the tail of the sentence before it, as a sentence of its own:
                # rules look behind into it ("(?<=[.;]\s)ED for", "^[ \t]*-" at a line start)
                lead = max(starts[i - 1] if i else 0, start - CONTEXT_BEFORE)
                if parts and not parts[-1][-1:].isspace():
                    parts.append("\n")
                    length += 1
                pieces.append((lead, end, length))
                if lead < start:
                    kept_starts.append(length)
                kept_starts.append(length + start - lead)
                start = lead
            parts.append(text[start:end])
            length += end - start
        note_starts = [p[0] for p in pieces]
        matches = []
        for index, start, end in found:  # into `reduced`: every match lies in one piece
            piece_start, _, reduced_start = pieces[bisect.bisect_right(note_starts, start) - 1]
            shift = reduced_start - piece_start
            matches.append((index, start + shift, end + shift))
        return Window(text, sections, tuple(starts), tuple(kept_starts), tuple(pieces), "".join(parts),
                      tuple(matches))


def _line_starts(text: str) -> list[int]:
    starts, i = [0], text.find("\n")
    while i >= 0:
        starts.append(i + 1)
        i = text.find("\n", i + 1)
    return starts
