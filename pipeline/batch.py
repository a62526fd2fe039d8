"""The batch job: notes in, findings / notes / errors / audit tables and a manifest out.

A thin shell around per-note extraction that streams: the main process reads and validates records
and cuts them into numbered chunks of `chunk_size` input records (boundaries depend only on the
input); `process_chunk` turns one chunk into its rows (the same function for every engine); each chunk's
rows are written as parts under DIR/_parts and its completion recorded, so an interrupted run resumes
from the last completed chunk; at the end the parts are published, in chunk order, as the final tables.
Every input note ends in the notes table or in the errors table with a reason, and no note text ever
reaches an error message.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import json
import os
import re
import resource
import shutil
import sys
import time
from array import array
from collections import Counter, deque
from dataclasses import dataclass, field, fields
from functools import lru_cache, wraps
from pathlib import Path
from typing import Callable, Iterable, Iterator

from . import __version__
from .audit import (AUDIT_FIELDS, DEFAULT_WINDOW_DAYS, UNMATCHED_FIELDS, LinkKeys, NoteRef, Order, OrderMatcher,
                    missed_row, needs_imaging, note_rationale, parse_date, text_or_none)
from .findings import FINDING_FIELDS, Finding
from .provenance import environment, file_sha256, input_content
from .scenarios import Edition, Recommendation, choose_edition, recommend
from .sources import READ_ERROR
from .summary import SUMMARY_FIELDS, evidence_by_label
from .tables import (PASSTHROUGH_NOTE_COLUMNS, InputError, TableWriter, UsageError, arrow_schema, private_files,
                     read_parts, to_arrow, write_json, write_part)

AUDIT_NOTE_FIELDS = ("scenarios", "urgency", "recommended", "rationale", "edition")
ERROR_FIELDS = ("note_id", "reason")
TEXT_FIELDS = ("text", "cue")
DEFAULT_CHUNK_SIZE = 500
DEFAULT_MAX_CHARS = 1_000_000  # longer notes go to errors (a 1M-character note takes ~20 s and ~350 MB)
PARTS = "_parts"
NOTE_COLUMNS = ("note_id", "text", *PASSTHROUGH_NOTE_COLUMNS)  # what a chunk carries of each record
_SUMMARY_TYPES = {"age": "int", "duration_days": "int", "bilateral_deficit": "bool", "progressive_deficit": "bool",
                  "in_scope": "bool"}
NOTE_TABLE_FIELDS = (*SUMMARY_FIELDS, *PASSTHROUGH_NOTE_COLUMNS, *AUDIT_NOTE_FIELDS)
REFS_FIELDS = ("ref",)  # _parts/refs: one NoteRef as JSON a row


def _finding_types() -> dict[str, str]:
    """The column type of each field of the finding record, from the `Finding` dataclass."""
    types = {}
    for f in fields(Finding):
        kind = str(f.type)
        types[f.name] = "bool" if "bool" in kind else "int" if "int" in kind else "float" if "float" in kind else "str"
    return types


def table_schemas(snippets: bool = True) -> dict:
    """The Arrow schema of every table (parts and published tables)."""
    finding_fields = tuple(f for f in FINDING_FIELDS if snippets or f not in TEXT_FIELDS)
    return {
        "findings": arrow_schema(finding_fields, _finding_types()),
        "notes": arrow_schema(NOTE_TABLE_FIELDS, _SUMMARY_TYPES),
        "errors": arrow_schema(ERROR_FIELDS),
        "missed": arrow_schema(AUDIT_FIELDS),
        "audit": arrow_schema(AUDIT_FIELDS),
        "unmatched_orders": arrow_schema(UNMATCHED_FIELDS),
    }


class RunError(RuntimeError):
    """The run stopped (a worker process died, ...); the chunks completed so far are kept for --resume."""


# ---------------------------------------------------------------- validation and chunks


def note_key(note_id) -> str | None:
    """A record's note id as the text it is known by, without surrounding spaces (as orders refer to it);
    None when missing or blank."""
    return None if note_id is None or str(note_id).strip() == "" else str(note_id).strip()


def check_note(record: dict, row: int, repeated: Callable[[str], bool]) -> tuple[dict | None, dict | None]:
    """The validation of one record, the `row`-th of the input (1-based), whose id was seen before when
    `repeated(note_id)` (asked only of a record with an id and no reader's error): a reader's error, missing id,
    duplicate id, missing / non-string / empty text. Returns (note, None) or (None, error row). A NUL in the
    text becomes a space (as the CSV reader reads it; one for one, so offsets are unchanged)."""
    if isinstance(record.get("note_id"), (dict, list, tuple, bool, bytes)):
        return None, {"note_id": f"row:{row}",
                      "reason": f"note_id is not text or a number ({type(record['note_id']).__name__})"}
    note_id = note_key(record.get("note_id"))
    if record.get(READ_ERROR):
        return None, {"note_id": note_id or f"row:{row}", "reason": record[READ_ERROR]}
    if note_id is None:
        return None, {"note_id": f"row:{row}", "reason": "missing note_id"}
    if repeated(note_id):
        return None, {"note_id": note_id, "reason": "duplicate note_id (first occurrence kept)"}
    text = record.get("text")
    if not isinstance(text, str):
        reason = "missing text" if text is None else f"text is not a string ({type(text).__name__})"
        return None, {"note_id": note_id, "reason": reason}
    text = text.replace("\0", " ")
    if not text.strip():
        return None, {"note_id": note_id, "reason": "empty text"}
    return {**record, "note_id": note_id, "text": text}, None


class HashSet:
    """8-byte hashes in an open-addressing table (linear probing) of unsigned 64-bit integers: 12 to 24
    bytes an entry where a set of Python ints takes about 60. `add` says whether the hash was new."""

    def __init__(self, capacity: int = 1 << 12):
        self._table = array("Q", bytes(8 * capacity))
        self._count = 0

    def add(self, key: int) -> bool:
        key = key or 1  # 0 marks an empty slot
        table = self._table
        mask = len(table) - 1
        i = key & mask
        while True:
            current = table[i]
            if current == key:
                return False
            if not current:
                break
            i = (i + 1) & mask
        table[i] = key
        self._count += 1
        if 3 * self._count > 2 * len(table):
            self._grow()
        return True

    def _grow(self) -> None:
        old, self._table, self._count = self._table, array("Q", bytes(16 * len(self._table))), 0
        for key in old:
            if key:
                self.add(key)

    def __len__(self) -> int:
        return self._count


class NoteValidator:
    """Checks records one by one with `check_note`, remembering an 8-byte hash of each id seen (not the id).
    `check` returns (note, None) or (None, error row)."""

    def __init__(self):
        self._seen = HashSet()
        self.rows = 0

    def check(self, record: dict) -> tuple[dict | None, dict | None]:
        self.rows += 1
        return check_note(record, self.rows, self._repeated)

    def _repeated(self, note_id: str) -> bool:
        key = int.from_bytes(hashlib.blake2b(note_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")
        return not self._seen.add(key)


@dataclass
class Chunk:
    """`rows` consecutive input records from row `first_row` (0-based): the valid notes (with their
    global position `seq`) and the error rows of the others, each with its position."""

    index: int
    first_row: int
    rows: int = 0
    notes: list[dict] = field(default_factory=list)
    errors: list[tuple[int, dict]] = field(default_factory=list)

    def add(self, position: int, note: dict | None, error: dict | None) -> None:
        """One checked input record at `position`: a note (its NOTE_COLUMNS and seq) or an error row."""
        if error is not None:
            self.errors.append((position, error))
        else:
            self.notes.append({**{k: note.get(k) for k in NOTE_COLUMNS}, "seq": position})
        self.rows += 1


def chunks_of(records: Iterable[dict], chunk_size: int, validator: NoteValidator | None = None) -> Iterator[Chunk]:
    """Validated records grouped every `chunk_size` input records into chunks numbered 0, 1, 2, …"""
    validator = validator or NoteValidator()
    chunk = Chunk(0, 0)
    for position, record in enumerate(records):
        chunk.add(position, *validator.check(record))
        if chunk.rows == chunk_size:
            yield chunk
            chunk = Chunk(chunk.index + 1, position + 1)
    if chunk.rows:
        yield chunk


# ---------------------------------------------------------------- one chunk


@dataclass(frozen=True)
class ChunkSettings:
    """What processing a chunk needs besides the chunk: picklable (no Extractor, no spaCy objects), so a
    worker process builds its own Extractor from it once."""

    rules_dir: str | None = None
    rules_digest: str | None = None
    snippets: bool = True
    edition: str | None = None
    links: LinkKeys | None = None  # None: no orders, so no audit rows
    max_chars: int = DEFAULT_MAX_CHARS  # a longer note goes to errors (--max-chars)


@dataclass
class ChunkOutput:
    """A chunk's rows: findings, notes, errors, the missed_imaging audit rows of notes no order can link to
    (sorted by note_id), and the `NoteRef`s of notes an order could link to."""

    index: int
    rows: int
    findings: list[dict]
    notes: list[dict]
    errors: list[dict]
    missed: list[dict]
    refs: list[NoteRef]
    editions: Counter
    pipeline: str | None = None
    warnings: Counter = field(default_factory=Counter)  # notes processed despite a problem, by kind


@lru_cache(maxsize=2)
def cached_extractor(rules_dir: str | None, rules_digest: str | None):
    """One Extractor per process and rule set (built on first use)."""
    from .extract import Extractor

    extractor = Extractor(rules_dir=rules_dir)
    if rules_digest and extractor.rules.digest != rules_digest:
        raise RuntimeError(f"the rules in this process ({extractor.rules.digest}) are not the run's ({rules_digest})")
    return extractor


def process_chunk(chunk: Chunk, settings: ChunkSettings, extractor=None,
                  on_note: Callable[[], None] | None = None) -> ChunkOutput:
    """Extract, summarise and (with orders) pre-audit every note of one chunk. Pure but for the cached
    Extractor: no files, no global state; the same for every engine."""
    extractor = extractor or cached_extractor(settings.rules_dir, settings.rules_digest)
    editions = extractor.rules.editions
    too_long = {note["seq"]: f"note too long ({len(note['text']):,} characters; the limit is "
                             f"{settings.max_chars:,}: raise it with --max-chars)"
                for note in chunk.notes if len(note["text"]) > settings.max_chars}
    nlp = getattr(extractor, "nlp", None)
    if too_long and on_note:
        for _ in too_long:
            on_note()
    if nlp is not None and nlp.max_length < settings.max_chars:  # spaCy's own limit (1,000,000) follows ours
        nlp.max_length = settings.max_chars
    results, failures = _extract(extractor, [n for n in chunk.notes if n["seq"] not in too_long], on_note)
    failures.update(too_long)
    findings, notes, missed, refs = [], [], [], []
    errors = list(chunk.errors)
    editions_used: Counter = Counter()
    warnings: Counter = Counter()
    for note in chunk.notes:
        result = results.get(note["seq"])
        if result is None:
            errors.append((note["seq"], {"note_id": note["note_id"], "reason": failures[note["seq"]]}))
            continue
        rows = [f.as_row() for f in result.findings]
        if not settings.snippets:
            rows = [{k: v for k, v in row.items() if k not in TEXT_FIELDS} for row in rows]
        findings.extend(rows)
        extra = {k: note.get(k) for k in PASSTHROUGH_NOTE_COLUMNS}
        evidence = evidence_by_label(result.findings) if settings.snippets else None
        fields, recommendation, note_edition = note_audit_fields(result, extra, editions, settings.edition,
                                                                 evidence=evidence)
        notes.append({**result.summary, **extra, **fields})
        if text_or_none(extra.get("note_date")) and parse_date(extra.get("note_date")) is None:
            warnings["note_date not a date"] += 1
        if fields["edition"]:
            editions_used[fields["edition"]] += 1
        if settings.links is None or recommendation is None:
            continue
        ref = NoteRef(result.note_id, result.summary, text_or_none(extra.get("patient_id")),
                      text_or_none(extra.get("encounter_id")), parse_date(extra.get("note_date")), evidence,
                      note["seq"])
        if settings.links.links(ref):
            refs.append(ref)  # an order may match it: judged once every note is read
        elif needs_imaging(recommendation):
            missed.append(missed_row(ref, recommendation, note_edition))
    errors.sort(key=lambda pair: pair[0])
    missed.sort(key=lambda row: row["note_id"])
    meta = getattr(getattr(extractor, "nlp", None), "meta", None) or {}
    return ChunkOutput(chunk.index, chunk.rows, findings, notes, [row for _, row in errors], missed, refs,
                       editions_used, meta.get("lbp_pipeline"), warnings)


def _extract(extractor, notes: list[dict], on_note=None) -> tuple[dict, dict]:
    """{seq: NoteResult} for the notes that could be processed, {seq: reason} for the others. One note that
    breaks the pipeline is retried alone, so it cannot take its chunk down with it."""
    results, failures = {}, {}
    remaining = list(notes)
    while remaining:
        try:
            for note, result in zip(remaining, extractor.pipe((n["note_id"], n["text"]) for n in remaining)):
                results[note["seq"]] = result
                if on_note:
                    on_note()
            return results, failures
        except Exception:  # noqa: BLE001 - find the note that failed, never report its text
            remaining = [n for n in remaining if n["seq"] not in results]
            bad = remaining.pop(0)
            try:
                results[bad["seq"]] = next(iter(extractor.pipe([(bad["note_id"], bad["text"])])))
            except Exception as err:  # noqa: BLE001
                failures[bad["seq"]] = f"extraction failed ({type(err).__name__})"
            if on_note:
                on_note()
    return results, failures


def note_audit_fields(result, extra: dict, editions, forced_edition=None, parameters=None,
                      evidence: dict | None = None) -> tuple[dict, Recommendation | None, Edition | None]:
    """The notes table's scenarios / urgency / recommended / rationale / edition columns for one note."""
    if not editions:
        return dict.fromkeys(AUDIT_NOTE_FIELDS), None, None
    edition = choose_edition(editions, parse_date(extra.get("note_date")), forced_edition)
    recommendation = recommend(result.summary, edition, parameters)
    return {
        "scenarios": ";".join(recommendation.scenario_ids),
        "urgency": recommendation.urgency if recommendation.in_scope else None,
        "recommended": ";".join(recommendation.usually_appropriate),
        "rationale": note_rationale(recommendation, edition, evidence),
        "edition": edition.id,
    }, recommendation, edition


# ---------------------------------------------------------------- parts on disk


class Parts:
    """DIR/_parts: run.json (the run's fingerprint), <table>/part-<chunk>.parquet, done/<chunk>.json.

    A done marker's NoteRefs quote their notes' evidence, so they go to refs/part-<chunk>.parquet beside the
    tables' parts: no JSON file of a run (run.json, the markers, the manifest) ever holds note text."""

    def __init__(self, out_dir: Path):
        self.root = out_dir / PARTS

    def part(self, table: str, index: int) -> Path:
        return self.root / table / f"part-{index:06d}.parquet"

    def marker(self, index: int) -> Path:
        return self.root / "done" / f"{index:06d}.json"

    def load_done(self, index: int) -> dict | None:
        try:
            done = json.loads(self.marker(index).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        if "refs" not in done:
            refs = next(read_parts([self.part("refs", index)])).column("ref").to_pylist()
            done["refs"] = [json.loads(ref) for ref in refs]
        return done

    def notes_at(self, handles: list[int]) -> Iterator[tuple[int, NoteRef]]:
        """(handle, NoteRef) for handles `chunk << 32 | position` into the chunks' refs parts, a part at a time."""
        by_chunk: dict[int, list[int]] = {}
        for handle in handles:
            by_chunk.setdefault(handle >> 32, []).append(handle)
        for chunk in sorted(by_chunk):
            refs = next(read_parts([self.part("refs", chunk)])).column("ref")
            for handle in by_chunk.pop(chunk):
                yield handle, NoteRef.from_json(json.loads(refs[handle & 0xFFFFFFFF].as_py()))

    def save_done(self, done: dict) -> None:
        """A chunk's done marker (written last: a marker means every part is there), its refs as a part."""
        write_part(to_arrow([{"ref": json.dumps(ref)} for ref in done["refs"]], arrow_schema(REFS_FIELDS)),
                   self.part("refs", done["chunk"]))
        write_json({k: v for k, v in done.items() if k != "refs"}, self.marker(done["chunk"]))

    def write(self, output: ChunkOutput, schemas: dict, seconds: float) -> dict:
        """Write a chunk's parts, then its done marker (last, so a marker means every part is there)."""
        tables = {"findings": output.findings, "notes": output.notes, "errors": output.errors}
        if "missed" in schemas:
            tables["missed"] = output.missed
        for name, rows in tables.items():
            write_part(to_arrow(rows, schemas[name]), self.part(name, output.index))
        done = chunk_done(output, seconds)
        self.save_done(done)
        return done


def chunk_done(output: ChunkOutput, seconds: float) -> dict:
    """A chunk's done marker: its counts, editions, timing and the NoteRefs an order may link to."""
    return {"chunk": output.index, "rows": output.rows,
            "counts": {"notes": len(output.notes), "errors": len(output.errors), "findings": len(output.findings),
                       "missed": len(output.missed)},
            "editions": dict(output.editions), "pipeline": output.pipeline, "seconds": round(seconds, 3),
            "peak_rss_mb": _peak_rss_mb(), "refs": [ref.as_json() for ref in output.refs],
            "error_kinds": dict(Counter(error_kind(row["reason"]) for row in output.errors)),
            "warnings": dict(output.warnings)}


def error_kind(reason: str) -> str:
    """The kind of an error reason: its words before the first ' (' or ':' ('not valid UTF-8', 'empty text')."""
    return re.split(r" \(|:", reason, maxsplit=1)[0]


def _start_method() -> str:
    """fork where the platform has it (Linux): workers inherit the imported modules and the built
    pipeline, where spawn costs each worker seconds of imports and a pipeline build. Our readers start
    no threads before the pool; LBP_START_METHOD=spawn chooses the other."""
    import multiprocessing

    wanted = os.environ.get("LBP_START_METHOD")
    if wanted:
        return wanted
    return "fork" if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ---------------------------------------------------------------- workers

_WORKER: dict = {}  # set once per worker process by _init_worker


def _init_worker(settings: ChunkSettings, out_dir: str, snippets_audit: tuple[bool, bool],
                 parent: int | None = None) -> None:
    if parent is not None:
        _exit_with_parent(parent)
    snippets, audit_on = snippets_audit
    _WORKER.update(settings=settings, parts=Parts(Path(out_dir)), schemas=_part_schemas(snippets, audit_on))
    cached_extractor(settings.rules_dir, settings.rules_digest)


def _exit_with_parent(parent: int, every: float = 0.5) -> None:
    """Stop this worker once the main process `parent` is gone: killed with SIGKILL (by the OOM killer, a
    scheduler, a user), it cannot stop its workers, which would otherwise live on idle, holding their memory,
    or finish a chunk while a --resume run does it again."""
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="lbp-parent-watch", daemon=True).start()


def _work(chunk: Chunk) -> dict:
    return _process_and_write(chunk, _WORKER["settings"], _WORKER["parts"], _WORKER["schemas"])


def _process_and_write(chunk: Chunk, settings: ChunkSettings, parts: Parts, schemas: dict, extractor=None,
                       on_note: Callable[[], None] | None = None) -> dict:
    """One chunk processed and its parts written; its rows are then let go, and the heap they took is
    handed back to the system (glibc keeps freed memory otherwise, and a long run's RSS creeps up)."""
    started = time.perf_counter()
    done = parts.write(process_chunk(chunk, settings, extractor, on_note), schemas, time.perf_counter() - started)
    _trim_heap()
    return done


@lru_cache(maxsize=1)
def _malloc_trim():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def _trim_heap() -> None:
    """Hand freed memory back to the system: the C heap's (glibc) and Arrow's pool."""
    import pyarrow

    pyarrow.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _part_schemas(snippets: bool, audit_on: bool) -> dict:
    schemas = table_schemas(snippets)
    return {name: schemas[name] for name in ("findings", "notes", "errors", *(("missed",) if audit_on else ()))}


# ---------------------------------------------------------------- orders


ORDER_COLUMN_ALIASES = {
    "description": ("order_description", "order_name", "order_text", "procedure_name", "procedure_description"),
    "cpt": ("cpt_code", "procedure_code", "cpt4"),
    "order_date": ("order_datetime", "ordered_date", "ordered_at", "order_time"),
    "priority": ("order_priority",),
}


def read_orders(path: str | Path | None, columns: dict | None = None, records: Iterable[dict] | None = None,
                encoding: str = "utf-8") -> tuple[list[Order], list[dict]]:
    """The orders file (or `records`) as `Order`s; rows that cannot be orders go to the second list with a
    reason. Common alternative column names (`cpt_code`, `order_description`, ...) are read when ours are absent.
    A file without an order_id column, a description or CPT column, or a column to match notes by is an
    `InputError`."""
    if records is None:
        from .sources import open_source

        source = open_source(path, columns, required=("order_id",), encoding=encoding)
        _check_order_columns(source.columns, Path(path))
        records = iter(source)
    orders, problems, seen = [], [], set()
    for row_number, record in enumerate(records, 1):
        for ours, theirs in ORDER_COLUMN_ALIASES.items():
            if record.get(ours) is None:
                record[ours] = next((record[t] for t in theirs if record.get(t) is not None), None)
        if record.get(READ_ERROR):
            problems.append({"order_id": f"row:{row_number}", "reason": record[READ_ERROR]})
            continue
        order_id = record.get("order_id")
        if order_id is None or str(order_id).strip() == "":
            problems.append({"order_id": f"row:{row_number}", "reason": "missing order_id"})
            continue
        order = Order.from_record({**record, "order_id": str(order_id).strip()})
        if order.order_id in seen:
            problems.append({"order_id": order.order_id, "reason": "duplicate order_id (first occurrence kept)"})
            continue
        seen.add(order.order_id)
        orders.append(order)
    return orders, problems


def _check_order_columns(columns: list[str] | None, path: Path) -> None:
    """`InputError` when a header (CSV, Parquet: not JSONL, whose records may leave out empty fields) has no
    column to judge an order by or none to match it to a note by."""
    from .sources import format_of, shown_columns

    if columns is None or format_of(path) == "jsonl":
        return
    procedure = ("description", "cpt", *ORDER_COLUMN_ALIASES["description"], *ORDER_COLUMN_ALIASES["cpt"])
    if not set(columns) & set(procedure):
        raise InputError(f"{path.name}: no 'description' or 'cpt' column ({shown_columns(columns)}): "
                         f"no order could be judged")
    if not set(columns) & {"note_id", "encounter_id", "patient_id"}:
        raise InputError(f"{path.name}: no 'note_id', 'encounter_id' or 'patient_id' column "
                         f"({shown_columns(columns)}): no order could be matched to a note")


# ---------------------------------------------------------------- inputs


def _maybe_database(spec) -> bool:
    text = str(spec)
    return "://" in text or text.lower().endswith((".duckdb", ".ddb"))


def _shown(spec) -> str:
    """An input as the manifest may name it: a database URL's password masked."""
    return _sql().masked(spec) if _maybe_database(spec) else str(spec)


def _sql():
    try:
        from . import sql
    except ImportError:
        raise InputError("database inputs and --to-sql need pipeline.sql, which this installation lacks") from None
    return sql


def _open_notes(spec, columns, table, query, omop, encoding: str = "utf-8"):
    """The notes as a streaming `Source`, from a file, a folder or a database."""
    from .sources import Source, open_source

    if _maybe_database(spec) and _sql().is_database(str(spec)):
        sql = _sql()
        kwargs = dict(table=table, query=query, omop=omop, kind="notes")
        return Source(iter(sql.read_records(str(spec), columns=columns or None, **kwargs)),
                      fingerprint=sql.fingerprint(str(spec), **kwargs))
    if table or query:
        raise UsageError("--table and --query need a database as NOTES")
    return open_source(spec, columns, required=("note_id", "text"), keep=NOTE_COLUMNS, encoding=encoding)


def _read_orders_from(spec, columns, table, query, omop, encoding: str = "utf-8"
                      ) -> tuple[list[Order], list[dict], dict]:
    from .sources import fingerprint

    if _maybe_database(spec) and _sql().is_database(str(spec)):
        sql = _sql()
        kwargs = dict(table=table, query=query, omop=omop, kind="orders")
        orders, problems = read_orders(None, records=sql.read_records(str(spec), columns=columns or None, **kwargs))
        return orders, problems, sql.fingerprint(str(spec), **kwargs)
    if table or query:
        raise UsageError("--orders-table and --orders-query need a database as ORDERS")
    orders, problems = read_orders(spec, columns, encoding=encoding)
    return orders, problems, fingerprint(spec)


# ---------------------------------------------------------------- the run


def _say(message: str) -> None:
    print(f"lbp-audit: {message}", file=sys.stderr)


def _private_output(function):
    """`function` run with every file it creates readable by the owner only (`tables.private_files`), unless
    it is called with `shared_output=True` (then the user's umask decides)."""

    @wraps(function)
    def wrapper(*args, shared_output: bool = False, **kwargs):
        with private_files(not shared_output):
            return function(*args, **kwargs)

    return wrapper


@_private_output
def run(notes_path: str | Path, out_dir: str | Path, fmt: str = "parquet", columns: dict | None = None,
        snippets: bool = True, extractor=None, orders_path: str | Path | None = None,
        edition: str | None = None, window_days: int = DEFAULT_WINDOW_DAYS, order_columns: dict | None = None, *,
        jobs: int = 1, chunk_size: int = DEFAULT_CHUNK_SIZE, resume: bool = False, progress: bool = False,
        keep_parts: bool = False, rules_dir: str | Path | None = None, table: str | None = None,
        query: str | None = None, orders_table: str | None = None, orders_query: str | None = None,
        omop: bool = False, to_sql: str | None = None, engine: str = "local", start_method: str | None = None,
        encoding: str = "utf-8", max_chars: int = DEFAULT_MAX_CHARS, say: Callable[[str], None] = _say) -> dict:
    """Extract findings from every note of `notes_path`, audit the orders of `orders_path` (if given)
    and write the tables to `out_dir`, `chunk_size` input records at a time on `jobs` processes.
    `resume` continues an interrupted run of the same inputs and options into the same `out_dir`.
    `snippets=False` (`--no-text`) writes no note text into any table. Files are created readable by the
    owner only unless `shared_output=True` is given (then the umask decides). `encoding` is that of the
    CSV / JSONL / .txt inputs (rows not valid in it go to errors); a note longer than `max_chars` characters
    goes to errors."""
    started = time.perf_counter()
    started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if engine not in ("local", "spark"):
        raise UsageError(f"--engine {engine}: unknown (use local or spark)")
    if engine == "spark" and resume:
        raise UsageError("--resume is not available with --engine spark (Spark retries a failed task itself)")
    if jobs < 1 or chunk_size < 1 or max_chars < 1:
        raise UsageError("--jobs, --chunk-size and --max-chars must be at least 1")
    from .sources import check_encoding

    encoding = check_encoding(encoding)
    out_dir = Path(out_dir)
    rules_dir = str(rules_dir) if rules_dir is not None else None
    if extractor is not None:
        rules = extractor.rules
    else:
        from .rules import load_rules

        rules = load_rules(rules_dir)
    editions = rules.editions
    if edition:
        choose_edition(editions, forced=edition)  # an unknown edition fails before any work
    timings: Counter = Counter()
    clock = time.perf_counter()
    orders, order_problems, orders_fp = _read_orders_from(orders_path, order_columns, orders_table, orders_query,
                                                          omop, encoding) if orders_path else ([], [], None)
    if engine == "spark":  # Spark reads the notes in `extract` below (pipeline/spark.py)
        from functools import partial

        from .spark import SparkNotes

        source = SparkNotes(notes_path, columns, table, query, omop, open_local=partial(_open_notes, encoding=encoding))
    else:
        source = _open_notes(notes_path, columns, table, query, omop, encoding)
    timings["read_orders"] = time.perf_counter() - clock
    audit_on = bool(orders_path)
    matcher = OrderMatcher(orders, editions, rules.orders, window_days, edition) if audit_on else None
    settings = ChunkSettings(rules_dir, rules.digest, snippets, edition, matcher.keys if matcher else None,
                             max_chars)
    schemas = table_schemas(snippets)
    part_schemas = _part_schemas(snippets, audit_on)
    fingerprints = {"notes": source.fingerprint, **({"orders": orders_fp} if audit_on else {})}
    run_key = {"tool": "lbp-audit", "version": __version__, "rules_digest": rules.digest, "inputs": fingerprints,
               "columns": columns or {}, "order_columns": order_columns or {}, "chunk_size": chunk_size,
               "snippets": snippets, "edition": edition, "audit": audit_on, "omop": omop, "encoding": encoding,
               "max_chars": max_chars,
               "tables": {"notes": table, "query": query, "orders": orders_table, "orders_query": orders_query}}
    parts = _prepare_parts(out_dir, run_key, resume, say)
    _remove_stale_temporaries(out_dir)

    from .progress import Progress

    validator = NoteValidator()
    bar = Progress(total=source.total, fraction=source.fraction, read=lambda: validator.rows, enabled=progress)
    counts = Counter()
    editions_used: Counter = Counter()
    error_kinds: Counter = Counter()
    warnings: Counter = Counter()
    state = {"pipeline": None, "chunks": 0, "resumed": 0, "worker_rss": 0.0, "worker_seconds": 0.0}

    def settle(done: dict, skipped: bool) -> None:
        counts.update(done["counts"])
        editions_used.update(done["editions"])
        error_kinds.update(done.get("error_kinds") or {})
        warnings.update(done.get("warnings") or {})
        state["pipeline"] = state["pipeline"] or done.get("pipeline")
        state["chunks"] += 1
        state["resumed"] += skipped
        if not skipped:
            state["worker_rss"] = max(state["worker_rss"], done.get("peak_rss_mb") or 0)
            state["worker_seconds"] += done.get("seconds") or 0
            counts["extracted"] += done["counts"]["notes"] + done["counts"]["errors"]
        if matcher is not None:  # kept as where to read it again: its chunk's refs part, its row there
            for position, ref in enumerate(done["refs"]):
                matcher.offer(NoteRef.from_json(ref), done["chunk"] << 32 | position)
        bar.set(counts["notes"] + counts["errors"])

    read_clock = [0.0]

    def timed_chunks() -> Iterator[Chunk]:
        records = iter(source)
        chunks = chunks_of(records, chunk_size, validator)
        while True:
            t0 = time.perf_counter()
            chunk = next(chunks, None)
            read_clock[0] += time.perf_counter() - t0
            if chunk is None:
                return
            yield chunk

    def resumed(chunk: Chunk) -> dict | None:
        done = parts.load_done(chunk.index) if resume else None
        if done is not None and done["rows"] != chunk.rows:
            raise UsageError(f"cannot resume: chunk {chunk.index} of {out_dir / PARTS} does not match the input; "
                             f"run again without --resume")
        return done

    clock = time.perf_counter()
    if engine == "spark":  # every chunk read, checked and extracted by Spark, its parts written to _parts and
        spark_run = source.extract(parts, settings, chunk_size, settle)  # settled; nothing left to read below
        validator.rows = spark_run.rows
        timings.update(spark_start=spark_run.start_seconds, spark_read=spark_run.stage_seconds)
    chunk_iter = timed_chunks()
    try:
        head = _lookahead(chunk_iter, jobs)
    except InputError:
        if not keep_parts:  # as below: nothing to resume from a broken file
            _remove_parts(parts.root)
        raise
    pending = [c for c in head if resumed(c) is None]
    # all chunks known when the look-ahead ran out: no more processes than chunks to do, none for one chunk
    workers = jobs if len(head) > jobs else max(1, min(jobs, len(pending)))
    in_process = workers == 1
    pool = None
    try:
        if not in_process:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            start_method = start_method or _start_method()
            if start_method == "fork":  # build once here: forked workers find it in the cache
                cached_extractor(rules_dir, rules.digest)

            pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(start_method),
                                       initializer=_init_worker,
                                       initargs=(settings, str(out_dir), (snippets, audit_on), os.getpid()))
        window: deque = deque()
        for chunk in _chain(head, chunk_iter):
            done = resumed(chunk)
            if done is not None:
                window.append((done, True))
            elif in_process:
                if extractor is None:
                    from .extract import Extractor

                    extractor = Extractor(rules=rules)  # built only when a chunk needs it
                window.append((_process_and_write(chunk, settings, parts, part_schemas, extractor, bar.advance),
                               False))
            else:
                window.append((pool.submit(_work, chunk), False))
            while len(window) > (2 * workers if pool else 0):
                _settle_next(window, settle)
        while window:
            _settle_next(window, settle)
    except BaseException as err:
        broken = isinstance(err, InputError)  # the input cannot be read on (an unterminated quote, a cut gzip)
        if pool is not None:
            pool.shutdown(wait=broken, cancel_futures=True)
            pool = None
        if broken and not keep_parts:  # nothing to resume from a broken file: leave no parts (they hold text)
            _remove_parts(parts.root)
        raise
    finally:
        if pool is not None:
            pool.shutdown()
        bar.close()
    timings["extract"] = time.perf_counter() - clock
    timings["read"] = read_clock[0]
    notes_read = validator.rows
    if engine == "spark":
        workers = spark_run.workers
    if counts["notes"] + counts["errors"] != notes_read:
        raise RunError(f"{notes_read} notes read but {counts['notes'] + counts['errors']} accounted for")

    n_chunks = state["chunks"]
    tables = {name: (lambda name=name: read_parts((parts.part(name, i) for i in range(n_chunks)), schemas[name]))
              for name in ("findings", "notes", "errors")}
    out_counts = {"notes_read": notes_read, "notes_written": counts["notes"], "errors": counts["errors"],
                  "findings": counts["findings"]}
    verdicts: Counter = Counter()
    judged: Counter = Counter()
    if matcher is not None:
        clock = time.perf_counter()
        _trim_heap()  # before the orders are judged and the tables published: what extraction left
        runs = _sorted_runs(matcher.rows(load=parts.notes_at), parts.root / "judged", schemas["audit"])
        sorted_parts = [parts.part("missed", i) for i in range(n_chunks)] + runs
        unmatched_rows = order_problems + matcher.unmatched
        tables["audit"] = lambda: (to_arrow(batch, schemas["audit"]) for batch in _batched(
            _merge_sorted(sorted_parts, parts.root / "merge", schemas["audit"]), 4096))
        tables["unmatched_orders"] = lambda: [to_arrow(unmatched_rows, schemas["unmatched_orders"])]
        timings["audit"] = time.perf_counter() - clock
    clock = time.perf_counter()
    paths: dict[str, str] = {}
    table_rows: dict[str, int] = {}
    for name, make in tables.items():
        pieces = make()
        if name == "audit":
            pieces = _counting(pieces, verdicts, editions_used, judged)
        paths[name] = str(_publish(out_dir, name, fmt, schemas[name], pieces, table_rows))
        _trim_heap()
    if matcher is not None:
        warnings["order_date not a date"] += sum(order.order_date_invalid for order in orders)
        out_counts.update({"orders_read": len(orders) + len(order_problems),
                           "orders_judged": judged["rows"],
                           "orders_unmatched": len(unmatched_rows),
                           "verdicts": {k: int(v) for k, v in verdicts.most_common()}})
    database = _publish_extras(out_dir, fmt, tables, paths, schemas, omop, to_sql, rules_dir,
                               f"{state['pipeline'] or 'lbp'}; rules {rules.digest}", table_rows)
    timings["publish"] = time.perf_counter() - clock
    clock = time.perf_counter()  # the inputs hashed once a run, at its end (a resumed run included)
    input_hashes = {"notes": input_content(notes_path, fingerprints["notes"], notes_read)}
    if audit_on:
        input_hashes["orders"] = input_content(orders_path, fingerprints["orders"], out_counts["orders_read"])
    table_sha256 = {name: file_sha256(path) for name, path in paths.items()}
    timings["hash"] = time.perf_counter() - clock
    total = time.perf_counter() - started
    extracted = counts["extracted"]
    manifest = {
        "tool": "lbp-audit",
        "version": __version__,
        "pipeline": state["pipeline"],
        "rules_digest": rules.digest,
        "rule_files": rules.file_digests,
        "guideline_editions": {e.id: {"citation": e.citation, "effective_from": e.effective_from,
                                      "file": e.file, "rows": editions_used.get(e.id, 0)} for e in editions},
        "edition_forced": edition,
        "match_window_days": window_days,
        "inputs": {"notes": _shown(notes_path), **({"orders": _shown(orders_path)} if orders_path else {})},
        "fingerprints": fingerprints,
        "input_hashes": input_hashes,
        "format": fmt,
        "no_text": not snippets,
        "counts": out_counts,
        "errors_by_kind": dict(error_kinds.most_common()),
        "warnings": {kind: n for kind, n in warnings.most_common() if n},
        "encoding": encoding,
        "max_chars": max_chars,
        "outputs": paths,
        "table_rows": table_rows,
        "table_sha256": table_sha256,
        **({"database": database} if database else {}),
        "engine": engine,
        "jobs": jobs,
        "workers": workers,
        "chunk_size": chunk_size,
        "chunks": n_chunks,
        "resumed": state["resumed"],
        "timings": {**{k: round(v, 3) for k, v in timings.items()}, "total": round(total, 3),
                    "worker_extract": round(state["worker_seconds"], 3),
                    "notes_per_second": round(extracted / timings["extract"], 1) if timings["extract"] else None,
                    "started_at": started_at},
        "peak_rss_mb": {"main": _peak_rss_mb(), "worker": state["worker_rss"] or None},
        "environment": environment(),
        "seconds": round(total, 3),
    }
    write_json(manifest, out_dir / "manifest.json")
    if not keep_parts:
        _remove_parts(parts.root)
    return manifest


