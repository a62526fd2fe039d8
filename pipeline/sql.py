"""Notes and orders from SQL databases, and the output tables into them.

A database is a SQLAlchemy URL (`postgresql://…`, `sqlite:///…`, `duckdb:///…`) or a DuckDB file
(`.duckdb` / `.ddb`, opened with DuckDB itself). Rows are streamed in batches (a server-side cursor,
DuckDB's `fetchmany`), never the whole table at once, and come out with our column names:
notes `note_id, text, patient_id, note_date, encounter_id`; orders `order_id, description, cpt,
note_id, encounter_id, patient_id, order_date, priority, provider, site`. Ids come out as strings,
dates as ISO strings. A table is read in order of its id column (a DuckDB table in its stored order,
which DuckDB keeps, since sorting there would hold the table in memory); a query in its own order.

`omop=True` reads the OMOP CDM v5.4 `NOTE` and `PROCEDURE_OCCURRENCE` tables (their column names;
`note` / `procedure_occurrence` unless a table or query is given). An order's CPT code is the
`CONCEPT.concept_code` (vocabulary `CPT4`) of its `procedure_concept_id`, else of its
`procedure_source_concept_id`, when the database has a `concept` table; else its
`procedure_source_value` when that is a CPT code. `procedure_source_value` is also the description.

`publish` writes the output tables as `lbp_<name>` (replaced by each run) and, with `omop=True`, the
findings as `NOTE_NLP` rows (`pipeline.omop`): the table is created with the v5.4 column types when
it is missing; rows written before by the same `nlp_system` (tool version and rules digest) are
replaced, rows of other systems are kept; new `note_nlp_id`s continue after the largest one there.

Errors are `pipeline.tables.InputError`: one line, the URL with its password masked, no note text
(a database's own error message can quote row values, so only its class and SQLSTATE are shown).
"""
from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd

from .omop import NOTE_NLP_COLUMNS, NOTE_NLP_TYPES, integer_note_ids, load_mapping, note_nlp_frame
from .tables import InputError, UsageError

NOTE_COLUMNS = ("note_id", "text", "patient_id", "note_date", "encounter_id")
ORDER_COLUMNS = ("order_id", "description", "cpt", "note_id", "encounter_id", "patient_id", "order_date",
                 "priority", "provider", "site")
OUR_COLUMNS = {"notes": NOTE_COLUMNS, "orders": ORDER_COLUMNS}
ID_COLUMNS = frozenset({"note_id", "order_id", "patient_id", "encounter_id", "provider", "cpt"})
DATE_COLUMNS = frozenset({"note_date", "order_date"})
# Alternative order column names also read when ours are absent (as the file reader does).
ORDER_ALIASES = {
    "description": ("order_description", "order_name", "order_text", "procedure_name", "procedure_description"),
    "cpt": ("cpt_code", "procedure_code", "cpt4"),
    "order_date": ("order_datetime", "ordered_date", "ordered_at", "order_time"),
    "priority": ("order_priority",),
}
OMOP_TABLES = {"notes": "note", "orders": "procedure_occurrence"}
OMOP_COLUMNS = {
    "notes": {"note_id": "note_id", "text": "note_text", "patient_id": "person_id", "note_date": "note_date",
              "encounter_id": "visit_occurrence_id"},
    "orders": {"order_id": "procedure_occurrence_id", "description": "procedure_source_value",
               "patient_id": "person_id", "order_date": "procedure_date", "encounter_id": "visit_occurrence_id",
               "provider": "provider_id"},
}
OMOP_DATETIME = {"notes": ("note_date", "note_datetime"), "orders": ("order_date", "procedure_datetime")}
OMOP_CONCEPT_COLUMNS = ("procedure_concept_id", "procedure_source_concept_id")
OUTPUT_TABLES = ("findings", "notes", "errors", "audit", "unmatched_orders")
DUCKDB_SUFFIXES = (".duckdb", ".ddb")
CPT_CODE = re.compile(r"^[0-9]{4}[0-9FTU]$")

_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9_]*)(?:\+[A-Za-z0-9_]+)?://")
_NOT_DATABASES = {"http", "https", "file", "s3", "gs", "gcs", "az", "abfs", "abfss", "hdfs", "ftp", "sftp"}
_CPT_ALIAS, _SOURCE_CPT_ALIAS, _FALLBACK_DATE = "lbp_cpt_1", "lbp_cpt_2", "lbp_datetime"


