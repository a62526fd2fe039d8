"""Load every rule file in `patterns/` and validate it, reporting all problems at once.

Rule files are data: target rules and ConText rules in medspaCy's JSON layout (our stable id
and example phrases live in each rule's `metadata`), section rules in our own small layout.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .labels import LABELS
from .omop import check_mapping
from .orders import check_order_rules, compile_order_rules
from .scenarios import build_edition, check_guideline

TARGET_KEYS = {"literal", "category", "pattern", "metadata", "attributes"}
CONTEXT_KEYS = {"literal", "category", "pattern", "direction", "metadata", "allowed_types",
                "excluded_types", "max_targets", "max_scope"}
SECTION_KEYS = {"id", "category", "pattern", "case_sensitive", "examples"}
CONTEXT_CATEGORIES = {"NEGATED_EXISTENCE", "POSSIBLE_EXISTENCE", "HISTORICAL", "HYPOTHETICAL", "FAMILY"}
DIRECTIONS = {"FORWARD", "BACKWARD", "BIDIRECTIONAL", "TERMINATE", "PSEUDO"}
ID_RE = re.compile(r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)+$")


class ProblemsError(ValueError):
    """Every problem found in a set of input files, reported at once, one per line."""

    subject = "input files"

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in {self.subject}:\n" + "\n".join(problems))


class RuleError(ProblemsError):
    subject = "rule files"


@dataclass(frozen=True)
class SectionRule:
    id: str
    category: str
    regex: re.Pattern
    examples: tuple[str, ...] = ()


@dataclass
class RuleSet:
    """Validated rules: plain dicts for medspaCy (built into its objects by `pipeline.nlp`)."""

    target_rules: list[dict] = field(default_factory=list)
    context_rules: list[dict] = field(default_factory=list)
    section_rules: list[SectionRule] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    digest: str = ""
    editions: list = field(default_factory=list)  # scenarios.Edition, oldest first
    orders: object = None  # orders.OrderRules
    file_digests: dict = field(default_factory=dict)

    def target_by_id(self) -> dict[str, dict]:
        return {r["metadata"]["id"]: r for r in self.target_rules}


def packaged_dir(source_name: str, package: str) -> Path:
    """A data folder of the project: the source tree's when running from a clone, else the installed copy."""
    source = Path(__file__).resolve().parent.parent / source_name
    if source.is_dir():
        return source
    # the data folders are namespace packages (no __init__.py), for which resources.files gives a
    # MultiplexedPath whose str() is not a path: take the package's folder from its spec instead
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(str(resources.files(package)))


def default_rules_dir() -> Path:
    """The rule files shipped with the package (`patterns/` in the source tree)."""
    return packaged_dir("patterns", "pipeline.rulefiles")


def load_rules(rules_dir: str | Path | None = None) -> RuleSet:
    """Read and validate every JSON file under `rules_dir` (default: the shipped `patterns/`)."""
    root = Path(rules_dir) if rules_dir else default_rules_dir()
    problems: list[str] = []
    ruleset = RuleSet()
    seen_ids: dict[str, str] = {}
    digest = hashlib.sha256()
    paths = sorted(p for p in root.rglob("*.json"))
    if not paths:
        raise RuleError([f"{root}: no rule files found"])
    for path in paths:
        rel = path.relative_to(root).as_posix()
        raw = path.read_bytes()
        digest.update(rel.encode() + b"\0" + raw)
        ruleset.file_digests[rel] = hashlib.sha256(raw).hexdigest()
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as err:
            problems.append(f"{rel}: invalid JSON ({err})")
            continue
        ruleset.files.append(rel)
        if not isinstance(data, dict):
            problems.append(f"{rel}: top level must be an object")
            continue
        if "target_rules" in data:
            for i, rule in enumerate(data["target_rules"]):
                if _check_target(rule, f"{rel}[{i}]", problems, seen_ids):
                    ruleset.target_rules.append(rule)
        if "context_rules" in data:
            for i, rule in enumerate(data["context_rules"]):
                if _check_context(rule, f"{rel}[{i}]", problems, seen_ids):
                    ruleset.context_rules.append(rule)
        if "section_rules" in data:
            for i, rule in enumerate(data["section_rules"]):
                section = _check_section(rule, f"{rel}[{i}]", problems, seen_ids)
                if section:
                    ruleset.section_rules.append(section)
        if "order_rules" in data:
            before = len(problems)
            check_order_rules(data["order_rules"], f"{rel}:order_rules", problems, seen_ids)
            if ruleset.orders is not None:
                problems.append(f"{rel}: order_rules defined in more than one file")
            elif len(problems) == before:
                ruleset.orders = compile_order_rules(data["order_rules"])
        if "edition" in data or "scenario_rules" in data:
            before = len(problems)
            check_guideline(data, rel, problems, seen_ids)
            if len(problems) == before:
                ruleset.editions.append(build_edition(data, rel))
        if "omop_mapping" in data:
            check_mapping(data["omop_mapping"], f"{rel}:omop_mapping", problems)
        known = {"target_rules", "context_rules", "section_rules", "scenario_rules", "order_rules",
                 "edition", "modifier_rules", "description", "omop_mapping"}
        for key in set(data) - known:
            problems.append(f"{rel}: unknown top-level key {key!r}")
    editions = [e.id for e in ruleset.editions]
    for name in sorted({e for e in editions if editions.count(e) > 1}):
        problems.append(f"guideline edition {name} is defined in more than one file")
    if sum(e.default for e in ruleset.editions) > 1:
        problems.append("more than one guideline edition is marked default")
    if problems:
        raise RuleError(problems)
    ruleset.editions.sort(key=lambda e: (e.effective_from is not None, e.effective_from))
    if ruleset.orders is None:
        ruleset.orders = compile_order_rules({})
    ruleset.digest = digest.hexdigest()[:16]
    return ruleset


