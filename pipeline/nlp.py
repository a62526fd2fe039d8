"""Assemble the spaCy pipeline from the rule files: one place, named components, explicit rules.

tokenizer (spaCy blank English) → `lbp_windows` (sections, sentences and target matches found on the
raw text, see `windows.py`) → medspaCy TargetMatcher (fed those matches) → medspaCy ConText (its
token patterns expanded into a phrase matcher). medspaCy's bundled rules never load: every rule
comes from `patterns/`. `build(fast=False)` is the plain medspaCy pipeline over the whole text, kept
to check that the fast one finds the same (tests/test_nlp.py).
"""
from typing import Optional, Union

import bisect
import re
import warnings
from itertools import product
from pathlib import Path

import spacy
from spacy.attrs import IDX
from spacy.language import Language
from spacy.tokens import Doc, Span

from .findings import entities
from .rules import RuleSet, load_rules
from .sections import find_sections
from .sentences import sentence_starts, set_sentence_starts
from .windows import GatedRegexes, Scanner

PIPELINE_NAME = "lbp.red_flags.v1"


def _register_extensions() -> None:
    if not Doc.has_extension("lbp_sections"):
        Doc.set_extension("lbp_sections", default=())


class SectionDetector:
    """Finds section headers; stores `doc._.lbp_sections` as a tuple of `Section`."""

    def __init__(self):
        self.rules = []

    def add(self, rules) -> None:
        self.rules.extend(rules)

    def __call__(self, doc: Doc) -> Doc:
        doc._.lbp_sections = tuple(find_sections(doc.text, self.rules))
        return doc


class ClinicalSentencizer:
    """Sets sentence starts from `sentence_starts` (lines, lists, headers, punctuation)."""

    def __call__(self, doc: Doc) -> Doc:
        headers = [s.start for s in doc._.lbp_sections]
        set_sentence_starts(doc, sentence_starts(doc.text, headers))
        return doc


class WindowMarker:
    """Marks the sentences of a `Window`'s text. A doc that did not come with a window (`nlp(text)`)
    gets one over its whole text."""

    def __init__(self):
        self.scanner: Scanner | None = None

    def __call__(self, doc: Doc) -> Doc:
        window = doc.user_data.get("lbp_window")  # a doc made from `window.reduced` (Extractor.pipe)
        if window is None:  # `doc.text` joins every token: read once, here
            window = self.scanner.whole(doc.text)
            doc.user_data["lbp_window"] = window
        doc._.lbp_sections = window.scan.sections
        starts = set_sentence_starts(doc, window.kept_starts)
        doc.user_data["lbp_sentence_tokens"] = starts
        # `span.sent` would scan every token of the doc on each call (ConText asks once per modifier)
        doc.user_span_hooks["sent"] = _sentence_lookup(doc, starts)
        return doc


def _sentence_lookup(doc: Doc, starts: list[int]):
    ends = starts[1:] + [len(doc)]

    def sent(span):
        i = bisect.bisect_right(starts, span.start) - 1
        return doc[starts[i]:ends[i]]

    return sent


@Language.factory("lbp_windows", assigns=["doc._.lbp_sections", "token.is_sent_start"])
def make_window_marker(nlp: Language, name: str) -> WindowMarker:
    _register_extensions()
    return WindowMarker()


@Language.factory("lbp_sections", assigns=["doc._.lbp_sections"])
def make_section_detector(nlp: Language, name: str) -> SectionDetector:
    _register_extensions()
    return SectionDetector()


@Language.factory("lbp_sentences", requires=["doc._.lbp_sections"], assigns=["token.is_sent_start"])
def make_sentencizer(nlp: Language, name: str) -> ClinicalSentencizer:
    _register_extensions()
    return ClinicalSentencizer()


class NoCross:
    """ConText veto: the modifier does not reach a target across any of `chars`, nor a target
    before it across any of `chars_before` ("CES precautions given" vs "foot drop, CES precautions")."""

    def __init__(self, chars: str = "", chars_before: str = ""):
        self.chars = chars
        self.chars_before = chars_before

    def __call__(self, target, modifier, span_between) -> bool:
        blocked = self.chars + (self.chars_before if target.start < modifier.start else "")
        return not any(c in span_between.text for c in blocked)