def is_database(spec) -> bool:
    """True for a SQLAlchemy URL or a DuckDB file path (`.duckdb` / `.ddb`)."""
    text = str(spec)
    match = _URL.match(text)
    if match:
        return match["scheme"].lower() not in _NOT_DATABASES
    return text.lower().endswith(DUCKDB_SUFFIXES)


def masked(spec) -> str:
    """The database spec as it may be shown: any password replaced by `***`."""
    text = str(spec)
    if not _URL.match(text):
        return text
    text = re.sub(r"^([^:/]+://[^:/@]*):[^@/]*@", r"\1:***@", text)
    return re.sub(r"(?i)([?&](?:password|passwd|pwd|sslpassword)=)[^&]*", r"\1***", text)


def read_records(spec, *, table: str | None = None, query: str | None = None, omop: bool = False,
                 kind: str = "notes", columns: dict | None = None, batch_size: int = 10_000) -> Iterator[dict]:
    """Stream the rows of a table or query as dicts with our column names (see the module docstring).

    `columns` maps our names to the database's (e.g. {"text": "note_body"})."""
    if batch_size < 1:
        raise UsageError("batch_size must be at least 1")
    with _Database.open(spec) as db:
        plan = _plan(db, table, query, omop, kind, columns)
        for row in db.stream(plan.sql, batch_size, plan.source):
            yield plan.record(row)


def fingerprint(spec, *, table: str | None = None, query: str | None = None, omop: bool = False,
                kind: str = "notes") -> dict:
    """What `read_records` reads with these arguments: the masked URL, the table or the query's sha256,
    and the row count (for the manifest and to check a resumed run reads the same input)."""
    with _Database.open(spec) as db:
        source_sql, _, _, _, table_name = _source(db, table, query, omop, kind)
        rows = db.scalar(f"SELECT count(*) FROM {source_sql} AS t", "query" if query is not None else "table")
    return {
        "database": masked(spec),
        "kind": kind,
        "omop": omop,
        "table": table_name,
        "query_sha256": hashlib.sha256(query.encode("utf-8")).hexdigest() if query is not None else None,
        "rows": int(rows),
    }


def publish(spec, tables: Iterable, *, omop: bool = False, nlp_system: str, nlp_date: dt.date) -> dict[str, str]:
    """Write each `(name, parts)` of `tables` into the database as `lbp_<name>` (replaced; the parts are
    DataFrames with the same columns, appended in order) and, with `omop=True`, the findings as
    `note_nlp` rows. A table whose parts are none at all is dropped. Returns {name: table written}."""
    written: dict[str, str] = {}
    with _Database.open(spec, write=True) as db:
        for name, parts in tables:
            if name not in OUTPUT_TABLES:
                raise UsageError(f"unknown output table {name!r} (one of {', '.join(OUTPUT_TABLES)})")
            target = f"lbp_{name}"
            note_nlp = _NoteNlpWriter(db, nlp_system, nlp_date) if omop and name == "findings" else None
            with db.transaction():
                if note_nlp:
                    note_nlp.prepare()
                first, dtypes = True, None
                for part in parts:
                    part = _conform(part, dtypes) if dtypes is not None else part
                    db.write_frame(target, part, replace=first)
                    first, dtypes = False, dtypes if dtypes is not None else part.dtypes
                    if note_nlp:
                        note_nlp.write(part)
                if first:
                    db.drop(target)
                else:
                    written[name] = target
            if note_nlp:
                written["note_nlp"] = note_nlp.table
    return written


