"""Required literals of a regular expression: strings one of which every match must contain.

A note is scanned for these first (one Aho-Corasick pass for every rule, see `windows.py`), and a
rule's regex runs only on the sentences or lines where one of its literals occurs. That is what makes extraction cost
grow with the findings in a note rather than with its length times the number of rules.

The analysis is conservative: where it cannot prove a requirement (an optional part, a character
class, `\\w+`), it asks for nothing, and a rule with no usable literal is run on the whole text.
"""
from __future__ import annotations

import re
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import sre_constants as C
    import sre_parse

MIN_LITERAL = 2      # a one-letter literal ("l", "t") occurs everywhere and would not filter anything
MAX_LITERALS = 160   # a rule needing more alternatives than this is run everywhere
MAX_CLASS = 8        # a character class of up to this many letters is expanded ("[-/]" → "-", "/")
MAX_SPELLED = 16     # a run of fixed parts spells at most this many strings ("no (prior|previous) (back|spine)")
SELECTIVE = 5        # literals this long are rare enough: beyond it, fewer literals is better than longer ones

# Characters that case-insensitive matching folds onto ASCII letters though `str.lower` does not
# (Kelvin sign, long s, dotted and dotless i): a note containing one is scanned without literals.
UNFOLDABLE = re.compile("[\u212a\u017f\u0130\u0131]")

_LEFT, _RIGHT = "\x01", "\x02"  # while analysing: a word boundary is required before / after the string
_WORD = re.compile(r"\w")


class Literal(tuple):
    """(text, word boundary required before it, word boundary required after it)."""
    __slots__ = ()

    def __new__(cls, text: str, left: bool = False, right: bool = False):
        return super().__new__(cls, (text, left, right))

    text = property(lambda self: self[0])
    left = property(lambda self: self[1])
    right = property(lambda self: self[2])

    def at(self, lower: str, start: int) -> bool:
        """Does the occurrence at `start` stand where the regex could use it (word boundaries)?"""
        if self.left and start > 0 and _WORD.match(lower, start - 1):
            return False
        end = start + len(self.text)
        return not (self.right and end < len(lower) and _WORD.match(lower, end))


def required_literals(pattern: str, min_literal: int = MIN_LITERAL, parsed=None) -> frozenset[Literal] | None:
    """Lower-case `Literal`s such that every match of `pattern` (compiled case-insensitively)
    contains one of them; None when no such set of useful literals can be shown. `parsed`: the
    pattern already parsed by `sre_parse`, if the caller has it."""
    if parsed is None:
        try:
            parsed = sre_parse.parse(pattern, re.IGNORECASE)
        except re.error:
            return None
    found = _sequence(list(parsed))
    if not found:
        return None
    literals = {_literal(s) for s in found}
    if min(len(lit.text) for lit in literals) < min_literal or len(literals) > MAX_LITERALS:
        return None
    # "cancer survivor" adds nothing when "cancer" (with no boundary to check) is required anyway
    plain = [lit.text for lit in literals if not (lit.left or lit.right)]
    return frozenset(lit for lit in literals if not any(p != lit.text and p in lit.text for p in plain))


def analyse(pattern: str, flags: int, min_literal: int = MIN_LITERAL) -> tuple[re.Pattern, frozenset[Literal] | None]:
    """The pattern compiled with its first-character lookahead, and its required literals: one parse."""
    parsed = sre_parse.parse(pattern, flags | re.IGNORECASE)
    return _with_first(pattern, flags, parsed), required_literals(pattern, min_literal, parsed)


def _literal(marked: str) -> Literal:
    text = marked.strip(_LEFT + _RIGHT)
    # a boundary only says something about a word character next to it
    left = marked.startswith(_LEFT) and bool(_WORD.match(text[:1]))
    right = marked.endswith(_RIGHT) and bool(_WORD.match(text[-1:]))
    return Literal(text, left, right)


def _size(marked: str) -> int:
    return len(marked.strip(_LEFT + _RIGHT))


def _better(a: set | None, b: set | None) -> set | None:
    """The more selective of two requirements: a longer shortest literal (up to SELECTIVE characters),
    then fewer literals, then longer ones."""
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b, key=lambda s: (min(min(map(_size, s)), SELECTIVE), -len(s), min(map(_size, s))))


