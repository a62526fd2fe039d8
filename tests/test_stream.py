"""Streaming `run`: readers, chunks, worker processes, resume, the incremental order matcher, progress."""
import datetime as dt
import gc
import gzip
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pandas as pd
import pytest

from pipeline.audit import NoteRef, Order, OrderMatcher, audit
from pipeline.batch import Chunk, ChunkSettings, audit_key, chunks_of, process_chunk, run
from pipeline.cli import main
from pipeline.corpus import load_corpus
from pipeline.progress import Progress, progress_wanted
from pipeline.sources import READ_ERROR, open_source
from pipeline.tables import InputError

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("findings.parquet", "notes.parquet", "errors.parquet", "audit.parquet", "unmatched_orders.parquet")
CHUNK = 4
MARKER = "ZZSECRETMARKER"


def _corpus_rows(copies: int = 1) -> list[dict]:
    rows = []
    for copy in range(copies):
        for note in load_corpus(ROOT / "corpora" / "lbp" / "audit_cases.jsonl"):
            suffix = f"-c{copy}" if copy else ""
            rows.append({"note_id": note.note_id + suffix, "patient_id": note.patient_id + suffix,
                         "note_date": note.note_date, "encounter_id": None, "text": note.text})
    return rows


def _corpus_orders(copies: int = 1) -> list[dict]:
    orders = []
    for copy in range(copies):
        suffix = f"-c{copy}" if copy else ""
        for note in load_corpus(ROOT / "corpora" / "lbp" / "audit_cases.jsonl"):
            for order in note.orders:
                orders.append({"order_id": order["order_id"] + suffix, "patient_id": note.patient_id + suffix,
                               "order_date": order.get("order_date"), "description": order.get("description"),
                               "cpt": order.get("cpt"), "priority": order.get("priority")})
    return orders


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """~55 notes (the sample notes, the corpus audit notes, a few broken records) and their orders."""
    folder = tmp_path_factory.mktemp("inputs")
    sample = pd.read_csv(ROOT / "samples" / "notes.csv", dtype=str)
    broken = [{"note_id": "", "text": f"{MARKER} no id"}, {"note_id": "s-001", "text": f"{MARKER} duplicate"},
              {"note_id": "empty-1", "text": "  "}]
    notes = pd.concat([sample.iloc[:5], pd.DataFrame(broken), pd.DataFrame(_corpus_rows()), sample.iloc[5:]])
    notes.to_csv(folder / "notes.csv", index=False)
    orders = pd.concat([pd.read_csv(ROOT / "samples" / "orders.csv", dtype=str), pd.DataFrame(_corpus_orders())])
    orders.to_csv(folder / "orders.csv", index=False)
    return folder / "notes.csv", folder / "orders.csv", len(notes)


@pytest.fixture(scope="module")
def reference(inputs, extractor, tmp_path_factory):
    """The uninterrupted in-process run (`--jobs 1`) everything else is compared with."""
    notes, orders, _ = inputs
    out = tmp_path_factory.mktemp("reference")
    manifest = run(notes, out, orders_path=orders, extractor=extractor, jobs=1, chunk_size=CHUNK)
    return out, manifest


def _same_tables(a: Path, b: Path) -> None:
    for name in TABLES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_stream_every_note_ends_in_notes_or_errors_once(reference, inputs):
    out, manifest = reference
    notes = pd.read_parquet(out / "notes.parquet")
    errors = pd.read_parquet(out / "errors.parquet")
    assert len(notes) + len(errors) == inputs[2] == manifest["counts"]["notes_read"]
    assert not set(notes.note_id) & set(errors.note_id[errors.reason != "duplicate note_id (first occurrence kept)"])
    assert sorted(errors.reason) == sorted(["missing note_id", "duplicate note_id (first occurrence kept)",
                                            "empty text"])
    assert notes.note_id.is_unique
    assert manifest["chunks"] == -(-inputs[2] // CHUNK) and manifest["chunk_size"] == CHUNK
    assert MARKER not in errors.to_csv() + (out / "manifest.json").read_text()
    assert not (out / "_parts").exists()


@pytest.mark.parametrize("chunk_size", [1, 10_000], ids=["a-chunk-a-note", "one-chunk"])
def test_stream_chunked_run_gives_the_tables_of_a_single_chunk(reference, inputs, extractor, tmp_path, chunk_size):
    """Also with a chunk per note: more sorted parts of the audit than are merged at once (`_merge_sorted`)."""
    notes, orders, _ = inputs
    run(notes, tmp_path, orders_path=orders, extractor=extractor, jobs=1, chunk_size=chunk_size)
    for name in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(reference[0] / name), pd.read_parquet(tmp_path / name))
    audit_table = pd.read_parquet(tmp_path / "audit.parquet")
    assert list(audit_table[["note_id", "order_id"]].itertuples(index=False)) == \
        sorted(audit_table[["note_id", "order_id"]].itertuples(index=False))
    assert (audit_table.verdict == "missed_imaging").sum() >= 2