def _settle_next(window: deque, settle) -> None:
    entry, skipped = window.popleft()
    if hasattr(entry, "result"):
        from concurrent.futures.process import BrokenProcessPool

        try:
            entry = entry.result()
        except BrokenProcessPool:
            raise RunError("a worker process stopped unexpectedly (out of memory?); the chunks completed "
                           "so far are kept: run again with --resume") from None
    settle(entry, skipped)


def _lookahead(chunks: Iterator[Chunk], n: int) -> list[Chunk]:
    """Up to n + 1 first chunks (to know whether more than one process is worth starting)."""
    head = []
    for chunk in chunks:
        head.append(chunk)
        if len(head) > n:
            break
    return head


def _chain(head: list, rest: Iterator) -> Iterator:
    while head:
        yield head.pop(0)
    yield from rest


def _prepare_parts(out_dir: Path, run_key: dict, resume: bool, say) -> Parts:
    parts = Parts(out_dir)
    stored_path = parts.root / "run.json"
    if parts.root.exists():
        try:
            stored = json.loads(stored_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            stored = None
        if stored is None and any(p.name not in ("done", "run.json", "merge", "findings", "notes", "errors", "missed",
                                                      "input", "refs")
                                  for p in parts.root.iterdir()):
            raise UsageError(f"{parts.root} exists and was not made by lbp-audit; move it away")
        if resume:
            if stored is None:
                raise UsageError(f"cannot resume: {stored_path} is missing; run again without --resume")
            differ = [k for k in run_key if stored.get(k) != _jsonable(run_key[k])]
            if differ:
                raise UsageError(f"cannot resume: the inputs or options differ from the interrupted run "
                                 f"({', '.join(differ)}); run again without --resume to start afresh")
            say(f"resuming the unfinished run in {out_dir}")
            return parts
        say(f"starting afresh: removing the parts of an unfinished run in {parts.root} (--resume continues it)")
        _remove_parts(parts.root)
    elif resume:
        say(f"nothing to resume in {out_dir}: starting a new run")
    parts.root.mkdir(parents=True)
    write_json(_jsonable(run_key), stored_path)
    return parts


_OUTPUTS = ("findings", "notes", "errors", "audit", "unmatched_orders", "note_nlp", "manifest")
_TEMPORARY = re.compile(r"\.(?P<name>[^.]+)\.(?:parquet|csv|json)\.(?P<pid>\d+)\.tmp")


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Remove the half-written tables (.NAME.PID.tmp) of a run killed while it published them: nothing would
    ever replace them, and they hold note text."""
    for entry in os.scandir(out_dir):
        match = _TEMPORARY.fullmatch(entry.name)
        if match and match["name"] in _OUTPUTS and entry.is_file() and not _alive(int(match["pid"])):
            os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _remove_parts(root: Path) -> None:
    """Remove _parts by renaming it first, so an interrupted removal never looks like a resumable run."""
    if not root.exists():
        return
    trash = root.with_name(f"{root.name}.removing-{os.getpid()}")
    os.replace(root, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _publish(out_dir: Path, name: str, fmt: str, schema, tables: Iterable, rows: dict | None = None) -> Path:
    writer = TableWriter(out_dir, name, fmt, schema)
    try:
        for table in tables:
            writer.write(table)
    except BaseException:
        writer.abort()
        raise
    if rows is not None:
        rows[name] = writer.rows
    return writer.close()


def _batched(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def audit_key(row: dict) -> tuple[str, str]:
    """The audit table's order: by note, then order (a missed_imaging row's order_id is empty)."""
    return row["note_id"], row["order_id"]


def _part_rows(path: Path) -> Iterator[dict]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=256, use_threads=False):
        yield from batch.to_pylist()
    parquet.close()


def _sorted_runs(rows: Iterable[dict], folder: Path, schema, size: int = 2048) -> list[Path]:
    """`rows` written as files of at most `size` rows, each sorted by (note_id, order_id): what
    `_merge_sorted` merges (256 rows of each file at a time), without holding every row at once."""
    import pyarrow.parquet as pq

    paths = []
    for batch in _batched(rows, size):
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(folder / f"run-{len(paths):06d}.parquet")
        pq.write_table(to_arrow(sorted(batch, key=audit_key), schema), paths[-1], row_group_size=256)
    return paths


def _merge_sorted(paths: list[Path], tmp: Path, schema, fan_in: int = 16) -> Iterator[dict]:
    """The rows of `paths` (each sorted by (note_id, order_id)) merged in that order, opening at most
    `fan_in` files at once (larger sets are merged into intermediate files first)."""
    level = 0
    while len(paths) > fan_in:
        merged = []
        for start in range(0, len(paths), fan_in):
            out = tmp / f"merge-{level}-{start // fan_in:06d}.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            import pyarrow.parquet as pq

            with pq.ParquetWriter(out, schema) as writer:
                stream = heapq.merge(*(_part_rows(p) for p in paths[start:start + fan_in]), key=audit_key)
                for batch in _batched(stream, 4096):
                    writer.write_table(to_arrow(batch, schema), row_group_size=256)  # read back 256 at a time
            merged.append(out)
        paths, level = merged, level + 1
    yield from heapq.merge(*(_part_rows(p) for p in paths), key=audit_key)


def _counting(pieces: Iterable, verdicts: Counter, editions: Counter, judged: Counter) -> Iterator:
    """Pass the audit table's pieces on, counting verdicts, editions and rows of a judged order."""
    for table in pieces:
        verdicts.update(table.column("verdict").to_pylist())
        judged["rows"] += sum(1 for order_id in table.column("order_id").to_pylist() if order_id)
        editions.update(e for e in table.column("edition").to_pylist() if e)
        yield table


