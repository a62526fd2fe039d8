import datetime as dt
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import sqlalchemy as sa

from pipeline import sql
from pipeline.tables import InputError, UsageError

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SYSTEM = "lbp-audit 0.1.0 rules test"
DAY = dt.date(2024, 6, 1)


@pytest.fixture(scope="module")
def notes() -> pd.DataFrame:
    """The sample notes with integer ids and real dates, as a database would hold them."""
    frame = pd.read_csv(SAMPLES / "notes.csv", dtype=str)
    frame["note_id"] = frame["note_id"].str[2:].astype(int)
    frame["note_date"] = pd.to_datetime(frame["note_date"]).dt.date
    return frame.rename(columns={"text": "note_body"})


def duckdb_file(path: Path, **tables: pd.DataFrame) -> str:
    con = duckdb.connect(str(path))
    for name, frame in tables.items():
        con.register("frame", frame)
        schema, _, table = name.rpartition("__")
        if schema:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        con.execute(f"CREATE TABLE {schema + '.' if schema else ''}{table} AS SELECT * FROM frame")
        con.unregister("frame")
    con.close()
    return str(path)


def sqlite_file(path: Path, **tables: pd.DataFrame) -> str:
    engine = sa.create_engine(f"sqlite:///{path}")
    for name, frame in tables.items():
        frame.to_sql(name, engine, index=False)
    engine.dispose()
    return f"sqlite:///{path}"


@pytest.fixture(params=["duckdb", "sqlite"])
def database(request, tmp_path, notes):
    """A database holding the sample notes as table `clinic_notes` (text column `note_body`)."""
    make = duckdb_file if request.param == "duckdb" else sqlite_file
    return make(tmp_path / f"notes.{'duckdb' if request.param == 'duckdb' else 'sqlite'}", clinic_notes=notes)


@pytest.mark.parametrize("spec, expected", [
    ("postgresql://u:p@db.example/cdm", True), ("postgresql+psycopg://u@localhost/x", True),
    ("sqlite:///notes.db", True), ("duckdb:///archive.duckdb", True), ("archive.duckdb", True),
    ("/data/ARCHIVE.DDB", True), ("notes.csv", False), ("notes/", False), ("https://host/notes.csv", False),
    ("s3://bucket/notes.parquet", False),
], ids=lambda v: str(v))
def test_sql_is_database(spec, expected):
    assert sql.is_database(spec) is expected


def test_sql_read_table_gives_our_columns_string_ids_and_iso_dates(database, notes):
    rows = list(sql.read_records(database, table="clinic_notes", columns={"text": "note_body"}))
    assert [r["note_id"] for r in rows] == [str(i) for i in sorted(notes["note_id"])]
    first = rows[0]
    assert set(first) == {"note_id", "text", "patient_id", "note_date", "encounter_id"}
    assert first["note_id"] == "1" and first["patient_id"] == "P001" and first["encounter_id"] == "E100"
    assert first["note_date"] == "2024-03-02"
    assert first["text"].startswith("62F c/o LBP")


def test_sql_read_query_with_our_names_and_a_percent_sign(database):
    query = "SELECT note_id, note_body AS text FROM clinic_notes WHERE note_body LIKE '%foot drop%';"
    rows = list(sql.read_records(database, query=query))
    assert [r["note_id"] for r in rows] == ["1"]
    assert rows[0]["patient_id"] is None  # optional columns the query does not give


def test_sql_read_table_name_ignores_case(database):
    assert len(list(sql.read_records(database, table="CLINIC_NOTES", columns={"text": "NOTE_BODY"}))) == 8


def test_sql_read_streams_in_batches_smaller_than_the_table(tmp_path, monkeypatch):
    big = pd.DataFrame({"note_id": range(1, 26), "text": [f"note {i}" for i in range(1, 26)]})
    path = duckdb_file(tmp_path / "big.duckdb", notes=big)
    fetched = []
    run = sql._DuckDB._run

    class Counting:
        def __init__(self, cursor):
            self.cursor = cursor

        def __getattr__(self, name):
            return getattr(self.cursor, name)

        def fetchmany(self, size):
            rows = self.cursor.fetchmany(size)
            fetched.append((size, len(rows)))
            return rows

    monkeypatch.setattr(sql._DuckDB, "_run", lambda self, *a, **k: Counting(run(self, *a, **k)))
    records = sql.read_records(path, table="notes", batch_size=4)
    first = next(records)
    assert first["note_id"] == "1" and fetched == [(4, 4)]  # one batch read, not the table
    rest = list(records)
    assert [r["note_id"] for r in [first, *rest]] == [str(i) for i in range(1, 26)]
    assert [n for _, n in fetched] == [4, 4, 4, 4, 4, 4, 1, 0]


