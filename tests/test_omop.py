import datetime as dt
import json
import shutil

import pandas as pd
import pytest

from pipeline.findings import FINDING_FIELDS
from pipeline.omop import NOTE_NLP_COLUMNS, MappingError, load_mapping, note_nlp_frame
from pipeline.rules import RuleError, default_rules_dir, load_rules

SYSTEM = "lbp-audit 0.1.0 rules 0123456789abcdef"
DAY = dt.date(2024, 6, 1)
# SNOMED CT codes marked verified in the project's terminology reference (guidelines §5); no others may be shipped.
VERIFIED_SNOMED = {"279039007", "161891005", "23056005", "192970008", "267064002", "236648008", "165232002",
                   "72042002", "40492006", "44077006", "91019004", "62507009", "26544005", "386661006",
                   "363346000", "228388006", "64859006"}


def finding(**fields) -> dict:
    row = {"note_id": "17", "label": "FOOT_DROP", "assertion": "present", "laterality": "left", "progressive": False,
           "section": None, "start": 30, "end": 39, "text": "foot drop", "rule_id": "RF-FOOTDROP-001",
           "cue": None, "cue_rule_id": None}
    row.update(fields)
    return row


def frame_of(*rows, **kwargs) -> pd.DataFrame:
    return note_nlp_frame(pd.DataFrame(list(rows), columns=list(FINDING_FIELDS)), nlp_system=SYSTEM, nlp_date=DAY,
                          **kwargs)


def modifiers(row) -> dict:
    return dict(pair.split("=", 1) for pair in row["term_modifiers"].split(","))


@pytest.mark.parametrize("assertion, fields, exists, temporal, expected_modifiers", [
    ("present", {}, "Y", "present", {"negated": "false", "subject": "patient", "certainty": "high"}),
    ("negated", {"cue": "denies", "cue_rule_id": "CTX-NEG-001"}, "N", "present",
     {"negated": "true", "subject": "patient", "cue_rule": "CTX-NEG-001"}),
    ("family", {"section": "fhx", "cue": "fhx", "cue_rule_id": "SEC-FHX-001"}, "N", "present",
     {"negated": "false", "subject": "family", "section": "fhx"}),
    ("hypothetical", {"section": "instructions"}, "N", "present", {"conditional": "true", "negated": "false"}),
    ("historical", {"section": "pmh"}, "Y", "past", {"negated": "false", "subject": "patient", "section": "pmh"}),
    ("possible", {}, "N", "present", {"certainty": "low", "negated": "false"}),
], ids=["present", "negated", "family", "hypothetical", "historical", "possible"])
def test_omop_assertion_sets_term_exists_temporal_and_modifiers(assertion, fields, exists, temporal,
                                                                expected_modifiers):
    row = frame_of(finding(assertion=assertion, **fields)).iloc[0]
    assert (row["term_exists"], row["term_temporal"]) == (exists, temporal)
    found = modifiers(row)
    assert found["assertion"] == assertion and found["label"] == "FOOT_DROP"
    assert {k: found.get(k) for k in expected_modifiers} == expected_modifiers


def test_omop_frame_has_the_v54_columns_in_order_and_one_row_per_mention():
    frame = frame_of(finding(), finding(label="LOW_BACK_PAIN", start=0, end=3, text="LBP"), first_id=41)
    assert list(frame.columns) == list(NOTE_NLP_COLUMNS) == [
        "note_nlp_id", "note_id", "section_concept_id", "snippet", "offset", "lexical_variant",
        "note_nlp_concept_id", "note_nlp_source_concept_id", "nlp_system", "nlp_date", "nlp_datetime",
        "term_exists", "term_temporal", "term_modifiers"]
    assert frame["note_nlp_id"].tolist() == [41, 42]
    assert frame["note_id"].tolist() == [17, 17]  # an integer, as the CDM column is
    assert frame["offset"].tolist() == ["30", "0"]  # the start offset; the end is in the modifiers
    assert modifiers(frame.iloc[0])["end"] == "39"
    assert frame["lexical_variant"].tolist() == ["foot drop", "LBP"]
    assert frame["snippet"].tolist() == ["foot drop", "LBP"]
    assert set(frame["nlp_system"]) == {SYSTEM} and set(frame["nlp_date"]) == {DAY}
    assert modifiers(frame.iloc[0])["laterality"] == "left" and modifiers(frame.iloc[0])["rule"] == "RF-FOOTDROP-001"