class _NoteNlpWriter:
    """The findings parts as NOTE_NLP rows, ids continuing after the table's largest."""

    def __init__(self, db: "_Database", nlp_system: str, nlp_date):
        self.db, self.nlp_system, self.nlp_date = db, nlp_system, nlp_date
        self.mapping = load_mapping()
        self.table = "note_nlp"
        self.next_id = 1
        self.concepts: dict = {}

    def prepare(self) -> None:
        db = self.db
        found = db.find_table("note_nlp")
        if found is None:
            columns = ", ".join(f"{db.quote(c)} {NOTE_NLP_TYPES[c]}" for c in NOTE_NLP_COLUMNS)
            db.execute(f"CREATE TABLE {db.quote('note_nlp')} ({columns})")
            found = (None, "note_nlp")
        self.table = found[1] if found[0] is None else f"{found[0]}.{found[1]}"
        have = {c.lower() for c in db.columns(*found)}
        missing = [c for c in NOTE_NLP_COLUMNS if c not in have]
        if missing:
            raise InputError(f"{masked(db.spec)}: table {self.table} has no column(s) {', '.join(missing)} "
                             f"(not an OMOP CDM v5.4 NOTE_NLP table)")
        self.qualified = db.qualified(*found)
        system = self.nlp_system.replace("'", "''")[:250]
        db.execute(f"DELETE FROM {self.qualified} WHERE nlp_system = '{system}'")
        self.next_id = int(db.scalar(f"SELECT coalesce(max(note_nlp_id), 0) FROM {self.qualified}") or 0) + 1
        self.concepts = self._snomed_concepts()

    def _snomed_concepts(self) -> dict[str, int]:
        db = self.db
        concept = db.find_table("concept")
        codes = sorted(set(self.mapping.snomed.values()))
        if concept is None or not codes or not {"concept_id", "concept_code", "vocabulary_id", "standard_concept"} \
                <= {c.lower() for c in db.columns(*concept)}:
            return {}
        listed = ", ".join(f"'{code}'" for code in codes)  # codes are validated digits
        rows = db.fetch_all(f"SELECT concept_code, concept_id FROM {db.qualified(*concept)} WHERE vocabulary_id = "
                            f"'SNOMED' AND standard_concept = 'S' AND concept_code IN ({listed})")
        return {str(code): int(concept_id) for code, concept_id in rows}

    def write(self, findings: pd.DataFrame) -> None:
        frame = note_nlp_frame(findings, nlp_system=self.nlp_system, nlp_date=self.nlp_date,
                               first_id=self.next_id, concepts=self.concepts, mapping=self.mapping)
        if frame.empty:
            return
        if not integer_note_ids(frame):
            bad = sum(not isinstance(v, int) for v in frame["note_id"])
            raise InputError(f"NOTE_NLP needs integer note ids: {bad} finding(s) of this part have other ids "
                             f"(write without --omop, or read notes whose note_id is an integer)")
        self.db.append_frame(self.qualified, frame)
        self.next_id += len(frame)


class _Plan:
    """The SELECT that reads one input and how each result row becomes a record."""

    def __init__(self, sql_unordered: str, order_by: str, names: list[str], kind: str, omop: bool,
                 source: str, table_name: str | None):
        self.sql_unordered = sql_unordered
        self.sql = sql_unordered + order_by
        self.names = names
        self.kind = kind
        self.omop = omop
        self.source = source  # "query" or "table", for error messages
        self.table_name = table_name

    def record(self, row) -> dict:
        values = dict(zip(self.names, row))
        record = {}
        for ours in OUR_COLUMNS[self.kind]:
            value = values.get(ours)
            if ours in ID_COLUMNS:
                value = _id_text(value)
            elif ours in DATE_COLUMNS:
                value = _date_text(value)
            elif isinstance(value, (bytes, memoryview)):
                value = _decoded(value)
            record[ours] = value
        if not self.omop:
            return record
        date_column = OMOP_DATETIME[self.kind][0]
        if record[date_column] is None:
            record[date_column] = _date_text(values.get(_FALLBACK_DATE))
        if self.kind == "orders" and record["cpt"] is None:
            code = next((_id_text(values[a]) for a in (_CPT_ALIAS, _SOURCE_CPT_ALIAS) if values.get(a) is not None),
                        None)
            source_value = (record["description"] or "").strip()
            record["cpt"] = code or (source_value if CPT_CODE.match(source_value) else None)
        return record


