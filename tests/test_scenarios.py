"""The recommendation function: pure, tested on hand-made summaries without spaCy."""
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.labels import LABELS
from pipeline.scenarios import UnknownEdition, build_edition, choose_edition, recommend

GUIDELINES = Path(__file__).resolve().parent.parent / "patterns" / "guidelines"


def _edition(name):
    path = GUIDELINES / f"{name}.json"
    return build_edition(json.loads(path.read_text(encoding="utf-8")), path.name), \
        json.loads(path.read_text(encoding="utf-8"))


ACR21, ACR21_DATA = _edition("acr-2021")
ACR16, ACR16_DATA = _edition("acr-2016")


def summary(**fields):
    """A per-note summary: every label empty unless given; in scope unless said otherwise."""
    row = dict.fromkeys(LABELS)
    row.update({"age": None, "bilateral_deficit": False, "progressive_deficit": False, "in_scope": True})
    row.update(fields)
    return row


def test_scenarios_module_does_not_import_spacy():
    code = "import sys, pipeline.scenarios, pipeline.orders, pipeline.audit; print('spacy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("data,edition", [(ACR21_DATA, ACR21), (ACR16_DATA, ACR16)], ids=["2021", "2016"])
def test_scenarios_rule_examples(data, edition):
    for rule in data["scenario_rules"]:
        for example in rule.get("examples", []):
            found = rule["scenario"] in recommend(summary(**example["summary"]), edition).scenario_ids
            assert found == example["matches"], (rule["id"], example)


@pytest.mark.parametrize("fields,expected,urgency", [
    ({"LOW_BACK_PAIN": "present"}, ("UNCOMPLICATED",), "none"),
    ({"LOW_BACK_PAIN": "present", "RADICULOPATHY": "present"}, ("RADICULAR",), "none"),
    ({"LOW_BACK_PAIN": "present", "FOOT_DROP": "present"}, ("NEURO",), "urgent"),
    ({"SENSORY_DEFICIT": "present", "bilateral_deficit": True}, ("NEURO",), "urgent"),
    ({"BLADDER_DYSFUNCTION": "present", "FOOT_DROP": "present"}, ("CES", "NEURO"), "emergent"),
    ({"CAUDA_EQUINA": "possible"}, ("CES",), "emergent"),
    ({"LOW_BACK_PAIN": "present", "CANCER_HISTORY": "present"}, ("CANCER_INFECTION",), "routine"),
    ({"LOW_BACK_PAIN": "present", "SPINAL_INFECTION": "possible"}, ("CANCER_INFECTION",), "urgent"),
    ({"LOW_BACK_PAIN": "present", "age": 70}, ("FRACTURE_RISK",), "routine"),
    ({"LOW_BACK_PAIN": "present", "age": 69}, ("UNCOMPLICATED",), "none"),
    ({"LOW_BACK_PAIN": "present", "PRIOR_LUMBAR_SURGERY": "present"}, ("UNCOMPLICATED",), "none"),
    ({"RADICULOPATHY": "present", "PRIOR_LUMBAR_SURGERY": "present"}, ("POST_SURGICAL",), "routine"),
    ({"LOW_BACK_PAIN": "present", "CONSERVATIVE_THERAPY_FAILED": "present", "RADICULOPATHY": "present"},
     ("FAILED_CONSERVATIVE",), "routine"),
    ({"LOW_BACK_PAIN": "present", "FOOT_DROP": "absent", "CANCER_HISTORY": "absent"}, ("UNCOMPLICATED",), "none"),
], ids=lambda v: str(v) if isinstance(v, str) else None)
def test_scenarios_from_summary(fields, expected, urgency):
    recommendation = recommend(summary(**fields), ACR21)
    assert recommendation.scenario_ids == expected
    assert recommendation.urgency == urgency


def test_scenarios_out_of_scope_gets_none():
    recommendation = recommend(summary(in_scope=False, FEVER="present"), ACR21)
    assert not recommendation.in_scope and recommendation.scenarios == ()


def test_scenarios_mri_contraindication_lets_ct_stand_in():
    plain = recommend(summary(FOOT_DROP="present"), ACR21)
    contra = recommend(summary(FOOT_DROP="present", MRI_CONTRAINDICATION="present"), ACR21)
    assert plain.rating("CT_MYELO_LSPINE")[0] == "MBA"
    assert contra.rating("CT_MYELO_LSPINE")[0] == "UA"
    assert contra.rating("CT_LSPINE_WO")[0] == "UA"
    assert "ACR21-MOD-MRI-CONTRA" in contra.rule_ids
    # no stand-in where MRI without contrast is not itself usually appropriate
    radicular = recommend(summary(RADICULOPATHY="present", MRI_CONTRAINDICATION="present"), ACR21)
    assert radicular.rating("CT_MYELO_LSPINE")[0] == "UNA"


def test_scenarios_elderly_age_is_a_parameter():
    row = summary(LOW_BACK_PAIN="present", age=66)
    assert recommend(row, ACR21).scenario_ids == ("UNCOMPLICATED",)
    assert recommend(row, ACR21, {"elderly_age": 65}).scenario_ids == ("FRACTURE_RISK",)


@pytest.mark.parametrize("procedure,r2021,r2016", [
    ("MRI_LSPINE_WO", "UA", "MBA"),
    ("MRI_LSPINE_WWO", "UA", "UA"),
    ("XR_LSPINE", "UA", "MBA"),
    ("CT_LSPINE_WWO", "UNA", "UNA"),
])
def test_scenarios_post_surgical_differs_by_edition(procedure, r2021, r2016):
    row = summary(RADICULOPATHY="present", PRIOR_LUMBAR_SURGERY="present")
    assert recommend(row, ACR21).rating(procedure)[0] == r2021
    assert recommend(row, ACR16).rating(procedure)[0] == r2016


def test_scenarios_edition_cut_over_is_rule_data():
    editions = [ACR16, ACR21]
    assert ACR21.effective_from == dt.date(2021, 11, 1)
    assert choose_edition(editions, dt.date(2021, 10, 31)).id == "ACR-2016"
    assert choose_edition(editions, dt.date(2021, 11, 1)).id == "ACR-2021"
    assert choose_edition(editions, dt.date(2009, 1, 1)).id == "ACR-2016"
    assert choose_edition(editions, None).id == "ACR-2021"
    assert choose_edition(editions, dt.date(2024, 1, 1), forced="ACR-2016").id == "ACR-2016"
    with pytest.raises(UnknownEdition):
        choose_edition(editions, None, forced="ACR-1999")


def test_scenarios_every_rule_names_its_source():
    for data in (ACR21_DATA, ACR16_DATA):
        for rule in data["scenario_rules"] + data["modifier_rules"]:
            assert rule["source"].strip(), rule["id"]
        assert {r["scenario"] for r in data["scenario_rules"]} == {
            "CES", "NEURO", "CANCER_INFECTION", "POST_SURGICAL", "FRACTURE_RISK", "FAILED_CONSERVATIVE",
            "RADICULAR", "UNCOMPLICATED"}
