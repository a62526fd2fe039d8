"""Imaging orders → procedure codes of the audit contract, from `patterns/orders.json`.

Pure functions over rule data: no spaCy, no I/O. The CPT code and the free text are read
separately; when both are recognised and disagree, the rule file's `winner_on_conflict` decides
and the conflict is reported. Anything not recognised is OTHER with a reason, never a guess.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import lru_cache

PROCEDURES = ("XR_LSPINE", "CT_LSPINE_WO", "CT_LSPINE_W", "CT_LSPINE_WWO", "MRI_LSPINE_WO", "MRI_LSPINE_W",
              "MRI_LSPINE_WWO", "CT_MYELO_LSPINE", "BONE_SCAN", "OTHER")
LUMBAR_PROCEDURES = PROCEDURES[:-1]
MODALITY_OF = {"XR_LSPINE": "XR", "CT_LSPINE_WO": "CT", "CT_LSPINE_W": "CT", "CT_LSPINE_WWO": "CT",
               "MRI_LSPINE_WO": "MRI", "MRI_LSPINE_W": "MRI", "MRI_LSPINE_WWO": "MRI",
               "CT_MYELO_LSPINE": "MYELO", "BONE_SCAN": "BONE_SCAN"}
PRIORITIES = ("routine", "urgent", "emergent")
_CPT = re.compile(r"(?<![0-9A-Z])(\d{4}[0-9FTU])(?![0-9])", re.IGNORECASE)
_TEXT_KINDS = ("exclusions", "modalities", "regions", "contrast", "priorities")
NO_REGION = "no body region in the order"
NOT_RECOGNISED = "not recognised as imaging of the lumbar spine"


@dataclass(frozen=True)
class Procedure:
    """One order, normalised. `reason` says why it is OTHER; `notes` carry what the reader should know."""

    procedure: str
    rule_ids: tuple[str, ...] = ()
    source: str = ""  # "cpt", "text", "cpt+text" or ""
    reason: str | None = None
    conflict: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def lumbar(self) -> bool:
        return self.procedure != "OTHER"

    @property
    def modality(self) -> str | None:
        return MODALITY_OF.get(self.procedure)


@dataclass(frozen=True)
class _Reading:
    procedure: str
    rule_ids: tuple[str, ...]
    reason: str | None = None
    notes: tuple[str, ...] = ()
    also: tuple[str, ...] = ()
    defer_to_text: bool = False  # the code leaves the decision to the description (e.g. spine level)
    contrast_assumed: bool = False  # the description states no contrast; the default was applied


@dataclass
class OrderRules:
    """The compiled order rules (see `compile_order_rules`)."""

    cpt: dict[str, dict] = field(default_factory=dict)
    text: dict[str, list[tuple[dict, re.Pattern]]] = field(default_factory=dict)
    procedures: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    region_free: frozenset = frozenset()
    examples: list[dict] = field(default_factory=list)


def check_order_rules(data, where: str, problems: list[str], seen_ids: dict[str, str]) -> None:
    """Validate the `order_rules` object of a rule file; append every problem to `problems`."""
    from .rules import _check_id  # the one id checker of the loader

    if not isinstance(data, dict):
        problems.append(f"{where}: order_rules must be an object")
        return
    for i, rule in enumerate(data.get("cpt", [])):
        w = f"{where}.cpt[{i}]"
        _check_id(rule, w, problems, seen_ids)
        if rule.get("procedure") not in PROCEDURES:
            problems.append(f"{w}: procedure {rule.get('procedure')!r} not one of {PROCEDURES}")
        for extra in rule.get("also", []):
            if extra not in PROCEDURES:
                problems.append(f"{w}: also has unknown procedure {extra!r}")
        if not rule.get("codes") or not all(isinstance(c, str) and _CPT.fullmatch(c) for c in rule["codes"]):
            problems.append(f"{w}: codes must be a non-empty list of 5-character CPT codes")
        if rule.get("procedure") == "OTHER" and not rule.get("reason"):
            problems.append(f"{w}: an OTHER rule needs a reason")
    for kind in _TEXT_KINDS:
        for i, rule in enumerate(data.get(kind, [])):
            w = f"{where}.{kind}[{i}]"
            _check_id(rule, w, problems, seen_ids)
            try:
                re.compile(rule.get("pattern") or "", re.IGNORECASE)
                if not rule.get("pattern"):
                    problems.append(f"{w}: pattern missing")
            except re.error as err:
                problems.append(f"{w}: bad regex ({err})")
            if kind == "exclusions" and not rule.get("reason"):
                problems.append(f"{w}: an exclusion needs a reason")
            if kind == "regions" and not isinstance(rule.get("lumbar"), bool):
                problems.append(f"{w}: lumbar must be true or false")
            if kind == "priorities" and rule.get("priority") not in PRIORITIES:
                problems.append(f"{w}: priority must be one of {PRIORITIES}")
    for modality, target in (data.get("procedures") or {}).items():
        targets = target.values() if isinstance(target, dict) else [target]
        for code in targets:
            if code not in PROCEDURES:
                problems.append(f"{where}.procedures.{modality}: unknown procedure {code!r}")
    for i, example in enumerate(data.get("examples", [])):
        if not isinstance(example, dict) or example.get("procedure") not in PROCEDURES:
            problems.append(f"{where}.examples[{i}]: needs description/cpt and a known procedure")


def compile_order_rules(data: dict) -> OrderRules:
    cpt = {}
    for rule in data.get("cpt", []):
        for code in rule["codes"]:
            cpt[code.upper()] = rule
    text = {kind: [(rule, re.compile(rule["pattern"], re.IGNORECASE)) for rule in data.get(kind, [])]
            for kind in _TEXT_KINDS}
    return OrderRules(cpt=cpt, text=text, procedures=dict(data.get("procedures") or {}),
                      settings=dict(data.get("settings") or {}),
                      region_free=frozenset(data.get("region_free_modalities", [])),
                      examples=list(data.get("examples", [])))


def read_cpt(value, rules: OrderRules) -> _Reading | None:
    """What the CPT field says (None: no code in it)."""
    if value is None:
        return None
    codes = [c.upper() for c in _CPT.findall(str(value))]
    if not codes:
        return None if not str(value).strip() else _Reading("OTHER", (), "CPT field holds no 5-digit code")
    known = [(code, rules.cpt[code]) for code in codes if code in rules.cpt]
    if not known:
        return _Reading("OTHER", (), f"CPT {', '.join(codes)} is not in the order table")
    procedures = {rule["procedure"] for _, rule in known}
    lumbar = procedures - {"OTHER"}
    if "CT_MYELO_LSPINE" in lumbar and lumbar <= {"CT_MYELO_LSPINE", "CT_LSPINE_W"}:
        chosen = "CT_MYELO_LSPINE"  # 62284/62304 + 72132: the usual CT-myelogram coding
    elif len(lumbar) == 1:
        chosen = lumbar.pop()
    elif not lumbar:
        chosen = "OTHER"
    else:
        chosen = known[0][1]["procedure"]
    winners = [(code, rule) for code, rule in known if rule["procedure"] == chosen] or known[:1]
    rule = winners[0][1]
    notes = ()
    if len(procedures) > 1:
        notes = (f"CPT codes {', '.join(codes)} name different procedures; read as {chosen}",)
    return _Reading(chosen, tuple(dict.fromkeys(r["id"] for _, r in known)),
                    rule.get("reason") if chosen == "OTHER" else None, notes, tuple(rule.get("also", ())),
                    bool(rule.get("defer_to_text")))


def _first(rules: OrderRules, kind: str, text: str):
    for rule, regex in rules.text[kind]:
        if regex.search(text):
            return rule
    return None


def read_text(description, rules: OrderRules, assume_lumbar: bool = False) -> _Reading | None:
    """What the free-text description says (None: no description)."""
    if description is None or not str(description).strip():
        return None
    text = " ".join(str(description).split())
    excluded = _first(rules, "exclusions", text)
    if excluded:
        return _Reading("OTHER", (excluded["id"],), excluded["reason"])
    modality_rule = _first(rules, "modalities", text)
    regions = [rule for rule, regex in rules.text["regions"] if regex.search(text)]
    if modality_rule is None:
        if any(r["lumbar"] for r in regions):
            return _Reading("OTHER", tuple(r["id"] for r in regions), "no imaging modality named in the order")
        return _Reading("OTHER", (), NOT_RECOGNISED)
    modality = modality_rule["modality"]
    ids = [modality_rule["id"]]
    notes: list[str] = []
    junction = next((r for r in regions if r["id"].endswith("JUNCTION")), None)
    lumbar = next((r for r in regions if r["lumbar"]), None)
    if junction:
        return _Reading("OTHER", (*ids, junction["id"]), junction["reason"])
    if lumbar:
        ids.append(lumbar["id"])
        if lumbar.get("note"):
            notes.append(lumbar["note"])
    elif regions:
        return _Reading("OTHER", (*ids, regions[0]["id"]), regions[0]["reason"])
    elif modality in rules.region_free:
        pass
    elif assume_lumbar:
        notes.append(f"{NO_REGION}; read as lumbar spine")
    else:
        return _Reading("OTHER", tuple(ids), NO_REGION)
    target = rules.procedures.get(modality)
    assumed = False
    if isinstance(target, dict):
        contrast_rule = _first(rules, "contrast", text)
        if contrast_rule:
            ids.append(contrast_rule["id"])
            contrast = contrast_rule["contrast"]
        else:
            contrast = rules.settings.get("unstated_contrast")
            if contrast not in target:
                return _Reading("OTHER", tuple(ids), "contrast protocol not stated in the order")
            notes.append(rules.settings.get("unstated_contrast_note", "contrast not stated"))
            assumed = True
        target = target[contrast]
    return _Reading(target, tuple(ids), None, tuple(notes), contrast_assumed=assumed)


def normalise(description=None, cpt=None, rules: OrderRules | None = None, assume_lumbar: bool = False) -> Procedure:
    """The procedure code of one order, with the rule ids that decided it."""
    rules = rules or default_order_rules()
    by_code = read_cpt(cpt, rules)
    by_text = read_text(description, rules, assume_lumbar)
    code_known = by_code is not None and bool(by_code.rule_ids)
    if by_code is None and by_text is None:
        return Procedure("OTHER", (), "", "neither a description nor a CPT code")
    if not code_known:
        if by_text is None:
            return Procedure("OTHER", (), "cpt", by_code.reason)
        notes = by_text.notes + ((by_code.reason,) if by_code else ())
        return Procedure(by_text.procedure, by_text.rule_ids, "text", by_text.reason, None, notes)
    if by_text is None:
        return Procedure(by_code.procedure, by_code.rule_ids, "cpt", by_code.reason, None, by_code.notes)
    if by_code.procedure != "OTHER" and by_text.reason == NO_REGION:
        by_text = read_text(description, rules, assume_lumbar=True)  # the code supplies the region
        by_text = replace(by_text, notes=tuple(n for n in by_text.notes if not n.startswith(NO_REGION)))
    ids = tuple(dict.fromkeys(by_code.rule_ids + by_text.rule_ids))
    if by_code.defer_to_text and by_text.procedure != "OTHER":
        return Procedure(by_text.procedure, ids, "cpt+text", None, None, by_text.notes)
    if by_text.contrast_assumed and same_modality(by_text.procedure, by_code.procedure):
        return Procedure(by_code.procedure, ids, "cpt+text", None, None, by_code.notes)  # the code states it
    if by_text.procedure == by_code.procedure or by_text.procedure in by_code.also:
        chosen = by_text.procedure
        reason = (by_text.reason or by_code.reason) if chosen == "OTHER" else None
        return Procedure(chosen, ids, "cpt+text", reason, None, by_code.notes + by_text.notes)
    if by_text.reason == NOT_RECOGNISED:
        return Procedure(by_code.procedure, by_code.rule_ids, "cpt", by_code.reason, None, by_code.notes)
    winner = rules.settings.get("winner_on_conflict", "cpt")
    chosen = by_code if winner == "cpt" else by_text
    conflict = (f"order text reads as {by_text.procedure}, CPT code reads as {by_code.procedure}; "
                f"the {'CPT code' if winner == 'cpt' else 'text'} is used")
    return Procedure(chosen.procedure, ids, "cpt" if winner == "cpt" else "text",
                     chosen.reason, conflict, chosen.notes)


def normalise_priority(value, rules: OrderRules | None = None) -> str | None:
    """An order's priority field → routine / urgent / emergent (None: missing or not recognised)."""
    if value is None or not str(value).strip():
        return None
    rules = rules or default_order_rules()
    rule = _first(rules, "priorities", str(value))
    return rule["priority"] if rule else None


def same_modality(a: str, b: str) -> bool:
    return MODALITY_OF.get(a) is not None and MODALITY_OF.get(a) == MODALITY_OF.get(b)


@lru_cache(maxsize=1)
def default_order_rules() -> OrderRules:
    """The shipped order rules, loaded once."""
    from .rules import load_rules

    return load_rules().orders
