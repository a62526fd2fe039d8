"""The notebook API (`pipeline.auditor`): the rows `lbp-audit run` writes, from texts, records, DataFrames,
files and Spark DataFrames; one note shown with its findings, ConText cues and sections."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.auditor import Auditor, NoteView, Tables
from pipeline.cli import main
from pipeline.corpus import load_corpus
from pipeline.scenarios import UnknownEdition
from pipeline.tables import InputError

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("findings", "notes", "errors", "audit", "unmatched_orders")
MARKER = "ZZSECRETMARKER"
NOTE = "62F c/o LBP x2wks, R foot drop, EHL 3/5, denies saddle anesthesia. FHx: mother breast CA."


@pytest.fixture(scope="module")
def auditor(rules):
    return Auditor()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The sample notes, records a run turns into errors (no id, repeated id, empty text) and the corpus's
    audit notes with their orders, as CSV files."""
    folder = tmp_path_factory.mktemp("inputs")
    sample = pd.read_csv(ROOT / "samples" / "notes.csv", dtype=str, keep_default_na=False)
    cases = load_corpus(ROOT / "corpora" / "lbp" / "audit_cases.jsonl")
    corpus = pd.DataFrame([{"note_id": n.note_id, "patient_id": n.patient_id, "note_date": n.note_date,
                            "encounter_id": "", "text": n.text} for n in cases])
    broken = pd.DataFrame([{"note_id": "", "text": f"{MARKER} no id"}, {"note_id": "s-001", "text": f"{MARKER} again"},
                           {"note_id": "empty-1", "text": "  "}])
    notes = pd.concat([sample.iloc[:4], broken, corpus, sample.iloc[4:]]).fillna("")
    orders = pd.concat([pd.read_csv(ROOT / "samples" / "orders.csv", dtype=str, keep_default_na=False),
                        pd.DataFrame([{"order_id": o["order_id"], "patient_id": n.patient_id,
                                       "order_date": o.get("order_date"), "description": o.get("description"),
                                       "cpt": o.get("cpt"), "priority": o.get("priority")}
                                      for n in cases for o in n.orders])]).fillna("")
    notes.to_csv(folder / "notes.csv", index=False)
    orders.to_csv(folder / "orders.csv", index=False)
    return folder / "notes.csv", folder / "orders.csv"


@pytest.fixture(scope="module")
def written(inputs, tmp_path_factory):
    """The tables a real `lbp-audit run` writes for the inputs (small chunks: several of them)."""
    out = tmp_path_factory.mktemp("run")
    notes, orders = inputs
    assert main(["run", str(notes), "--orders", str(orders), "--out", str(out), "--jobs", "1",
                 "--chunk-size", "7", "--no-progress"]) == 0
    return {name: pd.read_parquet(out / f"{name}.parquet") for name in TABLES}


def _as_read(path: Path, how: str):
    if how == "path":
        return path
    if how == "pandas-defaults":  # what a notebook user types: numbers and NaN where the CSV allows them
        return pd.read_csv(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False).to_dict(orient="records")


@pytest.mark.parametrize("how", ["path", "pandas-defaults", "records"])
def test_auditor_run_gives_the_rows_of_lbp_audit_run(auditor, inputs, written, how):
    tables = auditor.run(_as_read(inputs[0], how), orders=_as_read(inputs[1], how))
    expected = dict(written)
    if how == "pandas-defaults":  # pandas reads an empty field as NaN, a missing value (as a Parquet null is)
        passthrough = ("patient_id", "note_date", "encounter_id")
        expected["notes"] = written["notes"].replace({column: {"": None} for column in passthrough})
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(tables, name), expected[name], obj=name)
    assert len(tables.errors) == 3 and len(tables.audit) > 30
    assert not tables.errors["reason"].str.contains(MARKER).any()


def test_auditor_run_summary_counts_the_tables(auditor, inputs, written):
    text = repr(auditor.run(inputs[0], orders=inputs[1]))
    verdicts = written["audit"]["verdict"].value_counts()
    assert text.splitlines()[0] == (f"Tables: {len(written['notes'])} notes, {len(written['errors'])} errors, "
                                    f"{len(written['findings'])} findings")
    assert f"{len(written['unmatched_orders'])} unmatched" in text
    assert f"{verdicts.iloc[0]} {verdicts.index[0]}" in text


