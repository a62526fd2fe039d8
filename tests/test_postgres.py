"""`lbp-audit run` against a real PostgreSQL holding OMOP CDM tables.

Needs a server: `LBP_TEST_PG_URL` (a SQLAlchemy URL of a role that may create databases), which
`.ci/run` sets after starting a throwaway cluster on loopback. Without it these tests are skipped;
in CI (`CI` set) an unreachable server fails them instead.
"""
import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from pipeline import sql

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CPT_CONCEPTS = {"72100": 2211361, "72148": 2211392, "72158": 2211394, "74176": 2213446}  # test-only ids


def _server_url() -> str:
    url = os.environ.get("LBP_TEST_PG_URL")
    if not url:
        pytest.skip("no PostgreSQL: set LBP_TEST_PG_URL to a server URL (.ci/run starts one and sets it)")
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as con:
            con.exec_driver_sql("SELECT 1")
    except sa.exc.DBAPIError as err:
        message = f"PostgreSQL at LBP_TEST_PG_URL is not reachable ({type(err.orig).__name__})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="module")
def pg_url():
    """A fresh database on the test server, dropped afterwards."""
    server = sa.engine.make_url(_server_url())
    name = f"lbp_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as con:
        con.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as con:
            con.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _number(value: str) -> int | None:
    digits = "".join(ch for ch in str(value) if ch.isdigit())
    return int(digits) if digits else None


def load_omop_samples(url: str) -> None:
    """The sample notes and orders as OMOP CDM NOTE, PROCEDURE_OCCURRENCE and a small CONCEPT table
    (ids are the digits of ours: note s-003 -> 3, patient P003 -> 3, encounter E102 -> 102)."""
    notes = pd.read_csv(SAMPLES / "notes.csv", dtype=str)
    orders = pd.read_csv(SAMPLES / "orders.csv", dtype=str, keep_default_na=False)
    note = pd.DataFrame({
        "note_id": notes["note_id"].map(_number), "person_id": notes["patient_id"].map(_number),
        "note_date": pd.to_datetime(notes["note_date"]).dt.date, "note_datetime": pd.to_datetime(notes["note_date"]),
        "note_type_concept_id": 32817, "note_class_concept_id": 0, "note_title": None, "note_text": notes["text"],
        "encoding_concept_id": 32678, "language_concept_id": 4180186, "provider_id": None,
        "visit_occurrence_id": notes["encounter_id"].map(_number)})
    procedure = pd.DataFrame({
        "procedure_occurrence_id": orders["order_id"].map(_number), "person_id": orders["patient_id"].map(_number),
        "procedure_concept_id": orders["cpt"].map(lambda c: CPT_CONCEPTS.get(c, 0)),
        "procedure_date": pd.to_datetime(orders["order_date"]).dt.date, "procedure_type_concept_id": 32817,
        "visit_occurrence_id": orders["encounter_id"].map(_number), "procedure_source_value": orders["description"],
        "procedure_source_concept_id": 0})
    concept = pd.DataFrame({"concept_id": list(CPT_CONCEPTS.values()), "concept_code": list(CPT_CONCEPTS),
                            "vocabulary_id": "CPT4", "standard_concept": "S",
                            "concept_name": [f"CPT {code}" for code in CPT_CONCEPTS]})
    engine = sa.create_engine(url)
    try:
        note.to_sql("note", engine, index=False)
        procedure.to_sql("procedure_occurrence", engine, index=False)
        concept.to_sql("concept", engine, index=False)
    finally:
        engine.dispose()


def query(url: str, statement: str) -> pd.DataFrame:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as con:
            return pd.read_sql(sa.text(statement), con)
    finally:
        engine.dispose()