def test_sql_missing_table_and_columns_are_one_line_errors(database):
    with pytest.raises(InputError, match="no table 'nope'"):
        list(sql.read_records(database, table="nope"))
    with pytest.raises(InputError, match=r"has no column\(s\) text;.*note_body"):
        list(sql.read_records(database, table="clinic_notes"))
    with pytest.raises(InputError, match=r"no column\(s\) body \(given for text\)"):
        list(sql.read_records(database, table="clinic_notes", columns={"text": "body"}))
    with pytest.raises(UsageError):
        list(sql.read_records(database, table="clinic_notes", query="SELECT 1"))
    with pytest.raises(UsageError):
        list(sql.read_records(database))  # neither a table nor a query, and no --omop


def test_sql_failing_query_error_has_no_note_text(database):
    failing = "json_extract(note_body, '$.a')" if database.startswith("sqlite") else "CAST(note_body AS INTEGER)"
    query = f"SELECT {failing} AS note_id, note_body AS text FROM clinic_notes"
    with pytest.raises(InputError) as err:
        list(sql.read_records(database, query=query))
    message = str(err.value)
    assert "\n" not in message and "LBP" not in message and "foot" not in message


def test_sql_unreachable_server_error_masks_the_password():
    with pytest.raises(InputError) as err:
        list(sql.read_records("postgresql://reader:s3cret@127.0.0.1:1/cdm", table="note"))
    message = str(err.value)
    assert "cannot connect" in message and "s3cret" not in message and "reader:***@" in message
    assert "\n" not in message


def test_sql_missing_files_are_not_created(tmp_path):
    for spec in (tmp_path / "absent.duckdb", f"sqlite:///{tmp_path / 'absent.sqlite'}"):
        with pytest.raises(InputError, match="no such"):
            list(sql.read_records(spec, table="notes"))
    assert list(tmp_path.iterdir()) == []


def test_sql_fingerprint_names_what_was_read(database):
    table = sql.fingerprint(database, table="clinic_notes")
    assert table["rows"] == 8 and table["table"] == "clinic_notes" and table["query_sha256"] is None
    query = sql.fingerprint(database, query="SELECT * FROM clinic_notes WHERE note_id > 5")
    assert query["rows"] == 3 and query["table"] is None and len(query["query_sha256"]) == 64
    assert sql.masked("postgresql://u:pw@h/db?sslpassword=x") == "postgresql://u:***@h/db?sslpassword=***"


def omop_note() -> pd.DataFrame:
    return pd.DataFrame({
        "note_id": [11, 12], "person_id": [101, 102], "note_date": [dt.date(2024, 3, 2), None],
        "note_datetime": [dt.datetime(2024, 3, 2, 9, 30), dt.datetime(2024, 3, 5, 14, 0)],
        "note_type_concept_id": [32817, 32817], "note_class_concept_id": [0, 0],
        "note_text": ["LBP x2wks, R foot drop.", "Acute LBP, no red flags."],
        "encoding_concept_id": [32678, 32678], "language_concept_id": [4180186, 4180186],
        "visit_occurrence_id": [501, None]})


def omop_procedures() -> pd.DataFrame:
    return pd.DataFrame({
        "procedure_occurrence_id": [1, 2, 3], "person_id": [101, 102, 102],
        "procedure_concept_id": [2211361, 0, 0], "procedure_source_concept_id": [0, 2211361, 0],
        "procedure_date": [dt.date(2024, 3, 2)] * 3, "procedure_type_concept_id": [32817] * 3,
        "provider_id": [7, None, None], "visit_occurrence_id": [501, None, None],
        "procedure_source_value": ["XR LUMBAR SPINE 2-3 VIEWS", "LSPINE MRI", "72131"]})


