"""Guideline scenarios: which apply to a note, how urgent, and what imaging the guideline supports.

Rule data lives in `patterns/guidelines/*.json`, one file per guideline edition. `recommend` is a
pure function of the per-note summary and one edition: no spaCy, no I/O, no clock.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from .labels import LABELS, STATUSES
from .orders import LUMBAR_PROCEDURES

URGENCIES = ("none", "routine", "urgent", "emergent")
RATINGS = ("UA", "MBA", "UNA")
RATING_WORDS = {"UA": "usually appropriate", "MBA": "may be appropriate", "UNA": "usually not appropriate"}
RATED = {"UA": "is usually appropriate", "MBA": "may be appropriate", "UNA": "is usually not appropriate"}
SUMMARY_FIELDS_USED = ("age", "bilateral_deficit", "progressive_deficit", "duration_days", "duration_class")
FIELD_WORDS = {"bilateral_deficit": "bilateral deficit", "progressive_deficit": "progressive deficit", "age": "age"}


class UnknownEdition(ValueError):
    """A guideline edition asked for by name that the rule files do not define."""


@dataclass(frozen=True)
class ScenarioRule:
    id: str
    scenario: str
    title: str
    variant: str
    source: str
    when: dict
    urgency: str
    urgency_when: tuple = ()
    unless_scenarios: tuple = ()
    usually_appropriate: tuple = ()
    may_be_appropriate: tuple = ()
    basis: str = ""


@dataclass(frozen=True)
class Edition:
    id: str
    name: str
    citation: str
    effective_from: dt.date | None
    default: bool
    parameters: dict
    scenario_rules: tuple[ScenarioRule, ...]
    modifier_rules: tuple[dict, ...]
    file: str = ""


@dataclass(frozen=True)
class ScenarioMatch:
    """One scenario rule that applies to a note, with what made it apply and the procedures it
    supports once the modifiers are applied (the rule itself keeps the edition's own lists)."""

    rule: ScenarioRule
    urgency: str
    evidence: tuple[str, ...]  # what made it match: label names and summary fields
    usually_appropriate: tuple[str, ...]
    may_be_appropriate: tuple[str, ...]

    @property
    def scenario(self) -> str:
        return self.rule.scenario

    @property
    def rule_id(self) -> str:
        return self.rule.id

    @property
    def title(self) -> str:
        return self.rule.title

    @property
    def source(self) -> str:
        return self.rule.source

    @property
    def basis(self) -> str:
        return self.rule.basis


@dataclass(frozen=True)
class Recommendation:
    """What the guideline says for one note under one edition."""

    edition: str
    in_scope: bool
    scenarios: tuple[ScenarioMatch, ...] = ()
    urgency: str = "none"
    modifiers: tuple[str, ...] = ()  # ids of substitution modifiers that applied
    notes: tuple[str, ...] = ()

    @property
    def scenario_ids(self) -> tuple[str, ...]:
        return tuple(m.scenario for m in self.scenarios)

    @property
    def usually_appropriate(self) -> tuple[str, ...]:
        return tuple(p for p in LUMBAR_PROCEDURES if any(p in m.usually_appropriate for m in self.scenarios))

    @property
    def may_be_appropriate(self) -> tuple[str, ...]:
        ua = self.usually_appropriate
        return tuple(p for p in LUMBAR_PROCEDURES
                     if p not in ua and any(p in m.may_be_appropriate for m in self.scenarios))

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(m.rule_id for m in self.scenarios) + self.modifiers

    def rating(self, procedure: str) -> tuple[str, tuple[ScenarioMatch, ...]]:
        """The best rating of `procedure` across the note's scenarios, and the scenarios giving it."""
        for rating, attr in (("UA", "usually_appropriate"), ("MBA", "may_be_appropriate")):
            giving = tuple(m for m in self.scenarios if procedure in getattr(m, attr))
            if giving:
                return rating, giving
        return "UNA", ()


# ---------------------------------------------------------------- conditions


def check_condition(condition, where: str, problems: list[str], parameters: Mapping) -> None:
    """Validate one condition tree: any / all / not over label statuses and summary fields."""
    if not isinstance(condition, dict) or not condition:
        problems.append(f"{where}: a condition must be a non-empty object")
        return
    if "any" in condition or "all" in condition:
        key = "any" if "any" in condition else "all"
        if set(condition) != {key} or not isinstance(condition[key], list) or not condition[key]:
            problems.append(f"{where}: '{key}' takes a non-empty list and nothing else")
            return
        for i, child in enumerate(condition[key]):
            check_condition(child, f"{where}.{key}[{i}]", problems, parameters)
    elif "not" in condition:
        check_condition(condition["not"], f"{where}.not", problems, parameters)
    elif "label" in condition:
        if condition["label"] not in LABELS:
            problems.append(f"{where}: unknown label {condition['label']!r}")
        statuses = condition.get("status")
        if not isinstance(statuses, list) or not statuses or not set(statuses) <= set(STATUSES):
            problems.append(f"{where}: status must be a list drawn from {STATUSES}")
    elif "field" in condition:
        if condition["field"] not in SUMMARY_FIELDS_USED:
            problems.append(f"{where}: unknown summary field {condition['field']!r}")
        tests = set(condition) - {"field"}
        if tests not in ({"equals"}, {"at_least"}):
            problems.append(f"{where}: a field condition takes 'equals' or 'at_least'")
        bound = condition.get("at_least")
        if isinstance(bound, dict) and bound.get("parameter") not in parameters:
            problems.append(f"{where}: unknown parameter {bound.get('parameter')!r}")
    else:
        problems.append(f"{where}: a condition needs any, all, not, label or field")


def matches(condition: dict, summary: Mapping, parameters: Mapping) -> tuple[str, ...] | None:
    """The evidence (labels and fields) that make `condition` true for `summary`; None when false."""
    if "any" in condition:
        found = [m for m in (matches(c, summary, parameters) for c in condition["any"]) if m is not None]
        return tuple(dict.fromkeys(e for m in found for e in m)) if found else None
    if "all" in condition:
        found = [matches(c, summary, parameters) for c in condition["all"]]
        return None if any(m is None for m in found) else tuple(dict.fromkeys(e for m in found for e in m))
    if "not" in condition:
        return () if matches(condition["not"], summary, parameters) is None else None
    if "label" in condition:
        return (condition["label"],) if summary.get(condition["label"]) in condition["status"] else None
    value = summary.get(condition["field"])
    if "equals" in condition:
        return (condition["field"],) if value == condition["equals"] else None
    bound = condition["at_least"]
    if isinstance(bound, dict):
        bound = parameters[bound["parameter"]]
    return (f"{condition['field']} {value}",) if value is not None and value >= bound else None


# ---------------------------------------------------------------- rule data


def check_guideline(data: dict, where: str, problems: list[str], seen_ids: dict[str, str]) -> None:
    """Validate one edition file (edition, scenario_rules, modifier_rules); all problems at once."""
    from .rules import _check_id

    edition = data.get("edition")
    if not isinstance(edition, dict) or not edition.get("id") or not edition.get("citation"):
        problems.append(f"{where}: edition needs an id and a citation")
        return
    parameters = edition.get("parameters") or {}
    if edition.get("effective_from") is not None:
        try:
            dt.date.fromisoformat(edition["effective_from"])
        except (TypeError, ValueError):
            problems.append(f"{where}: edition.effective_from must be a YYYY-MM-DD date or null")
    names = set()
    for i, rule in enumerate(data.get("scenario_rules", [])):
        w = f"{where}.scenario_rules[{i}]"
        _check_id(rule, w, problems, seen_ids)
        for key in ("scenario", "title", "variant", "source", "when", "urgency"):
            if not rule.get(key):
                problems.append(f"{w}: {key} missing")
        if rule.get("scenario") in names:
            problems.append(f"{w}: scenario {rule.get('scenario')} defined twice")
        names.add(rule.get("scenario"))
        check_condition(rule.get("when"), f"{w}.when", problems, parameters)
        if rule.get("urgency") not in URGENCIES:
            problems.append(f"{w}: urgency must be one of {URGENCIES}")
        for j, step in enumerate(rule.get("urgency_when", [])):
            check_condition(step.get("when"), f"{w}.urgency_when[{j}]", problems, parameters)
            if step.get("urgency") not in URGENCIES:
                problems.append(f"{w}.urgency_when[{j}]: urgency must be one of {URGENCIES}")
        for key in ("usually_appropriate", "may_be_appropriate"):
            for code in rule.get(key, []):
                if code not in LUMBAR_PROCEDURES:
                    problems.append(f"{w}: {key} has unknown procedure {code!r}")
        for j, example in enumerate(rule.get("examples", [])):
            if not isinstance(example, dict) or "summary" not in example or "matches" not in example:
                problems.append(f"{w}.examples[{j}]: needs summary and matches")
    order = [r.get("scenario") for r in data.get("scenario_rules", [])]
    for i, rule in enumerate(data.get("scenario_rules", [])):
        for name in rule.get("unless_scenarios", []):
            if name not in order[:i]:
                problems.append(f"{where}.scenario_rules[{i}]: unless_scenarios names {name!r}, "
                                "which is not a scenario listed before it")
    for i, rule in enumerate(data.get("modifier_rules", [])):
        w = f"{where}.modifier_rules[{i}]"
        _check_id(rule, w, problems, seen_ids)
        if not rule.get("source"):
            problems.append(f"{w}: source missing")
        if rule.get("kind") == "substitute":
            check_condition(rule.get("when"), f"{w}.when", problems, parameters)
            codes = [rule.get("if_usually_appropriate"), *rule.get("add_usually_appropriate", [])]
            if not all(code in LUMBAR_PROCEDURES for code in codes) or len(codes) < 2:
                problems.append(f"{w}: if_usually_appropriate / add_usually_appropriate need procedure codes")
        elif rule.get("kind") == "advisory":
            if not rule.get("advisory") or not rule.get("procedures"):
                problems.append(f"{w}: an advisory needs advisory text and procedures")
            for name in rule.get("scenarios_any", []) + rule.get("scenarios_none", []):
                if name not in names:
                    problems.append(f"{w}: unknown scenario {name!r}")
        else:
            problems.append(f"{w}: kind must be 'substitute' or 'advisory'")


def build_edition(data: dict, file: str = "") -> Edition:
    edition = data["edition"]
    start = edition.get("effective_from")
    rules = tuple(
        ScenarioRule(id=r["id"], scenario=r["scenario"], title=r["title"], variant=r["variant"], source=r["source"],
                     when=r["when"], urgency=r["urgency"], urgency_when=tuple(r.get("urgency_when", [])),
                     unless_scenarios=tuple(r.get("unless_scenarios", [])),
                     usually_appropriate=tuple(r.get("usually_appropriate", [])),
                     may_be_appropriate=tuple(r.get("may_be_appropriate", [])), basis=r.get("basis", ""))
        for r in data.get("scenario_rules", []))
    return Edition(id=edition["id"], name=edition.get("name", edition["id"]), citation=edition["citation"],
                   effective_from=dt.date.fromisoformat(start) if start else None,
                   default=bool(edition.get("default")), parameters=dict(edition.get("parameters") or {}),
                   scenario_rules=rules, modifier_rules=tuple(data.get("modifier_rules", [])), file=file)


def choose_edition(editions: Sequence[Edition], date: dt.date | None = None, forced: str | None = None) -> Edition:
    """The edition in force on `date` (the default edition when there is no date), or the forced one."""
    if not editions:
        raise ValueError("no guideline editions loaded")
    if forced:
        for edition in editions:
            if edition.id.lower() == forced.lower() or edition.id.lower().endswith(forced.lower()):
                return edition
        raise UnknownEdition(f"unknown guideline edition {forced!r} (known: {', '.join(e.id for e in editions)})")
    if date is None:
        return next((e for e in editions if e.default), editions[-1])
    in_force = [e for e in editions if e.effective_from is None or e.effective_from <= date]
    if not in_force:
        return min(editions, key=lambda e: e.effective_from or dt.date.min)
    return max(in_force, key=lambda e: e.effective_from or dt.date.min)


# ---------------------------------------------------------------- the recommendation


def recommend(summary: Mapping, edition: Edition, parameters: Mapping | None = None) -> Recommendation:
    """Scenarios, urgency and the procedures the edition supports for one note's summary."""
    if not summary.get("in_scope"):
        return Recommendation(edition.id, False)
    params = {**edition.parameters, **(parameters or {})}
    substitutions = [m for m in edition.modifier_rules
                     if m.get("kind") == "substitute" and matches(m["when"], summary, params) is not None]
    found: list[ScenarioMatch] = []
    for rule in edition.scenario_rules:
        if any(s.scenario in rule.unless_scenarios for s in found):
            continue
        evidence = matches(rule.when, summary, params)
        if evidence is None:
            continue
        urgency = rule.urgency
        for step in rule.urgency_when:
            if matches(step["when"], summary, params) is not None:
                urgency = step["urgency"]
                break
        ua = list(rule.usually_appropriate)
        for modifier in substitutions:
            if modifier["if_usually_appropriate"] in ua:
                ua += [p for p in modifier["add_usually_appropriate"] if p not in ua]
        mba = tuple(p for p in rule.may_be_appropriate if p not in ua)
        found.append(ScenarioMatch(rule, urgency, evidence, tuple(ua), mba))
    urgency = max((m.urgency for m in found), key=URGENCIES.index, default="none")
    used = tuple(m["id"] for m in substitutions if any(
        p in s.usually_appropriate and p not in s.rule.usually_appropriate
        for s in found for p in m["add_usually_appropriate"]))
    notes = tuple(m.get("note", "") for m in substitutions if m["id"] in used)
    return Recommendation(edition.id, True, tuple(found), urgency, used, notes)


def advisories(procedure: str, recommendation: Recommendation, edition: Edition) -> list[tuple[str, str]]:
    """(rule id, advisory) pairs of the edition's modifiers that apply to `procedure`: advisory
    modifiers, and the substitution that made it usually appropriate (e.g. MRI contraindicated)."""
    ids = set(recommendation.scenario_ids)
    out = []
    for modifier in edition.modifier_rules:
        if modifier["id"] in recommendation.modifiers and procedure in modifier["add_usually_appropriate"] and \
                any(procedure in m.usually_appropriate for m in recommendation.scenarios):
            out.append((modifier["id"], modifier.get("note") or modifier["id"]))
    for modifier in edition.modifier_rules:
        if modifier.get("kind") != "advisory" or procedure not in modifier["procedures"]:
            continue
        if modifier.get("scenarios_any") and not ids & set(modifier["scenarios_any"]):
            continue
        if ids & set(modifier.get("scenarios_none", [])):
            continue
        out.append((modifier["id"], modifier["advisory"]))
    return out