def test_postgres_reads_omop_note_and_procedure_occurrence_in_batches(pg_url):
    load_omop_samples(pg_url)
    notes = list(sql.read_records(pg_url, omop=True, batch_size=3))
    assert [n["note_id"] for n in notes] == [str(i) for i in range(1, 9)]
    assert notes[2]["patient_id"] == "3" and notes[2]["encounter_id"] == "102" and notes[2]["note_date"] == "2024-04-11"
    orders = {o["order_id"]: o for o in sql.read_records(pg_url, omop=True, kind="orders")}
    assert orders["1"]["cpt"] == "72100" and orders["1"]["description"] == "XR LUMBAR SPINE 2-3 VIEWS"
    assert orders["3"]["cpt"] is None  # no CPT in the source: the description is normalised instead
    assert sql.fingerprint(pg_url, omop=True, kind="orders")["rows"] == 8


def test_postgres_run_omop_end_to_end(pg_url, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipeline.cli", "run", pg_url, "--omop", "--orders", pg_url, "--out", str(out),
               "--to-sql", pg_url, "--jobs", "1", "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    findings = pd.read_parquet(out / "findings.parquet")
    audit = pd.read_parquet(out / "audit.parquet")

    note_nlp = query(pg_url, 'SELECT * FROM note_nlp ORDER BY note_id, "offset"::int, note_nlp_id')
    assert len(note_nlp) == len(findings) > 20
    assert note_nlp["note_nlp_id"].is_unique
    assert sorted(note_nlp["note_id"].unique()) == sorted(findings["note_id"].astype(int).unique())
    assert note_nlp["nlp_system"].str.startswith("lbp-audit ").all()
    negated = note_nlp[note_nlp["term_modifiers"].str.contains("assertion=negated")]
    assert len(negated) == (findings["assertion"] == "negated").sum() > 0
    assert set(negated["term_exists"]) == {"N"}
    saddle = note_nlp[(note_nlp["note_id"] == 1) & (note_nlp["lexical_variant"] == "saddle anesthesia")]
    assert saddle["term_exists"].tolist() == ["N"]  # "denies saddle anesthesia"

    db_audit = query(pg_url, "SELECT * FROM lbp_audit")
    assert len(db_audit) == len(audit)
    key = ["note_id", "order_id", "procedure", "verdict"]
    assert sorted(map(tuple, db_audit[key].fillna("").astype(str).to_numpy())) == \
        sorted(map(tuple, audit[key].fillna("").astype(str).to_numpy()))
    missed = db_audit[db_audit["verdict"] == "missed_imaging"]
    assert "3" in set(missed["note_id"])  # the cauda equina note, with no lumbar order
    assert query(pg_url, "SELECT count(*) AS n FROM lbp_notes")["n"].tolist() == [8]

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)  # a re-run replaces its rows
    assert again.returncode == 0, again.stderr[-2000:]
    assert query(pg_url, "SELECT count(*) AS n FROM note_nlp")["n"].tolist() == [len(findings)]


def test_postgres_publish_streams_parts_and_fails_without_quoting_values(pg_url):
    first = pd.DataFrame({"note_id": ["1", "2"], "age": [62, 34], "text": ["saddle anesthesia", "LBP"]})
    second = pd.DataFrame({"note_id": ["3", "4"], "age": [None, 51.0], "text": ["foot drop", None]})
    written = sql.publish(pg_url, [("notes", [first, second])], nlp_system="t", nlp_date=dt.date(2024, 6, 1))
    assert written == {"notes": "lbp_notes"}
    back = query(pg_url, "SELECT note_id, age FROM lbp_notes ORDER BY note_id")
    assert back["age"].tolist()[:2] == [62, 34] and back["age"].isna().tolist() == [False, False, True, False]
    bad = pd.DataFrame({"note_id": ["5"], "age": [61.5], "text": ["cauda equina syndrome"]})
    with pytest.raises(sql.InputError) as err:
        sql.publish(pg_url, [("notes", [first, bad])], nlp_system="t", nlp_date=dt.date(2024, 6, 1))
    assert "61.5" not in str(err.value) and "cauda" not in str(err.value) and "SQLSTATE 22P02" in str(err.value)
    assert query(pg_url, "SELECT count(*) AS n FROM lbp_notes")["n"].tolist() == [4]  # the failed run rolled back
