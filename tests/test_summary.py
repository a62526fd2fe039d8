import pytest

from pipeline.sections import find_sections
from pipeline.sentences import sentence_starts
from pipeline.summary import age_from_text


@pytest.mark.parametrize("text,age", [
    ("62F c/o LBP", 62), ("72 yo M with", 72), ("a 45-year-old man", 45), ("Pt is 80 y/o", 80),
    ("Temp 101 F, HR 90", None), ("EHL 4/5", None),
], ids=lambda v: str(v))
def test_summary_age(text, age):
    assert age_from_text(text) == age


@pytest.mark.parametrize("text,days,klass", [
    ("LBP x 3 wks", 21, "acute"),
    ("Low back pain for 2 months.", 60, "subacute"),
    ("62F c/o LBP x2wks.", 14, "acute"),
    ("Chronic LBP with flare x 1 wk.", 7, "chronic"),
    ("Back pain for 6 months.", 180, "chronic"),
    ("Back pain.", None, "unknown"),
    ("Acute low back pain since yesterday.", 1, "acute"),
    # a duration copied forward from an earlier visit was that visit's
    ("HPI (copied from 11/27 visit):\nLBP x 2 days after moving a couch.\n\nInterval history: LBP now x 3 wks.", 21, "acute"),
    ("--- copied from visit 1/2/2024 ---\nLBP x 2 days.\n--- end copied text ---", 2, "acute"),
], ids=lambda v: str(v))
def test_summary_duration(extractor, text, days, klass):
    summary = extractor.extract(text).summary
    assert (summary["duration_days"], summary["duration_class"]) == (days, klass)


@pytest.mark.parametrize("text,bilateral", [
    ("LBP with bilat leg numbness.", True),
    ("LBP. BLE weakness.", True),
    ("LBP. L foot drop. R leg numbness.", True),
    ("LBP. R foot drop.", False),
    ("LBP. Numbness R foot. Strength 5/5 throughout.", False),
    # "LT" for light touch is not a side (sample archive: 22 false bilateral deficits)
    ("Sciatica. Tingling in the right foot. Sensation decreased to LT right lateral calf.", False),
    ("R sciatica, numb R foot. Sensation: decreased LT R lateral calf.", False),
    ("Numbness R shin. Diminished LT and PP over the R dorsal foot.", False),
    # ... while "LT" for left still is
    ("LBP. R foot numbness. LT leg weakness.", True),
    ("LBP. Numbness R foot, LT foot drop.", True),
    ("LBP. Leg weakness LT > RT.", True),
], ids=lambda v: str(v))
def test_summary_bilateral_deficit(extractor, text, bilateral):
    assert extractor.extract(text).summary["bilateral_deficit"] is bilateral


@pytest.mark.parametrize("text,progressive", [
    ("LBP with progressive L leg weakness over 3 days.", True),
    ("Numbness now up to the knee, worsening since Monday.", True),
    ("New R foot drop since this morning.", False),
    ("LBP, worse with sitting. Mild R leg numbness.", False),
], ids=lambda v: str(v))
def test_summary_progressive_deficit(extractor, text, progressive):
    assert extractor.extract(text).summary["progressive_deficit"] is progressive


def test_summary_laterality_of_findings(extractor):
    findings = {f.text: f.laterality for f in extractor.extract("R foot drop. EHL 3/5 on L. Bilat leg numbness.").findings}
    assert findings["foot drop"] == "right"
    assert findings["EHL 3/5"] == "left"
    assert findings["numbness"] == "bilateral"


LATERALITY = [
    # "LT" in a sensory-modality position is light touch
    ("Sensation decreased to LT right lateral calf.", "SENSORY_DEFICIT", "right"),
    ("Sensation: decreased LT R lateral calf.", "SENSORY_DEFICIT", "right"),
    ("Diminished LT over the dorsum of the R foot.", "SENSORY_DEFICIT", "right"),
    ("Decreased LT and PP R L5 dermatome.", "SENSORY_DEFICIT", "right"),
    ("Decreased LT/PP in the right great toe.", "SENSORY_DEFICIT", "right"),
    ("Reduced sensation to LT over the R lateral foot.", "SENSORY_DEFICIT", "right"),
    ("Impaired LT sensation L medial shin.", "SENSORY_DEFICIT", "left"),
    ("Decreased to LT and PP over the R calf.", "SENSORY_DEFICIT", "right"),
    ("Diminished to LT and PP over LT dorsal foot.", "SENSORY_DEFICIT", "left"),
    # "LT" for left
    ("LT leg weakness.", "MOTOR_WEAKNESS", "left"),
    ("LT foot drop.", "FOOT_DROP", "left"),
    ("Numbness LT foot.", "SENSORY_DEFICIT", "left"),
    ("Decreased sensation LT foot.", "SENSORY_DEFICIT", "left"),
    ("Tingling LT lateral calf.", "SENSORY_DEFICIT", "left"),
    ("EHL 4/5 LT.", "FOOT_DROP", "left"),
    ("Weakness LT > RT.", "MOTOR_WEAKNESS", "bilateral"),
    ("Weakness L > R.", "MOTOR_WEAKNESS", "bilateral"),
]


@pytest.mark.parametrize("text,label,side", LATERALITY, ids=[t for t, _, _ in LATERALITY])
def test_summary_laterality_lt_light_touch_or_left(extractor, text, label, side):
    sides = {f.laterality for f in extractor.extract(text).findings if f.label == label}
    assert sides == {side}


