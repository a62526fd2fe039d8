"""Properties that hold for any input (hypothesis), and the run's determinism and provenance.

- extraction never crashes on any Unicode text, and every finding's offsets index the original text;
- a segment of a note gives the same findings whatever segments are processed with it (its cache);
- the order normaliser never crashes and always gives a procedure code of the contract, with a reason
  when it is OTHER;
- the same input gives byte-identical tables, run twice or on 1 or 2 processes;
- the manifest's hashes and counts are those of the files and tables.
"""
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from pipeline.audit import Order
from pipeline.batch import run
from pipeline.labels import ASSERTIONS, LABELS
from pipeline.orders import PRIORITIES, PROCEDURES, normalise, normalise_priority
from pipeline.rules import default_rules_dir, load_rules

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("findings", "notes", "errors", "audit", "unmatched_orders")
FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
# no example database: nothing written into the checkout (a failure prints its example and seed)
_SETTINGS = {"deadline": None, "database": None, "suppress_health_check": FIXTURES}
_RULES = load_rules()

# ---------------------------------------------------------------- strategies

# the example phrases of every target, ConText and section rule: texts built from them make findings fire
VOCABULARY = sorted({e if isinstance(e, str) else e["text"]
                     for r in _RULES.target_rules + _RULES.context_rules for e in r["metadata"].get("examples", [])}
                    | {e for r in _RULES.section_rules for e in r.examples})
SEPARATORS = st.sampled_from([" ", ". ", ", ", "; ", "\n", "\n\n", "\r\n", "\t", " - ", "...", "!!!", "???", ":", " (",
                              ") ", "/", "\u00a0", "\u2028", "\u200b", "\x00", "\x0b", "\x1b", " 🙂 ", " 腰痛 ",
                              " боль ", " ألم ", "\ufeff", "**", "____", " ‑ "])
clinical_texts = st.lists(st.tuples(st.sampled_from(VOCABULARY), SEPARATORS), min_size=1, max_size=25).map(
    lambda pieces: "".join(phrase + sep for phrase, sep in pieces))
