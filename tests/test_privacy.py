"""Privacy: note text never leaves the result tables; --no-text keeps it out of every file; no network;
output files readable by the owner only.

Two markers are planted in every note: PLAIN in plain text (next to findings, never inside one), which
no file may ever hold, tables included; SPAN inside matched mentions ("quadSPAN weakness", "pain radiates
SPAN down the left leg"), which the findings, notes and audit tables quote as evidence (the positive
control) and nothing else may hold, and with --no-text no file at all.
"""
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.batch import run
from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
PLAIN = "Qqplainmarkerqq"
SPAN = "qqspanmarkerqq"
MARKERS = (PLAIN, SPAN)
EVIDENCE_TABLES = ("findings", "notes", "audit")  # the tables that quote a note's words
EVIDENCE_PARTS = ("findings", "notes", "missed", "refs", "judged", "merge")  # their pieces in DIR/_parts


def _marked(text: str, n: int) -> str:
    """`text` with both markers, SPAN in the first weakness mention (so the rationales quote it)."""
    return (f"{PLAIN} New quad{SPAN} weakness {PLAIN}. {text} {PLAIN}\nPain radiates {SPAN} down the left leg "
            f"({PLAIN} {n}). R foot drop {PLAIN}, denies {PLAIN} saddle anesthesia.")


def _notes() -> list[dict]:
    """The sample notes with both markers, and records that go to errors, each carrying the markers."""
    sample = pd.read_csv(ROOT / "samples" / "notes.csv", dtype=str)
    rows = [{**row, "text": _marked(row["text"], n)} for n, row in enumerate(sample.to_dict(orient="records"))]
    rows += [
        {"note_id": "s-001", "text": _marked("a second note with the id of the first", 90)},  # duplicate id
        {"note_id": "", "text": _marked("no id", 91)},
        {"note_id": "long-1", "text": "x" * 300_000 + _marked("one very long word before", 92)},
        {"note_id": "long-2", "text": _marked("LBP. " * 1_000, 93)},
    ]
    return rows


def _write_notes(folder: Path, kind: str) -> Path:
    rows = _notes()
    if kind == "csv":
        path = folder / "notes.csv"
        pd.DataFrame(rows).to_csv(path, index=False)
        with open(path, "a", encoding="utf-8") as f:  # a row with too many fields
            f.write(f'bad-1,P9,2024-01-01,E9,"{_marked("too many fields", 94)}",{PLAIN},{SPAN}\n')
        return path
    path = folder / "notes.jsonl"
    lines = [json.dumps(row) for row in rows]
    lines += ['{"note_id": "broken-1", "text": "' + _marked("unterminated", 95).replace("\n", " "),
              json.dumps([PLAIN, SPAN]),
              json.dumps({"note_id": "list-1", "text": [PLAIN, SPAN]})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _strings(path: Path) -> str:
    """Everything a file holds as text: its bytes, and for Parquet (compressed) every value it decodes to."""
    data = path.read_bytes()
    text = data.decode("utf-8", "replace")
    if data[:4] == b"PAR1":
        table = pq.read_table(path)
        text += "\n".join(str(value) for column in table.columns for value in column.to_pylist())
    return text


def _evidence_file(path: Path, out: Path) -> bool:
    """A result table that quotes note words, or a part of one in DIR/_parts."""
    relative = path.relative_to(out).parts if path.is_relative_to(out) else ()
    if len(relative) == 1:
        return path.stem in EVIDENCE_TABLES and path.suffix in (".parquet", ".csv")
    return len(relative) == 3 and relative[0] == "_parts" and relative[1] in EVIDENCE_PARTS


def _run_cli(args: list[str], sandbox: Path) -> subprocess.CompletedProcess:
    """The real command in a subprocess whose home, temporary folder and working folder are in `sandbox`."""
    env = {**os.environ, "HOME": str(sandbox / "home"), "TMPDIR": str(sandbox / "tmp"), "CI": "1",
           "PYTHONPATH": str(ROOT)}
    env.pop("XDG_CACHE_HOME", None)
    for name in ("home", "tmp", "cwd"):
        (sandbox / name).mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=sandbox / "cwd", env=env,
                          capture_output=True, timeout=300)


RUNS = [("csv", "parquet", "2"), ("jsonl", "csv", "1")]


