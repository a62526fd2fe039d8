"""What of a note the spaCy pipeline needs to see: the segments, runs of sentences that hold a target match.

ConText modifies targets only within their sentence, so a sentence without any target match
cannot change a finding. `Scanner.scan` finds sections, sentences and target matches on the raw
text (each rule's regex run only where one of its required literals occurs, see `literals.py`, and a
line's or sentence's matches remembered for the next time the same text comes), and cuts the sentences
with a match into `Segment`s. `Scanner.window` joins segments into one text with a separator no rule
reads across, so each segment gives the same findings wherever it stands (which lets `extract.py`
remember them); tokenising, sentence marking and ConText run on that text alone, and `Window` maps
every offset back to the note.
"""
from __future__ import annotations

import bisect
import re
from collections import OrderedDict
from dataclasses import dataclass, field

import ahocorasick

from .literals import UNFOLDABLE, analyse, lookbehind_width
from .rules import RuleSet
from .sections import Section, sections_from_matches
from .sentences import sentence_starts

CONTEXT_BEFORE = 24  # characters of the sentence before a kept one, for rules that look behind
WINDOW_CACHE = 10_000  # lines (section headers) and sentences (targets) whose matches are remembered


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of consecutive sentences that hold a target match, led by the tail of the sentence before
    it: a part of a note that the spaCy pipeline must see. What the pipeline finds in it depends on
    `key` alone (`Scanner.window` isolates segments), so the result of one can be reused for the same
    text elsewhere: template lines, copied-forward blocks, negative reviews of systems."""
    start: int                              # in the note
    end: int
    text: str
    starts: tuple[int, ...]                 # sentence starts, relative to `start`
    matches: tuple[tuple[int, int, int], ...]  # (rule_index, start, end) target matches, relative

    @property
    def key(self) -> tuple:
        return self.text, self.starts, self.matches


@dataclass(frozen=True)
class Scan:
    """A note's sections, sentences and segments, found on its raw text."""
    text: str
    sections: tuple[Section, ...]
    sentence_starts: tuple[int, ...]
    segments: tuple[Segment, ...]

    def sentence_at(self, char: int) -> tuple[int, int]:
        """(start, end) of the note's sentence holding offset `char`."""
        starts = self.sentence_starts
        return window_span(starts, bisect.bisect_right(starts, char) - 1, len(self.text))


@dataclass(frozen=True)
class Window:
    """The text a doc is made of: a whole note, or segments of one (`Scanner.window`), and the `scan`
    of the note it came from.

    `pieces` are (start, end, reduced_start): each segment in the note's offsets and where it begins in
    `reduced`. `kept_starts` are the sentence starts in `reduced`, the separators' included; `ranges`
    the (start, end) in `reduced` where a regex with no literal to gate it runs. `matches` are
    (rule_index, start, end) target matches in `reduced` offsets, in rule order."""
    scan: Scan
    kept_starts: tuple[int, ...]
    pieces: tuple[tuple[int, int, int], ...]
    reduced: str
    matches: tuple[tuple[int, int, int], ...]
    ranges: tuple[tuple[int, int], ...]
    segments: tuple[Segment, ...] = ()
    _reduced_starts: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "_reduced_starts", tuple(p[2] for p in self.pieces))

    def piece_of(self, start: int) -> int:
        """The piece a `reduced` offset lies in (or the one before it, in a separator)."""
        return max(bisect.bisect_right(self._reduced_starts, start) - 1, 0)

    def to_note_span(self, start: int, end: int) -> tuple[int, int]:
        """A `reduced` span in the note's offsets, cut at the end of the piece it starts in."""
        piece_start, piece_end, reduced_start = self.pieces[self.piece_of(start)]
        return piece_start + start - reduced_start, min(piece_start + end - reduced_start, piece_end)


