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