def test_summary_scope(extractor):
    assert extractor.extract("LBP x 3 days, no red flags.").summary["in_scope"] is True
    assert extractor.extract("R flank pain radiating to groin, chills. Kidney stone on CT.").summary["in_scope"] is False
    assert extractor.extract("Concern for cauda equina.").summary["in_scope"] is True


def test_summary_history_policy(extractor):
    summary = extractor.extract("PMH: breast CA, urinary retention after TURP.\nHPI: LBP x 3 days.").summary
    assert summary["CANCER_HISTORY"] == "present"
    assert summary["BLADDER_DYSFUNCTION"] is None


def test_sections_and_sentences_on_a_templated_note(rules):
    text = ("HPI: 55M with LBP\nROS: neg for fever\nfoot drop - yes\n"
            "PMH: HTN\nFAMILY HISTORY\nmother breast CA\nA/P: sciatica")
    categories = [s.category for s in find_sections(text, rules.section_rules)]
    assert categories == ["hpi", "ros", "pmh", "fhx", "assessment"]
    starts = sentence_starts(text, [])
    lines = [text.index(line) for line in ("ROS:", "foot drop", "PMH:", "mother")]
    assert set(lines) <= set(starts)


def test_sentences_wrapped_prose_stays_one_sentence():
    text = "Patient denies any saddle numbness or tingling in the groin, saddle\nanesthesia and bowel incontinence. New line here."
    assert sentence_starts(text) == [0, text.index("New")]


COPIED_BLOCKS = [
    # a delimited block is copied over the headers inside it; the interrupted section goes on after it
    ("Exam: SLR + R.\n--- Interval history copied from visit of 3/2/2024 ---\nHPI: R leg weakness.\n"
     "PMH: HTN.\n--- end of copied text ---\nReflexes 2+.\nA/P: sciatica",
     ["exam", "copied", "copied", "copied", "exam", "assessment"]),
    ("PMH: HTN\n*** copied text ***\nfever\n*** end copied text ***\nDM2", ["pmh", "copied", "pmh"]),
    ("[Copied from 3/15/2016 note]\nS: numb R toe.\n[End copied text]\nToday: better.", ["copied", "copied"]),
    ("** Copied from 06/03/2021 telephone note **\nLBP.\n** End copied text **\nHPI: worse.", ["copied", "hpi"]),
    ("*** Initial evaluation 03/09/2015 (carried forward) ***\nLBP.\n*** End carried-forward text ***\n"
     "INTERVAL UPDATE 05/11/2015:\nPT done.", ["copied", "hpi"]),
    # without an end marker: up to the next header or blank line
    ("HPI (copied from clinic note 11/27/2017, Dr. Lee):\n\"LBP, leg heaviness.\"\n\nInterval history 12/11/2017:\nworse.",
     ["copied", "hpi"]),
    ("Exam: normal gait.\nFrom prior note:\nBLE weakness.\n\nStrength 5/5 today.", ["exam", "copied", "exam"]),
    ("HPI: LBP.\nCarried forward from 01/05/2024 visit:\nL foot drop.\nExam today:\nEHL 5/5.", ["hpi", "copied", "exam"]),
    # a copied note with its own headers: to the first blank line, or to a header of a kind it already had
    ("(Prior note 2/27/24, copied:)\nHPI: LBP.\nExam: SLR +.\nPlan: PT.\n\nExam today: R EHL 3/5.",
     ["copied", "copied", "copied", "copied", "exam"]),
    ("Copied from 2/27 note:\nHPI: LBP.\nExam: SLR +.\nExam today: R EHL 3/5.\nPlan: MRI.",
     ["copied", "copied", "copied", "exam", "plan"]),
    # an end marker without its block, and "copied" inside a sentence, are not headers
    ("HPI: LBP.\n--- end of copied text ---\nR foot drop.", ["hpi"]),
    ("HPI: MRI report copied from the outside hospital.\nR foot drop.", ["hpi"]),
]


@pytest.mark.parametrize("text,categories", COPIED_BLOCKS, ids=[t.split("\n")[0] for t, _ in COPIED_BLOCKS])
def test_sections_copied_forward_blocks(rules, text, categories):
    assert [s.category for s in find_sections(text, rules.section_rules)] == categories


def test_sections_copied_block_makes_findings_historical_until_its_end(extractor):
    text = ("HPI: LBP x 2 wks.\n--- copied from visit 02/01/2024 ---\nR foot drop. Concern for epidural abscess.\n"
            "No saddle anesthesia.\n--- end copied text ---\nNew L foot drop today.\nPMH: h/o breast CA.")
    findings = extractor.extract(text).findings
    copied = [f for f in findings if f.section == "copied"]
    assert {f.label for f in copied} >= {"FOOT_DROP", "SPINAL_INFECTION", "SADDLE_ANESTHESIA"}
    by_label = {f.label: f for f in copied}
    assert by_label["FOOT_DROP"].assertion == "historical" and by_label["FOOT_DROP"].cue_rule_id == "SEC-COPY-001"
    assert by_label["SPINAL_INFECTION"].assertion == "historical"
    assert by_label["SADDLE_ANESTHESIA"].assertion == "negated"  # a documented absence stays one
    after = [f for f in findings if f.start > text.index("end copied")]
    assert [(f.label, f.assertion, f.section) for f in after if f.label == "FOOT_DROP"] == [("FOOT_DROP", "present", "hpi")]
