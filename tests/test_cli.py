import json

import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.findings import FINDING_FIELDS
from pipeline.labels import LABELS

ACCEPTANCE = ("62F c/o LBP x2wks, R foot drop, EHL 3/5, denies saddle anesthesia. "
              "FHx: mother breast CA.")
MARKER = "ZZSECRETMARKER"


def test_cli_explain_acceptance_note(capsys):
    assert main(["explain", ACCEPTANCE]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    foot = next(line for line in lines if line.startswith("FOOT_DROP") and "foot drop" in line)
    assert "present" in foot and "right" in foot
    assert any(line.startswith("SADDLE_ANESTHESIA") and "negated" in line for line in lines)
    assert any(line.startswith("CANCER_HISTORY") and "family" in line for line in lines)
    present = next(line for line in lines if line.strip().startswith("present:"))
    assert "FOOT_DROP" in present and "CANCER_HISTORY" not in present
    absent = next(line for line in lines if line.strip().startswith("absent:"))
    assert "SADDLE_ANESTHESIA" in absent


def test_cli_explain_json(capsys):
    assert main(["explain", "--json", ACCEPTANCE]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["FOOT_DROP"] == "present"
    assert data["summary"]["CANCER_HISTORY"] is None


@pytest.fixture
def notes_csv(tmp_path):
    rows = [
        {"note_id": "n1", "text": ACCEPTANCE},
        {"note_id": "n2", "text": "45M LBP x 3 days after lifting. No B/B/saddle sx. Strength 5/5 throughout. SILT."},
        {"note_id": "n3", "text": ""},
        {"note_id": "", "text": f"{MARKER} orphan note with back pain"},
        {"note_id": "n1", "text": f"{MARKER} duplicate id"},
        {"note_id": "n4", "text": f"Chronic LBP. {MARKER}. Denies fever."},
    ]
    path = tmp_path / "notes.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_cli_run_accounts_for_every_note(notes_csv, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(notes_csv), "--out", str(out)]) == 0
    notes = pd.read_parquet(out / "notes.parquet")
    errors = pd.read_parquet(out / "errors.parquet")
    findings = pd.read_parquet(out / "findings.parquet")
    assert sorted(notes.note_id) == ["n1", "n2", "n4"]
    assert sorted(errors.reason) == sorted(["empty text", "missing note_id", "duplicate note_id (first occurrence kept)"])
    assert len(notes) + len(errors) == 6
    assert list(findings.columns) == list(FINDING_FIELDS)
    assert set(LABELS) <= set(notes.columns)
    n1 = notes.set_index("note_id").loc["n1"]
    assert (n1.FOOT_DROP, n1.SADDLE_ANESTHESIA, n1.CANCER_HISTORY) == ("present", "absent", None)
    assert notes.set_index("note_id").loc["n2"].BOWEL_DYSFUNCTION == "absent"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"notes_read": 6, "notes_written": 3, "errors": 3, "findings": len(findings)}
    assert manifest["rules_digest"]
    printed = capsys.readouterr()
    assert "6 notes read" in printed.out
    # note text never reaches the errors table, the manifest or the terminal
    assert MARKER not in errors.to_csv() + (out / "manifest.json").read_text() + printed.out + printed.err


def test_cli_run_csv_without_snippets(notes_csv, tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(notes_csv), "--out", str(out), "--format", "csv", "--no-snippets"]) == 0
    findings = pd.read_csv(out / "findings.csv")
    assert "text" not in findings.columns and "cue" not in findings.columns
    assert MARKER not in (out / "findings.csv").read_text()


def test_cli_run_reads_jsonl_parquet_and_txt_folders(tmp_path):
    rows = [{"note_id": "a", "note_text": "LBP with R foot drop."}, {"note_id": "b", "note_text": "No back pain."}]
    jsonl = tmp_path / "notes.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    parquet = tmp_path / "notes.parquet"
    pd.DataFrame(rows).to_parquet(parquet)
    folder = tmp_path / "txt"
    folder.mkdir()
    for r in rows:
        (folder / f"{r['note_id']}.txt").write_text(r["note_text"])
    for source, extra in ((jsonl, ["--text-column", "note_text"]), (parquet, ["--text-column", "note_text"]), (folder, [])):
        out = tmp_path / f"out-{source.name}"
        assert main(["run", str(source), "--out", str(out), "--format", "csv", *extra]) == 0
        notes = pd.read_csv(out / "notes.csv").set_index("note_id")
        assert notes.loc["a", "FOOT_DROP"] == "present"
        assert notes.loc["b", "LOW_BACK_PAIN"] == "absent"


