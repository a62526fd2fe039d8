"""The Spark engine: the local engine's per-chunk work on Spark executors, over a Spark DataFrame.

`lbp-audit run NOTES --engine spark` and `audit_dataframe(notes_df, orders_df)` share one plan:

1. each input record gets `seq`, its position in the input: Parquet by file (in name order) then row index;
   a DataFrame or catalog table by partition then row (the order `collect()` gives); CSV, JSONL, `.txt`
   folders and databases are read and checked on the driver by the local engine's streaming readers (one
   multi-line CSV cannot be split anyway) and staged as Parquet;
2. a note id seen before is found by grouping the ids (the first occurrence by `seq` is kept), and each
   record is checked by `batch.check_note`, the local engine's rules and reasons;
3. the records are range-partitioned by chunk (`seq // chunk_size`: the local engine's chunks) and sorted by
   `seq`; `mapInArrow` runs `batch.process_chunk` on each chunk with an Extractor built once per Python
   worker (`batch.cached_extractor`: medspaCy's rules do not pickle, so no Extractor is ever shipped) and
   emits the chunk's tables as Parquet bytes and its done marker (counts, and the NoteRefs an order may
   link to);
4. on the driver, the command writes those parts to DIR/_parts and publishes them with the local engine's
   code (the same files, byte for byte); the API decodes them into DataFrames. Orders are matched on the
   driver (`OrderMatcher`) from the linked NoteRefs only.
"""
from __future__ import annotations

import functools
import io
import json
import os
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping
from urllib.parse import unquote

from .audit import DEFAULT_WINDOW_DAYS, NoteRef, OrderMatcher
from .batch import (DEFAULT_CHUNK_SIZE, NOTE_COLUMNS, Chunk, ChunkSettings, NoteValidator, Parts, RunError,
                    check_note, chunk_done, chunks_of, note_key, process_chunk, read_orders, table_schemas)
from .sources import Renamer, fingerprint, format_of
from .tables import InputError, UsageError, to_arrow

MASTER_ENV = "LBP_SPARK_MASTER"
CATALOG = "spark"  # NOTES that names the session's catalog (with --table)
PART_COLUMNS = "chunk long, name string, data binary"  # one row per table of a chunk, then its done marker
DONE = "done"
STAGED = "input"  # DIR/_parts/input: CSV / JSONL / .txt / database notes staged as Parquet
_ERROR = "_error"  # a staged record's reason when the driver's check found it not a note
_DUPLICATE = "_dup"
_STORAGE = re.compile(r"^(?:s3a?|s3n|gs|abfss?|wasbs?|hdfs|dbfs|file):", re.IGNORECASE)
_LOG_CONFIG = Path(__file__).with_name("log4j2.properties")
_SPARK_TYPES = {"string": "string", "int64": "bigint", "bool": "boolean", "double": "double"}