@pytest.mark.parametrize("no_text", [False, True], ids=["with-text", "no-text"])
@pytest.mark.parametrize("kind,fmt,jobs", RUNS, ids=["csv-in-parquet-out-jobs2", "jsonl-in-csv-out-jobs1"])
def test_privacy_markers_never_leave_the_result_tables(tmp_path, kind, fmt, jobs, no_text):
    inputs = tmp_path / "in"
    inputs.mkdir()
    notes = _write_notes(inputs, kind)
    sandbox = tmp_path / "sandbox"
    out = sandbox / "out"
    args = [str(notes), "--orders", str(ROOT / "samples" / "orders.csv"), "--out", str(out), "--format", fmt,
            "--jobs", jobs, "--chunk-size", "3", "--keep-parts", *(["--no-text"] if no_text else [])]
    result = _run_cli(["run", *args], sandbox)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["no_text"] is no_text
    errors = pd.read_csv(out / "errors.csv", dtype=str) if fmt == "csv" else pd.read_parquet(out / "errors.parquet")
    assert len(errors) >= 3 and manifest["counts"]["notes_written"] >= 8
    written = [p for p in sandbox.rglob("*") if p.is_file()]
    assert (out / "_parts" / "run.json") in written and len(list((out / "_parts" / "done").glob("*.json"))) >= 4
    streams = {"stdout": result.stdout.decode(), "stderr": result.stderr.decode()}
    assert "notes read" in streams["stdout"]
    leaks = [(name, marker) for name, text in streams.items() for marker in MARKERS if marker.lower() in text.lower()]
    quoted = set()
    for path in written:
        text = _strings(path).lower()
        for marker in MARKERS:
            if marker.lower() not in text:
                continue
            if marker == SPAN and not no_text and _evidence_file(path, out):
                quoted.add(path.stem if path.parent == out else path.parent.name)
            else:
                leaks.append((str(path.relative_to(sandbox)), marker))
    assert leaks == []
    # the positive control: the same search finds SPAN where the tables quote it (and only without --no-text)
    assert quoted == (set() if no_text else {*EVIDENCE_TABLES, *EVIDENCE_PARTS} - {"merge"}), quoted
    if no_text:
        findings = pd.read_csv(out / "findings.csv") if fmt == "csv" else pd.read_parquet(out / "findings.parquet")
        assert "text" not in findings.columns and "cue" not in findings.columns and len(findings) > 0


def test_privacy_no_snippets_is_the_old_name_of_no_text(tmp_path, capsys):
    notes = _write_notes(tmp_path, "jsonl")
    assert main(["run", str(notes), "--out", str(tmp_path / "out"), "--jobs", "1", "--no-snippets"]) == 0
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["no_text"] is True
    assert "--no-snippets" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    usage = capsys.readouterr().out
    assert "--no-text" in usage and "--no-snippets" not in usage


def test_privacy_omop_note_nlp_without_text(tmp_path, extractor):
    pytest.importorskip("pipeline.omop")
    notes = tmp_path / "notes.csv"
    pd.DataFrame([{"note_id": str(i), "text": _marked("LBP x 3 days", i)} for i in range(1, 4)]).to_csv(notes,
                                                                                                   index=False)
    run(notes, tmp_path / "out", extractor=extractor, omop=True, snippets=False)
    note_nlp = pd.read_parquet(tmp_path / "out" / "note_nlp.parquet")
    assert len(note_nlp) > 0 and note_nlp.snippet.isna().all()
    assert set(note_nlp.lexical_variant) <= set(pd.read_parquet(tmp_path / "out" / "findings.parquet").label)
    for path in (tmp_path / "out").iterdir():
        assert not any(m.lower() in _strings(path).lower() for m in MARKERS), path.name


def test_privacy_to_sql_copies_without_text(tmp_path, extractor):
    duckdb = pytest.importorskip("duckdb")
    notes = _write_notes(tmp_path, "csv")
    database = tmp_path / "lbp.duckdb"
    manifest = run(notes, tmp_path / "out", orders_path=ROOT / "samples" / "orders.csv", extractor=extractor,
                   snippets=False, to_sql=f"duckdb:///{database}")
    con = duckdb.connect(str(database), read_only=True)
    try:
        for table in manifest["database"].values():
            rows = con.execute(f"SELECT * FROM {table}").fetchall()
            values = " ".join(str(value) for row in rows for value in row).lower()
            assert PLAIN.lower() not in values and SPAN.lower() not in values, table
    finally:
        con.close()
    assert set(manifest["database"]) >= {"findings", "notes", "audit"}