def _faster_regex_matching(component) -> None:
    """medspaCy's RegexMatcher rebuilds `doc.text_with_ws` for every pattern and maps characters to
    tokens by a linear scan. Here each regex runs once per doc, and in a doc marked by `lbp_windows`
    only in the sentences holding one of its literals (`windows.GatedRegexes`); tests/test_nlp.py
    checks the results against medspaCy's own pipeline."""
    from medspacy.common.regex_matcher import RegexMatcher

    class FastRegexMatcher(RegexMatcher):
        gated: tuple | None = None

        def add(self, match_id: str, regex_rules, on_match=None):
            """Keep the patterns uncompiled: `gate` compiles each once, with its lookahead."""
            _keep_uncompiled(self, match_id, [(p, self.flags) for p in regex_rules], on_match)
            self.gated = None

        def gate(self) -> tuple:
            if self.gated is None:
                keys = [key for key, patterns in self._patterns.items() for _ in patterns]
                self.gated = (keys, GatedRegexes([p for patterns in self._patterns.values() for p in patterns]))
            return self.gated

        def __call__(self, doc: Doc):
            keys, gated = self.gate()
            window = doc.user_data.get("lbp_window")
            text = window.reduced if window is not None else doc.text_with_ws  # `doc.text` joins every token
            sentences = list(window.kept_starts) if window is not None else [0]
            ranges = window.ranges if window is not None else None
            edges = _TokenEdges(doc)
            matches = []
            for index, start, end in gated.matches(text, sentences, ranges=ranges):
                match_id = keys[index]
                first, last = edges.span(start, end)
                if first < last:
                    matches.append((match_id, first, last))
                on_match = self._callbacks[match_id]
                if on_match is not None:
                    on_match(self, doc, len(matches) - 1, matches)
            return matches

    _medspacy_matcher(component)._MedspacyMatcher__regex_matcher.__class__ = FastRegexMatcher


def _keep_uncompiled(matcher, match_id: str, patterns: list, on_match) -> None:
    """What medspaCy's RegexMatcher.add records (the rule's key, its patterns, its callback), but
    with the patterns left as they are: our matchers compile them their own way, or not at all."""
    if match_id not in matcher.vocab:
        matcher.vocab.strings.add(match_id)
    key = matcher.vocab.strings[match_id]
    matcher._patterns.setdefault(key, []).extend(patterns)
    matcher._callbacks[key] = on_match


def _window_matching(component) -> None:
    """The target matcher takes the matches `Scanner.prepare` found on the raw text (every target rule
    is a regex in the fast pipeline) instead of running each rule over the doc again."""
    from medspacy.common.regex_matcher import RegexMatcher

    class WindowRegexMatcher(RegexMatcher):
        def add(self, match_id: str, regex_rules, on_match=None):
            """Keep the rule (its key and callback) without compiling it: `Scanner` runs the regexes."""
            _keep_uncompiled(self, match_id, regex_rules, on_match)

        def __call__(self, doc: Doc):
            window = doc.user_data.get("lbp_window")
            if window is None:
                raise ValueError("the target matcher needs the doc's lbp_window (run lbp_windows first)")
            keys = list(self._patterns)
            edges = _TokenEdges(doc)
            matches = []
            for index, start, end in window.matches:
                first, last = edges.span(start, end)
                if first < last:
                    matches.append((keys[index], first, last))
            return matches

    matcher = _medspacy_matcher(component)
    matcher._MedspacyMatcher__regex_matcher.__class__ = WindowRegexMatcher
    # every target rule is a regex here: spaCy's (empty) Matcher and PhraseMatcher need not run
    matcher._MedspacyMatcher__matcher = matcher._MedspacyMatcher__phrase_matcher = lambda doc: []