def session(master: str | None = None):
    """The active SparkSession, else a new one on `master` (default: $LBP_SPARK_MASTER, else local[*]):
    no UI, quiet logs, UTC session time zone; in local mode nothing bound beyond loopback, and workers run
    this interpreter unless PYSPARK_PYTHON says otherwise."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise UsageError("--engine spark needs pyspark: pip install 'lbp-audit[spark]'") from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    master = master or os.environ.get(MASTER_ENV) or "local[*]"
    builder = (SparkSession.builder.master(master).appName("lbp-audit")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.session.timeZone", "UTC"))
    if master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = (builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
                   .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={_LOG_CONFIG.as_uri()}"))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


# ---------------------------------------------------------------- numbering the input


def _col(name: str):
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


def _our_columns(frame, columns: dict | None, where: str, *extra):
    """`frame` with our column names (`columns` maps ours to theirs, as --id-column / --text-column do)."""
    names = Renamer(columns, NOTE_COLUMNS).check(frame.columns, ("note_id", "text"), where)
    return frame.select(*(_col(theirs).alias(ours) for theirs, ours in names.items()), *extra)


def _numbered_by_partition(frame):
    """(`frame` with `seq`, its rows' positions in partition order as `collect()` returns them; its row count;
    the cached frame behind it, which keeps the numbers put until it is unpersisted)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    marked = frame.select("*", F.spark_partition_id().alias("_pid"),
                          F.monotonically_increasing_id().alias("_mid")).persist(StorageLevel.MEMORY_AND_DISK)
    counts = dict(marked.groupBy("_pid").count().collect())
    offsets, total = [], 0
    for pid in range(max(counts, default=-1) + 1):
        offsets.append(total)
        total += counts.get(pid, 0)
    # monotonically_increasing_id = partition << 33 | row number within the partition
    position = F.col("_mid").bitwiseAND(F.lit((1 << 33) - 1))
    start = F.element_at(F.array(*(F.lit(o) for o in offsets or [0])), F.col("_pid") + 1) \
        if offsets else F.lit(0)
    return marked.withColumn("seq", (start + position).cast("long")).drop("_pid", "_mid"), total, marked


def _numbered_parquet(spark, spec: str, columns: dict | None):
    """(the Parquet notes at `spec` (a file, a folder of `.parquet` parts, or a URI Spark reads) with `seq`:
    files in name order as the local engine reads them, then row index; the row count)."""
    from pyspark.sql import functions as F

    path = Path(spec)
    if not _STORAGE.match(spec) and path.is_dir():
        files = [str(p) for p in sorted(p for p in path.iterdir() if p.suffix == ".parquet")]
        if not files:
            raise InputError(f"{path}: a folder without .parquet files")
    else:
        files = [spec]
    frame = spark.read.parquet(*files)
    frame = _our_columns(frame, columns, path.name or spec, F.col("_metadata.file_path").alias("_file"),
                         F.col("_metadata.row_index").alias("_row"))
    counts = {row["_file"]: row["count"] for row in frame.groupBy("_file").count().collect()}
    offsets, total = [], 0
    for name in sorted(counts, key=unquote):
        offsets += [F.lit(name), F.lit(total)]
        total += counts[name]
    if not counts:
        return frame.withColumn("seq", F.lit(0).cast("long")).drop("_file", "_row"), 0
    start = F.create_map(*offsets)[F.col("_file")]
    return frame.withColumn("seq", (start + F.col("_row")).cast("long")).drop("_file", "_row"), total


def _stage(source: Iterable[dict], path: Path, chunk_size: int) -> int:
    """Check the records of a local-engine `Source` as the local engine does and stage them as Parquet
    (seq, the note columns as text, and the reason of a record that is not a note). Returns the rows read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("seq", pa.int64()), *((name, pa.string()) for name in NOTE_COLUMNS), (_ERROR, pa.string())])
    path.parent.mkdir(parents=True, exist_ok=True)
    validator = NoteValidator()
    with pq.ParquetWriter(path, schema) as writer:
        for chunk in chunks_of(iter(source), chunk_size, validator):
            rows = chunk.notes + [{"seq": seq, "note_id": error["note_id"], _ERROR: error["reason"]}
                                  for seq, error in chunk.errors]
            writer.write_table(to_arrow(rows, schema))
    return validator.rows


def _duplicates_marked(frame):
    """`frame` with `_dup` true on every record whose note id an earlier record (by `seq`) already has."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    keys = frame.select("seq", "note_id").mapInArrow(_note_keys, "seq long, key string").where("key IS NOT NULL")
    first = F.min("seq").over(Window.partitionBy("key"))
    repeats = keys.withColumn("_first", first).where(F.col("seq") > F.col("_first")) \
        .select("seq", F.lit(True).alias(_DUPLICATE))
    return frame.join(repeats, "seq", "left")


