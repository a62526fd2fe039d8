"""The auditor: matching, verdicts, advisories, rationales, and the acceptance cases end to end."""
import datetime as dt

import pandas as pd
import pytest

from pipeline.audit import AUDIT_FIELDS, NoteRef, Order, audit, judge, match_orders
from pipeline.cli import main
from pipeline.explain import assess
from pipeline.orders import normalise
from pipeline.scenarios import choose_edition, recommend

CHRONIC_FOOT_DROP = ("58M with chronic low back pain and sciatica for 2 years. Now a right foot drop, "
                     "and numbness and tingling in both legs.")
PACEMAKER = CHRONIC_FOOT_DROP + " Has a pacemaker, MRI contraindicated."
LEG_WEAKNESS = "45F with low back pain and weakness of the lower legs for 1 week."
POST_OP_FOOT_DROP = "Low back pain and new L foot drop 3 months after L4-5 laminectomy."
POST_OP_RADICULAR = ("Recurrent radiating pain down the L leg after L5-S1 discectomy last year. "
                     "Strength 5/5 throughout. Sensation intact.")
NUMB_LEG = "Acute severe low back pain since yesterday with numbness of the right leg. No other complaints."
RETENTION = NUMB_LEG + " New urinary retention today."
MILD = "Mild low back pain for 3 days, improving. No leg pain, no weakness, no numbness. Neuro exam normal."


def verdict(extractor, text, order, date=None, priority=None, edition=None):
    result = extractor.extract(text)
    assessment = assess(result, extractor.rules, [order], date=date, edition=edition, priority=priority)
    return assessment.verdicts[0][2]


def test_audit_acceptance_foot_drop_with_bilateral_numbness(extractor):
    result = extractor.extract(CHRONIC_FOOT_DROP)
    assessment = assess(result, extractor.rules)
    assert assessment.recommendation.urgency == "urgent"
    assert assessment.recommendation.usually_appropriate == ("MRI_LSPINE_WO",)
    assert verdict(extractor, CHRONIC_FOOT_DROP, "XR lumbar spine 2-3 views")["verdict"] == "wrong_modality"
    assert verdict(extractor, CHRONIC_FOOT_DROP, "MRI L-spine w/o")["verdict"] == "appropriate"
    assert verdict(extractor, PACEMAKER, "CT myelogram L-spine")["verdict"] == "appropriate"
    assert verdict(extractor, PACEMAKER, "CT myelography")["verdict"] == "appropriate"


def test_audit_acceptance_no_order_is_missed_imaging(extractor, tmp_path):
    notes = pd.DataFrame([{"note_id": "a", "patient_id": "P1", "note_date": "2024-01-02", "text": CHRONIC_FOOT_DROP},
                          {"note_id": "b", "patient_id": "P2", "note_date": "2024-01-02", "text": NUMB_LEG},
                          {"note_id": "c", "patient_id": "P3", "note_date": "2024-01-02", "text": RETENTION}])
    orders = pd.DataFrame([{"order_id": "o1", "patient_id": "P9", "order_date": "2024-01-03",
                            "description": "MRI L-spine w/o"}])
    notes.to_csv(tmp_path / "notes.csv", index=False)
    orders.to_csv(tmp_path / "orders.csv", index=False)
    assert main(["run", str(tmp_path / "notes.csv"), "--orders", str(tmp_path / "orders.csv"),
                 "--out", str(tmp_path / "out")]) == 0
    table = pd.read_parquet(tmp_path / "out" / "audit.parquet")
    missed = table[table.verdict == "missed_imaging"]
    assert sorted(missed.note_id) == ["a", "c"]
    assert missed.set_index("note_id").loc["c", "urgency"] == "emergent"
    assert (missed.order_id == "").all()


def test_audit_acceptance_leg_weakness_contrast_not_needed(extractor):
    result = extractor.extract(LEG_WEAKNESS)
    assessment = assess(result, extractor.rules)
    assert assessment.recommendation.urgency == "urgent"
    assert assessment.recommendation.usually_appropriate == ("MRI_LSPINE_WO",)
    judged = verdict(extractor, LEG_WEAKNESS, "MRI lumbar spine with and without contrast")
    assert judged["verdict"] == "may_be_appropriate"
    assert "contrast not needed" in judged["advisory"]