def _sequence(items: list, left: bool = False) -> set | None:
    """A concatenation: each item's requirement holds, so pick the best one; adjacent fixed strings
    combine ("radiat" + (e|es|ing) → radiate, radiates, radiating). A word boundary (`\\b`,
    `(?<!\\w)`, `(?!\\w)`) next to a run of fixed strings is kept with them."""
    best: set | None = None
    run: set[str] | None = None  # the strings the current run of fixed items can spell
    for op, av in items:
        fixed = _fixed(op, av)
        if fixed is not None:
            if run is None and left:
                fixed = {_LEFT + s for s in fixed}
            combined = fixed if run is None else _product(run, fixed)
            if combined is None:  # too many combinations: keep what we have and start again
                best = _better(best, run)
                combined = fixed
            run = combined
            left = False
            continue
        boundary = _boundary(op, av)
        if run is not None and boundary in ("both", "right"):
            run = {s + _RIGHT for s in run}
        best = _better(best, run)
        run = None
        was_left, left = left, boundary in ("both", "left")
        if op in (C.AT, C.ASSERT, C.ASSERT_NOT):
            continue  # zero-width: neither requires nor breaks anything, but ends the run
        best = _better(best, _item(op, av, was_left))
    return _better(best, run)


def _boundary(op, av) -> str | None:
    """'both' for `\\b`, 'left' for `(?<![\\w...])`, 'right' for `(?![\\w...])`, else None."""
    if op == C.AT and av == C.AT_BOUNDARY:
        return "both"
    if op == C.ASSERT_NOT:
        direction, body = av
        body = list(body)
        if len(body) == 1 and _is_word_class(*body[0]):
            return "left" if direction < 0 else "right"
    if op in (C.MAX_REPEAT, C.MIN_REPEAT) and av[0] >= 1:  # "\s+" puts a non-word character on both sides
        body = list(av[2])
        if len(body) == 1 and _is_non_word(*body[0]):
            return "both"
    return None


def _is_non_word(op, av) -> bool:
    """Does the item only ever match a non-word character (whitespace, "/", "-")?"""
    if op == C.CATEGORY:
        return av in (C.CATEGORY_SPACE, C.CATEGORY_NOT_WORD)
    if op == C.LITERAL:
        return not _WORD.match(chr(av))
    if op == C.IN:
        return all(_is_non_word(kind, value) for kind, value in av)
    return False


def _is_word_class(op, av) -> bool:
    if op == C.IN:
        return any(kind == C.CATEGORY and value == C.CATEGORY_WORD for kind, value in av)
    return op == C.CATEGORY and av == C.CATEGORY_WORD


def _product(left: set[str], right: set[str]) -> set[str] | None:
    if len(left) * len(right) > MAX_SPELLED:
        return None
    return {a + b for a in left for b in right}


def _fixed(op, av) -> set[str] | None:
    """The exact strings a fixed-width item can spell, if few; else None."""
    if op == C.LITERAL:
        return {chr(av).lower()}
    if op == C.IN:
        chars = set()
        for kind, value in av:
            if kind == C.LITERAL:
                chars.add(chr(value).lower())
            elif kind == C.RANGE and value[1] - value[0] < MAX_CLASS:
                chars.update(chr(c).lower() for c in range(value[0], value[1] + 1))
            else:
                return None
        return chars if 0 < len(chars) <= MAX_CLASS else None
    if op == C.SUBPATTERN:
        return _fixed_sequence(list(av[-1]))
    if op == C.MAX_REPEAT and av[0] == 0 and av[1] == 1:  # "foot ?drop": footdrop, foot drop
        body = _fixed_sequence(list(av[2]))
        return None if body is None else body | {""}
    if op == C.BRANCH:
        out: set[str] = set()
        for branch in av[1]:
            spelled = _fixed_sequence(list(branch))
            if spelled is None:
                return None
            out |= spelled
        return out if len(out) <= MAX_LITERALS else None
    return None


def _fixed_sequence(items: list) -> set[str] | None:
    out = {""}
    for op, av in items:
        spelled = _fixed(op, av)
        if spelled is None:
            return None
        out = _product(out, spelled)
        if out is None:
            return None
    return out


def _item(op, av, left: bool = False) -> set | None:
    """The requirement of one item; `left`: a word boundary stands right before it."""
    if op == C.SUBPATTERN:
        return _sequence(list(av[-1]), left)
    if op == C.BRANCH:
        out: set[str] = set()
        for branch in av[1]:
            required = _sequence(list(branch), left)
            if not required:
                return None
            out |= required
        return out
    if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
        low, _high, body = av
        return _sequence(list(body)) if low >= 1 else None
    if op == C.ATOMIC_GROUP:
        return _sequence(list(av))
    return None