def _note_keys(batches):
    import pyarrow as pa

    for batch in batches:
        ids = batch.column("note_id").to_pylist()
        yield pa.RecordBatch.from_arrays([batch.column("seq"), pa.array([note_key(i) for i in ids], pa.string())],
                                         names=["seq", "key"])


# ---------------------------------------------------------------- extraction on the executors


def _extracted(frame, rows: int, settings: ChunkSettings, chunk_size: int, staged: bool):
    """One row per table of each chunk (Parquet bytes) and one per chunk's done marker (JSON), cached."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    chunks = max(1, -(-rows // chunk_size))
    keys = _partition_keys(frame.sparkSession, chunks)  # chunk i → partition i, one chunk per task
    key = F.element_at(F.array(*(F.lit(k) for k in keys)), F.expr(f"seq DIV {int(chunk_size)}").cast("int") + 1) \
        .cast("long")  # hashed as the longs of spark.range
    ordered = frame.repartition(chunks, key.alias("_key")).sortWithinPartitions("seq")
    task = functools.partial(_extract_partition, settings=settings, chunk_size=chunk_size, staged=staged)
    parts = ordered.mapInArrow(task, PART_COLUMNS).persist(StorageLevel.MEMORY_AND_DISK)
    parts.count()  # every chunk extracted once, in parallel; the driver then reads the cache
    return parts


def _partition_keys(spark, n: int) -> list[int]:
    """For each partition i < n, a number that `repartition(n, ...)` sends there: Spark's hash partitioning
    is pmod(hash(key), n), which SQL's `hash` computes, so a small search over 0, 1, 2, … finds them."""
    from pyspark.sql import functions as F

    found: dict[int, int] = {}
    size = 16 * n
    while len(found) < n:
        candidates = spark.range(size).select("id", F.expr(f"pmod(hash(id), {n})").alias("p"))
        found = {row["p"]: row["k"] for row in candidates.groupBy("p").agg(F.min("id").alias("k")).collect()}
        size *= 4
    return [found[i] for i in range(n)]


def _extract_partition(batches, settings: ChunkSettings, chunk_size: int, staged: bool) -> Iterator:
    """mapInArrow: the records of whole chunks, sorted by seq → each chunk's parts and done marker."""
    chunk = None
    for batch in batches:
        for record in batch.to_pylist():
            seq = record["seq"]
            index = seq // chunk_size
            if chunk is not None and chunk.index != index:
                yield _chunk_parts(chunk, settings)
                chunk = None
            if chunk is None:
                chunk = Chunk(index, index * chunk_size)
            record = {k: (None if isinstance(v, float) and v != v else v) for k, v in record.items()}
            if staged:
                error = {"note_id": record["note_id"], "reason": record[_ERROR]} if record[_ERROR] else None
                chunk.add(seq, None if error else record, error)
            else:
                repeated = bool(record.get(_DUPLICATE))
                chunk.add(seq, *check_note(record, seq + 1, lambda _: repeated))
    if chunk is not None:
        yield _chunk_parts(chunk, settings)


def _chunk_parts(chunk: Chunk, settings: ChunkSettings):
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    output = process_chunk(chunk, settings)
    schemas = table_schemas(settings.snippets)
    tables = {"findings": output.findings, "notes": output.notes, "errors": output.errors}
    if settings.links is not None:
        tables["missed"] = output.missed
    data = []
    for name, rows in tables.items():
        buffer = io.BytesIO()
        pq.write_table(to_arrow(rows, schemas[name]), buffer)
        data.append(buffer.getvalue())
    data.append(json.dumps(chunk_done(output, time.perf_counter() - started)).encode("utf-8"))
    names = [*tables, DONE]
    return pa.RecordBatch.from_arrays([pa.array([chunk.index] * len(names), pa.int64()), pa.array(names, pa.string()),
                                       pa.array(data, pa.binary())], names=["chunk", "name", "data"])


# ---------------------------------------------------------------- the command: lbp-audit run --engine spark


