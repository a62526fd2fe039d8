"""Hostile input, catalogued: what `lbp-audit run` (notes and orders) and `lbp-audit explain` do with it.

Each case builds its input in tmp_path and knows, by construction, every record it holds and where that
record must end. A usable input must exit 0 with every record in exactly one of `notes` / `errors` (a
reason of a known kind), the summary line's counts and kinds matching; an unusable one must exit 2 with
one line on standard error naming the file and the problem. A marker planted in every note's text never
reaches standard output, standard error, the errors table or the manifest. Most cases call `main(argv)`
in this process; the crash-prone ones run the real command in a subprocess, as a user would.
"""
from __future__ import annotations

import codecs
import gzip
import io
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from pipeline.batch import error_kind
from pipeline.cli import main

MARKER = "QQHOSTILEMARKERQQ"
GOOD = f"62F LBP x 3 days, R foot drop. {MARKER}"
SUMMARY = re.compile(r"^lbp-audit \S+: ([\d,]+) notes read: ([\d,]+) summarised, ([\d,]+) errors"
                     r"(?: \(([^)]*)\))?, ([\d,]+) findings$")


@dataclass
class Case:
    """An input (files under tmp_path), the arguments after NOTES, and where each record must end:
    `notes` the ids in the notes table, `errors` (id, reason kind) with id None for a `row:N` id.
    `texts` are the notes' texts as the tool must see them (finding offsets are checked against them)."""

    notes_path: str
    files: dict[str, bytes]
    notes: list[str]
    errors: list[tuple[str | None, str]] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    stderr: list[str] = field(default_factory=list)  # what standard error must say (a warning), else nothing
    warnings: dict[str, int] = field(default_factory=dict)  # the manifest's warnings