def concept() -> pd.DataFrame:
    return pd.DataFrame({"concept_id": [2211361], "concept_name": ["Radiologic examination, spine, lumbosacral"],
                         "vocabulary_id": ["CPT4"], "concept_code": ["72100"], "standard_concept": ["S"]})


def test_sql_omop_note_table_mapping(tmp_path):
    path = duckdb_file(tmp_path / "archive.duckdb", cdm__note=omop_note())
    rows = list(sql.read_records(path, table="cdm.NOTE", omop=True))
    assert rows[0] == {"note_id": "11", "text": "LBP x2wks, R foot drop.", "patient_id": "101",
                       "note_date": "2024-03-02", "encounter_id": "501"}
    assert rows[1]["note_date"] == "2024-03-05T14:00:00"  # note_datetime when note_date is empty
    assert [r["note_id"] for r in sql.read_records(path, omop=True)] == ["11", "12"]  # the default table


@pytest.mark.parametrize("with_concept, expected_cpt", [(True, ["72100", "72100", "72131"]),
                                                        (False, [None, None, "72131"])],
                         ids=["concept-table", "source-value-only"])
def test_sql_omop_orders_cpt_from_concept_else_source_value(tmp_path, with_concept, expected_cpt):
    tables = {"procedure_occurrence": omop_procedures(), **({"concept": concept()} if with_concept else {})}
    spec = sqlite_file(tmp_path / "cdm.sqlite", **tables)
    orders = list(sql.read_records(spec, omop=True, kind="orders"))
    assert [o["cpt"] for o in orders] == expected_cpt
    assert orders[0] == {"order_id": "1", "description": "XR LUMBAR SPINE 2-3 VIEWS", "cpt": expected_cpt[0],
                         "note_id": None, "encounter_id": "501", "patient_id": "101", "order_date": "2024-03-02",
                         "priority": None, "provider": "7", "site": None}


def test_sql_orders_read_alternative_column_names(tmp_path):
    frame = pd.DataFrame({"order_id": ["o-1"], "order_description": ["MRI L-spine"], "cpt_code": [72148],
                          "patient_id": ["P1"], "ordered_date": ["2024-01-02"]})
    spec = sqlite_file(tmp_path / "orders.sqlite", imaging=frame)
    (order,) = sql.read_records(spec, table="imaging", kind="orders")
    assert (order["description"], order["cpt"], order["order_date"]) == ("MRI L-spine", "72148", "2024-01-02")


def parts_of(frame: pd.DataFrame, size: int):
    return (frame.iloc[i:i + size] for i in range(0, len(frame), size))


def findings_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "note_id": ["1", "1", "2", "3"], "label": ["FOOT_DROP", "SADDLE_ANESTHESIA", "LOW_BACK_PAIN", "FEVER"],
        "assertion": ["present", "negated", "present", "historical"], "laterality": ["right", "unspecified"] * 2,
        "progressive": [False, False, True, False], "section": [None, None, None, "pmh"],
        "start": [10, 30, 0, 5], "end": [19, 47, 3, 10], "text": ["foot drop", "saddle anesthesia", "LBP", "fever"],
        "rule_id": ["RF-FOOTDROP-001", "RF-SADDLE-001", "RF-LBP-001", "RF-FEVER-001"],
        "cue": [None, "denies", None, "pmh"], "cue_rule_id": [None, "CTX-NEG-001", None, "SEC-PMH-001"]})


def database_spec(kind: str, tmp_path: Path) -> str:
    return str(tmp_path / "out.duckdb") if kind == "duckdb" else f"sqlite:///{tmp_path / 'out.sqlite'}"