def _entities_at_once(component) -> None:
    """medspaCy adds target spans to `doc.ents` one at a time, which copies the entity list each time;
    the matches are already pruned, so one assignment gives the same entities."""
    from medspacy.target_matcher import TargetMatcher

    class OnceTargetMatcher(TargetMatcher):
        def __call__(self, doc: Doc) -> Doc:
            spans = self._spans(doc)
            doc.ents = spans  # docs reach this pipeline without entities (make_doc)
            doc.user_data["lbp_ents"] = spans  # `doc.ents` rebuilds its spans from every token
            return doc

        def _spans(self, doc: Doc):
            matcher = _medspacy_matcher(self)
            spans = []
            for rule_id, start, end in matcher(doc):
                rule = matcher.rule_map[self.nlp.vocab.strings[rule_id]]
                span = Span(doc, start=start, end=end, label=rule.category)
                span._.target_rule = rule
                for attribute, value in (rule.attributes or {}).items():
                    setattr(span._, attribute, value)
                spans.append(span)
            return spans

    component.__class__ = OnceTargetMatcher


def _context_by_sentence(component) -> None:
    """medspaCy's ConText compares every modifier with every other modifier and every target in the
    doc. A modifier's scope never leaves its sentence, so only pairs within one sentence can interact:
    comparing those alone, in the same order, gives the same edges."""
    from medspacy.context import ConText
    from medspacy.context.context_graph import ConTextGraph
    from medspacy.context.context_modifier import ConTextModifier

    class SentenceGraph(ConTextGraph):
        def __init__(self, sentence_of, **kwargs):
            super().__init__(**kwargs)
            self.sentence_of = sentence_of

        def _groups(self) -> dict[int, list]:
            groups: dict[int, list] = {}
            for modifier in self.modifiers:
                groups.setdefault(self.sentence_of(modifier.modifier_span[0]), []).append(modifier)
            return groups

        def update_scopes(self):
            for group in self._groups().values():
                for i in range(len(group) - 1):
                    for j in range(i + 1, len(group)):
                        group[i].limit_scope(group[j])
                        group[j].limit_scope(group[i])

        def apply_modifiers(self):
            if self.prune_on_modifier_overlap:
                spans = sorted((t.start, t.end) for t in self.targets)
                self.modifiers = [m for m in self.modifiers if not _overlaps_any(m.modifier_span, spans)]
            groups = self._groups()
            for target in self.targets:
                for modifier in groups.get(self.sentence_of(target.start), ()):
                    if modifier.modifies(target):
                        modifier.modify(target)
            edges = []
            for modifier in self.modifiers:
                modifier.reduce_targets()
                edges.extend((target, modifier) for target in modifier._targets)
            self.edges = edges

    class SentenceConText(ConText):
        def __call__(self, doc: Doc, targets: str | None = None) -> Doc:
            if targets or self.input_span_type != "ents":
                return super().__call__(doc, targets)
            sentence_starts = doc.user_data.get("lbp_sentence_tokens") or [0]
            graph = SentenceGraph(lambda token: bisect.bisect_right(sentence_starts, token) - 1,
                                  prune_on_modifier_overlap=self.prune_on_target_overlap)
            graph.targets = entities(doc)
            matcher = self._ConText__matcher
            graph.modifiers = [ConTextModifier(matcher.rule_map[self.nlp.vocab[match_id].text], start, end, doc,
                                               max_scope=self.max_scope)
                               for match_id, start, end in matcher(doc)]
            graph.update_scopes()
            graph.apply_modifiers()
            for target, modifier in graph.edges:
                target._.modifiers += (modifier,)
            if self.context_attributes_mapping:
                self.set_context_attributes(graph.edges)
            doc._.context_graph = graph
            return doc

    component.__class__ = SentenceConText


def _overlaps_any(span: tuple[int, int], sorted_spans: list[tuple[int, int]]) -> bool:
    """Does (start, end) share a token with any of the spans (sorted, not overlapping each other)?
    Of those starting before `end`, the last one reaches furthest."""
    i = bisect.bisect_left(sorted_spans, (span[1],))
    return i > 0 and sorted_spans[i - 1][1] > span[0]