class Recent:
    """A bounded mapping that drops the least recently used key first, and counts its hits and misses.
    Size 0 remembers nothing."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key):
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
            self._entries.move_to_end(key)
        return found

    def put(self, key, value) -> None:
        if self.size <= 0:
            return
        self._entries[key] = value
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def window_span(starts, i: int, length: int) -> tuple[int, int]:
    """(start, end) of window `i` of a text of `length` characters cut at `starts` (-1: before the first)."""
    return (starts[i] if i >= 0 else 0), (starts[i + 1] if i + 1 < len(starts) else length)


class GatedRegexes:
    """Regexes that run only inside the windows (sentences, lines) where one of their required
    literals occurs. One Aho-Corasick automaton finds every literal of every regex in one pass over
    the note with its non-word characters blanked, so a literal that needs a word boundary is looked
    for with a blank on that side ("ca" after a boundary → " ca") and rarely hits inside words."""

    def __init__(self, regexes: list[re.Pattern | tuple[str, int]], min_literal: int = 2, window_cache: int = 0):
        """`regexes`: compiled, or (pattern, flags) to be compiled here (once, with the lookahead);
        `window_cache`: how many windows' matches to remember."""
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
        # the matches of recently seen windows (template lines come back note after note): a window's
        # matches depend on its text and the `behind` characters before it that look-behinds read
        self.recent = Recent(window_cache)
        self.behind = max([1, *(lookbehind_width(r.pattern, r.flags) for r in self.regexes)])
        self._entries = []  # (length, blank first, regex indices) per automaton word
        for (blanked, word), indices in owners.items():
            automaton = self.automaton if blanked else self.punctuation
            automaton.add_word(word, len(self._entries))
            self._entries.append((len(word), blanked and word.startswith(" "), tuple(dict.fromkeys(indices))))
        for automaton in (self.automaton, self.punctuation):
            if len(automaton):
                automaton.make_automaton()

    def matches(self, text: str, windows: list[int], lower: str | None = None, blanked: str | None = None,
                ranges: tuple[tuple[int, int], ...] | None = None) -> list[tuple[int, int, int]]:
        """(regex index, start, end) in regex order, then text order. `windows` are the starts of the
        windows; `lower` and `blanked` (`text.lower()` and `blank(lower)`) when the caller has them;
        `ranges` where a regex that cannot be gated runs (default: the whole text)."""
        lower = text.lower() if lower is None else lower
        trusted = len(lower) == len(text) and not UNFOLDABLE.search(text)
        gated = self._gated(lower, blank(lower) if blanked is None else blanked, windows) if trusted else {}
        found = []
        length = len(text)
        ranges = ((0, length),) if ranges is None else ranges
        for index, regex in enumerate(self.regexes):
            if not trusted or self.literals[index] is None:  # literals cannot be trusted, or none
                for start, end in ranges:
                    found.extend((index, m.start(), m.end()) for m in regex.finditer(text, start, end))
        recent, behind = self.recent, self.behind
        for w, indices in gated.items():
            start, end = window_span(windows, w, length)
            # what a window holds depends on its text and on what look-behinds see before it alone
            key = (text[max(0, start - behind):start], text[start:end]) if recent.size else None
            held = recent.get(key) if key is not None else None
            if held is None:
                held = []
                for index in indices:  # every regex that can match here has a literal here (`_gated`)
                    regex = self.regexes[index]
                    if regex.search(text, start, end) is not None:  # most hold no match: no iterator
                        held.extend((index, m.start() - start, m.end() - start) for m in regex.finditer(text, start, end))
                held = tuple(held)
                recent.put(key, held)
            found.extend((index, start + s, start + e) for index, s, e in held)
        found.sort(key=lambda m: (m[0], m[1]))
        return found

    def _gated(self, lower: str, blanked: str, windows: list[int]) -> dict[int, set[int]]:
        """{window: the regexes with a literal in it}, for the windows holding any."""
        pairs = set()
        entries = self._entries
        for automaton, haystack in ((self.automaton, " " + blanked + " "), (self.punctuation, " " + lower)):
            if automaton.kind != ahocorasick.AHOCORASICK:
                continue
            for end, entry in automaton.iter(haystack):  # boundaries at both ends of the note too
                length, blank_first, _ = entries[entry]
                start = end - length  # in `text`: the haystacks have one more character in front
                pairs.add((bisect.bisect_right(windows, start if start > 0 else 0) - 1, entry))
                if blank_first:  # the literal may start after the blank
                    pairs.add((bisect.bisect_right(windows, start + 1) - 1, entry))
        gated: dict[int, set[int]] = {}
        for window, entry in pairs:
            regexes = entries[entry][2]
            tried = gated.get(window)
            if tried is None:
                gated[window] = set(regexes)
            else:
                tried.update(regexes)
        return gated


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
        self.sections = GatedRegexes([rule.regex for rule in self.section_rules], min_literal=1,
                                     window_cache=WINDOW_CACHE)
        self.targets = GatedRegexes([(p, re.IGNORECASE) for p in target_patterns], window_cache=WINDOW_CACHE)
        self.separator = "\n\n"  # `nlp.build` widens it to the widest look-behind of the ConText rules

    def remember(self, windows: int) -> None:
        """How many lines and sentences' matches to remember (0: none)."""
        self.sections.recent = Recent(windows)
        self.targets.recent = Recent(windows)

    def scan(self, text: str) -> Scan:
        """Sections, sentences and the segments that hold the target matches."""
        lower = text.lower()
        blanked = blank(lower)
        section_matches = [(self.section_rules[i], start, end)
                           for i, start, end in self.sections.matches(text, _line_starts(text), lower, blanked)]
        sections = tuple(sections_from_matches(text, section_matches))
        starts = sentence_starts(text, [s.start for s in sections])
        found = self.targets.matches(text, starts, lower, blanked)
        hit = set()
        for _, start, end in found:
            first = bisect.bisect_right(starts, start) - 1
            last = bisect.bisect_left(starts, end) - 1
            hit.update(range(max(first, 0), max(last, first) + 1))
        runs: list[list[int]] = []  # (lead, end, sentence starts...) of each run of kept sentences
        for i in sorted(hit):
            start, end = window_span(starts, i, len(text))
            if runs and runs[-1][1] == start:
                runs[-1][1] = end
                runs[-1].append(start)
                continue
            # a segment starts with the tail of the sentence before it, as a sentence of its own: rules
            # look behind into it ("(?<=[.;]\s)ED for", "^[ \t]*-" at a line start). It never starts
            # on whitespace, which would join the blank before it into one token (see `window`).
            lead = max(starts[i - 1] if i else 0, start - CONTEXT_BEFORE)
            while lead < end - 1 and text[lead].isspace():
                lead += 1
            runs.append([lead, end, *([lead] if lead < start else []), max(start, lead)])
        note_starts = [run[0] for run in runs]
        matches: list[list[tuple[int, int, int]]] = [[] for _ in runs]
        for index, start, end in found:  # every match lies in one segment
            i = bisect.bisect_right(note_starts, start) - 1
            matches[i].append((index, start - note_starts[i], end - note_starts[i]))
        segments = tuple(Segment(lead, end, text[lead:end], tuple(s - lead for s in kept), tuple(found_in))
                         for (lead, end, *kept), found_in in zip(runs, matches))
        return Scan(text, sections, tuple(starts), segments)

    def window(self, scan: Scan, segments: tuple[Segment, ...] | list[Segment] | None = None) -> Window:
        """Segments of a note (default: all) as one text, each between two `separator`s.

        The separator is a blank line at least as long as the widest look-behind of the rules that run
        on the doc, and a sentence of its own: no token, regex window or match joins two segments, so a
        segment gives the same findings whatever segments are around it (tests/test_nlp.py)."""
        segments = scan.segments if segments is None else tuple(segments)
        separator = self.separator
        parts, pieces, kept, ranges, matches = [separator], [], [0], [], []
        length = len(separator)
        for segment in segments:
            pieces.append((segment.start, segment.end, length))
            kept.extend(length + s for s in segment.starts)
            matches.extend((index, length + start, length + end) for index, start, end in segment.matches)
            parts.append(segment.text)
            length += len(segment.text)
            kept.append(length)
            ranges.append((pieces[-1][2], length + len(separator)))
            parts.append(separator)
            length += len(separator)
        matches.sort(key=lambda m: m[0])  # rule order, then text order (the sort is stable)
        return Window(scan, tuple(kept), tuple(pieces), "".join(parts), tuple(matches), tuple(ranges), segments)

    def whole(self, text: str) -> Window:
        """The window of a whole note as it is: every sentence, no separators."""
        scan = self.scan(text)
        matches = tuple(sorted(((i, seg.start + s, seg.start + e) for seg in scan.segments for i, s, e in seg.matches),
                               key=lambda m: m[0]))
        return Window(scan, scan.sentence_starts, ((0, len(text), 0),), text, matches, ((0, len(text)),))


def _line_starts(text: str) -> list[int]:
    starts, i = [0], text.find("\n")
    while i >= 0:
        starts.append(i + 1)
        i = text.find("\n", i + 1)
    return starts