# ---------------------------------------------------------------- exception paths


class _Breaks:
    """An extractor that fails on every note with an exception quoting the note (as a careless library would)."""

    def __init__(self, extractor):
        self.rules = extractor.rules

    def pipe(self, pairs):
        for _, text in pairs:
            raise ValueError(f"cannot parse {text!r}")
        yield  # a generator


def test_privacy_a_note_that_breaks_extraction_leaves_its_text_out_of_the_reason(tmp_path, extractor, capsys):
    notes = _write_notes(tmp_path, "csv")
    run(notes, tmp_path / "out", extractor=_Breaks(extractor), jobs=1, chunk_size=4)
    errors = pd.read_parquet(tmp_path / "out" / "errors.parquet")
    assert "extraction failed (ValueError)" in set(errors.reason)
    printed = capsys.readouterr()
    for text in (errors.to_csv(), (tmp_path / "out" / "manifest.json").read_text(), printed.out, printed.err):
        assert PLAIN not in text and SPAN not in text


@pytest.mark.parametrize("jobs", ["1", "2"], ids=["in-process", "worker-process"])
def test_privacy_an_unexpected_error_is_one_line_without_its_message(tmp_path, monkeypatch, capsys, jobs):
    import pipeline.batch

    def broken(*args, **kwargs):
        raise ValueError(f"cannot summarise {PLAIN} {SPAN}")

    monkeypatch.setattr(pipeline.batch, "note_audit_fields", broken)  # forked workers inherit it
    monkeypatch.setenv("LBP_START_METHOD", "fork")
    notes = _write_notes(tmp_path, "csv")
    args = ["run", str(notes), "--out", str(tmp_path / "out"), "--jobs", jobs, "--chunk-size", "4"]
    assert main(args) == 1
    printed = capsys.readouterr()
    assert printed.err.startswith("lbp-audit: internal error: ValueError in pipeline/batch.py:")
    assert "--debug" in printed.err and len(printed.err.splitlines()) == 1
    assert PLAIN not in printed.out + printed.err and SPAN not in printed.out + printed.err
    with pytest.raises(ValueError, match=PLAIN):  # --debug: the user asked to see it
        main(["--debug", *args])


def _explain_failing(monkeypatch):
    import pipeline.explain

    def broken(*args, **kwargs):
        raise KeyError(f"{PLAIN} {SPAN}")

    monkeypatch.setattr(pipeline.explain, "assess", broken)


@pytest.mark.parametrize("case", ["not-utf8-file", "bad-date", "unknown-edition", "missing-file", "internal-error"])
def test_privacy_explain_error_paths_do_not_echo_the_text(tmp_path, monkeypatch, capsys, extractor, case):
    monkeypatch.setattr("pipeline.cli._extractor", lambda args: extractor)  # the session's: no rebuild
    note = f"LBP, pain radiates {SPAN} down the leg. {PLAIN}"
    args = ["explain", note]
    if case == "not-utf8-file":
        path = tmp_path / "note.txt"
        path.write_bytes(b"\xff\xfe" + note.encode() + b"\x80")
        args = ["explain", "--file", str(path)]
    elif case == "bad-date":
        args += ["--date", PLAIN]
    elif case == "unknown-edition":
        args += ["--edition", "ACR-1999"]
    elif case == "missing-file":
        args = ["explain", "--file", str(tmp_path / "gone.txt")]
    else:
        _explain_failing(monkeypatch)
    status = main(args)
    printed = capsys.readouterr()
    assert status in (1, 2) and printed.err.startswith("lbp-audit: ") and "Traceback" not in printed.err
    assert printed.out == ""
    assert SPAN not in printed.err and (PLAIN not in printed.err or case == "bad-date")  # the user's own --date


def test_privacy_explain_shows_the_evidence_it_was_asked_for(capsys, monkeypatch, extractor):
    monkeypatch.setattr("pipeline.cli._extractor", lambda args: extractor)
    assert main(["explain", f"LBP, pain radiates {SPAN} down the left leg. {PLAIN}"]) == 0
    shown = capsys.readouterr().out
    assert SPAN in shown and PLAIN not in shown  # the matched words, never the whole text


# ---------------------------------------------------------------- no network