def _csv(rows: list[tuple[str, str]], header: str = "note_id,text", encoding: str = "utf-8") -> bytes:
    """CSV bytes written by hand (every field quoted, quotes doubled), so that any byte can be planted."""
    lines = [header] + [",".join('"' + str(v).replace('"', '""') + '"' for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode(encoding)


def _jsonl(records: list) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


# ---------------------------------------------------------------- usable inputs: every record accounted for


def case_blank_texts():
    rows = [("g1", GOOD), ("e1", ""), ("e2", "   "), ("e3", "\t\r\n "), ("e4", "\0\0")]
    return Case("notes.csv", {"notes.csv": _csv(rows)}, ["g1"], [(i, "empty text") for i in ("e1", "e2", "e3", "e4")],
                texts={"g1": GOOD})


def case_latin1_bytes_in_utf8_file():
    data = (_csv([("g1", GOOD)]) + f'"bad1","LBP in a café, R foot drop. {MARKER}"\n'.encode("latin-1")
            + f'"g2","Café owner, LBP x2d. {MARKER}"\n'.encode("utf-8"))
    return Case("notes.csv", {"notes.csv": data}, ["g1", "g2"], [("bad1", "not valid UTF-8")],
                texts={"g1": GOOD, "g2": f"Café owner, LBP x2d. {MARKER}"}, stderr=["--encoding cp1252"])


def case_latin1_file_with_encoding_option():
    text = f"Douleur lombaire, pied tombant: LBP with R foot drop, café. {MARKER}"
    data = _csv([("l1", text), ("l2", GOOD)], encoding="latin-1")
    return Case("notes.csv", {"notes.csv": data}, ["l1", "l2"], args=["--encoding", "latin-1"],
                texts={"l1": text, "l2": GOOD})


def case_cp1252_smart_quotes_with_encoding_option():
    text = f"Pt says \u201cmy back\u201d \u2013 LBP with R foot drop. {MARKER}"
    data = _csv([("w1", text)], encoding="cp1252")
    return Case("notes.csv", {"notes.csv": data}, ["w1"], args=["--encoding", "cp1252"], texts={"w1": text})


def case_undecodable_byte_in_note_id():
    data = _csv([("g1", GOOD)]) + b'"n\xff1","' + GOOD.encode() + b'"\n'
    return Case("notes.csv", {"notes.csv": data}, ["g1"], [(None, "not valid UTF-8")], stderr=["--encoding"])


def case_bom_before_the_header():
    data = codecs.BOM_UTF8 + _csv([("b1", GOOD)])
    return Case("notes.csv", {"notes.csv": data}, ["b1"], texts={"b1": GOOD})


def case_nul_and_control_characters():
    text = f"LBP\0 with\x01\x07\x1b R foot drop\x0b\x0c\x1c\x1d\x1e\x7f\x85\u2028 and fever.\r\rNo trauma. {MARKER}"
    return Case("notes.csv", {"notes.csv": _csv([("c1", text)])}, ["c1"], texts={"c1": text.replace("\0", " ")})


def case_quoted_newlines_commas_and_quotes():
    text = f'LBP x 2 wks,\nR foot drop, "EHL 3/5"\r\nHx: none.\n\n{MARKER}'
    return Case("notes.csv", {"notes.csv": _csv([("q1", text), ("q2", GOOD)])}, ["q1", "q2"],
                texts={"q1": text, "q2": GOOD})


def case_very_long_line():
    text = "word " * 60_000 + f"LBP with R foot drop {MARKER}"  # 300,000 characters, no line break
    return Case("notes.csv", {"notes.csv": _csv([("long", text)])}, ["long"], texts={"long": text})


def case_five_megabyte_note():
    huge = ("LBP with R foot drop and fever. " * 160_000)[:5_000_000]
    return Case("notes.jsonl", {"notes.jsonl": _jsonl([{"note_id": "huge", "text": huge + MARKER},
                                                       {"note_id": "g1", "text": GOOD}])},
                ["g1"], [("huge", "note too long")], texts={"g1": GOOD})


def case_max_chars_option():
    long = "LBP " * 80 + MARKER
    return Case("notes.csv", {"notes.csv": _csv([("long", long), ("g1", GOOD)])}, ["g1"], [("long", "note too long")],
                args=["--max-chars", "100"])


def case_extra_and_reordered_columns():
    rows = [("s1", GOOD, "40-60", "x1", "c"), ("s2", GOOD, "", "x2", "")]
    data = _csv(rows, header="site,text,age_group,note_id,comment")
    return Case("notes.csv", {"notes.csv": data}, ["x1", "x2"], texts={"x1": GOOD, "x2": GOOD})


def case_padded_header_and_old_mac_line_ends():
    rows = [(" p1 ", GOOD), ("p2", "LBP\rR foot drop"), ("p1", GOOD)]  # ids without their spaces: p1 is repeated
    data = _csv(rows, header=" note_id , text ").replace(b"\n", b"\r")
    return Case("notes.csv", {"notes.csv": data}, ["p1", "p2"], [("p1", "duplicate note_id")],
                texts={"p1": GOOD, "p2": "LBP\rR foot drop"})


def case_renamed_columns_mapped():
    data = _csv([("r1", GOOD)], header="NoteKey,Body")
    return Case("notes.csv", {"notes.csv": data}, ["r1"], args=["--id-column", "NoteKey", "--text-column", "Body"],
                texts={"r1": GOOD})


def case_duplicate_note_ids():
    rows = [("d1", GOOD), ("d1", f"second {MARKER}"), ("d2", GOOD), ("d1", f"third {MARKER}")]
    return Case("notes.csv", {"notes.csv": _csv(rows)}, ["d1", "d2"], [("d1", "duplicate note_id")] * 2,
                texts={"d1": GOOD, "d2": GOOD})


def case_missing_note_ids():
    rows = [("", GOOD), ("   ", GOOD), ("m1", GOOD)]
    return Case("notes.csv", {"notes.csv": _csv(rows)}, ["m1"], [(None, "missing note_id")] * 2)


def case_ragged_csv_rows():
    data = _csv([("g1", GOOD)]) + f'"wide","{MARKER}","extra"\n"short"\n'.encode()
    return Case("notes.csv", {"notes.csv": data}, ["g1"], [(None, "malformed CSV row"), ("short", "empty text")])


def case_hostile_jsonl_lines():
    lines = [json.dumps({"note_id": "j1", "text": GOOD}),
             '{"note_id": "j2", "text": "' + MARKER + ' unterminated',
             json.dumps({"note_id": "j3", "text": 123}),
             json.dumps({"note_id": "j4", "text": ["LBP", MARKER]}),
             json.dumps({"note_id": "j5", "text": {"body": MARKER}}),
             json.dumps({"note_id": "j6", "text": True}),
             json.dumps({"note_id": "j7"}),
             json.dumps({"note_id": "j8", "text": None}),
             json.dumps({"text": GOOD}),
             json.dumps({"note_id": {"id": 1}, "text": GOOD}),
             json.dumps([1, 2]), json.dumps("a string"), "null", "42",
             "",  # a blank line is not a record
             '{"note_id": "j9", "text": "LBP with R foot drop \\ud800 ' + MARKER + '"}',
             '{"note_id": "j10", "text": "LBP\\u0000 with R foot drop ' + MARKER + '"}',
             json.dumps({"note_id": 11, "text": GOOD}),
             "   "]
    data = ("\n".join(lines) + "\n").encode() + f'{{"note_id": "j12", "text": "caf\xe9 {MARKER}"}}\n'.encode("latin-1")
    errors = [("j2", "malformed JSON"), ("j3", "text is not a string"), ("j4", "text is not a string"),
              ("j5", "text is not a string"), ("j6", "text is not a string"), ("j7", "missing text"),
              ("j8", "missing text"), (None, "missing note_id"), (None, "note_id is not text or a number"),
              (None, "not a JSON object"), (None, "not a JSON object"), (None, "not a JSON object"),
              (None, "not a JSON object"), ("j9", "not valid Unicode"), ("j12", "not valid UTF-8")]
    return Case("notes.jsonl", {"notes.jsonl": data}, ["j1", "j10", "11"], errors, stderr=["--encoding"],
                texts={"j1": GOOD, "j10": f"LBP  with R foot drop {MARKER}", "11": GOOD})


def case_json_array_instead_of_json_lines():
    data = json.dumps([{"note_id": "a1", "text": GOOD}, {"note_id": "a2", "text": 5}, "not an object",
                       {"note_id": "a3", "text": "   "}], indent=2).encode()
    return Case("notes.json", {"notes.json": data}, ["a1"],
                [("a2", "text is not a string"), (None, "not a JSON object"), ("a3", "empty text")], texts={"a1": GOOD})


def case_pretty_printed_json_object():
    data = json.dumps({"note_id": "solo", "text": GOOD}, indent=2).encode()
    return Case("note.json", {"note.json": data}, ["solo"], texts={"solo": GOOD})


def case_gzipped_jsonl_with_bom():
    data = gzip.compress(codecs.BOM_UTF8 + _jsonl([{"note_id": "z1", "text": GOOD}, {"note_id": "z2", "text": " "}]))
    return Case("notes.jsonl.gz", {"notes.jsonl.gz": data}, ["z1"], [("z2", "empty text")], texts={"z1": GOOD})


def case_gzipped_csv_with_a_bad_byte():
    data = gzip.compress(_csv([("g1", GOOD)]) + b'"g2","LBP \x80 ' + MARKER.encode() + b'"\n')
    return Case("notes.csv.gz", {"notes.csv.gz": data}, ["g1"], [("g2", "not valid UTF-8")], stderr=["--encoding"])


def case_txt_folder():
    bom = f"LBP with R foot drop. {MARKER}"
    files = {"txt/a.txt": GOOD.encode(), "txt/b.txt": f"caf\xe9 LBP {MARKER}".encode("latin-1"), "txt/c.txt": b"",
             "txt/d.txt": codecs.BOM_UTF8 + bom.encode(), "txt/e.txt": f"LBP\0 R foot drop {MARKER}".encode(),
             "txt/ignored.md": b"not a note"}
    return Case("txt", files, ["a", "d", "e"], [("b", "not valid UTF-8"), ("c", "empty text")], stderr=["--encoding"],
                texts={"a": GOOD, "d": bom, "e": f"LBP  R foot drop {MARKER}"})


def case_header_only_csv():
    return Case("notes.csv", {"notes.csv": b"note_id,text\n"}, [], stderr=["no notes in"])


def case_parquet_without_rows():
    buffer = io.BytesIO()
    pd.DataFrame({"note_id": pd.Series([], dtype=str), "text": pd.Series([], dtype=str)}).to_parquet(buffer)
    return Case("notes.parquet", {"notes.parquet": buffer.getvalue()}, [], stderr=["no notes in"])


def case_empty_json_array():
    return Case("notes.json", {"notes.json": b"[]\n"}, [], stderr=["no notes in"])


def case_unparseable_and_missing_dates():
    rows = [("t1", GOOD, "2023-13-45"), ("t2", GOOD, "yesterday"), ("t3", GOOD, ""), ("t4", GOOD, "2023-01-05"),
            ("t5", GOOD, "01/05/2023"), ("t6", GOOD, "2023-01-05T10:30:00")]
    return Case("notes.csv", {"notes.csv": _csv(rows, header="note_id,text,note_date")},
                [r[0] for r in rows], stderr=["3 notes with a note_date that is not a YYYY-MM-DD date"],
                warnings={"note_date not a date": 3}, texts={r[0]: GOOD for r in rows})


ACCOUNTED = [case_blank_texts, case_latin1_bytes_in_utf8_file, case_latin1_file_with_encoding_option,
             case_cp1252_smart_quotes_with_encoding_option, case_undecodable_byte_in_note_id, case_bom_before_the_header,
             case_nul_and_control_characters, case_quoted_newlines_commas_and_quotes, case_very_long_line,
             case_five_megabyte_note, case_max_chars_option, case_extra_and_reordered_columns,
             case_padded_header_and_old_mac_line_ends, case_renamed_columns_mapped, case_duplicate_note_ids, case_missing_note_ids, case_ragged_csv_rows,
             case_hostile_jsonl_lines, case_json_array_instead_of_json_lines, case_pretty_printed_json_object,
             case_gzipped_jsonl_with_bom, case_gzipped_csv_with_a_bad_byte, case_txt_folder,
             case_header_only_csv, case_parquet_without_rows, case_empty_json_array, case_unparseable_and_missing_dates]


def _write(tmp_path: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _summary_counts(stdout: str) -> tuple[int, int, int, Counter]:
    match = SUMMARY.match(stdout.splitlines()[0])
    assert match, stdout.splitlines()[0]
    number = lambda text: int(text.replace(",", ""))
    kinds = Counter()
    for part in (match[4] or "").split(", ") if match[4] else ():
        n, kind = part.split(" ", 1)
        kinds[kind] = number(n)
    return number(match[1]), number(match[2]), number(match[3]), kinds


def _assert_accounted(case: Case, out: Path, stdout: str, stderr: str) -> None:
    notes = pd.read_parquet(out / "notes.parquet")
    errors = pd.read_parquet(out / "errors.parquet")
    manifest_text = (out / "manifest.json").read_text()
    manifest = json.loads(manifest_text)
    total = len(case.notes) + len(case.errors)
    # every record in exactly one place, as built
    assert sorted(notes.note_id) == sorted(case.notes)
    found = [(None if note_id.startswith("row:") else note_id, error_kind(reason))
             for note_id, reason in zip(errors.note_id, errors.reason)]
    assert sorted(found, key=str) == sorted(case.errors, key=str)
    row_ids = [i for i in errors.note_id if i.startswith("row:")]
    assert len(row_ids) == len(set(row_ids))
    assert all(len(reason) < 200 and reason == reason.strip() for reason in errors.reason)
    # the summary line and the manifest say the same
    assert _summary_counts(stdout) == (total, len(case.notes), len(case.errors), Counter(k for _, k in case.errors))
    assert manifest["counts"]["notes_read"] == total
    assert manifest["errors_by_kind"] == dict(Counter(k for _, k in case.errors))
    assert manifest["warnings"] == case.warnings
    # standard error: nothing but the expected warning lines
    lines = stderr.splitlines()
    assert all(line.startswith("lbp-audit: warning: ") for line in lines), stderr
    for expected in case.stderr:
        assert expected in stderr
    if not case.stderr:
        assert stderr == ""
    # no note text outside the result tables
    assert MARKER not in stdout + stderr + manifest_text + "".join(errors.reason) + "".join(errors.note_id)
    # finding offsets index the text as the tool read it
    findings = pd.read_parquet(out / "findings.parquet")
    for row in findings.itertuples():
        if row.note_id in case.texts:
            assert case.texts[row.note_id][row.start:row.end] == row.text


@pytest.mark.parametrize("build", ACCOUNTED, ids=[b.__name__[len("case_"):].replace("_", "-") for b in ACCOUNTED])
def test_hostile_run_accounts_for_every_note(build, tmp_path, capsys):
    case = build()
    _write(tmp_path, case.files)
    started = time.perf_counter()
    status = main(["run", str(tmp_path / case.notes_path), "--out", str(tmp_path / "out"), "--jobs", "1",
                   "--no-progress", *case.args])
    seconds = time.perf_counter() - started
    printed = capsys.readouterr()
    assert status == 0, printed.err
    _assert_accounted(case, tmp_path / "out", printed.out, printed.err)
    assert seconds < 60  # a 5 MB note or a 300,000-character line does not hang the run


def test_hostile_readme_summary_line_is_the_printed_form():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Messy input\n", 1)[1].split("\n## ", 1)[0]
    read, summarised, errors, kinds = _summary_counts(re.search(r"```\n(.+?)\n```", section).group(1))
    assert read == summarised + errors == 2000 and sum(kinds.values()) == errors
    assert set(kinds) <= {kind for build in ACCOUNTED for _, kind in build().errors}


def test_hostile_run_findings_survive_nul_and_encodings(tmp_path, capsys):
    """What the catalogue's cases do not show by counts alone: the text after a NUL and a decoded latin-1
    note are really read (pandas' CSV parser used to cut a field at a NUL)."""
    text = f"LBP\0 x 2 days with R foot drop and saddle anesthesia. {MARKER}"
    (tmp_path / "nul.csv").write_bytes(_csv([("c1", text)]))
    (tmp_path / "latin.csv").write_bytes(_csv([("l1", f"Café worker: LBP with R foot drop. {MARKER}")], encoding="latin-1"))
    for name, args in (("nul.csv", []), ("latin.csv", ["--encoding", "latin-1"])):
        assert main(["run", str(tmp_path / name), "--out", str(tmp_path / name[:-4]), "--jobs", "1", *args]) == 0
    capsys.readouterr()
    nul = pd.read_parquet(tmp_path / "nul" / "notes.parquet").iloc[0]
    assert (nul.FOOT_DROP, nul.SADDLE_ANESTHESIA) == ("present", "present")
    latin = pd.read_parquet(tmp_path / "latin" / "findings.parquet")
    assert "FOOT_DROP" in set(latin.label)


# ---------------------------------------------------------------- unusable inputs: one line, exit 2


def _headerless():
    return _csv([("n2", GOOD)]).split(b"\n", 1)[1].replace(b'"n2"', b"n1")


UNUSABLE = [
    pytest.param({"notes.csv": b""}, "notes.csv", [], "empty file", id="empty-csv"),
    pytest.param({"notes.csv": b"\n  \n\t\n"}, "notes.csv", [], "empty file", id="whitespace-only-csv"),
    pytest.param({"notes.jsonl": b"\n\n  \n"}, "notes.jsonl", [], "empty file", id="blank-lines-jsonl"),
    pytest.param({"notes.jsonl.gz": gzip.compress(b"")}, "notes.jsonl.gz", [], "empty file", id="empty-gzipped-jsonl"),
    pytest.param({"notes.parquet": b""}, "notes.parquet", [], "empty file", id="empty-parquet"),
    pytest.param({"notes.parquet": b"PAR1 not really" * 10}, "notes.parquet", [], "cannot be read as parquet",
                 id="corrupt-parquet"),
    pytest.param({"notes.csv.gz": b"this is not gzip data at all"}, "notes.csv.gz", [], "cannot be read as csv",
                 id="corrupt-gzip"),
    pytest.param({"notes.csv.gz": gzip.compress(_csv([(f"n{i}", "ok") for i in range(5000)]))[:-200]}, "notes.csv.gz",
                 [], "cannot be read as csv (EOFError)", id="truncated-gzip"),
    pytest.param({"notes.csv": "note_id,text\nn1,LBP\n".encode("utf-16")}, "notes.csv", [], "UTF-16",
                 id="utf16-csv"),
    pytest.param({"notes.csv": _headerless()}, "notes.csv", [], "is the header line missing", id="no-header-line"),
    pytest.param({"notes.csv": bytes(range(256)) * 40}, "notes.csv", [], "no 'note_id' or 'text' column",
                 id="binary-file-named-csv"),
    pytest.param({"notes.csv": _csv([("a", GOOD)], header="note_id,body")}, "notes.csv", [],
                 "no 'text' column (columns found: note_id, body); map it with --text-column NAME",
                 id="missing-text-column"),
    pytest.param({"notes.csv": _csv([("a", GOOD)], header="id,body")}, "notes.csv", ["--text-column", "body"],
                 "no 'note_id' column (columns found: id, body); map it with --id-column NAME", id="missing-id-column"),
    pytest.param({"notes.jsonl": _jsonl([{"id": "a", "text": GOOD}])}, "notes.jsonl", [], "no 'note_id' column",
                 id="jsonl-without-note-id"),
    pytest.param({"notes.json": f'[{{"note_id": "a", "text": "{MARKER}"}}, {{"note_id"'.encode()}, "notes.json", [],
                 "malformed JSON document (line 1, column", id="broken-json-array"),
    pytest.param({"notes.csv": f"note_id;text\na;{MARKER}\n".encode()}, "notes.csv", [],
                 "separated by semicolons, not commas", id="semicolon-separated"),
    pytest.param({"notes.csv": f"note_id\ttext\na\t{MARKER}\n".encode()}, "notes.csv", [],
                 "separated by tabs, not commas", id="tab-separated"),
    pytest.param({"notes.csv": _csv([("a", GOOD)]) + f'"b","{MARKER} never closed\nc,LBP\nd,LBP\n'.encode()},
                 "notes.csv", [], "unterminated quoted field starting in record 2", id="unterminated-quote"),
    pytest.param({"notes.xlsx": b"PK\x03\x04 spreadsheet"}, "notes.xlsx", [], "unknown input format '.xlsx' (use .csv",
                 id="unknown-file-type"),
    pytest.param({"notes": _csv([("a", GOOD)])}, "notes", [], "unknown input format (no file extension)",
                 id="no-file-extension"),
    pytest.param({}, "missing.csv", [], "no such file or folder", id="missing-file"),
    pytest.param({"empty/readme.md": b"x"}, "empty", [], "a folder without .txt or .parquet files", id="empty-folder"),
    pytest.param({"notes.csv": _csv([("a", GOOD)])}, "notes.csv", ["--encoding", "utf-16"],
                 "--encoding utf-16: not supported", id="utf16-encoding-option"),
    pytest.param({"notes.csv": _csv([("a", GOOD)])}, "notes.csv", ["--encoding", "klingon"],
                 "--encoding klingon: unknown encoding", id="unknown-encoding-option"),
]


def _assert_one_line_error(status: int, stdout: str, stderr: str, name: str, message: str) -> None:
    """Exit 2, one line on standard error naming the file (or the option at fault) and the problem."""
    assert status == 2
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("lbp-audit: error: ") and "Traceback" not in stderr
    assert message in lines[0]
    assert name in lines[0] or message.startswith("--")
    assert MARKER not in stdout + stderr


@pytest.mark.parametrize("files,name,args,message", UNUSABLE)
def test_hostile_run_unusable_input_is_one_line_error(files, name, args, message, tmp_path, capsys):
    _write(tmp_path, files)
    status = main(["run", str(tmp_path / name), "--out", str(tmp_path / "out"), "--jobs", "1", "--no-progress", *args])
    printed = capsys.readouterr()
    _assert_one_line_error(status, printed.out, printed.err, name, message)
    assert not (tmp_path / "out" / "notes.parquet").exists()
    assert not (tmp_path / "out" / "_parts").exists()  # nothing to resume from an unusable file


def test_hostile_run_output_folder_that_cannot_be_made_is_one_line_error(tmp_path, capsys):
    (tmp_path / "notes.csv").write_bytes(_csv([("a", GOOD)]))
    (tmp_path / "a-file").write_text("")
    status = main(["run", str(tmp_path / "notes.csv"), "--out", str(tmp_path / "a-file" / "out"), "--jobs", "1"])
    printed = capsys.readouterr()
    _assert_one_line_error(status, printed.out, printed.err, "a-file", "Not a directory")


# ---------------------------------------------------------------- orders


NOTES_FOR_ORDERS = [("n1", f"45M LBP x 3 days, R foot drop. {MARKER}", "p1", "2023-03-01", "e1"),
                    ("n2", f"LBP x 2 wks, no red flags. {MARKER}", "p2", "2023-03-01", "e2")]


def _orders_file(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """An orders CSV of hostile rows, and where each order must end: 'audit' or the unmatched reason's start."""
    rows = [("o1", "MRI L-spine w/o", "n1", "", "", "2023-03-02"),
            ("o2", "MRI L-spine w/o", "n404", "", "", "2023-03-02"),
            ("o3", "XR L-spine", "", "", "p404", "2023-03-05"),
            ("o4", "XR L-spine", "", "", "p1", "next tuesday"),
            ("o6", "CT L-spine", "", "e404", "", "2023-03-02"),
            ("o1", "MRI L-spine w/o", "n2", "", "", "2023-03-02"),
            ("", "MRI L-spine w/o", "n1", "", "", "2023-03-02"),
            ("o7", "MRI L-spine w/o", "", "", "", "2023-03-02"),
            ("o8", "XR L-spine 2-3 views", "", "", "p1", "2023-03-05"),
            ("o9", "", "n2", "", "", "2023-03-02")]
    data = _csv(rows, header="order_id,description,note_id,encounter_id,patient_id,order_date,unused")
    data += '"o5","IRM lombaire sans contraste caf\xe9","n1","","","2023-03-02"\n'.encode("latin-1")
    path = tmp_path / "orders.csv"
    path.write_bytes(data)
    where = {"o1": "audit", "o2": "note_id n404 is not among the notes", "o3": "no note of the patient",
             "o4": "order_date is not a YYYY-MM-DD date", "o6": "no note of encounter e404",
             "o1#dup": "duplicate order_id", "row:7": "missing order_id",
             "o7": "no note_id, encounter_id or patient_id to match by", "o8": "audit", "o9": "audit",
             "row:11": "not valid UTF-8 (byte 0xE9 in description"}
    return path, where


def test_hostile_orders_every_order_ends_in_audit_or_unmatched(tmp_path, capsys):
    notes = tmp_path / "notes.csv"
    notes.write_bytes(_csv(NOTES_FOR_ORDERS, header="note_id,text,patient_id,note_date,encounter_id"))
    orders, where = _orders_file(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(notes), "--orders", str(orders), "--out", str(out), "--jobs", "1"]) == 0
    printed = capsys.readouterr()
    audit = pd.read_parquet(out / "audit.parquet")
    unmatched = pd.read_parquet(out / "unmatched_orders.parquet")
    judged = audit.order_id.dropna().tolist()
    assert sorted(judged) == sorted(k for k, v in where.items() if v == "audit")
    reasons = dict(zip(unmatched.order_id, unmatched.reason))
    assert len(unmatched) == len(reasons) == sum(v != "audit" for v in where.values())
    for key, expected in where.items():
        if expected != "audit":
            assert reasons[key.split("#")[0]].startswith(expected), (key, reasons[key.split("#")[0]])
    assert "orders: 11 read, 3 matched to a note, 8 unmatched" in printed.out
    assert "1 orders with an order_date that is not a YYYY-MM-DD date" in printed.err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["warnings"] == {"order_date not a date": 1}
    assert MARKER not in printed.out + printed.err + "".join(unmatched.reason)


@pytest.mark.parametrize("content,message", [
    (b"", "empty file"),
    (_csv([("o1", "MRI", "n1")], header="id,description,note_id"), "no 'order_id' column (columns found: id, "
                                                                   "description, note_id)"),
    (_csv([("o1", "n1")], header="order_id,note_id"), "no 'description' or 'cpt' column"),
    (_csv([("o1", "MRI L-spine")], header="order_id,description"), "no 'note_id', 'encounter_id' or 'patient_id' column"),
], ids=["empty", "no-order-id", "no-description-or-cpt", "nothing-to-match-by"])
def test_hostile_orders_unusable_file_is_one_line_error(content, message, tmp_path, capsys):
    notes = tmp_path / "notes.csv"
    notes.write_bytes(_csv([("n1", GOOD)]))
    (tmp_path / "orders.csv").write_bytes(content)
    status = main(["run", str(notes), "--orders", str(tmp_path / "orders.csv"), "--out", str(tmp_path / "out")])
    printed = capsys.readouterr()
    _assert_one_line_error(status, printed.out, printed.err, "orders.csv", message)


# ---------------------------------------------------------------- explain


@pytest.mark.parametrize("content,args,message", [
    (b"", [], "empty note"),
    (b" \n\t\0\n", [], "empty note"),
    (bytes(range(128, 256)) * 20, [], "not valid UTF-8 (byte 0x80 at offset 0); if it is Windows or Latin-1 text, add "
                                      "--encoding cp1252"),
    (f"LBP caf\xe9 {MARKER}".encode("latin-1"), [], "not valid UTF-8 (byte 0xE9 at offset 7)"),
    (GOOD.encode(), ["--max-chars", "10"], "note too long"),
    (None, [], "cannot be read (Is a directory)"),
], ids=["empty-file", "whitespace-and-nul", "binary", "latin-1", "too-long", "a-folder"])
def test_hostile_explain_bad_file_is_one_line_error(content, args, message, tmp_path, capsys):
    path = tmp_path / "note.txt"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    status = main(["explain", "--file", str(path), *args])
    printed = capsys.readouterr()
    _assert_one_line_error(status, printed.out, printed.err, "note.txt", message)


def test_hostile_explain_empty_standard_input_is_one_line_error(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"  \n")))
    status = main(["explain"])
    printed = capsys.readouterr()
    _assert_one_line_error(status, printed.out, printed.err, "standard input", "empty note")


def test_hostile_explain_reads_latin1_bom_and_nul(tmp_path, capsys):
    (tmp_path / "latin.txt").write_bytes("Café owner with LBP and R foot drop.".encode("latin-1"))
    (tmp_path / "bom.txt").write_bytes(codecs.BOM_UTF8 + b"LBP\0 with R foot drop.")
    assert main(["explain", "--json", "--file", str(tmp_path / "latin.txt"), "--encoding", "latin-1"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["FOOT_DROP"] == "present"
    assert main(["explain", "--json", "--file", str(tmp_path / "bom.txt")]) == 0
    data = json.loads(capsys.readouterr().out)
    text = "LBP  with R foot drop."
    assert data["summary"]["FOOT_DROP"] == "present"
    assert all(text[f["start"]:f["end"]] == f["text"] for f in data["findings"])


# ---------------------------------------------------------------- the real command, as a user runs it


def _command(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CI": "1"}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], input=stdin, capture_output=True,
                          timeout=300, env=env, cwd=Path(__file__).resolve().parents[1])


def test_hostile_command_mixed_archive_with_workers(tmp_path):
    """One archive with most of the catalogue in it, through `lbp-audit run` on two worker processes."""
    huge = "LBP with R foot drop. " * 240_000  # 5.3 MB
    rows = [("g1", GOOD), ("e1", "  "), ("nul", f"LBP\0 R foot drop {MARKER}"), ("d1", GOOD), ("d1", GOOD),
            ("", GOOD), ("huge", huge + MARKER), ("nl", f"LBP,\r\nR foot drop\n{MARKER}"), ("g2", GOOD)]
    rows = [(*row, "", "not a date", "") for row in rows] + NOTES_FOR_ORDERS
    data = (_csv(rows, header="note_id,text,patient_id,note_date,encounter_id")
            + f'"lat","caf\xe9 {MARKER}","","",""\n'.encode("latin-1") + f'"wide","{MARKER}","","","","x"\n'.encode())
    (tmp_path / "notes.csv").write_bytes(data)
    notes_expected = ["g1", "nul", "d1", "nl", "g2", "n1", "n2"]
    errors_expected = [("e1", "empty text"), ("d1", "duplicate note_id"), (None, "missing note_id"),
                       ("huge", "note too long"), ("lat", "not valid UTF-8"), (None, "malformed CSV row")]
    orders, where = _orders_file(tmp_path)
    out = tmp_path / "out"
    started = time.perf_counter()
    result = _command("run", str(tmp_path / "notes.csv"), "--orders", str(orders), "--out", str(out),
                      "--jobs", "2", "--chunk-size", "3")
    assert time.perf_counter() - started < 120
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0 and "Traceback" not in stderr, stderr
    case = Case("notes.csv", {}, notes_expected, errors_expected, stderr=["--encoding cp1252"],
                warnings={"order_date not a date": 1, "note_date not a date": 5},
                texts={"nul": f"LBP  R foot drop {MARKER}", "nl": f"LBP,\r\nR foot drop\n{MARKER}", "g1": GOOD})
    _assert_accounted(case, out, stdout, stderr)
    unmatched = pd.read_parquet(out / "unmatched_orders.parquet")
    assert len(unmatched) == sum(v != "audit" for v in where.values())
    assert MARKER not in "".join(unmatched.reason)


@pytest.mark.parametrize("args,name,message", [
    (["run", "{tmp}/notes.csv", "--out", "{tmp}/out"], "notes.csv", "is the header line missing"),
    (["explain", "--file", "{tmp}/binary.txt"], "binary.txt", "not valid UTF-8"),
    (["explain", "-"], "standard input", "not valid UTF-8"),
], ids=["run-headerless-csv", "explain-binary-file", "explain-binary-stdin"])
def test_hostile_command_unusable_input_is_one_line_without_traceback(args, name, message, tmp_path):
    (tmp_path / "notes.csv").write_bytes(f"n1,{MARKER} LBP with foot drop\nn2,{MARKER} fever\n".encode())
    binary = bytes(range(256)) * 64 + MARKER.encode()
    (tmp_path / "binary.txt").write_bytes(binary)
    result = _command(*(a.format(tmp=tmp_path) for a in args), stdin=binary)
    _assert_one_line_error(result.returncode, result.stdout.decode(), result.stderr.decode(), name, message)