def test_audit_acceptance_foot_drop_after_surgery(extractor):
    wwo = verdict(extractor, POST_OP_FOOT_DROP, "MRI L-spine w/wo contrast")
    wo = verdict(extractor, POST_OP_FOOT_DROP, "MRI L-spine w/o contrast")
    assert wwo["verdict"] == "appropriate" and "contrast-enhanced" not in wwo["advisory"]
    assert wo["verdict"] == "appropriate" and "contrast-enhanced protocol preferred" in wo["advisory"]
    old = verdict(extractor, POST_OP_RADICULAR, "MRI L-spine w/o contrast", date="2019-05-01")
    assert old["verdict"] == "may_be_appropriate"
    assert "ACR16-E-POSTOP" in old["rule_ids"] and "2016" in old["rationale"]
    new = verdict(extractor, POST_OP_RADICULAR, "MRI L-spine w/o contrast", date="2023-05-01")
    assert new["verdict"] == "appropriate"


def test_audit_acceptance_numb_leg_then_retention(extractor):
    result = extractor.extract(NUMB_LEG)
    assert assess(result, extractor.rules).recommendation.urgency == "none"
    assert verdict(extractor, NUMB_LEG, "MRI L-spine w/o")["verdict"] == "may_be_appropriate"
    emergent = assess(extractor.extract(RETENTION), extractor.rules).recommendation
    assert emergent.urgency == "emergent" and "CES" in emergent.scenario_ids


@pytest.mark.parametrize("order", ["XR lumbar spine 2 views", "MRI L-spine w/o", "CT L-spine w/o",
                                   "MRI lumbar w/wo", "72148"])
def test_audit_acceptance_mild_back_pain_any_imaging_not_indicated(extractor, order):
    assert verdict(extractor, MILD, order)["verdict"] == "not_indicated"


def test_audit_routine_order_for_urgent_need_gets_priority_advisory(extractor):
    judged = verdict(extractor, CHRONIC_FOOT_DROP, "MRI L-spine w/o", priority="Routine")
    assert "ordered as routine; guideline urgency is urgent" in judged["advisory"]
    assert "ordered as" not in verdict(extractor, CHRONIC_FOOT_DROP, "MRI L-spine w/o", priority="STAT")["advisory"]
    assert "ordered as" not in verdict(extractor, MILD, "MRI L-spine w/o", priority="routine")["advisory"]


def test_audit_rationale_quotes_evidence_and_names_source(extractor):
    judged = verdict(extractor, CHRONIC_FOOT_DROP, "XR lumbar spine")
    assert '"foot drop"' in judged["rationale"]
    assert "NEURO" in judged["rationale"] and "ACR" in judged["rationale"]
    assert "ACR21-NEURO" in judged["rule_ids"] and "ORD-MOD-XR" in judged["rule_ids"]


def test_audit_wrong_protocol_and_other_verdicts(extractor):
    assert verdict(extractor, CHRONIC_FOOT_DROP, "MRI L-spine with contrast")["verdict"] == "wrong_protocol"
    assert verdict(extractor, CHRONIC_FOOT_DROP, "MRI C-spine w/o")["verdict"] == "not_lumbar_imaging"
    kidney = "29F with R flank pain radiating to the groin and chills. Hematuria. Likely kidney stone."
    assert verdict(extractor, kidney, "XR L-spine 2 views")["verdict"] == "out_of_scope"


# ---------------------------------------------------------------- matching (pure)

def _ref(note_id, patient=None, date=None, encounter=None, seq=0):
    return NoteRef(note_id, {"in_scope": False}, patient, encounter, dt.date.fromisoformat(date) if date else None,
                   None, seq)


