"""Assemble the spaCy pipeline from the rule files: one place, named components, explicit rules.

tokenizer (spaCy blank English) → `lbp_sections` → `lbp_sentences` → medspaCy TargetMatcher →
medspaCy ConText. medspaCy's bundled rules never load: every rule comes from `patterns/`.
"""
from typing import Optional, Union

import bisect
import warnings
from pathlib import Path

import spacy
from spacy.language import Language
from spacy.tokens import Doc

from .rules import RuleSet, load_rules
from .sections import find_sections
from .sentences import sentence_starts, set_sentence_starts

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
    tokens by a linear scan; with ~130 regex rules that was 40 % of the run time. Same matches,
    computed once per doc (tests/test_nlp.py checks the two agree)."""
    from medspacy.common.regex_matcher import RegexMatcher

    class FastRegexMatcher(RegexMatcher):
        def __call__(self, doc: Doc):
            text = doc.text_with_ws
            starts = [token.idx for token in doc]
            matches = []
            for match_id, patterns in self._patterns.items():
                on_match = self._callbacks[match_id]
                for pattern in patterns:
                    for found in pattern.finditer(text):
                        span = doc.char_span(found.start(), found.end())
                        if span is None:  # widen to token edges, as medspaCy does
                            first = max(0, bisect.bisect_right(starts, found.start()) - 1)
                            span = doc[first:bisect.bisect_left(starts, found.end())]
                        if len(span):
                            matches.append((match_id, span.start, span.end))
                        if on_match is not None:
                            on_match(self, doc, len(matches) - 1, matches)
            return matches

    owner = type(component).__name__
    medspacy_matcher = getattr(component, f"_{owner}__matcher")
    medspacy_matcher._MedspacyMatcher__regex_matcher.__class__ = FastRegexMatcher


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
    nlp.add_pipe("lbp_sections").add(ruleset.section_rules)
    nlp.add_pipe("lbp_sentences")
    matcher = nlp.add_pipe("medspacy_target_matcher", config={"result_type": "ents", "prune": True})
    if fast:
        _faster_regex_matching(matcher)
    matcher.add([
        TargetRule(r["literal"], r["category"], pattern=_anchored(r.get("pattern")), metadata=r["metadata"])
        for r in ruleset.target_rules
    ])
    context = nlp.add_pipe("medspacy_context", config={"rules": None, "span_attrs": None})
    if fast:
        _faster_regex_matching(context)
    context.add([_context_rule(ConTextRule, r) for r in ruleset.context_rules])
    nlp.meta["lbp_rules_digest"] = ruleset.digest
    nlp.meta["lbp_pipeline"] = PIPELINE_NAME
    return nlp


def _split_leading_marks(nlp: Language) -> None:
    """'?foot drop', '+SLR', '~3 wks', '↓ sensation': the mark is a token of its own, so a cue can
    modify the finding without overlapping it."""
    prefixes = list(nlp.Defaults.prefixes) + [r"\?", r"\+", r"~", r"↓", r"↑"]
    nlp.tokenizer.prefix_search = spacy.util.compile_prefix_regex(prefixes).search


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