odd_texts = st.one_of(
    st.text(),  # any Unicode but lone surrogates
    st.text(alphabet=st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp", "Po", "Pd", "Ps", "Pe", "Sm", "So"])),
    st.text(alphabet=st.sampled_from(".,;:!?-()/\\*_#'\"\n "), min_size=50, max_size=3000),  # runs of punctuation
    st.text(alphabet=st.characters(codec="utf-8", min_codepoint=0x370)),  # other scripts
)
mixed_texts = st.lists(st.one_of(clinical_texts, odd_texts), min_size=1, max_size=4).map("".join)


# ---------------------------------------------------------------- extraction


def _check_findings(text: str, result) -> None:
    for finding in result.findings:
        assert 0 <= finding.start < finding.end <= len(text)
        assert text[finding.start:finding.end] == finding.text
        assert finding.label in LABELS and finding.assertion in ASSERTIONS
    assert set(LABELS) <= set(result.summary)


@settings(max_examples=300, **_SETTINGS)
@given(text=st.one_of(odd_texts, clinical_texts, mixed_texts))
def test_properties_any_text_extracts_with_offsets_into_the_original(extractor, text):
    _check_findings(text, extractor.extract(text, note_id="n"))


@settings(max_examples=150, **_SETTINGS)
@given(text=clinical_texts)
def test_properties_clinical_vocabulary_makes_findings_whose_offsets_hold(extractor, text):
    result = extractor.extract(text, note_id="n")
    _check_findings(text, result)
    # after a paragraph of its own (a header still starts a line): 5 characters, 9 UTF-8 bytes before the text
    shifted = extractor.extract("\u00e9\U0001f600.\n\n" + text, note_id="n")
    assert [(f.label, f.assertion, f.start + 5, f.end + 5) for f in result.findings] == \
        [(f.label, f.assertion, f.start, f.end) for f in shifted.findings if f.start >= 5]


@settings(max_examples=20, **_SETTINGS)
@given(texts=st.lists(mixed_texts, min_size=2, max_size=6))
def test_properties_a_note_gives_the_same_findings_alone_or_in_a_batch(extractor, texts):
    batch = list(extractor.pipe((str(i), text) for i, text in enumerate(texts)))
    alone = [extractor.extract(text, note_id=str(i)) for i, text in enumerate(texts)]
    assert [(r.findings, r.summary) for r in batch] == [(r.findings, r.summary) for r in alone]


@settings(max_examples=150, **_SETTINGS)
@given(texts=st.lists(st.one_of(clinical_texts, mixed_texts), min_size=1, max_size=3))
def test_properties_a_segment_gives_the_same_mentions_whatever_is_around_it(extractor, texts):
    """What lets the extractor reuse a segment's findings (its cache): each segment of any text, run
    alone, gives what it gives run with the other segments of the note and of other notes."""
    from pipeline.extract import mentions_by_segment

    scanner = extractor.nlp.get_pipe("lbp_windows").scanner
    scans = [scanner.scan(text) for text in texts]

    def run(segments):
        window = scanner.window(scans[0], segments)  # the scan gives only the note's text and sections
        doc = extractor.nlp.make_doc(window.reduced)
        doc.user_data["lbp_window"] = window
        return mentions_by_segment(extractor.nlp(doc))

    segments = [segment for scan in scans for segment in scan.segments]
    assert run(segments) == [run([segment])[0] for segment in segments] == run(segments[::-1])[::-1]


# ---------------------------------------------------------------- the order normaliser

KNOWN_CPT = sorted(_RULES.orders.cpt)
DESCRIPTIONS = sorted({example["description"] for example in _RULES.orders.examples if example.get("description")})
cpt_values = st.one_of(st.none(), st.text(max_size=30), st.sampled_from(KNOWN_CPT),
                       st.from_regex(r"\A[0-9]{4,6}[A-Z]?\Z"),
                       st.lists(st.sampled_from(KNOWN_CPT), min_size=2, max_size=3).map(", ".join),
                       st.integers(-10, 10**7).map(str))
descriptions = st.one_of(st.none(), st.text(max_size=80), st.sampled_from(DESCRIPTIONS),
                         st.tuples(st.sampled_from(DESCRIPTIONS), st.text(max_size=20)).map(" ".join))


@settings(max_examples=600, **_SETTINGS)
@given(description=descriptions, cpt=cpt_values)
def test_properties_any_order_normalises_to_a_known_procedure(description, cpt):
    procedure = normalise(description, cpt, _RULES.orders)
    assert procedure.procedure in PROCEDURES
    if procedure.procedure == "OTHER":
        assert isinstance(procedure.reason, str) and procedure.reason.strip()
    else:
        assert procedure.rule_ids and procedure.reason is None
    if description is not None:  # runs of whitespace do not change the reading
        spaced = "  \t".join(description.split())
        assert normalise(spaced, cpt, _RULES.orders).procedure == procedure.procedure


@settings(max_examples=300, **_SETTINGS)
@given(record=st.fixed_dictionaries({"order_id": st.text(min_size=1, max_size=10)}, optional={
    "description": descriptions, "cpt": st.one_of(cpt_values, st.floats(allow_nan=True), st.integers()),
    "order_date": st.one_of(st.text(max_size=12), st.dates().map(str)), "priority": st.text(max_size=12),
    "note_id": st.text(max_size=5), "patient_id": st.text(max_size=5)}))
@example(record={"order_id": "0", "cpt": float("inf")})  # found by CI: int(inf) raised OverflowError
@example(record={"order_id": "0", "cpt": float("-inf")})
def test_properties_any_order_record_reads_and_normalises(record):
    order = Order.from_record(record)
    assert normalise(order.description, order.cpt, _RULES.orders).procedure in PROCEDURES
    assert normalise_priority(order.priority, _RULES.orders) in (*PRIORITIES, None)


# ---------------------------------------------------------------- determinism


def _write_archive(folder: Path, notes: list[dict], orders: list[dict], kind: str) -> tuple[Path, Path]:
    if kind == "csv":
        pd.DataFrame(notes).to_csv(folder / "notes.csv", index=False)
        pd.DataFrame(orders).to_csv(folder / "orders.csv", index=False)
        return folder / "notes.csv", folder / "orders.csv"
    (folder / "notes.jsonl").write_text("".join(json.dumps(n) + "\n" for n in notes), encoding="utf-8")
    (folder / "orders.jsonl").write_text("".join(json.dumps(o) + "\n" for o in orders), encoding="utf-8")
    return folder / "notes.jsonl", folder / "orders.jsonl"


archives = st.integers(4, 9).flatmap(lambda n: st.tuples(
    st.lists(st.tuples(st.sampled_from(["", "p1", "p2", "p3"]), st.dates().map(str), clinical_texts,
                       st.one_of(st.just(""), odd_texts.map(lambda t: t[:40]))), min_size=n, max_size=n),
    st.lists(st.tuples(st.integers(0, n + 1), st.sampled_from(DESCRIPTIONS + ["", "CT chest"]),
                       st.sampled_from(["", *KNOWN_CPT[:8]]), st.sampled_from(["", "routine", "STAT"])),
             min_size=1, max_size=6),
    st.sampled_from(["csv", "jsonl"])))


@settings(max_examples=6, phases=[Phase.explicit, Phase.generate], **_SETTINGS)  # no shrinking: minutes a try
@given(archive=archives)
def test_properties_the_same_archive_gives_the_same_bytes_twice_and_on_two_processes(extractor, tmp_path_factory,
                                                                                      archive):
    rows, order_rows, kind = archive
    notes = [{"note_id": f"n{i}" if i != 2 else "n1", "patient_id": patient, "note_date": date, "text": text + tail}
             for i, (patient, date, text, tail) in enumerate(rows)]  # n1 twice: a duplicate in errors
    orders = [{"order_id": f"o{i}", "note_id": f"n{target}", "patient_id": "p1", "order_date": None,
               "description": description, "cpt": cpt, "priority": priority}
              for i, (target, description, cpt, priority) in enumerate(order_rows)]
    folder = tmp_path_factory.mktemp("archive")
    notes_path, orders_path = _write_archive(folder, notes, orders, kind)
    outs = [folder / name for name in ("once", "twice", "jobs2")]
    for out in outs[:2]:
        run(notes_path, out, orders_path=orders_path, extractor=extractor, jobs=1, chunk_size=2)
    manifest = run(notes_path, outs[2], orders_path=orders_path, jobs=2, chunk_size=2)
    assert manifest["workers"] == 2
    for name in TABLES:
        first = (outs[0] / f"{name}.parquet").read_bytes()
        assert all((out / f"{name}.parquet").read_bytes() == first for out in outs[1:]), name


# ---------------------------------------------------------------- provenance

VOLATILE = {"timings", "seconds", "peak_rss_mb", "outputs"}  # durations and start time, memory, output paths


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def twice(extractor, tmp_path_factory):
    """The sample notes and orders run twice into two folders, and a folder of .txt notes."""
    folder = tmp_path_factory.mktemp("provenance")
    notes, orders = ROOT / "samples" / "notes.csv", ROOT / "samples" / "orders.csv"
    manifests = [run(notes, folder / name, orders_path=orders, extractor=extractor, chunk_size=3)
                 for name in ("a", "b")]
    return folder, notes, orders, manifests


def test_properties_manifest_hashes_and_counts_are_those_of_the_files(twice):
    folder, notes, orders, (manifest, _) = twice
    stored = json.loads((folder / "a" / "manifest.json").read_text())
    assert stored == json.loads(json.dumps(manifest, default=str))
    hashes = manifest["input_hashes"]
    assert hashes["notes"]["sha256"] == _sha256(notes) and hashes["orders"]["sha256"] == _sha256(orders)
    assert hashes["notes"]["bytes"] == notes.stat().st_size
    assert hashes["notes"]["records"] == len(pd.read_csv(notes)) == manifest["counts"]["notes_read"]
    assert hashes["orders"]["records"] == len(pd.read_csv(orders)) == manifest["counts"]["orders_read"]
    for name in TABLES:
        path = folder / "a" / f"{name}.parquet"
        assert manifest["table_sha256"][name] == _sha256(path), name
        assert manifest["table_rows"][name] == len(pd.read_parquet(path)), name
    counts = manifest["counts"]
    assert (counts["notes_written"], counts["errors"], counts["findings"]) == \
        (manifest["table_rows"]["notes"], manifest["table_rows"]["errors"], manifest["table_rows"]["findings"])
    assert counts["orders_unmatched"] == manifest["table_rows"]["unmatched_orders"]
    assert sum(counts["verdicts"].values()) == manifest["table_rows"]["audit"]
    rules_dir = default_rules_dir()
    assert manifest["rule_files"] == {str(p.relative_to(rules_dir)): _sha256(p)
                                      for p in sorted(rules_dir.rglob("*.json"))}
    assert set(manifest["guideline_editions"]) == {"ACR-2016", "ACR-2021"}
    assert manifest["version"] and manifest["no_text"] is False and manifest["environment"]["packages"]["spacy"]


def test_properties_same_input_twice_gives_identical_tables_and_manifest(twice):
    folder, _, _, (first, second) = twice
    for name in TABLES:
        assert (folder / "a" / f"{name}.parquet").read_bytes() == (folder / "b" / f"{name}.parquet").read_bytes()
    assert {k for k in first.keys() | second.keys() if first.get(k) != second.get(k)} <= VOLATILE
    assert first["outputs"] != second["outputs"] and first["table_sha256"] == second["table_sha256"]


def test_properties_a_folder_of_notes_is_hashed_file_by_file(extractor, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    texts = {"b": "LBP x 3 days, R foot drop.", "a": "No back pain.", "c": "Saddle anesthesia, urinary retention."}
    for name, text in texts.items():
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    manifest = run(folder, tmp_path / "out", extractor=extractor)
    expected = hashlib.sha256("".join(f"{name}.txt\0{hashlib.sha256(texts[name].encode()).hexdigest()}\n"
                                      for name in sorted(texts)).encode()).hexdigest()
    assert manifest["input_hashes"]["notes"] == {"sha256": expected, "files": 3,
                                                 "bytes": sum(len(t.encode()) for t in texts.values()), "records": 3}
    (folder / "a.txt").write_text("No back pain!", encoding="utf-8")
    again = run(folder, tmp_path / "again", extractor=extractor)
    assert again["input_hashes"]["notes"]["sha256"] != expected


def test_properties_a_database_input_is_recorded_by_its_query_hash_and_rows(extractor, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    frame = pd.read_csv(ROOT / "samples" / "notes.csv", dtype=str)
    path = tmp_path / "notes.duckdb"
    con = duckdb.connect(str(path))
    con.register("frame", frame)
    con.execute("CREATE TABLE clinic_notes AS SELECT * FROM frame")
    con.close()
    query = "SELECT note_id, text FROM clinic_notes WHERE note_id <> 's-003'"
    manifest = run(path, tmp_path / "out", query=query, extractor=extractor)
    recorded = manifest["input_hashes"]["notes"]
    assert recorded["query_sha256"] == hashlib.sha256(query.encode()).hexdigest()
    assert recorded["rows"] == recorded["records"] == len(frame) - 1 == manifest["counts"]["notes_read"]
    by_table = run(path, tmp_path / "table", table="clinic_notes", extractor=extractor)["input_hashes"]["notes"]
    assert by_table["table"] == "clinic_notes" and by_table["query_sha256"] is None and by_table["rows"] == len(frame)