class _TokenEdges:
    """Character offsets → token indices for one doc, widening to token edges as medspaCy does."""

    def __init__(self, doc: Doc):
        self.starts = doc.to_array(IDX).tolist() if len(doc) else []

    def span(self, start: int, end: int) -> tuple[int, int]:
        first = max(0, bisect.bisect_right(self.starts, start) - 1)
        return first, bisect.bisect_left(self.starts, end)


def _medspacy_matcher(component):
    """The MedspacyMatcher inside a TargetMatcher or ConText (a name-mangled private attribute)."""
    for cls in type(component).__mro__:
        if hasattr(component, f"_{cls.__name__}__matcher"):
            return getattr(component, f"_{cls.__name__}__matcher")
    raise AttributeError(f"{type(component).__name__} has no medspaCy matcher")


MAX_PHRASES = 20_000


def _phrase_token_patterns(component, rules, nlp: Language) -> None:
    """spaCy's Matcher checks `IN` lists token by token in Python; that was most of ConText's time.
    Token patterns of plain words (LOWER / ORTH, `IN` lists, `?`) are spelled out into every word
    sequence they match and handed to a PhraseMatcher on LOWER, which finds the same (start, end) spans
    under the same rule ids. Patterns with `*`, regexes or other attributes stay with the Matcher."""
    from spacy.matcher import Matcher, PhraseMatcher

    medspacy = _medspacy_matcher(component)
    keep = Matcher(nlp.vocab)
    phrases = PhraseMatcher(nlp.vocab, attr="LOWER")
    for rule in rules:
        if not isinstance(rule.pattern, list):
            continue
        sequences = _spell_out(rule.pattern)
        if sequences is None:
            keep.add(rule._rule_id, [rule.pattern], on_match=rule.on_match)
        else:
            phrases.add(rule._rule_id, [Doc(nlp.vocab, words=list(words)) for words in sequences],
                        on_match=rule.on_match)

    order = {nlp.vocab.strings[rule._rule_id]: i for i, rule in enumerate(rules)}

    class SplitMatcher:
        def __call__(self, doc):  # in the Matcher's order: by start, then by rule
            found = (keep(doc) if len(keep) else []) + phrases(doc)
            return sorted(found, key=lambda m: (m[1], order[m[0]]))

    medspacy._MedspacyMatcher__matcher = SplitMatcher()


def _spell_out(pattern: list[dict]) -> list[tuple[str, ...]] | None:
    """Every word sequence a plain token pattern matches (lower-cased), or None if it is not plain."""
    options = []
    for token in pattern:
        op = token.get("OP")
        attrs = {k: v for k, v in token.items() if k != "OP"}
        if op not in (None, "?") or len(attrs) != 1:
            return None
        (attr, value), = attrs.items()
        if attr == "LOWER":
            words = value["IN"] if isinstance(value, dict) and set(value) == {"IN"} else [value]
        elif attr == "ORTH" and isinstance(value, str) and value.lower() == value.upper():
            words = [value]  # punctuation: the same under LOWER
        else:
            return None
        if not all(isinstance(w, str) and w and not any(c.isspace() for c in w) for w in words):
            return None
        options.append([w.lower() for w in words] + ([None] if op == "?" else []))
    total = 1
    for choice in options:
        total *= len(choice)
    if total > MAX_PHRASES:
        return None
    sequences = {tuple(w for w in combo if w is not None) for combo in product(*options)}
    sequences.discard(())
    return sorted(sequences) if sequences else None


def _import_medspacy():
    """Import medspaCy without letting it silence the host's warnings or PyRuSH's logging leak."""
    from loguru import logger

    logger.disable("PyRuSH")
    logger.disable("PyFastNER")
    with warnings.catch_warnings():
        from medspacy.context import ConText, ConTextRule  # noqa: F401
        from medspacy.target_matcher import TargetMatcher, TargetRule  # noqa: F401
    return ConTextRule, TargetRule