def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    try:
        return subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _unshare_works(), reason="unshare -rn (a user + network namespace) is not available here")
def test_privacy_run_and_explain_work_with_networking_blocked(tmp_path):
    def offline(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["unshare", "-rn", sys.executable, *command], cwd=ROOT, capture_output=True,
                              text=True, timeout=300, env={**os.environ, "CI": "1", "PYTHONPATH": str(ROOT)})

    probe = offline("-c", "import socket; socket.create_connection(('127.0.0.1', 9), timeout=2)")
    assert probe.returncode != 0 and ("unreachable" in probe.stderr or "refused" in probe.stderr), probe.stderr
    done = offline("-m", "pipeline.cli", "run", "samples/notes.csv", "--orders", "samples/orders.csv",
                   "--out", str(tmp_path / "out"), "--jobs", "2", "--chunk-size", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    assert pd.read_parquet(tmp_path / "out" / "audit.parquet").verdict.notna().all()
    explained = offline("-m", "pipeline.cli", "explain", "LBP x2wks, R foot drop", "--order", "MRI L-spine w/o")
    assert explained.returncode == 0 and "FOOT_DROP" in explained.stdout, explained.stderr[-2000:]


@pytest.fixture
def no_network(monkeypatch):
    """Every way out of this process refused, and recorded."""
    attempts = []

    def refuse(name):
        def refused(*args, **kwargs):
            attempts.append(name)
            raise OSError(f"network blocked by the test ({name})")
        return refused

    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family == socket.AF_UNIX:
            return real_connect(sock, address)
        return refuse("connect")()

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", lambda sock, address: refuse("connect_ex")())
    monkeypatch.setattr(socket.socket, "sendto", lambda sock, *args: refuse("sendto")())
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "gethostbyname", refuse("gethostbyname"))
    return attempts


def test_privacy_no_connection_is_attempted_in_process(tmp_path, no_network, capsys):
    with pytest.raises(OSError):  # the guard works
        socket.create_connection(("127.0.0.1", 9))
    no_network.clear()
    notes = _write_notes(tmp_path, "csv")
    assert main(["run", str(notes), "--orders", str(ROOT / "samples" / "orders.csv"), "--out", str(tmp_path / "out"),
                 "--jobs", "1", "--format", "csv"]) == 0
    assert main(["explain", "LBP x2wks, R foot drop", "--order", "MRI L-spine w/o"]) == 0
    assert no_network == []


# ---------------------------------------------------------------- file modes


def _modes(folder: Path) -> dict[str, set]:
    modes = {"files": set(), "folders": {stat.S_IMODE(folder.stat().st_mode)}}
    for path in folder.rglob("*"):
        modes["folders" if path.is_dir() else "files"].add(stat.S_IMODE(path.stat().st_mode))
    return modes


@pytest.mark.parametrize("umask,shared,file_mode,folder_mode", [
    (0o022, False, 0o600, 0o700),
    (0o002, False, 0o600, 0o700),
    (0o077, False, 0o600, 0o700),
    (0o022, True, 0o644, 0o755),
    (0o027, True, 0o640, 0o750),
], ids=["umask-022", "umask-002", "umask-077", "shared-umask-022", "shared-umask-027"])
def test_privacy_output_files_are_the_owners_unless_shared(tmp_path, umask, shared, file_mode, folder_mode):
    pytest.importorskip("duckdb")
    out = tmp_path / "new" / "out"
    database = tmp_path / "db" / "lbp.duckdb"
    database.parent.mkdir()
    args = ["run", str(ROOT / "samples" / "notes.csv"), "--orders", str(ROOT / "samples" / "orders.csv"),
            "--out", str(out), "--jobs", "2", "--chunk-size", "3", "--keep-parts",
            "--to-sql", f"duckdb:///{database}", *(["--shared-output"] if shared else [])]
    old = os.umask(umask)
    try:
        assert main(args) == 0
        assert os.umask(umask) == umask  # the run gave the user's umask back
    finally:
        os.umask(old)
    modes = _modes(tmp_path / "new")
    assert modes == {"files": {file_mode}, "folders": {folder_mode}}, {k: sorted(map(oct, v)) for k, v in modes.items()}
    assert len(list(out.rglob("*.parquet"))) >= 10 and (out / "_parts" / "done").is_dir()
    assert {stat.S_IMODE(p.stat().st_mode) for p in database.parent.iterdir()} == {file_mode}