def test_auditor_run_numbers_texts_and_reports_bad_ones(auditor):
    tables = auditor.run(["LBP x 3 wks, BLE weakness, no saddle anesthesia", "", None, 42])
    assert tables.notes["note_id"].tolist() == ["n1"]
    assert tables.notes.loc[0, "MOTOR_WEAKNESS"] == "present"
    assert tables.notes.loc[0, "SADDLE_ANESTHESIA"] == "absent"
    assert tables.errors.values.tolist() == [["n2", "empty text"], ["n3", "missing text"],
                                             ["n4", "text is not a string (int)"]]
    assert tables.audit is None and tables.unmatched_orders is None


@pytest.mark.parametrize("notes, ids", [
    ("LBP x 2 days", ["n1"]),
    ({"a": "LBP x 2 days", "b": "fever, LBP"}, ["a", "b"]),
    (pd.DataFrame({"text": ["LBP x 2 days", "fever, LBP"]}), ["n1", "n2"]),
    (pd.DataFrame({"id": [7, 8], "body": ["LBP x 2 days", "fever, LBP"]}), ["7", "8"]),
], ids=["one-text", "dict", "dataframe-without-ids", "mapped-columns"])
def test_auditor_run_takes_the_forms_a_notebook_has(auditor, notes, ids):
    tables = auditor.run(notes, columns={"note_id": "id", "text": "body"} if "body" in getattr(notes, "columns", [])
                         else None)
    assert tables.notes["note_id"].tolist() == ids
    assert (tables.notes["LOW_BACK_PAIN"] == "present").all()


def test_auditor_run_without_a_text_column_says_how_to_map_it(auditor):
    with pytest.raises(InputError, match=r"columns=\{'text'"):
        auditor.run(pd.DataFrame({"note_id": ["a"], "body": ["LBP"]}))


def test_auditor_run_with_no_orders_reports_missed_imaging(auditor):
    notes = {"ces": "LBP with new urinary retention and saddle anesthesia", "mech": "LBP x 3 days after lifting"}
    tables = auditor.run(notes, orders=[])
    assert tables.audit[["note_id", "verdict", "urgency"]].values.tolist() == [["ces", "missed_imaging", "emergent"]]
    assert tables.unmatched_orders.empty


def test_auditor_run_orders_from_records_with_mapped_columns(auditor):
    tables = auditor.run({"n1": "LBP x 2 wks, R foot drop"},
                         orders=[{"id": "o1", "note_id": "n1", "order_name": "XR L-spine 2-3 views"}],
                         order_columns={"order_id": "id"})
    assert tables.audit[["order_id", "procedure", "verdict"]].values.tolist() == [["o1", "XR_LSPINE", "wrong_modality"]]


@pytest.mark.parametrize("snippets", [True, False], ids=["snippets", "no-snippets"])
def test_auditor_snippets_option_decides_whether_note_text_is_in_the_tables(auditor, snippets):
    tables = (auditor if snippets else Auditor(snippets=False)).run({"n1": "LBP x 2 wks, R FOOT DROP"}, orders=[])
    rationales = " ".join([*tables.notes["rationale"], *tables.audit["rationale"]])
    assert ('"FOOT DROP"' in rationales) is snippets
    assert ("text" in tables.findings.columns) is snippets and ("cue" in tables.findings.columns) is snippets


def test_auditor_max_chars_sends_a_longer_note_to_errors(rules):
    tables = Auditor(max_chars=40).run(["LBP x 2 days", "LBP x 2 days. " * 5])
    assert tables.notes["note_id"].tolist() == ["n1"]
    assert tables.errors.loc[0, "note_id"] == "n2" and tables.errors.loc[0, "reason"].startswith("note too long")


def test_auditor_unknown_edition_fails_when_built():
    with pytest.raises(UnknownEdition, match="ACR-1999"):
        Auditor(edition="ACR-1999")


def test_auditor_edition_is_forced_on_every_row(rules):
    tables = Auditor(edition="ACR-2016").run([{"note_id": "n1", "note_date": "2024-01-05", "text": NOTE}], orders=[])
    assert tables.notes["edition"].tolist() == ["ACR-2016"]
    assert tables.audit["edition"].tolist() == ["ACR-2016"]


# ---------------------------------------------------------------- one note


@pytest.fixture(scope="module")
def view(auditor) -> NoteView:
    return auditor.show(NOTE)