def test_cli_run_bad_input_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "notes.xlsx"
    bad.write_text("x")
    assert main(["run", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "unknown input format" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")]) == 2


def test_cli_evaluate_negex_fixture(capsys, tmp_path):
    assert main(["evaluate", "--negex", "corpora/negex_kit/sample.tsv", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "negex_kit.json").read_text())
    assert report["rows"] == 22 and report["skipped"] == 0
    assert report["negation"]["f1"] >= 0.95
    assert report["experiencer"]["recall"] == 1.0


def test_cli_explain_with_order(capsys):
    text = "58M chronic LBP with sciatica, R foot drop, numbness and tingling in both legs."
    assert main(["explain", text, "--order", "XR lumbar spine 2-3 views", "--priority", "routine"]) == 0
    out = capsys.readouterr().out
    assert "NEURO" in out and "usually appropriate: MRI_LSPINE_WO" in out
    assert "XR_LSPINE: WRONG_MODALITY" in out
    assert "ordered as routine; guideline urgency is urgent" in out
    assert main(["explain", text]) == 0
    assert "MISSED_IMAGING" in capsys.readouterr().out
    assert main(["explain", "--json", text, "--order", "MRI L-spine w/o"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["urgency"] == "urgent" and data["orders"][0]["verdict"] == "appropriate"
    assert main(["explain", text, "--edition", "ACR-1999"]) == 2
    assert main(["explain", text, "--date", "yesterday"]) == 2


def test_cli_run_with_orders_fills_notes_and_writes_audit(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "samples/notes.csv", "--orders", "samples/orders.csv", "--out", str(out)]) == 0
    notes = pd.read_parquet(out / "notes.parquet").set_index("note_id")
    audit = pd.read_parquet(out / "audit.parquet")
    unmatched = pd.read_parquet(out / "unmatched_orders.parquet")
    assert notes.loc["s-001", "scenarios"] == "NEURO" and notes.loc["s-001", "recommended"] == "MRI_LSPINE_WO"
    assert notes.loc["s-003", "urgency"] == "emergent"
    assert notes.loc["s-008", "scenarios"] == "" and pd.isna(notes.loc["s-008", "urgency"])
    verdicts = audit.set_index("order_id").verdict
    assert verdicts["o-001"] == "wrong_modality"
    assert verdicts["o-002"] == "not_indicated"
    assert verdicts["o-007"] == "not_lumbar_imaging"
    assert audit[audit.verdict == "missed_imaging"].note_id.tolist() == ["s-003"]
    # every order is in the audit table or the unmatched table, once
    assert sorted(audit.order_id[audit.order_id != ""].tolist() + unmatched.order_id.tolist()) == \
        sorted(pd.read_csv("samples/orders.csv").order_id)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["guideline_editions"]["ACR-2021"]["effective_from"] == "2021-11-01"
    assert manifest["counts"]["orders_read"] == 8 and manifest["counts"]["verdicts"]["missed_imaging"] == 1
    assert "verdicts:" in capsys.readouterr().out


def test_cli_run_orders_no_snippets_keeps_note_text_out_of_rationales(tmp_path):
    notes = tmp_path / "notes.csv"
    pd.DataFrame([{"note_id": "n1", "patient_id": "P1", "note_date": "2024-01-01",
                   "text": f"LBP with R foot drop {MARKER}foot."}]).to_csv(notes, index=False)
    orders = tmp_path / "orders.csv"
    pd.DataFrame([{"order_id": "o1", "note_id": "n1", "description": "XR L-spine"}]).to_csv(orders, index=False)
    out = tmp_path / "out"
    assert main(["run", str(notes), "--orders", str(orders), "--out", str(out), "--format", "csv",
                 "--no-snippets"]) == 0
    assert pd.read_csv(out / "audit.csv").verdict.tolist() == ["wrong_modality"]
    for name in ("audit.csv", "notes.csv", "findings.csv"):
        assert MARKER not in (out / name).read_text()


def test_cli_run_orders_with_other_column_names_and_numeric_ids(tmp_path):
    notes = tmp_path / "notes.jsonl"
    notes.write_text(json.dumps({"note_id": 7, "patient_id": 42, "note_date": "2024-02-01",
                                 "text": "LBP with new R foot drop."}) + "\n")
    orders = tmp_path / "orders.csv"
    pd.DataFrame([{"order_id": "x1", "patient_id": "42", "ordered_date": "2024-02-03 10:15",
                   "order_description": "MRI LUMBAR SPINE", "cpt_code": "72148"}]).to_csv(orders, index=False)
    out = tmp_path / "out"
    assert main(["run", str(notes), "--orders", str(orders), "--out", str(out), "--format", "csv"]) == 0
    audit = pd.read_csv(out / "audit.csv", dtype=str)
    assert audit[["note_id", "order_id", "procedure", "verdict"]].values.tolist() == \
        [["7", "x1", "MRI_LSPINE_WO", "appropriate"]]


def test_cli_starts_without_quickumls_and_leaves_the_real_package_importable():
    """medspaCy imports QuickUMLS (nltk, scipy.stats: about a second) for a component the tool never adds;
    the command skips it, and a later `import quickumls` in the same process still gets the package."""
    import subprocess
    import sys

    script = ("import sys, io, contextlib\n"
              "from pipeline.cli import main\n"
              "with contextlib.redirect_stdout(io.StringIO()):\n"
              "    assert main(['explain', 'LBP x 2 wks, R foot drop']) == 0\n"
              "print('nltk' in sys.modules, 'quickumls' in sys.modules)\n"
              "import quickumls\n"
              "print(hasattr(quickumls, 'QuickUMLS'))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "False", "True"]