# ---------------------------------------------------------------- first characters

_GLOBAL_FLAGS = re.compile(r"^\(\?[aiLmsux]+\)")
_CATEGORY_CLASS = {C.CATEGORY_DIGIT: r"\d", C.CATEGORY_SPACE: r"\s", C.CATEGORY_WORD: r"\w",
                   C.CATEGORY_NOT_DIGIT: r"\D", C.CATEGORY_NOT_SPACE: r"\S", C.CATEGORY_NOT_WORD: r"\W"}


def with_first_characters(regex: re.Pattern) -> re.Pattern:
    """The same regex, told which characters a match can start with: `(?=[...])` first. Python's
    engine tries every alternative at every position; a failing one-character check is 3–4× cheaper.
    Unchanged when the first character cannot be known."""
    try:
        parsed = sre_parse.parse(regex.pattern, regex.flags)
    except re.error:
        return regex
    return _with_first(regex.pattern, regex.flags, parsed, regex)


def _with_first(pattern: str, flags: int, parsed, compiled: re.Pattern | None = None) -> re.Pattern:
    first, nullable = _first(list(parsed))
    if first is None or nullable or not first:
        return compiled or re.compile(pattern, flags)
    head = _GLOBAL_FLAGS.match(pattern)
    head = head.group(0) if head else ""
    return re.compile(f"{head}(?=[{''.join(sorted(first))}]){pattern[len(head):]}", flags)


def _first(items: list) -> tuple[set[str] | None, bool]:
    """(class fragments a match of the sequence can start with, can it match the empty string)."""
    found: set[str] = set()
    for op, av in items:
        if op in (C.AT, C.ASSERT, C.ASSERT_NOT):
            continue
        first, nullable = _first_of(op, av)
        if first is None:
            return None, False
        found |= first
        if not nullable:
            return found, False
    return found, True


def _first_of(op, av) -> tuple[set[str] | None, bool]:
    if op == C.LITERAL:
        return {_escape(chr(av))}, False
    if op == C.IN:
        fragments = set()
        for kind, value in av:
            if kind == C.LITERAL:
                fragments.add(_escape(chr(value)))
            elif kind == C.RANGE:
                fragments.add(f"{_escape(chr(value[0]))}-{_escape(chr(value[1]))}")
            elif kind == C.CATEGORY and value in _CATEGORY_CLASS:
                fragments.add(_CATEGORY_CLASS[value])
            else:
                return None, False  # a negated class, ...
        return fragments, False
    if op == C.SUBPATTERN:
        return _first(list(av[-1]))
    if op == C.BRANCH:
        found, nullable = set(), False
        for branch in av[1]:
            first, empty = _first(list(branch))
            if first is None:
                return None, False
            found |= first
            nullable = nullable or empty
        return found, nullable
    if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
        low, _high, body = av
        first, nullable = _first(list(body))
        return first, nullable or low == 0
    if op == C.CATEGORY and av in _CATEGORY_CLASS:
        return {_CATEGORY_CLASS[av]}, False
    return None, False


def _escape(char: str) -> str:
    return "\\" + char if char in "\\]^-[" else char


def lookbehind_width(pattern: str, flags: int = 0) -> int:
    """How many characters before a match position the regex's look-behinds can read (0 if none)."""
    return _lookbehind_width(sre_parse.parse(pattern, flags))


def _lookbehind_width(parsed) -> int:
    width = 0
    for op, av in parsed:
        if op in (C.ASSERT, C.ASSERT_NOT):
            direction, sub = av
            # a look-behind inside a look-behind reads further back still
            width = max(width, (sub.getwidth()[1] if direction < 0 else 0) + _lookbehind_width(sub))
        elif op is C.SUBPATTERN:
            width = max(width, _lookbehind_width(av[-1]))
        elif op is C.BRANCH:
            width = max([width, *(_lookbehind_width(branch) for branch in av[1])])
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT) or op.name == "POSSESSIVE_REPEAT":
            width = max(width, _lookbehind_width(av[2]))
        elif op.name == "ATOMIC_GROUP":
            width = max(width, _lookbehind_width(av))
    return width