@dataclass
class SparkRun:
    rows: int
    chunks: int
    workers: int
    start_seconds: float
    stage_seconds: float


class SparkNotes:
    """NOTES for `run --engine spark`: what the run knows before Spark starts (the fingerprint). Iterating it
    gives nothing: `extract` reads, checks and extracts every record on Spark instead."""

    total = None

    def __init__(self, spec, columns: dict | None, table: str | None, query: str | None, omop: bool,
                 open_local: Callable):
        self.spec, self.columns, self.table = str(spec), columns, table
        self.source = None  # a local-engine Source, staged as Parquet for Spark
        if table and self.spec == CATALOG:
            self.kind, self.fingerprint = "table", {"spark_table": table}
        elif _STORAGE.match(self.spec) and not (table or query):
            self.kind, self.fingerprint = "parquet", {"path": self.spec}
            if not re.search(r"\.(parquet|pq)/?$|/$", self.spec, re.IGNORECASE) and "." in self.spec.rsplit("/", 1)[-1]:
                raise InputError(f"{self.spec}: NOTES on distributed storage must be Parquet (a file or a folder)")
        elif not (table or query) and Path(self.spec).exists() and format_of(Path(self.spec)) == "parquet":
            self.kind, self.fingerprint = "parquet", fingerprint(self.spec)
        else:
            if table and not query and not _maybe_database(self.spec):
                raise UsageError(f"--table with --engine spark reads a table of the session's catalog: give "
                                 f"NOTES as '{CATALOG}' (or a database URL)")
            self.kind = "staged"
            self.source = open_local(spec, columns, table, query, omop)
            self.fingerprint = self.source.fingerprint

    def __iter__(self) -> Iterator[dict]:
        return iter(())

    def fraction(self) -> None:
        return None

    def extract(self, parts: Parts, settings: ChunkSettings, chunk_size: int, settle: Callable[[dict, bool], None],
                spark=None) -> SparkRun:
        """Read, check and extract every note on Spark; write each chunk's parts and done marker under `parts`
        as the local engine does, and `settle` each chunk."""
        clock = time.perf_counter()
        with _spark_errors("could not start Spark (is Java 17 installed?)"):
            spark = spark or session()
        start_seconds = time.perf_counter() - clock
        clock = time.perf_counter()
        cached, chunks = [], 0
        with _spark_errors("the Spark job failed"):
            try:
                if self.kind == "staged":
                    staged = parts.root / STAGED / "notes.parquet"
                    rows = _stage(self.source, staged, chunk_size)
                    frame = spark.read.parquet(str(staged))
                elif self.kind == "parquet":
                    frame, rows = _numbered_parquet(spark, self.spec, self.columns)
                else:
                    frame, rows, marked = _numbered_by_partition(_our_columns(spark.table(self.table), self.columns,
                                                                              self.table))
                    cached.append(marked)
                stage_seconds = time.perf_counter() - clock
                if self.kind != "staged":
                    frame = _duplicates_marked(frame)
                extracted = _extracted(frame, rows, settings, chunk_size, staged=self.kind == "staged")
                cached.append(extracted)
                # one partition of ~64 chunks' parts on the driver at a time
                for row in extracted.coalesce(max(1, -(-rows // (64 * chunk_size)))).toLocalIterator():
                    if row["name"] == DONE:  # after the chunk's parts, as in the local engine
                        done = json.loads(row["data"])
                        parts.save_done(done)
                        settle(done, False)
                        chunks += 1
                    else:
                        _write_bytes(row["data"], parts.part(row["name"], row["chunk"]))
            finally:
                for frame in cached:
                    frame.unpersist()
        return SparkRun(rows, chunks, spark.sparkContext.defaultParallelism, start_seconds, stage_seconds)


@contextmanager
def _spark_errors(what: str):
    """A Spark or Py4J error as one line (its type, never its message, which may quote rows)."""
    try:
        yield
    except Exception as err:
        if type(err).__module__.split(".")[0] not in ("pyspark", "py4j"):
            raise
        raise RunError(f"{what} ({type(err).__name__}); see the Spark logs") from None


def _maybe_database(spec: str) -> bool:
    return "://" in spec or spec.lower().endswith((".duckdb", ".ddb"))


def _write_bytes(data: bytes, path: Path) -> None:
    """A part file, atomically (written under a temporary name, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------- the Python API


def audit_dataframe(notes_df, orders_df=None, *, snippets: bool = True, edition: str | None = None,
                    window_days: int = DEFAULT_WINDOW_DAYS, columns: Mapping[str, str] | None = None,
                    rules_dir: str | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict:
    """The tables of `lbp-audit run` for a Spark DataFrame of notes (`note_id`, `text`; optional `patient_id`,
    `note_date`, `encounter_id`; `columns` maps ours to other names) and optionally one of orders: a dict of
    Spark DataFrames `findings`, `notes`, `errors`, and with orders `audit` and `unmatched_orders`, with the
    rows `run` writes for the same input in the DataFrame's order. Extraction runs now, once, on the
    executors; the DataFrames read its cached result."""
    from pyspark.sql import functions as F

    from .rules import load_rules
    from .scenarios import choose_edition

    if chunk_size < 1:
        raise UsageError("chunk_size must be at least 1")
    spark = notes_df.sparkSession
    rules = load_rules(rules_dir)
    if edition:
        choose_edition(rules.editions, forced=edition)
    matcher = problems = None
    if orders_df is not None:
        orders, problems = read_orders(None, records=(row.asDict() for row in orders_df.collect()))
        matcher = OrderMatcher(orders, rules.editions, rules.orders, window_days, edition)
    rules_dir = str(rules_dir) if rules_dir is not None else None
    settings = ChunkSettings(rules_dir, rules.digest, snippets, edition, matcher.keys if matcher else None)
    frame, rows, marked = _numbered_by_partition(_our_columns(notes_df, dict(columns or {}), "notes DataFrame"))
    extracted = _extracted(_duplicates_marked(frame), rows, settings, chunk_size, staged=False)
    marked.unpersist()
    schemas = table_schemas(snippets)
    tables = {name: _decoded(extracted, name, schemas[name]) for name in ("findings", "notes", "errors")}
    if matcher is not None:
        for row in extracted.where(F.col("name") == DONE).select("data").collect():
            for ref in json.loads(row["data"])["refs"]:
                matcher.offer(NoteRef.from_json(ref))
        matched, unmatched = matcher.finish()
        tables["audit"] = _frame(spark, matched, schemas["audit"]) \
            .unionByName(_decoded(extracted, "missed", schemas["missed"])).orderBy("note_id", "order_id")
        tables["unmatched_orders"] = _frame(spark, problems + unmatched, schemas["unmatched_orders"])
    return tables


def _spark_schema(schema) -> str:
    return ", ".join(f"`{field.name}` {_SPARK_TYPES[str(field.type)]}" for field in schema)


def _frame(spark, rows: list[dict], schema):
    """Driver-side rows as a DataFrame of `schema` (the values as the tables write them)."""
    table = to_arrow(rows, schema)
    return spark.createDataFrame([tuple(row.values()) for row in table.to_pylist()], _spark_schema(schema))


def _decoded(extracted, name: str, schema):
    """The rows of one table of the extracted parts, in chunk order."""
    from pyspark.sql import functions as F

    return extracted.where(F.col("name") == name).select("chunk", "data").orderBy("chunk") \
        .mapInArrow(functools.partial(_part_rows, schema=schema), _spark_schema(schema))


def _part_rows(batches, schema) -> Iterator:
    import pyarrow.parquet as pq

    for batch in batches:
        for data in batch.column("data").to_pylist():
            yield from pq.read_table(io.BytesIO(data), schema=schema).to_batches()