def _publish_extras(out_dir: Path, fmt: str, tables: dict, paths: dict, schemas: dict, omop: bool,
                    to_sql: str | None, rules_dir: str | None, pipeline: str | None, rows: dict | None = None) -> dict:
    """With --omop, DIR/note_nlp (when pipeline.omop is there); with --to-sql, every table into the database
    (the parts streamed again). Returns the database's table names."""
    nlp_system = f"lbp-audit {__version__}" + (f" ({pipeline})" if pipeline else "")
    nlp_date = dt.date.today()
    if to_sql:
        sql = _sql()

        def frames(name):  # at least one (empty) frame, so that an empty table is written, not dropped
            yield from (table.to_pandas() for table in _chain([schemas[name].empty_table()], tables[name]()))
        return sql.publish(to_sql, [(name, frames(name)) for name in tables], omop=omop, nlp_system=nlp_system,
                           nlp_date=nlp_date) or {}
    if omop:
        try:
            from .omop import load_mapping, note_nlp_frame
        except ImportError:
            return {}
        import pyarrow as pa

        mapping = load_mapping(rules_dir)

        def note_nlp():
            first_id = 1
            for table in tables["findings"]():
                frame = note_nlp_frame(table.to_pandas(), nlp_system=nlp_system, nlp_date=nlp_date,
                                       first_id=first_id, mapping=mapping)
                first_id += len(frame)
                yield pa.Table.from_pandas(frame, preserve_index=False)

        # the schema comes from the first piece with rows (a column all null there is text), so that an
        # empty first chunk does not make every column null
        pieces, head = note_nlp(), []
        for piece in pieces:
            head.append(piece)
            if piece.num_rows:
                break
        if head:
            schema = pa.schema([pa.field(f.name, pa.string() if pa.types.is_null(f.type) else f.type)
                                for f in head[-1].schema])
            kept = (piece for piece in _chain(head, pieces) if piece.num_rows)
            paths["note_nlp"] = str(_publish(out_dir, "note_nlp", fmt, schema, kept, rows))
    return {}