def test_omop_concept_ids_only_from_a_concept_lookup_never_the_snomed_code():
    rows = [finding(label="LOW_BACK_PAIN"), finding(label="FOOT_DROP")]
    unmapped = frame_of(*rows)
    assert unmapped["note_nlp_concept_id"].tolist() == [0, 0]
    assert unmapped["note_nlp_source_concept_id"].tolist() == [0, 0]
    assert modifiers(unmapped.iloc[0])["snomed"] == "279039007"
    assert "snomed" not in modifiers(unmapped.iloc[1])  # no verified code for foot drop
    looked_up = frame_of(*rows, concepts={"279039007": 194133})
    assert looked_up["note_nlp_concept_id"].tolist() == [194133, 0]


def test_omop_sections_map_to_section_concepts_when_given():
    frame = frame_of(finding(section="pmh"), finding(section="hpi"), sections={"pmh": 1234})
    assert frame["section_concept_id"].tolist() == [1234, 0]


def test_omop_no_snippet_mode_writes_no_note_text(extractor):
    text = "62F c/o LBP x2wks, R foot drop, EHL 3/5, denies saddle anesthesia. FHx: mother breast CA."
    findings = pd.DataFrame([f.as_row() for f in extractor.extract(text, note_id="5").findings])
    frame = note_nlp_frame(findings.drop(columns=["text", "cue"]), nlp_system=SYSTEM, nlp_date=DAY)
    assert len(frame) == len(findings) > 3
    assert frame["lexical_variant"].tolist() == findings["label"].tolist()
    assert frame["snippet"].isna().all()
    written = " ".join(str(v) for v in frame.to_numpy().ravel())
    cues = findings.loc[findings["cue"] != findings["section"], "cue"].dropna()  # a section cue is its name
    mentions = {m for m in set(findings["text"]) | set(cues) if m != m.upper()}  # "LBP" is also in a rule id
    assert {"foot drop", "saddle anesthesia", "denies"} <= mentions
    for mention in mentions:
        assert mention not in written


def test_omop_long_values_are_cut_to_the_column_sizes():
    row = frame_of(finding(text="x" * 400, rule_id="RF-" + "A" * 2100)).iloc[0]
    assert len(row["lexical_variant"]) == 250 and len(row["snippet"]) == 250
    assert len(row["term_modifiers"]) == 2000


def test_omop_non_integer_note_ids_are_kept_as_given():
    frame = frame_of(finding(note_id="s-001"), finding(note_id="0042"))
    assert frame["note_id"].tolist() == ["s-001", 42]


def test_omop_shipped_mapping_uses_only_verified_snomed_codes():
    mapping = load_mapping()
    assert set(mapping.snomed.values()) <= VERIFIED_SNOMED
    assert mapping.snomed["CAUDA_EQUINA"] == "192970008"
    for unknown in ("FOOT_DROP", "SADDLE_ANESTHESIA", "RADICULOPATHY", "BOWEL_DYSFUNCTION"):
        assert unknown not in mapping.snomed


def test_omop_mapping_problems_are_reported_at_load(tmp_path):
    shutil.copytree(default_rules_dir(), tmp_path / "patterns")
    path = tmp_path / "patterns" / "omop.json"
    data = json.loads(path.read_text())
    data["omop_mapping"]["snomed"]["NOT_A_LABEL"] = {"code": "123456"}
    data["omop_mapping"]["snomed"]["FEVER"] = {"code": "fever"}
    data["omop_mapping"]["assertions"]["negated"]["term_exists"] = "no"
    del data["omop_mapping"]["assertions"]["family"]
    path.write_text(json.dumps(data))
    with pytest.raises(RuleError) as err:
        load_rules(tmp_path / "patterns")
    text = "\n".join(err.value.problems)
    for expected in ("NOT_A_LABEL: not a canonical label", "'fever' is not a SNOMED CT identifier",
                     "negated.term_exists", "no entry for 'family'"):
        assert expected in text
    with pytest.raises(MappingError):
        load_mapping(tmp_path / "patterns")
