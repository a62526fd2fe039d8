"""Order normalisation: free text and/or CPT → procedure code, with its traps."""
import json
from pathlib import Path

import pytest

from pipeline.orders import LUMBAR_PROCEDURES, PROCEDURES, normalise, normalise_priority
from pipeline.rules import load_rules

FIXTURE = Path(__file__).parent / "data" / "order_strings.jsonl"
CASES = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def order_rules():
    return load_rules().orders


@pytest.mark.parametrize("case", CASES, ids=[f"{c['description']}|{c['cpt']}" for c in CASES])
def test_orders_catalog_strings(case, order_rules):
    procedure = normalise(case["description"], case["cpt"], order_rules)
    assert procedure.procedure == case["procedure"], case["why"]
    assert bool(procedure.conflict) == case["conflict"], case["why"]


def test_orders_fixture_covers_every_procedure():
    assert {c["procedure"] for c in CASES} == set(PROCEDURES)


def test_orders_rule_file_examples(order_rules):
    for example in order_rules.examples:
        procedure = normalise(example["description"], example["cpt"], order_rules)
        assert procedure.procedure == example["procedure"], example
        assert bool(procedure.conflict) == example.get("conflict", False), example


@pytest.mark.parametrize("description,expected", [
    ("MRI L-SPINE W/O CONTRAST", "MRI_LSPINE_WO"),          # W/O is not W/
    ("MRI L-SPINE W/ CONTRAST", "MRI_LSPINE_W"),
    ("MRI L-SPINE W/O & W/ CONTRAST", "MRI_LSPINE_WWO"),
    ("MRA LUMBAR SPINE", "OTHER"),                          # angiography is not MRI
    ("XR L KNEE 2 VIEWS", "OTHER"),                         # L is left
    ("MRI L shoulder w/o", "OTHER"),
    ("MRI C-SPINE W/O CONTRAST", "OTHER"),
    ("CT T-SPINE W/O", "OTHER"),
    ("MRI total spine w/o contrast", "MRI_LSPINE_WO"),     # covers the lumbar spine
])
def test_orders_traps(description, expected, order_rules):
    assert normalise(description, None, order_rules).procedure == expected


def test_orders_other_always_has_a_reason(order_rules):
    for description, cpt in [("Physical therapy referral", None), ("MRI brain", None), (None, "99213"),
                             ("CT myelogram", None), ("", ""), (None, None), ("XR", None)]:
        procedure = normalise(description, cpt, order_rules)
        assert procedure.procedure == "OTHER"
        assert procedure.reason, (description, cpt)


def test_orders_conflict_names_both_readings_and_the_code_wins(order_rules):
    procedure = normalise("MRI LUMBAR SPINE WO CONTRAST", "72158", order_rules)
    assert procedure.procedure == "MRI_LSPINE_WWO"
    assert "MRI_LSPINE_WO" in procedure.conflict and "MRI_LSPINE_WWO" in procedure.conflict
    assert "CPT" in procedure.conflict


def test_orders_unstated_contrast_is_read_as_without_and_says_so(order_rules):
    procedure = normalise("MR L SPINE SCAN", None, order_rules)
    assert procedure.procedure == "MRI_LSPINE_WO"
    assert any("not stated" in note for note in procedure.notes)
    # a CPT code that states the protocol fills the gap without a conflict
    filled = normalise("MRI LUMBAR SPINE", "72158", order_rules)
    assert filled.procedure == "MRI_LSPINE_WWO" and filled.conflict is None


def test_orders_region_free_text_is_lumbar_only_when_asked(order_rules):
    assert normalise("CT myelography", None, order_rules).procedure == "OTHER"
    assert normalise("CT myelography", None, order_rules, assume_lumbar=True).procedure == "CT_MYELO_LSPINE"


def test_orders_every_lumbar_procedure_reachable_by_cpt(order_rules):
    reached = {rule["procedure"] for rule in order_rules.cpt.values()}
    assert set(LUMBAR_PROCEDURES) <= reached


@pytest.mark.parametrize("value,expected", [("STAT", "emergent"), (" stat ", "emergent"), ("Urgent", "urgent"),
                                            ("ROUTINE", "routine"), ("whenever", None), (None, None)])
def test_orders_priority(value, expected, order_rules):
    assert normalise_priority(value, order_rules) == expected