def _source(db: "_Database", table, query, omop, kind) -> tuple[str, list[str], str, str | None, str | None]:
    """What to read FROM: (SQL, its columns, how to name it in messages, schema, table name)."""
    if kind not in OUR_COLUMNS:
        raise UsageError(f"kind must be 'notes' or 'orders', not {kind!r}")
    if table is not None and query is not None:
        raise UsageError("give a table or a query, not both")
    if query is not None:
        sql = query.strip().rstrip(";").strip()
        if not sql:
            raise UsageError(f"the {kind} query is empty")
        source_sql = f"({sql})"
        available = db.query_columns(f"SELECT * FROM {source_sql} AS lbp_query WHERE 1 = 0", "query")
        return source_sql, available, f"the {kind} query", None, None
    if table is None:
        if not omop:
            raise UsageError(f"name the {kind} table or give a query (or use --omop)")
        table = OMOP_TABLES[kind]
    found = db.find_table(table)
    if found is None:
        raise InputError(f"{masked(db.spec)}: no table {table!r}")
    schema, table_name = found
    return db.qualified(schema, table_name), db.columns(schema, table_name), f"{kind} table {table}", schema, table_name


def _plan(db: "_Database", table, query, omop, kind, columns) -> _Plan:
    source_sql, available, described, schema, table_name = _source(db, table, query, omop, kind)
    by_lower = {}
    for name in available:
        by_lower.setdefault(name.lower(), name)
    wanted = {**(OMOP_COLUMNS[kind] if omop else {c: c for c in OUR_COLUMNS[kind]}), **(columns or {})}
    chosen: dict[str, str] = {}
    problems = []
    for ours in OUR_COLUMNS[kind]:
        theirs = wanted.get(ours)
        actual = by_lower.get(theirs.lower()) if theirs else None
        if actual is None and not omop and kind == "orders" and ours not in (columns or {}):
            actual = next((by_lower[a] for a in ORDER_ALIASES.get(ours, ()) if a in by_lower), None)
        if actual is None and ours in (columns or {}):
            problems.append(f"{theirs} (given for {ours})")
        if actual is not None:
            chosen[ours] = actual
    required = ["note_id", "text"] if kind == "notes" else ["order_id"]
    for ours in required:
        if ours not in chosen and ours not in (columns or {}):
            problems.append(f"{wanted.get(ours, ours)}" + (f" ({ours})" if wanted.get(ours, ours) != ours else ""))
    if kind == "orders" and "description" not in chosen and "cpt" not in chosen and not (
            omop and any(c in by_lower for c in OMOP_CONCEPT_COLUMNS)):
        problems.append("description or cpt")
    if problems:
        raise InputError(f"{masked(db.spec)}: {described} has no column(s) {', '.join(problems)}; "
                         f"its columns are {', '.join(available) or 'none'}")
    q = db.quote
    selected = {ours: f"t.{q(theirs)}" for ours, theirs in chosen.items()}  # result name -> expression
    joins = []
    if omop:
        fallback = OMOP_DATETIME[kind][1]
        if fallback in by_lower:
            selected[_FALLBACK_DATE] = f"t.{q(by_lower[fallback])}"
    if omop and kind == "orders":
        concept = db.find_table("concept", schema)
        concept_ok = concept is not None and {"concept_id", "concept_code", "vocabulary_id"} <= {
            c.lower() for c in db.columns(*concept)}
        for column, alias, join in zip(OMOP_CONCEPT_COLUMNS, (_CPT_ALIAS, _SOURCE_CPT_ALIAS), ("c1", "c2")):
            if concept_ok and column in by_lower:
                joins.append(f" LEFT JOIN {db.qualified(*concept)} AS {join} ON {join}.concept_id = "
                             f"t.{q(by_lower[column])} AND {join}.vocabulary_id = 'CPT4'")
                selected[alias] = f"{join}.concept_code"
    select = ", ".join(f"{expression} AS {q(name)}" for name, expression in selected.items())
    sql = f"SELECT {select} FROM {source_sql} AS t{''.join(joins)}"
    id_column = "note_id" if kind == "notes" else "order_id"
    ordered = query is None and id_column in chosen and db.sorts_tables
    order_by = f" ORDER BY t.{q(chosen[id_column])}" if ordered else ""
    names = list(selected)
    return _Plan(sql, order_by, names, kind, omop, "query" if query is not None else "table", table_name)