def build(rules: Optional[RuleSet] = None, rules_dir: Union[str, Path, None] = None, fast: bool = True) -> Language:
    """The extraction pipeline built from validated rule files (default: the shipped `patterns/`).

    `fast=False` keeps medspaCy's own regex matcher (for comparison)."""
    ruleset = rules or load_rules(rules_dir)
    ConTextRule, TargetRule = _import_medspacy()
    nlp = spacy.blank("en")
    _split_leading_marks(nlp)
    if fast:
        patterns = [_target_regex(r) for r in ruleset.target_rules]
        nlp.add_pipe("lbp_windows").scanner = Scanner(ruleset, [_anchored(p) for p in patterns])
    else:
        patterns = [r.get("pattern") for r in ruleset.target_rules]
        nlp.add_pipe("lbp_sections").add(ruleset.section_rules)
        nlp.add_pipe("lbp_sentences")
    matcher = nlp.add_pipe("medspacy_target_matcher", config={"result_type": "ents", "prune": True})
    if fast:
        _window_matching(matcher)
        _entities_at_once(matcher)
    matcher.add([
        TargetRule(r["literal"], r["category"], pattern=_anchored(pattern), metadata=r["metadata"])
        for r, pattern in zip(ruleset.target_rules, patterns)
    ])
    context = nlp.add_pipe("medspacy_context", config={"rules": None, "span_attrs": None})
    if fast:
        _faster_regex_matching(context)
    context_rules = [_context_rule(ConTextRule, r) for r in ruleset.context_rules]
    context.add(context_rules)
    if fast:
        _, gated = _medspacy_matcher(context)._MedspacyMatcher__regex_matcher.gate()  # before any fork
        # segments are joined by a blank line no look-behind reads across (`Scanner.window`)
        nlp.get_pipe("lbp_windows").scanner.separator = "\n" * max(2, gated.behind)
        _phrase_token_patterns(context, context_rules, nlp)
        _context_by_sentence(context)
    nlp.meta["lbp_rules_digest"] = ruleset.digest
    nlp.meta["lbp_pipeline"] = PIPELINE_NAME
    return nlp


def _split_leading_marks(nlp: Language) -> None:
    """'?foot drop', '+SLR', '~3 wks', '↓ sensation': the mark is a token of its own, so a cue can
    modify the finding without overlapping it."""
    prefixes = list(nlp.Defaults.prefixes) + [r"\?", r"\+", r"~", r"↓", r"↑"]
    nlp.tokenizer.prefix_search = spacy.util.compile_prefix_regex(prefixes).search


def _target_regex(rule: dict) -> str:
    """Every target rule as a regex: a phrase rule, or a plain token rule spelled out into its word
    sequences (`_spell_out`), as those words separated by whitespace."""
    pattern = rule.get("pattern")
    if isinstance(pattern, str):
        return pattern
    sequences = [rule["literal"].split()] if pattern is None else _spell_out(pattern)
    if not sequences or not all(word.isalnum() for words in sequences for word in words):
        raise ValueError(f"target rule {rule['metadata']['id']}: only plain LOWER token patterns are supported")
    spelled = sorted((r"\s+".join(map(re.escape, words)) for words in sequences), key=len, reverse=True)
    return r"(?<![\w])(?:" + "|".join(spelled) + r")(?![\w])"


def _anchored(pattern):
    """A regex target may not start on whitespace: medspaCy would widen the match to the token before
    it ("No| weight loss" would swallow the negation)."""
    return rf"(?=\S)(?:{pattern})" if isinstance(pattern, str) else pattern


def _context_rule(ConTextRule, rule: dict):
    meta = rule["metadata"]
    return ConTextRule(
        rule["literal"],
        rule["category"],
        pattern=rule.get("pattern"),
        direction=rule.get("direction", "BIDIRECTIONAL"),
        on_modifies=NoCross(meta.get("no_cross", ""), meta.get("no_cross_before", ""))
        if meta.get("no_cross") or meta.get("no_cross_before") else None,
        allowed_types=set(rule["allowed_types"]) if rule.get("allowed_types") else None,
        excluded_types=set(rule["excluded_types"]) if rule.get("excluded_types") else None,
        max_scope=rule.get("max_scope"),
        max_targets=rule.get("max_targets"),
        metadata=meta,
    )