def test_stream_jobs_2_writes_the_same_files_as_jobs_1(reference, inputs, tmp_path):
    notes, orders, _ = inputs
    manifest = run(notes, tmp_path, orders_path=orders, jobs=2, chunk_size=CHUNK)
    assert manifest["workers"] == 2
    _same_tables(reference[0], tmp_path)
    assert manifest["counts"] == reference[1]["counts"]
    assert manifest["peak_rss_mb"]["worker"] > 0


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "run", *args]


def test_stream_resume_after_sigkill_gives_the_same_tables(reference, inputs, tmp_path):
    notes, orders, _ = inputs
    out = tmp_path / "out"
    command = _cli(str(notes), "--orders", str(orders), "--out", str(out), "--chunk-size", str(CHUNK),
                   "--jobs", "1")
    env = {**os.environ, "CI": "1"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = out / "_parts" / "done"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if done.exists() and len(list(done.glob("*.json"))) >= 2:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be interrupted"
    completed = len(list(done.glob("*.json")))
    assert not (out / "notes.parquet").exists()
    changed = subprocess.run(_cli(str(notes), "--orders", str(orders), "--out", str(out), "--chunk-size", "5",
                                  "--resume"), cwd=ROOT, env=env, capture_output=True, text=True)
    assert changed.returncode == 2 and "cannot resume" in changed.stderr and "chunk_size" in changed.stderr
    resumed = subprocess.run(command[:-1] + ["2", "--resume"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert completed <= manifest["resumed"] < manifest["chunks"]
    assert f"{manifest['resumed']} resumed" in resumed.stdout
    _same_tables(reference[0], out)
    assert not (out / "_parts").exists()


def test_stream_a_new_run_over_leftover_parts_starts_afresh(inputs, extractor, tmp_path, capsys):
    notes = tmp_path / "notes.csv"
    pd.read_csv(inputs[0], dtype=str).head(6).to_csv(notes, index=False)
    run(notes, tmp_path / "out", extractor=extractor, chunk_size=2, keep_parts=True)
    assert len(list((tmp_path / "out" / "_parts" / "done").glob("*.json"))) == 3
    assert main(["run", str(notes), "--out", str(tmp_path / "out"), "--chunk-size", "3", "--jobs", "1"]) == 0
    assert "starting afresh" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (manifest["chunks"], manifest["resumed"]) == (2, 0)
    assert not (tmp_path / "out" / "_parts").exists()


def test_stream_resume_of_a_finished_run_reuses_kept_parts(inputs, extractor, tmp_path):
    notes = tmp_path / "notes.csv"
    pd.read_csv(inputs[0], dtype=str).head(6).to_csv(notes, index=False)
    first = run(notes, tmp_path / "a", extractor=extractor, chunk_size=2, keep_parts=True)
    again = run(notes, tmp_path / "a", extractor=extractor, chunk_size=2, resume=True)
    assert (first["resumed"], again["resumed"]) == (0, 3)
    assert again["counts"] == first["counts"]


# ---------------------------------------------------------------- readers


def test_stream_jsonl_malformed_lines_become_error_rows(tmp_path, extractor):
    lines = [json.dumps({"note_id": "a", "text": "LBP with R foot drop."}),
             '{"note_id": "b", "text": "' + MARKER + ' unterminated',
             '{"text": "' + MARKER + ' no id and broken',
             "",
             "[1, 2]",
             json.dumps({"note_id": "c", "text": "No back pain."})]
    path = tmp_path / "notes.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    manifest = run(path, tmp_path / "out", fmt="csv", extractor=extractor)
    errors = pd.read_csv(tmp_path / "out" / "errors.csv", dtype=str)
    assert errors.values.tolist() == [["b", "malformed JSON (line 2)"], ["row:3", "malformed JSON (line 3)"],
                                      ["row:4", "not a JSON object (line 5)"]]
    assert pd.read_csv(tmp_path / "out" / "notes.csv").note_id.tolist() == ["a", "c"]
    assert manifest["counts"]["notes_read"] == 5
    assert MARKER not in (tmp_path / "out" / "errors.csv").read_text()


def test_stream_malformed_order_line_is_an_unmatched_row(tmp_path):
    from pipeline.batch import read_orders

    path = tmp_path / "orders.jsonl"
    path.write_text(json.dumps({"order_id": "o1", "note_id": "n1", "description": "MRI L-spine"}) + "\n{broken\n")
    orders, problems = read_orders(path)
    assert [o.order_id for o in orders] == ["o1"]
    assert problems == [{"order_id": "row:2", "reason": "malformed JSON (line 2)"}]


def test_stream_csv_row_with_too_many_fields_is_an_error_row(tmp_path, extractor):
    path = tmp_path / "notes.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write('note_id,text\nn1,"LBP x 3 days."\nn2,LBP,' + MARKER + '\nn3,"No back pain, no fever."\n')
    manifest = run(path, tmp_path / "out", extractor=extractor)
    errors = pd.read_parquet(tmp_path / "out" / "errors.parquet")
    assert errors.reason.tolist() == ["malformed CSV row (line 3: expected 2 fields, saw 3)"]
    assert sorted(pd.read_parquet(tmp_path / "out" / "notes.parquet").note_id) == ["n1", "n3"]
    assert manifest["counts"]["notes_read"] == 3


def test_stream_txt_folder_with_an_undecodable_file(tmp_path, extractor):
    folder = tmp_path / "txt"
    folder.mkdir()
    (folder / "b.txt").write_text("LBP with saddle anesthesia.", encoding="utf-8")
    (folder / "a.txt").write_bytes(b"\xff\xfe" + MARKER.encode() + b"\x80 latin junk \xe9")
    run(folder, tmp_path / "out", extractor=extractor)
    errors = pd.read_parquet(tmp_path / "out" / "errors.parquet")
    assert errors.values.tolist() == [["a", "not valid UTF-8 (byte 0xFF at offset 0)"]]
    assert pd.read_parquet(tmp_path / "out" / "notes.parquet").note_id.tolist() == ["b"]


def test_stream_parquet_dataset_folder_is_read_in_file_name_order(tmp_path, extractor):
    folder = tmp_path / "dataset"
    folder.mkdir()
    pd.DataFrame({"id": ["n3", "n4"], "body": ["No LBP.", "LBP with fever."]}).to_parquet(folder / "part-1.parquet")
    pd.DataFrame({"id": ["n1", "n2"], "body": ["LBP x2d.", "Foot drop."]}).to_parquet(folder / "part-0.parquet")
    source = open_source(folder, {"note_id": "id", "text": "body"}, required=("note_id", "text"))
    assert source.total == 4
    assert [r["note_id"] for r in source] == ["n1", "n2", "n3", "n4"]
    assert source.fraction() == 1.0
    run(folder, tmp_path / "out", columns={"note_id": "id", "text": "body"}, extractor=extractor, chunk_size=3)
    assert pd.read_parquet(tmp_path / "out" / "notes.parquet").note_id.tolist() == ["n1", "n2", "n3", "n4"]


def test_stream_csv_is_read_lazily_with_a_byte_fraction(tmp_path):
    path = tmp_path / "notes.csv"
    pd.DataFrame({"note_id": [f"n{i}" for i in range(5000)], "text": ["LBP " * 20] * 5000}).to_csv(path, index=False)
    source = open_source(path, required=("note_id", "text"))
    records = iter(source)
    assert next(records)["note_id"] == "n0"
    assert 0 < source.fraction() < 1
    assert sum(1 for _ in records) == 4999
    assert source.fraction() == 1.0


@pytest.mark.parametrize("content,name,message", [
    ("id,body\n1,x\n", "notes.csv", "no 'note_id' or 'text' column"),
    ('{"id": 1, "text": "x"}\n', "notes.jsonl", "no 'note_id' column"),
    ("", "notes.csv", "empty file"),
], ids=["csv-columns", "jsonl-columns", "empty-csv"])
def test_stream_unusable_input_is_a_one_line_error(tmp_path, capsys, content, name, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        open_source(path, required=("note_id", "text"))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lbp-audit: error: ") and message in err and "Traceback" not in err


# ---------------------------------------------------------------- chunks


def test_stream_chunk_boundaries_count_every_input_record():
    records = [{"note_id": "a", "text": "x"}, {"note_id": "a", "text": "y"}, {"note_id": None, "text": "z"},
               {"note_id": "b", "text": "w"}, {"note_id": "c", READ_ERROR: "malformed JSON (line 5)"}]
    chunks = list(chunks_of(records, 2))
    assert [(c.index, c.first_row, c.rows) for c in chunks] == [(0, 0, 2), (1, 2, 2), (2, 4, 1)]
    assert [n["note_id"] for c in chunks for n in c.notes] == ["a", "b"]
    assert [n["seq"] for c in chunks for n in c.notes] == [0, 3]
    assert [e for c in chunks for _, e in c.errors] == [
        {"note_id": "a", "reason": "duplicate note_id (first occurrence kept)"},
        {"note_id": "row:3", "reason": "missing note_id"},
        {"note_id": "c", "reason": "malformed JSON (line 5)"}]


class _BreaksOn:
    """An extractor that fails on notes containing a marker (as a pipeline bug would), else the real one."""

    def __init__(self, extractor):
        self.real, self.rules = extractor, extractor.rules

    def pipe(self, pairs):
        for note_id, text in pairs:
            if MARKER in text:
                raise ValueError(f"cannot parse {text}")
            yield from self.real.pipe([(note_id, text)])


def test_stream_a_note_that_breaks_extraction_goes_to_errors_alone(extractor):
    chunk = Chunk(0, 0, 3, notes=[{"note_id": "a", "text": "LBP with foot drop.", "seq": 0},
                                  {"note_id": "b", "text": f"LBP {MARKER}", "seq": 1},
                                  {"note_id": "c", "text": "No back pain.", "seq": 2}])
    output = process_chunk(chunk, ChunkSettings(), _BreaksOn(extractor))
    assert [row["note_id"] for row in output.notes] == ["a", "c"]
    assert output.errors == [{"note_id": "b", "reason": "extraction failed (ValueError)"}]


# ---------------------------------------------------------------- the incremental matcher


@pytest.fixture(scope="module")
def corpus_refs(extractor):
    from pipeline.summary import evidence_by_label

    notes = load_corpus(ROOT / "corpora" / "lbp" / "audit_cases.jsonl")
    results = list(extractor.pipe((n.note_id, n.text) for n in notes))
    refs = [NoteRef(n.note_id, r.summary, n.patient_id, f"E{seq // 3}", dt.date.fromisoformat(n.note_date),
                    evidence_by_label(r.findings), seq) for seq, (n, r) in enumerate(zip(notes, results))]
    orders = [Order.from_record({**o, "patient_id": n.patient_id}) for n in notes for o in n.orders]
    orders += [Order("by-note", "MRI L-spine w/o", note_id=refs[4].note_id),
               Order("by-encounter", "XR L-spine", encounter_id="E2"),
               Order("encounter-other-patient", "XR L-spine", encounter_id="E3", patient_id="nobody"),
               Order("unknown-note", "CT L-spine", note_id="nope", patient_id=refs[0].patient_id),
               Order("no-link", "MRI L-spine")]
    return refs, orders


@pytest.mark.parametrize("shuffle", [False, True], ids=["input-order", "shuffled"])
def test_stream_order_matcher_gives_the_rows_of_audit(corpus_refs, rules, shuffle):
    refs, orders = corpus_refs
    expected = audit(refs, orders, rules.editions, rules.orders)
    matcher = OrderMatcher(orders, rules.editions, rules.orders)
    offered = list(refs)
    if shuffle:
        random.Random(7).shuffle(offered)
    for ref in offered:
        matcher.offer(ref)
    assert matcher.finish() == expected
    rows, unmatched = expected
    assert {r["matched_by"] for r in rows} >= {"note_id", "encounter_id", "patient_window"}
    assert any(r["verdict"] == "missed_imaging" for r in rows) and unmatched


@pytest.mark.parametrize("shuffle", [False, True], ids=["input-order", "shuffled"])
def test_stream_order_matcher_with_handles_keeps_no_note_and_gives_the_same_rows(corpus_refs, rules, shuffle):
    """As `lbp-audit run` uses it: each note offered with a handle (where to read it again) is kept as
    that handle alone, and only the chosen notes are read back, each once."""
    refs, orders = corpus_refs
    expected_rows, expected_unmatched = audit(refs, orders, rules.editions, rules.orders)
    matcher = OrderMatcher(orders, rules.editions, rules.orders)
    offered = list(enumerate(refs))
    if shuffle:
        random.Random(7).shuffle(offered)
    for position, ref in offered:
        matcher.offer(ref, ("part", position))
    kept = [c[1] for c in matcher._by_id + matcher._encounter + matcher._window if c is not None]
    assert kept and not any(isinstance(k, NoteRef) for k in kept + list(matcher._missed.values()))
    asked = []

    def load(handles):
        asked.append(list(handles))
        return ((handle, refs[handle[1]]) for handle in handles)

    rows = list(matcher.rows(load))  # in the order the notes came back: the caller sorts them
    assert sorted(rows, key=audit_key) == sorted(expected_rows, key=audit_key)
    assert matcher.unmatched == expected_unmatched
    assert all(len(set(handles)) == len(handles) for handles in asked)


def test_stream_duplicate_ids_are_found_among_many_with_a_compact_hash_set():
    from pipeline.batch import HashSet, NoteValidator

    hashes = HashSet(capacity=8)
    draw = random.Random(3)
    keys = [draw.getrandbits(64) for _ in range(5000)] + [0, 1]  # 0 is taken as 1 (0 marks a free slot)
    assert len(set(keys)) == 5002
    assert [hashes.add(k) for k in keys].count(True) == 5001 and len(hashes) == 5001
    assert not any(hashes.add(k) for k in keys)  # every one found again after the table grew
    validator = NoteValidator()
    checked = [validator.check({"note_id": f"n{i % 3000}", "text": "back pain"}) for i in range(4000)]
    assert [error["note_id"] for _, error in checked if error] == [f"n{i}" for i in range(1000)]


def test_stream_order_matcher_forgets_notes_no_order_wants(rules):
    order = Order("o1", "MRI L-spine w/o", patient_id="P1", order_date=dt.date(2024, 3, 10))
    matcher = OrderMatcher([order], rules.editions, rules.orders)
    summary = {"in_scope": False}
    older = NoteRef("old", dict(summary), "P1", None, dt.date(2024, 3, 1), None, 0)
    gone = weakref.ref(older)
    matcher.offer(older)
    matcher.offer(NoteRef("new", dict(summary), "P1", None, dt.date(2024, 3, 5), None, 1))
    del older
    gc.collect()
    assert gone() is None
    rows, _ = matcher.finish()
    assert [(r["note_id"], r["matched_by"]) for r in rows] == [("new", "patient_window")]


# ---------------------------------------------------------------- progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_stream_progress_line_shows_rate_and_eta_and_is_cleared():
    now = [5.0]
    stream = _Terminal()
    bar = Progress(total=100, enabled=True, stream=stream, clock=lambda: now[0])
    bar.set(10)  # the first update: the rate counts from here (start-up time excluded)
    assert bar.line() == "10 notes  -- notes/s  10%"
    now[0] = 15.0
    bar.set(60)
    assert bar.line() == "60 notes  5.0 notes/s  60%  ETA 0:00:08"
    for i in range(1, 40):  # 39 updates within 1 s: at most 4 are drawn
        now[0] = 15.0 + i / 40
        bar.advance()
    assert stream.getvalue().count("\r") <= 2 + 4
    bar.close()
    drawn = stream.getvalue().split("\r")
    assert drawn[-3].startswith("90 notes") and drawn[-2].strip() == drawn[-1] == ""  # the last line, blanked


def test_stream_progress_estimates_the_total_from_the_byte_fraction():
    now = [0.0]
    bar = Progress(fraction=lambda: 0.25, read=lambda: 500, enabled=True, stream=_Terminal(), clock=lambda: now[0])
    bar.set(0)
    now[0] = 30.0
    bar.set(300)  # 500 records in a quarter of the file: about 2,000 notes
    assert bar.line() == "300 notes  10.0 notes/s  15%  ETA 0:02:50"


def test_stream_progress_only_on_a_terminal_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert progress_wanted(_Terminal())
    assert not progress_wanted(_Terminal(), no_progress=True)
    assert not progress_wanted(io.StringIO())
    monkeypatch.setenv("CI", "true")
    assert not progress_wanted(_Terminal())


def test_stream_omop_writes_note_nlp_from_every_chunk(tmp_path, extractor):
    pytest.importorskip("pipeline.omop")
    notes = tmp_path / "notes.csv"
    pd.DataFrame([{"note_id": "1", "text": "Seen for a flu shot."}, {"note_id": "2", "text": "x"},
                  {"note_id": "3", "text": "LBP with R foot drop, denies saddle anesthesia."}]).to_csv(notes, index=False)
    run(notes, tmp_path / "out", extractor=extractor, chunk_size=1, omop=True)
    findings = pd.read_parquet(tmp_path / "out" / "findings.parquet")
    note_nlp = pd.read_parquet(tmp_path / "out" / "note_nlp.parquet")
    assert len(findings) >= 2 and len(note_nlp) == len(findings)
    assert note_nlp.note_nlp_id.tolist() == list(range(1, len(findings) + 1))