def test_auditor_show_labels_each_finding_with_its_assertion(view):
    labels = {span["label"] for span in view.spans()}
    assert {"FOOT_DROP · present", "SADDLE_ANESTHESIA · negated", "CANCER_HISTORY · family"} <= labels
    assert "cue: NEGATED_EXISTENCE" in labels
    html = view._repr_html_()
    assert 'class="entities"' in html and "SADDLE_ANESTHESIA · negated" in html
    assert "62F c/o" in html and "mother" in html  # the note's own words, around the marks


def test_auditor_show_lists_context_cues_and_sections(view):
    denies = view.modifiers.set_index("cue").loc["denies"]
    assert denies["category"] == "NEGATED_EXISTENCE"
    assert denies["rule_id"].startswith("CTX-")
    assert "SADDLE_ANESTHESIA" in denies["modifies"]
    assert NOTE[denies["start"]:denies["end"]] == "denies"
    assert view.sections[["section", "header"]].values.tolist() == [["fhx", "FHx:"]]


def test_auditor_show_prints_what_explain_prints(view, capsys):
    assert main(["explain", NOTE]) == 0
    assert str(view) == capsys.readouterr().out.rstrip("\n")


def test_auditor_show_judges_orders_and_spans_never_overlap(auditor):
    view = auditor.show({"note_id": "x", "note_date": "2024-02-01",
                         "text": "Back pain. Bilateral leg weakness and bilateral numbness, worse. No bladder sx."},
                        orders=["XR L-spine 2-3 views"])
    assert view.assessment.verdicts[0][2]["verdict"] == "wrong_modality"
    spans = view.spans()
    assert all(a["end"] <= b["start"] for a, b in zip(spans, spans[1:]))


@pytest.mark.parametrize("column, kind", [("rule_id", "target"), ("cue_rule_id", "context")], ids=["target", "context"])
def test_auditor_rule_gives_the_rule_behind_a_finding(auditor, view, column, kind):
    finding = view.findings.set_index("label").loc["SADDLE_ANESTHESIA"]
    rule = auditor.rule(finding[column])
    assert rule["metadata"]["id"] == finding[column]
    assert ("direction" in rule) is (kind == "context")


def test_auditor_rule_finds_section_rules_and_names_unknown_ids(auditor, view):
    assert auditor.rule(view.sections.loc[0, "rule_id"])["category"] == "fhx"
    with pytest.raises(KeyError, match="RF-NOPE"):
        auditor.rule("RF-NOPE")


def test_auditor_show_reads_a_record_and_ignores_a_note_date_that_is_no_date(auditor):
    view = auditor.show({"note_id": "x1", "note_date": "yesterday", "text": NOTE})
    assert view.result.note_id == "x1"
    assert view.assessment.edition.id == auditor.show(NOTE).assessment.edition.id
    assert auditor.show(pd.Series({"note_id": "x2", "note_date": "2019-05-01", "text": NOTE})).assessment.edition.id \
        == "ACR-2016"


def test_auditor_show_needs_text(auditor):
    with pytest.raises(InputError):
        auditor.show({"note_id": "x", "text": "  "})


def test_auditor_evaluate_reports_what_lbp_audit_evaluate_writes(auditor, tmp_path, capsys):
    corpus = ROOT / "corpora" / "lbp" / "audit_cases.jsonl"
    assert main(["evaluate", str(corpus), "--out", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "corpus.json").read_text(encoding="utf-8"))
    report = auditor.evaluate(corpus)
    assert report["per_label"] == written["per_label"]
    assert report["audit"]["verdict_agreement"] == written["audit"]["verdict_agreement"]


def test_auditor_import_of_pipeline_stays_cheap():
    code = ("import sys, pipeline; assert 'spacy' not in sys.modules; "
            "from pipeline import Auditor; print(Auditor.__module__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "pipeline.auditor"


# ---------------------------------------------------------------- Spark


def test_auditor_run_on_a_spark_dataframe_gives_the_local_rows(auditor, inputs, written):
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java")
    from pipeline.spark import session

    spark = session("local[1]")
    try:
        notes = spark.createDataFrame(pd.read_csv(inputs[0], dtype=str, keep_default_na=False))
        tables = auditor.run(notes, orders=pd.read_csv(inputs[1]))  # orders as pandas read them: CPT as numbers
        assert isinstance(tables, Tables) and repr(tables).startswith("Tables of Spark DataFrames")
        for name in TABLES:
            got = getattr(tables, name).toPandas()
            assert got.astype(object).where(got.notna(), None).values.tolist() == \
                written[name].astype(object).where(written[name].notna(), None).values.tolist(), name
    finally:
        spark.stop()