def test_audit_matching_rules():
    notes = [_ref("n1", "P1", "2024-01-01", "E1", 0), _ref("n2", "P1", "2024-01-20", "E2", 1),
             _ref("n3", "P1", "2024-01-20", "E2", 2), _ref("n4", "P2", "2023-01-01", None, 3)]
    orders = [Order("by-id", note_id="n1", patient_id="P1", order_date=dt.date(2024, 3, 1)),
              Order("by-encounter", encounter_id="E2"),
              Order("by-window", patient_id="P1", order_date=dt.date(2024, 2, 10)),
              Order("too-late", patient_id="P1", order_date=dt.date(2024, 2, 18)),
              Order("before-note", patient_id="P2", order_date=dt.date(2022, 12, 31)),
              Order("no-date", patient_id="P2"),
              Order("unknown-note", note_id="n9"),
              Order("no-link")]
    matched, unmatched = match_orders(notes, orders, window_days=28)
    got = {order.order_id: (note.note_id, how) for order, note, how in matched}
    assert got == {"by-id": ("n1", "note_id"), "by-encounter": ("n3", "encounter_id"),
                   "by-window": ("n3", "patient_window")}
    reasons = dict((order.order_id, reason) for order, reason in unmatched)
    assert set(reasons) == {"too-late", "before-note", "no-date", "unknown-note", "no-link"}
    assert "28 days" in reasons["too-late"] and "n9" in reasons["unknown-note"]
    wider, _ = match_orders(notes, orders, window_days=30)
    assert "too-late" in {order.order_id for order, _, _ in wider}


def test_audit_table_rows_and_edition_by_order_date(extractor):
    result = extractor.extract(POST_OP_RADICULAR)
    note = NoteRef("n1", result.summary, "P1", None, dt.date(2021, 10, 20), None, 0)
    orders = [Order("old", "MRI L-spine w/o", patient_id="P1", order_date=dt.date(2021, 10, 25)),
              Order("new", "MRI L-spine w/o", patient_id="P1", order_date=dt.date(2021, 11, 2))]
    rows, unmatched = audit([note], orders, extractor.rules.editions, extractor.rules.orders)
    assert not unmatched
    by_id = {row["order_id"]: row for row in rows}
    assert list(rows[0]) == list(AUDIT_FIELDS)
    assert (by_id["old"]["edition"], by_id["old"]["verdict"]) == ("ACR-2016", "may_be_appropriate")
    assert (by_id["new"]["edition"], by_id["new"]["verdict"]) == ("ACR-2021", "appropriate")
    forced, _ = audit([note], orders, extractor.rules.editions, extractor.rules.orders, forced_edition="ACR-2021")
    assert {row["verdict"] for row in forced} == {"appropriate"}


def test_audit_judge_is_pure_over_summary(extractor):
    edition = choose_edition(extractor.rules.editions, None)
    summary = {**dict.fromkeys(extractor.extract("x").summary), "in_scope": True, "LOW_BACK_PAIN": "present",
               "FOOT_DROP": "present", "bilateral_deficit": False, "progressive_deficit": False}
    recommendation = recommend(summary, edition)
    judged = judge(normalise("XR L-spine"), recommendation, edition)
    assert judged["verdict"] == "wrong_modality"
    assert "foot drop" in judged["rationale"]  # without evidence texts it names the label


def test_audit_rationale_says_when_ct_stands_in_for_mri_and_where_a_rating_comes_from(extractor):
    ces = "Back pain with saddle numbness and urinary retention. Pacemaker, MRI contraindicated."
    judged = verdict(extractor, ces, "CT myelogram lumbar")
    assert judged["verdict"] == "appropriate"
    assert "MRI contraindicated" in judged["advisory"] and "ACR21-MOD-MRI-CONTRA" in judged["rule_ids"]
    neuro = verdict(extractor, LEG_WEAKNESS, "MRI lumbar w/wo")
    assert "may be appropriate for NEURO" in neuro["rationale"]
    assert "ACR 2016 variant F" in neuro["rationale"]  # NEURO is not a 2021 variant
    elderly = verdict(extractor, "81 yo F with LBP x 5 days.", "XR L-spine")
    assert "age 81" in elderly["rationale"]