class _Database:
    """One connection to a DuckDB file (DuckDB itself) or a SQLAlchemy URL, with the few operations we need."""

    def __init__(self, spec):
        self.spec = str(spec)

    @staticmethod
    @contextmanager
    def open(spec, write: bool = False):
        db = _DuckDB(spec, write) if _duckdb_path(spec) is not None else _Alchemy(spec, write)
        try:
            yield db
        finally:
            db.close()

    def find_table(self, name: str, default_schema: str | None = None) -> tuple[str | None, str] | None:
        """(schema, table) of `name` (`schema.table` allowed), matched exactly, else ignoring case."""
        schema, _, table = name.rpartition(".") if "." in name else (default_schema, "", name)
        candidates = self.tables(schema or None)
        for match in (lambda s, t: t == table, lambda s, t: t.lower() == table.lower()):
            hits = [(s, t) for s, t in candidates if match(s, t)]
            if hits:
                return hits[0]
        return None

    def qualified(self, schema: str | None, table: str) -> str:
        return f"{self.quote(schema)}.{self.quote(table)}" if schema else self.quote(table)

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'


class _DuckDB(_Database):
    sorts_tables = False  # a scan keeps insertion order; sorting would hold the whole table in memory

    def __init__(self, spec, write: bool):
        super().__init__(spec)
        import duckdb

        self.duckdb = duckdb
        path = _duckdb_path(spec)
        if not write and path != ":memory:" and not Path(path).is_file():
            raise InputError(f"{spec}: no such DuckDB file")
        try:
            try:
                self.con = duckdb.connect(path, read_only=not write and path != ":memory:")
            except duckdb.ConnectionException:  # already open read-write in this process: share that
                self.con = duckdb.connect(path)
        except duckdb.Error as err:
            raise InputError(f"{spec}: cannot open the DuckDB file ({type(err).__name__})") from None

    def close(self):
        self.con.close()

    def tables(self, schema: str | None) -> list[tuple[str | None, str]]:
        rows = self._run("SELECT table_schema, table_name FROM information_schema.tables "
                         "WHERE table_catalog = current_database()").fetchall()
        if schema is None:
            return [(None, t) for s, t in rows if s == "main"] + [(s, t) for s, t in rows if s != "main"]
        return [(s, t) for s, t in rows if s.lower() == schema.lower()]

    def columns(self, schema: str | None, table: str) -> list[str]:
        rows = self._run("SELECT column_name FROM information_schema.columns WHERE table_catalog = "
                         "current_database() AND table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                         [schema or "main", table]).fetchall()
        return [r[0] for r in rows]

    def query_columns(self, sql: str, source: str) -> list[str]:
        return [d[0] for d in self._run(sql, source=source).description]

    def stream(self, sql: str, batch_size: int, source: str = "") -> Iterator[tuple]:
        cursor = self._run(sql, source=source)
        while True:
            try:
                rows = cursor.fetchmany(batch_size)
            except self.duckdb.Error as err:
                raise InputError(f"{self.spec}: reading failed ({type(err).__name__})") from None
            if not rows:
                return
            yield from rows

    def scalar(self, sql: str, source: str = ""):
        return self._run(sql, source=source).fetchone()[0]

    def fetch_all(self, sql: str) -> list[tuple]:
        return self._run(sql).fetchall()

    def execute(self, sql: str) -> None:
        self._run(sql)

    @contextmanager
    def transaction(self):
        self.con.begin()
        try:
            yield
        except BaseException:
            self.con.rollback()
            raise
        self.con.commit()

    def write_frame(self, table: str, frame: pd.DataFrame, replace: bool) -> None:
        self.con.register("lbp_part", frame)
        try:
            names = [str(c) for c in frame.columns]
            if replace:
                empty = [c for c in names if frame[c].dtype == object and frame[c].isna().all()]
                select = ", ".join(f"CAST({self.quote(c)} AS VARCHAR) AS {self.quote(c)}" if c in empty
                                   else self.quote(c) for c in names)
                self._run(f"CREATE OR REPLACE TABLE {self.quote(table)} AS SELECT {select} FROM lbp_part")
            else:
                self.append_frame(self.quote(table), frame, registered=True)
        finally:
            self.con.unregister("lbp_part")

    def append_frame(self, qualified: str, frame: pd.DataFrame, registered: bool = False) -> None:
        if not registered:
            self.con.register("lbp_part", frame)
        try:
            listed = ", ".join(self.quote(str(c)) for c in frame.columns)
            self._run(f"INSERT INTO {qualified} ({listed}) SELECT {listed} FROM lbp_part")
        finally:
            if not registered:
                self.con.unregister("lbp_part")

    def drop(self, table: str) -> None:
        self._run(f"DROP TABLE IF EXISTS {self.quote(table)}")

    def _run(self, sql: str, params=None, source: str = ""):
        try:
            return self.con.execute(sql, params) if params is not None else self.con.execute(sql)
        except self.duckdb.Error as err:
            what = f"the {source} failed" if source else "a statement failed"
            raise InputError(f"{self.spec}: {what} ({type(err).__name__})") from None


class _Alchemy(_Database):
    sorts_tables = True  # a plain scan's order is not guaranteed; with an index on the id it streams

    def __init__(self, spec, write: bool):
        super().__init__(spec)
        import sqlalchemy
        from sqlalchemy.engine import make_url

        self.sa = sqlalchemy
        shown = masked(spec)
        try:
            url = make_url(self.spec)
        except sqlalchemy.exc.ArgumentError:
            raise InputError(f"{shown}: not a database URL") from None
        if url.drivername in ("postgresql", "postgres") and not _importable("psycopg2") and _importable("psycopg"):
            url = url.set(drivername="postgresql+psycopg")
        if url.get_backend_name() == "sqlite" and not write and url.database not in (None, "", ":memory:") \
                and not Path(url.database).is_file():
            raise InputError(f"{shown}: no such SQLite file")
        try:
            self.engine = sqlalchemy.create_engine(url)
        except (sqlalchemy.exc.NoSuchModuleError, ImportError) as err:
            raise InputError(f"{shown}: no database driver for this URL ({type(err).__name__}); "
                             f"install one (e.g. psycopg for PostgreSQL)") from None
        try:
            self.con = self.engine.connect()
        except sqlalchemy.exc.DBAPIError as err:
            self.engine.dispose()
            raise InputError(f"{shown}: cannot connect ({_describe(err)})") from None
        self.preparer = self.engine.dialect.identifier_preparer
        self.postgres = url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg"

    def close(self):
        try:
            self.con.close()
        finally:
            self.engine.dispose()

    def quote(self, name: str) -> str:
        return self.preparer.quote_identifier(name)

    def tables(self, schema: str | None) -> list[tuple[str | None, str]]:
        inspector = self.sa.inspect(self.con)
        if schema is not None:
            schemas = [s for s in inspector.get_schema_names() if s.lower() == schema.lower()]
            if not schemas:
                return []
            schema = schemas[0]
        try:
            names = inspector.get_table_names(schema=schema) + inspector.get_view_names(schema=schema)
        except self.sa.exc.DBAPIError as err:
            raise InputError(f"{masked(self.spec)}: cannot list tables ({_describe(err)})") from None
        return [(schema, name) for name in names]

    def columns(self, schema: str | None, table: str) -> list[str]:
        return [c["name"] for c in self.sa.inspect(self.con).get_columns(table, schema=schema)]

    def query_columns(self, sql: str, source: str) -> list[str]:
        with self._guard(source):
            return list(self.con.exec_driver_sql(self._escaped(sql)).keys())

    def stream(self, sql: str, batch_size: int, source: str = "") -> Iterator[tuple]:
        with self._guard(source):
            result = self.con.execution_options(stream_results=True, max_row_buffer=batch_size).exec_driver_sql(
                self._escaped(sql))
        try:
            while True:
                with self._guard(source):
                    rows = result.fetchmany(batch_size)
                if not rows:
                    return
                yield from rows
        finally:
            result.close()

    def scalar(self, sql: str, source: str = ""):
        with self._guard(source):
            return self.con.exec_driver_sql(self._escaped(sql)).scalar()

    def fetch_all(self, sql: str) -> list[tuple]:
        with self._guard():
            return [tuple(r) for r in self.con.exec_driver_sql(self._escaped(sql)).fetchall()]

    def execute(self, sql: str) -> None:
        with self._guard():
            self.con.exec_driver_sql(self._escaped(sql))

    @contextmanager
    def transaction(self):
        if self.con.in_transaction():  # autobegun by an earlier read: finish it first
            self.con.commit()
        with self.con.begin():
            yield

    def write_frame(self, table: str, frame: pd.DataFrame, replace: bool) -> None:
        with self._guard():
            frame.to_sql(table, self.con, if_exists="replace" if replace else "append", index=False,
                         method=self._insert_method(), chunksize=self._chunk(frame))

    def append_frame(self, qualified: str, frame: pd.DataFrame) -> None:
        columns = ", ".join(self.quote(str(c)) for c in frame.columns)
        rows = [tuple(None if _missing(v) else v for v in row) for row in frame.itertuples(index=False, name=None)]
        with self._guard():
            if self.postgres:
                self._copy_rows(qualified, columns, rows)
                return
            marks = ", ".join(f":p{i}" for i in range(len(frame.columns)))
            statement = self.sa.text(f"INSERT INTO {qualified} ({columns}) VALUES ({marks})")
            self.con.execute(statement, [{f"p{i}": v for i, v in enumerate(row)} for row in rows])

    def drop(self, table: str) -> None:
        self.execute(f"DROP TABLE IF EXISTS {self.quote(table)}")

    def _escaped(self, sql: str) -> str:
        """SQL to send without parameters: `%` doubled where the driver's placeholders use it."""
        return sql.replace("%", "%%") if self.engine.dialect.paramstyle in ("format", "pyformat") else sql

    def _insert_method(self):
        """COPY on PostgreSQL, executemany on SQLite (faster there than multi-row INSERTs), else multi-row INSERTs."""
        if self.postgres:
            return self._copy
        return None if self.engine.dialect.name == "sqlite" else "multi"

    def _chunk(self, frame: pd.DataFrame) -> int:
        if self.engine.dialect.name == "sqlite":
            return 10_000
        return max(1, 30_000 // max(1, len(frame.columns)))

    def _copy(self, pd_table, conn, keys, data_iter) -> None:
        """pandas `to_sql` method for PostgreSQL (psycopg 3): COPY instead of INSERTs."""
        name = self.qualified(pd_table.schema, pd_table.name)
        self._copy_rows(name, ", ".join(self.quote(k) for k in keys), data_iter, conn)

    def _copy_rows(self, qualified: str, columns: str, rows, conn=None) -> None:
        driver = (conn or self.con).connection.driver_connection
        with driver.cursor() as cursor, cursor.copy(f"COPY {qualified} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    @contextmanager
    def _guard(self, source: str = ""):
        try:
            yield
        except (self.sa.exc.DBAPIError, self.engine.dialect.loaded_dbapi.Error) as err:  # the driver's, from COPY
            what = f"the {source} failed" if source else "a statement failed"
            raise InputError(f"{masked(self.spec)}: {what} ({_describe(err)})") from None


def _conform(frame: pd.DataFrame, dtypes) -> pd.DataFrame:
    """A later part with the first part's integer columns as integers: pandas makes an integer column
    with an empty value float, which an integer database column refuses."""
    changes = {}
    for column, dtype in dtypes.items():
        if column in frame and pd.api.types.is_integer_dtype(dtype) and pd.api.types.is_float_dtype(frame[column]):
            values = frame[column]
            if (values.dropna() % 1 == 0).all():
                changes[column] = values.astype("Int64")
    return frame.assign(**changes) if changes else frame


def _duckdb_path(spec) -> str | None:
    text = str(spec)
    if text.lower().startswith("duckdb:///"):
        return text[len("duckdb:///"):] or ":memory:"
    if not _URL.match(text) and text.lower().endswith(DUCKDB_SUFFIXES):
        return text
    return None


def _describe(err) -> str:
    """A driver error without its message (which can quote row values): class and SQLSTATE."""
    orig = getattr(err, "orig", err)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return type(orig).__name__ + (f", SQLSTATE {state}" if state else "")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _missing(value) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _id_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        return None if value != value else (str(int(value)) if value.is_integer() else str(value))
    if isinstance(value, decimal.Decimal):
        return str(int(value)) if value == value.to_integral_value() else str(value)
    if isinstance(value, (bytes, memoryview)):
        value = _decoded(value)
    return str(value)


def _date_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() and value.tzinfo is None else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _decoded(value):
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return value