def _check_id(meta, where, problems, seen_ids) -> str | None:
    rule_id = meta.get("id") if isinstance(meta, dict) else None
    if not rule_id or not isinstance(rule_id, str) or not ID_RE.match(rule_id):
        problems.append(f"{where}: metadata.id missing or not like 'RF-FOOTDROP-003' ({rule_id!r})")
        return None
    if rule_id in seen_ids:
        problems.append(f"{where}: duplicate id {rule_id} (also {seen_ids[rule_id]})")
        return None
    seen_ids[rule_id] = where
    return rule_id


def _check_pattern(pattern, where, problems) -> None:
    if pattern is None:
        return
    if isinstance(pattern, str):
        try:
            re.compile(pattern, re.IGNORECASE)
        except re.error as err:
            problems.append(f"{where}: bad regex ({err})")
    elif isinstance(pattern, list):
        from spacy.schemas import validate_token_pattern

        for err in validate_token_pattern(pattern):
            problems.append(f"{where}: bad token pattern ({err})")
    else:
        problems.append(f"{where}: pattern must be a regex string or a token pattern list")


def _check_examples(meta, where, problems) -> None:
    for key in ("examples", "counter_examples"):
        examples = meta.get(key, [])
        if not isinstance(examples, list):
            problems.append(f"{where}: metadata.{key} must be a list")


def _check_keys(rule, where, problems, allowed: set[str]) -> bool:
    """A rule is an object with only the keys its format knows."""
    if not isinstance(rule, dict):
        problems.append(f"{where}: rule must be an object")
        return False
    for key in set(rule) - allowed:
        problems.append(f"{where}: unknown key {key!r}")
    return True


def _check_medspacy_rule(rule, where, problems, seen_ids, allowed: set[str]):
    """What target and ConText rules share: keys, id in metadata, literal, pattern, examples.
    Returns (metadata, where-with-id), or None when the rule is not an object."""
    if not _check_keys(rule, where, problems, allowed):
        return None
    meta = rule.get("metadata") or {}
    rule_id = _check_id(meta, where, problems, seen_ids)
    where = f"{where} {rule_id or ''}".strip()
    if not rule.get("literal"):
        problems.append(f"{where}: literal missing")
    _check_pattern(rule.get("pattern"), where, problems)
    _check_examples(meta, where, problems)
    return meta, where


def _check_target(rule, where, problems, seen_ids) -> bool:
    before = len(problems)
    checked = _check_medspacy_rule(rule, where, problems, seen_ids, TARGET_KEYS)
    if checked is None:
        return False
    meta, where = checked
    if rule.get("category") not in LABELS:
        problems.append(f"{where}: category {rule.get('category')!r} is not a canonical label")
    for label in meta.get("labels", []):
        if label not in LABELS:
            problems.append(f"{where}: metadata.labels has unknown label {label!r}")
    for label in meta.get("negated_labels", []):
        if label not in LABELS:
            problems.append(f"{where}: metadata.negated_labels has unknown label {label!r}")
    if meta.get("polarity", "positive") not in ("positive", "normal", "mask"):
        problems.append(f"{where}: metadata.polarity must be 'positive', 'normal' or 'mask'")
    return len(problems) == before


def _check_context(rule, where, problems, seen_ids) -> bool:
    before = len(problems)
    checked = _check_medspacy_rule(rule, where, problems, seen_ids, CONTEXT_KEYS)
    if checked is None:
        return False
    meta, where = checked
    if rule.get("category") not in CONTEXT_CATEGORIES:
        problems.append(f"{where}: category {rule.get('category')!r} not one of {sorted(CONTEXT_CATEGORIES)}")
    if rule.get("direction", "BIDIRECTIONAL") not in DIRECTIONS:
        problems.append(f"{where}: direction {rule.get('direction')!r} not one of {sorted(DIRECTIONS)}")
    for key in ("allowed_types", "excluded_types"):
        for label in rule.get(key) or []:
            if label not in LABELS:
                problems.append(f"{where}: {key} has unknown label {label!r}")
    for key in ("no_cross", "no_cross_before"):
        if not isinstance(meta.get(key, ""), str):
            problems.append(f"{where}: metadata.{key} must be a string of characters")
    for example in meta.get("examples", []):
        if not (isinstance(example, dict) and {"text", "label", "assertion"} <= set(example)):
            problems.append(f"{where}: context examples need text, label and assertion")
    return len(problems) == before


def _check_section(rule, where, problems, seen_ids) -> SectionRule | None:
    before = len(problems)
    if not _check_keys(rule, where, problems, SECTION_KEYS):
        return None
    rule_id = _check_id(rule, where, problems, seen_ids)
    if not rule.get("category"):
        problems.append(f"{where}: category missing")
    regex = None
    try:
        flags = re.MULTILINE | (0 if rule.get("case_sensitive") else re.IGNORECASE)
        regex = re.compile(rule.get("pattern") or "", flags)
        if not rule.get("pattern"):
            problems.append(f"{where}: pattern missing")
    except re.error as err:
        problems.append(f"{where}: bad regex ({err})")
    if len(problems) != before:
        return None
    return SectionRule(rule_id, rule["category"], regex, tuple(rule.get("examples", [])))