def read_back(spec: str, query: str) -> pd.DataFrame:
    if spec.endswith(".duckdb"):
        with duckdb.connect(spec) as con:
            return con.execute(query).fetchdf()
    engine = sa.create_engine(spec)
    try:
        with engine.connect() as con:
            return pd.read_sql(sa.text(query), con)
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["duckdb", "sqlite"])
def test_sql_publish_round_trip_replaces_each_run(kind, tmp_path):
    spec = database_spec(kind, tmp_path)
    findings = findings_frame()
    errors = pd.DataFrame({"note_id": ["row:9"], "reason": ["missing text"]})
    for _ in range(2):
        written = sql.publish(spec, [("findings", parts_of(findings, 3)), ("errors", [errors]), ("audit", [])],
                              nlp_system=SYSTEM, nlp_date=DAY)
    assert written == {"findings": "lbp_findings", "errors": "lbp_errors"}  # audit had no parts: not written
    back = read_back(spec, "SELECT * FROM lbp_findings ORDER BY note_id, start")
    assert len(back) == 4 and back["label"].tolist() == findings.sort_values(["note_id", "start"])["label"].tolist()
    assert back["section"].tolist()[-1] == "pmh"  # all-empty in the first part, text in the second
    assert read_back(spec, "SELECT reason FROM lbp_errors")["reason"].tolist() == ["missing text"]
    ages = [pd.DataFrame({"note_id": ["1"], "age": [62]}), pd.DataFrame({"note_id": ["2", "3"], "age": [None, 34.0]})]
    sql.publish(spec, [("notes", ages)], nlp_system=SYSTEM, nlp_date=DAY)  # an integer column, later with a gap
    assert read_back(spec, "SELECT age FROM lbp_notes ORDER BY note_id")["age"].fillna(-1).tolist() == [62, -1, 34]
    with pytest.raises(UsageError):
        sql.publish(spec, [("secrets", [])], nlp_system=SYSTEM, nlp_date=DAY)


@pytest.mark.parametrize("kind", ["duckdb", "sqlite"])
def test_sql_publish_omop_writes_note_nlp_and_replaces_the_same_system(kind, tmp_path):
    spec = database_spec(kind, tmp_path)
    findings = findings_frame()
    sql.publish(spec, [("findings", parts_of(findings, 3))], omop=True, nlp_system="other-nlp 2.0", nlp_date=DAY)
    for _ in range(2):
        written = sql.publish(spec, [("findings", parts_of(findings, 3))], omop=True, nlp_system=SYSTEM,
                              nlp_date=DAY)
    assert written == {"findings": "lbp_findings", "note_nlp": "note_nlp"}
    rows = read_back(spec, 'SELECT * FROM note_nlp ORDER BY note_nlp_id')
    assert len(rows) == 8 and rows["note_nlp_id"].is_unique
    ours = rows[rows["nlp_system"] == SYSTEM]
    assert ours["note_nlp_id"].min() > rows.loc[rows["nlp_system"] != SYSTEM, "note_nlp_id"].max()
    assert ours["note_id"].tolist() == [1, 1, 2, 3]
    assert ours["term_exists"].tolist() == ["Y", "N", "Y", "Y"]
    assert ours["term_temporal"].tolist() == ["present", "present", "present", "past"]
    assert ours["offset"].tolist() == ["10", "30", "0", "5"]
    assert str(ours["nlp_date"].iloc[0])[:10] == "2024-06-01"


def test_sql_publish_omop_looks_up_standard_concepts_in_the_target(tmp_path):
    concepts = pd.DataFrame({"concept_id": [194133, 999], "concept_code": ["279039007", "279039007"],
                             "vocabulary_id": ["SNOMED", "Read"], "standard_concept": ["S", None]})
    spec = sqlite_file(tmp_path / "cdm.sqlite", concept=concepts)
    sql.publish(spec, [("findings", [findings_frame()])], omop=True, nlp_system=SYSTEM, nlp_date=DAY)
    rows = read_back(spec, "SELECT lexical_variant, note_nlp_concept_id FROM note_nlp ORDER BY note_nlp_id")
    assert dict(zip(rows["lexical_variant"], rows["note_nlp_concept_id"])) == {
        "foot drop": 0, "saddle anesthesia": 0, "LBP": 194133, "fever": 0}


def test_sql_publish_omop_refuses_non_integer_note_ids_and_writes_no_note_nlp(tmp_path):
    spec = str(tmp_path / "out.duckdb")
    findings = findings_frame().assign(note_id=["s-1", "s-1", "s-2", "s-3"])
    with pytest.raises(InputError, match="integer note ids") as err:
        sql.publish(spec, [("findings", [findings])], omop=True, nlp_system=SYSTEM, nlp_date=DAY)
    assert "s-1" not in str(err.value)
    tables = read_back(spec, "SELECT table_name FROM information_schema.tables")["table_name"].tolist()
    assert "note_nlp" not in tables and "lbp_findings" not in tables  # the whole findings step rolled back
