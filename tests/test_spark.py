"""`run --engine spark` and `audit_dataframe`: the same tables as the local engine, on Spark in local mode."""
import datetime as dt
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.batch import run
from pipeline.cli import main
from pipeline.corpus import load_corpus

pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("Spark needs Java", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("findings", "notes", "errors", "audit", "unmatched_orders")
CHUNK = 4
MARKER = "ZZSECRETMARKER"
DUPLICATE = "duplicate note_id (first occurrence kept)"


@pytest.fixture(scope="module")
def spark():
    from pipeline.spark import session

    spark = session("local[2]")
    yield spark
    spark.stop()


def _corpus_notes() -> list[dict]:
    return [{"note_id": note.note_id, "patient_id": note.patient_id, "note_date": note.note_date,
             "encounter_id": "", "text": note.text}
            for note in load_corpus(ROOT / "corpora" / "lbp" / "audit_cases.jsonl")]


def _corpus_orders() -> list[dict]:
    return [{"order_id": order["order_id"], "patient_id": note.patient_id, "order_date": order.get("order_date"),
             "description": order.get("description"), "cpt": order.get("cpt"), "priority": order.get("priority")}
            for note in load_corpus(ROOT / "corpora" / "lbp" / "audit_cases.jsonl") for order in note.orders]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """~60 notes (samples, corpus audit notes, records without id, with empty text, repeated ids in other
    chunks) and their orders, as CSV."""
    folder = tmp_path_factory.mktemp("inputs")
    sample = pd.read_csv(ROOT / "samples" / "notes.csv", dtype=str, keep_default_na=False)
    broken = [{"note_id": "", "text": f"{MARKER} no id"}, {"note_id": "s-001", "text": f"{MARKER} repeated"},
              {"note_id": "empty-1", "text": "  "}, {"note_id": "empty-1", "text": f"{MARKER} repeats an empty one"}]
    notes = pd.concat([sample.iloc[:5], pd.DataFrame(broken), pd.DataFrame(_corpus_notes()), sample.iloc[5:],
                       pd.DataFrame([{"note_id": "s-002", "text": f"{MARKER} last"}])]).fillna("")
    notes.to_csv(folder / "notes.csv", index=False)
    orders = pd.concat([pd.read_csv(ROOT / "samples" / "orders.csv", dtype=str), pd.DataFrame(_corpus_orders())])
    orders.to_csv(folder / "orders.csv", index=False)
    return folder / "notes.csv", folder / "orders.csv", len(notes)


@pytest.fixture(scope="module")
def reference(inputs, extractor, tmp_path_factory):
    """The local engine in this process (`--jobs 1`)."""
    notes, orders, _ = inputs
    out = tmp_path_factory.mktemp("local")
    return out, run(notes, out, orders_path=orders, extractor=extractor, jobs=1, chunk_size=CHUNK)


@pytest.fixture(scope="module")
def spark_csv(inputs, spark, tmp_path_factory):
    notes, orders, _ = inputs
    out = tmp_path_factory.mktemp("spark")
    return out, run(notes, out, orders_path=orders, engine="spark", chunk_size=CHUNK)


def _same_files(a: Path, b: Path, suffix: str = "parquet") -> None:
    for name in TABLES:
        assert (a / f"{name}.{suffix}").read_bytes() == (b / f"{name}.{suffix}").read_bytes(), name


def test_spark_run_writes_the_same_files_as_local_jobs_1_and_2(reference, spark_csv, inputs, tmp_path):
    _same_files(reference[0], spark_csv[0])
    notes, orders, n = inputs
    local_2 = run(notes, tmp_path, orders_path=orders, jobs=2, chunk_size=CHUNK)
    _same_files(reference[0], tmp_path)
    manifest = spark_csv[1]
    assert manifest["engine"] == "spark" and manifest["workers"] == 2 and local_2["workers"] == 2
    assert manifest["counts"] == reference[1]["counts"] == local_2["counts"]
    assert manifest["counts"]["notes_read"] == n and manifest["chunks"] == -(-n // CHUNK)
    assert manifest["timings"]["spark_start"] >= 0
    differ = {k for k in manifest if manifest[k] != reference[1].get(k)}
    assert differ <= {"engine", "workers", "timings", "peak_rss_mb", "seconds", "outputs"}, differ
    assert not (spark_csv[0] / "_parts").exists()


def test_spark_run_errors_are_the_local_engines(spark_csv, inputs):
    errors = pd.read_parquet(spark_csv[0] / "errors.parquet")
    assert errors.values.tolist() == [["row:6", "missing note_id"], ["s-001", DUPLICATE], ["empty-1", "empty text"],
                                      ["empty-1", DUPLICATE], ["s-002", DUPLICATE]]
    assert MARKER not in errors.to_csv() + (spark_csv[0] / "manifest.json").read_text()
    audit = pd.read_parquet(spark_csv[0] / "audit.parquet")
    assert (audit.verdict == "missed_imaging").sum() >= 2 and (audit.order_id != "").sum() >= 10


def test_spark_run_csv_format_is_the_same_as_local(inputs, spark, extractor, tmp_path):
    notes, orders, _ = inputs
    run(notes, tmp_path / "local", fmt="csv", orders_path=orders, extractor=extractor, jobs=1, chunk_size=CHUNK)
    assert main(["run", str(notes), "--orders", str(orders), "--out", str(tmp_path / "spark"), "--format", "csv",
                 "--chunk-size", str(CHUNK), "--engine", "spark"]) == 0
    _same_files(tmp_path / "local", tmp_path / "spark", "csv")


@pytest.fixture(scope="module")
def parquet_notes(inputs, tmp_path_factory):
    """The notes as a folder of two Parquet files, the larger one last by name (Spark reads larger files
    first), with dates as a date column and a missing text."""
    frame = pd.read_csv(inputs[0], dtype=str, keep_default_na=False)
    frame["note_date"] = [dt.date.fromisoformat(d) if d else None for d in frame.note_date]
    frame.loc[frame.note_id == "empty-1", "text"] = None
    folder = tmp_path_factory.mktemp("parquet")
    pq.write_table(pa.Table.from_pandas(frame.iloc[:8], preserve_index=False), folder / "part-0.parquet")
    pq.write_table(pa.Table.from_pandas(frame.iloc[8:], preserve_index=False), folder / "part-1.parquet")
    return folder


def test_spark_run_reads_parquet_natively_with_the_local_results(parquet_notes, inputs, spark, extractor, tmp_path):
    orders = inputs[1]
    local = run(parquet_notes, tmp_path / "local", orders_path=orders, extractor=extractor, jobs=1, chunk_size=CHUNK)
    remote = run(parquet_notes, tmp_path / "spark", orders_path=orders, engine="spark", chunk_size=CHUNK)
    _same_files(tmp_path / "local", tmp_path / "spark")
    assert remote["counts"] == local["counts"]
    errors = pd.read_parquet(tmp_path / "spark" / "errors.parquet")
    assert errors.reason.tolist().count(DUPLICATE) == 3 and "missing text" in errors.reason.tolist()


def test_spark_run_reads_a_catalog_table(inputs, reference, spark, tmp_path):
    spark.createDataFrame(pd.read_csv(inputs[0], dtype=str, keep_default_na=False)) \
        .createOrReplaceTempView("lbp_test_notes")
    run("spark", tmp_path, orders_path=inputs[1], engine="spark", table="lbp_test_notes", chunk_size=CHUNK)
    _same_files(reference[0], tmp_path)


def test_spark_run_jsonl_errors_found_by_the_local_readers(tmp_path, spark, extractor):
    lines = [json.dumps({"note_id": "a", "text": "LBP with R foot drop."}),
             '{"note_id": "b", "text": "' + MARKER + ' unterminated',
             json.dumps({"note_id": 7, "text": 12}),
             json.dumps({"note_id": "a", "text": f"{MARKER} again"}),
             json.dumps({"note_id": "c", "text": "No back pain."})]
    path = tmp_path / "notes.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run(path, tmp_path / "local", extractor=extractor, chunk_size=2)
    run(path, tmp_path / "spark", engine="spark", chunk_size=2)
    for name in ("findings", "notes", "errors"):
        assert (tmp_path / "local" / f"{name}.parquet").read_bytes() == \
            (tmp_path / "spark" / f"{name}.parquet").read_bytes(), name
    assert pd.read_parquet(tmp_path / "spark" / "errors.parquet").values.tolist() == [
        ["b", "malformed JSON (line 2)"], ["7", "text is not a string (int)"], ["a", DUPLICATE]]


def test_spark_audit_dataframe_returns_the_rows_of_run(inputs, reference, spark):
    from pipeline.spark import audit_dataframe

    notes = spark.createDataFrame(pd.read_csv(inputs[0], dtype=str, keep_default_na=False))
    orders = spark.createDataFrame(pd.read_csv(inputs[1], dtype=str, keep_default_na=False))
    tables = audit_dataframe(notes, orders, chunk_size=CHUNK)
    assert sorted(tables) == sorted(TABLES)
    for name in TABLES:
        expected = pq.read_table(reference[0] / f"{name}.parquet").to_pylist()
        assert [row.asDict() for row in tables[name].collect()] == expected, name
    assert tables["notes"].schema["age"].dataType.typeName() == "long"


def test_spark_audit_dataframe_maps_columns_without_snippets(spark):
    from pipeline.spark import audit_dataframe

    notes = spark.createDataFrame([("n1", "LBP x 3 wks, BLE weakness, no saddle anesthesia"), ("n2", "")],
                                  "id string, body string")
    tables = audit_dataframe(notes, columns={"note_id": "id", "text": "body"}, snippets=False)
    assert sorted(tables) == ["errors", "findings", "notes"]
    assert "text" not in tables["findings"].columns
    assert tables["notes"].where("note_id = 'n1'").first()["MOTOR_WEAKNESS"] == "present"
    assert [tuple(row) for row in tables["errors"].collect()] == [("n2", "empty text")]


@pytest.mark.parametrize("args, message", [
    (["--resume"], "--resume is not available with --engine spark"),
    (["--table", "notes"], "give NOTES as 'spark'"),
], ids=["resume", "table-of-a-file"])
def test_spark_usage_errors(inputs, tmp_path, capsys, args, message):
    assert main(["run", str(inputs[0]), "--out", str(tmp_path), "--engine", "spark", *args]) == 2
    assert message in capsys.readouterr().err


def test_spark_readme_example_runs(spark, capsys):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(from pipeline\.spark .*?)```", readme, re.S).group(1)
    namespace: dict = {}
    exec(code.replace('"samples/', f'"{ROOT / "samples"}/'), namespace)
    assert namespace["spark"] is spark
    local = pd.read_csv(ROOT / "samples" / "orders.csv")
    assert "verdict" in capsys.readouterr().out
    assert namespace["tables"]["audit"].where("order_id != ''").count() + \
        namespace["tables"]["unmatched_orders"].count() == len(local)
    assert namespace["tables"]["notes"].count() == len(pd.read_csv(ROOT / "samples" / "notes.csv"))


def test_spark_job_failure_is_one_line(spark, tmp_path, capsys):
    missing = (tmp_path / "nowhere" / "notes.parquet").as_uri()
    assert main(["run", missing, "--out", str(tmp_path / "out"), "--engine", "spark"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["lbp-audit: error: the Spark job failed (AnalysisException); see the Spark logs"]
