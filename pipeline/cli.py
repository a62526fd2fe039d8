"""The `lbp-audit` command."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import types
from pathlib import Path

from . import __version__


def _extractor(args):
    from .extract import Extractor

    return Extractor(rules_dir=args.rules)


def cmd_run(args) -> int:
    from .batch import RunError, run
    from .progress import progress_wanted

    columns = {k: v for k, v in (("note_id", args.id_column), ("text", args.text_column)) if v}
    try:
        manifest = run(args.notes, args.out, fmt=args.format, columns=columns, snippets=not args.no_text,
                       orders_path=args.orders, edition=args.edition, window_days=args.window_days,
                       rules_dir=args.rules, jobs=args.jobs or os.cpu_count() or 1, chunk_size=args.chunk_size,
                       resume=args.resume, progress=progress_wanted(sys.stderr, args.no_progress),
                       keep_parts=args.keep_parts, table=args.table, query=args.query,
                       orders_table=args.orders_table, orders_query=args.orders_query, omop=args.omop,
                       to_sql=args.to_sql, engine=args.engine, shared_output=args.shared_output,
                       encoding=args.encoding, max_chars=args.max_chars)
    except RunError as err:
        print(f"lbp-audit: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lbp-audit: interrupted; the chunks completed so far are kept in {Path(args.out) / '_parts'}: "
              f"run the same command with --resume to continue", file=sys.stderr)
        return 130
    counts = manifest["counts"]
    kinds = manifest.get("errors_by_kind") or {}
    why = f" ({', '.join(f'{n:,} {kind}' for kind, n in kinds.items())})" if kinds else ""
    print(f"lbp-audit {__version__}: {counts['notes_read']:,} notes read: {counts['notes_written']:,} summarised, "
          f"{counts['errors']:,} errors{why}, {counts['findings']:,} findings")
    _warn_about(manifest, args.notes)
    if args.orders:
        verdicts = ", ".join(f"{n} {v}" for v, n in sorted(counts["verdicts"].items(), key=lambda kv: -kv[1]))
        print(f"orders: {counts['orders_read']} read, {counts['orders_judged']} matched to a note, "
              f"{counts['orders_unmatched']} unmatched; verdicts: {verdicts or 'none'}")
    timings = manifest["timings"]
    rate = timings["notes_per_second"]
    resumed = f", {manifest['resumed']} resumed" if manifest["resumed"] else ""
    print(f"speed: {rate if rate is not None else '-'} notes/s on {manifest['workers']} process"
          f"{'es' if manifest['workers'] > 1 else ''} ({manifest['chunks']} chunks{resumed}; {timings['total']} s in all)")
    outputs = {**manifest["outputs"], "manifest": str(Path(args.out) / "manifest.json")}
    width = max(map(len, outputs)) + 1
    for name, path in outputs.items():
        print(f"  {name:<{width}}{path}")
    if manifest.get("database"):
        from .sql import masked

        print(f"  database: {', '.join(manifest['database'].values())} in {masked(args.to_sql)}")
    return 0


_WARNINGS = {
    "note_date not a date": "{n:,} notes with a note_date that is not a YYYY-MM-DD date: summarised, their date left "
                            "out of order matching and the choice of guideline edition",
    "order_date not a date": "{n:,} orders with an order_date that is not a YYYY-MM-DD date: judged by their note's "
                             "date, not matched by patient and date",
}


def _warn_about(manifest: dict, notes) -> None:
    """One line on standard error for each kind of problem the run worked around (counts only, never text)."""
    if manifest["counts"]["notes_read"] == 0:
        print(f"lbp-audit: warning: no notes in {notes}", file=sys.stderr)
    for kind, n in (manifest.get("warnings") or {}).items():
        print(f"lbp-audit: warning: {_WARNINGS.get(kind, '{n:,} ' + kind).format(n=n)}", file=sys.stderr)
    undecodable = (manifest.get("errors_by_kind") or {}).get("not valid UTF-8", 0)
    if undecodable:
        print(f"lbp-audit: warning: {undecodable:,} of the errors are not valid UTF-8: if the file was saved as "
              f"Windows or Latin-1 text, run again with --encoding cp1252 (or latin-1)", file=sys.stderr)


def cmd_explain(args) -> int:
    from .explain import assess, render

    from .sources import check_encoding, undecodable
    from .tables import InputError

    where = args.file or ("the note" if args.text and args.text != "-" else "standard input")
    encoding = check_encoding(args.encoding)
    codec = "utf-8-sig" if encoding == "utf-8" else encoding  # a byte order mark is not part of the note
    try:
        if args.file:
            text = Path(args.file).read_bytes().decode(codec)
        elif args.text and args.text != "-":
            text = args.text
        else:
            text = sys.stdin.buffer.read().decode(codec)
    except UnicodeDecodeError as err:
        raise InputError(f"{where}: {undecodable(err, encoding)}; if it is Windows or Latin-1 text, add "
                         f"--encoding cp1252 (or latin-1)") from None
    except OSError as err:
        raise InputError(f"{where}: cannot be read ({err.strerror or type(err).__name__})") from None
    text = text.replace("\0", " ")  # as `run` reads it
    if not text.strip():
        raise InputError(f"{where}: empty note (nothing to explain)")
    if len(text) > args.max_chars:
        raise InputError(f"{where}: note too long ({len(text):,} characters; the limit is {args.max_chars:,}: "
                         f"raise it with --max-chars)")
    extractor = _extractor(args)
    extractor.nlp.max_length = max(extractor.nlp.max_length, args.max_chars)
    result = extractor.extract(text, note_id=args.note_id)
    assessment = assess(result, extractor.rules, args.order or [], date=args.date, edition=args.edition,
                        priority=args.priority)
    if args.json:
        print(json.dumps({"summary": result.summary, "findings": [f.as_row() for f in result.findings],
                          **assessment.as_json()}, indent=2, default=str))
    else:
        print(render(result, assessment))
    return 0


def _fmt(value) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def _confusion_table(confusion: dict) -> str:
    """Gold verdicts down, predicted across."""
    pairs = [key.split("->") for key in confusion]
    gold = sorted({g for g, _ in pairs})
    predicted = sorted({p for _, p in pairs})
    short = {v: v.replace("_imaging", "").replace("_appropriate", "").replace("wrong_", "w_")[:9] for v in predicted}
    lines = [f"{'gold / predicted':<22}" + "".join(f"{short[p]:>10}" for p in predicted)]
    for g in gold:
        lines.append(f"{g:<22}" + "".join(f"{confusion.get(f'{g}->{p}', 0) or '.':>10}" for p in predicted))
    return "\n".join(lines)


def cmd_evaluate(args) -> int:
    from .corpus import load_corpus
    from .evaluate import evaluate_corpus, evaluate_negex_kit
    from .tables import write_json

    extractor = _extractor(args)
    out = Path(args.out)
    status = 0
    if args.negex:
        report = evaluate_negex_kit(args.negex, extractor)
        print(f"NegEx/ConText test kit {args.negex}: {report['rows']} rows ({report['skipped']} skipped)")
        print(f"{'':<14}{'P':>7}{'R':>7}{'F1':>7}{'acc':>7}")
        for key in ("negation", "temporality", "experiencer"):
            r = report[key]
            print(f"{key:<14}{_fmt(r['precision']):>7}{_fmt(r['recall']):>7}{_fmt(r['f1']):>7}{_fmt(r['accuracy']):>7}")
        write_json(report, out / "negex_kit.json")
        if not args.corpus:
            return 0
    notes = load_corpus(args.corpus)
    report = evaluate_corpus(notes, extractor, edition=args.edition)
    print(f"Corpus: {report['notes']} notes")
    print(f"{'LABEL':<30}{'P':>7}{'R':>7}{'F1':>7}{'TP':>5}{'FP':>5}{'FN':>5}")
    for label, r in report["per_label"].items():
        print(f"{label:<30}{_fmt(r['precision']):>7}{_fmt(r['recall']):>7}{_fmt(r['f1']):>7}"
              f"{r['tp']:>5}{r['fp']:>5}{r['fn']:>5}")
    m = report["micro"]
    print(f"{'micro (present)':<30}{_fmt(m['precision']):>7}{_fmt(m['recall']):>7}{_fmt(m['f1']):>7}"
          f"{m['tp']:>5}{m['fp']:>5}{m['fn']:>5}")
    print(f"status accuracy (present/possible/absent/empty): {_fmt(report['status_accuracy'])}")
    print(f"false alarms on documented-absent labels: {_fmt(report['false_alarm_rate'])} "
          f"of {report['documented_absent']}")
    for key, value in report["fields"].items():
        print(f"{key} accuracy: {_fmt(value)}")
    mentions = report["mentions"]
    if mentions["gold"]:
        print(f"mentions: {mentions['gold']} gold, recall {_fmt(mentions['recall'])}, "
              f"assertion accuracy {_fmt(mentions['assertion_accuracy'])}")
    audit = report["audit"]
    if audit:
        print(f"scenario accuracy: {_fmt(audit['scenario_accuracy'])}; urgency accuracy: "
              f"{_fmt(audit['urgency_accuracy'])} ({audit['notes_scored']} notes)")
        print(f"verdict agreement: {_fmt(audit['verdict_agreement'])} over {audit['verdict_rows']} verdict rows; "
              f"missed imaging found {audit['missed_imaging']['found']} of {audit['missed_imaging']['gold']}")
        print(_confusion_table(audit["confusion"]))
    if args.show_errors:
        for row in (audit or {}).get("disagreements", []):
            print(f"  {row['note_id']:<14}{row['order_id'] or '(no order)':<14}{row['edition']:<10}"
                  f"gold {row['gold']:<20}predicted {row['predicted']}")
        for row in report["mismatches"]:
            print(f"  {row['note_id']:<14}{row['label']:<30}gold {row['gold']:<9}predicted {row['predicted']}")
    path = write_json(report, out / "corpus.json")
    print(f"report: {path}")
    if args.min_micro_f1 is not None and (m["f1"] or 0) < args.min_micro_f1:
        print(f"micro-F1 {_fmt(m['f1'])} is below the required {args.min_micro_f1}", file=sys.stderr)
        status = 1
    return status


def cmd_report(args) -> int:
    from .report import write_report

    path, summary = write_report(args.dir, out=args.out, no_text=args.no_text, rules_dir=args.rules)
    print(f"report: {path}")
    print(summary)
    return 0


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return number


def _input_options(p: argparse.ArgumentParser) -> None:
    from .batch import DEFAULT_MAX_CHARS

    p.add_argument("--encoding", default="utf-8",
                   help="encoding of CSV, JSONL and .txt input (default utf-8; e.g. cp1252 or latin-1 for Windows "
                        "exports): rows not valid in it go to errors")
    p.add_argument("--max-chars", type=_positive, default=DEFAULT_MAX_CHARS,
                   help=f"a longer note goes to errors (default {DEFAULT_MAX_CHARS:,} characters; such a note "
                        f"takes ~20 s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lbp-audit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"lbp-audit {__version__}")
    parser.add_argument("--rules", help="folder of rule files (default: the shipped patterns/)")
    parser.add_argument("--debug", action="store_true",
                        help="on an unexpected error, show Python's traceback (it may quote note text)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="extract findings from every note and write the tables")
    p.add_argument("notes", help="CSV, JSONL or Parquet file, or a folder of .txt files")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    p.add_argument("--id-column", help="column holding the note id (default note_id)")
    p.add_argument("--text-column", help="column holding the note text (default text)")
    p.add_argument("--no-text", action="store_true",
                   help="write no note text: no matched words or cues in the findings, no quotes in the rationales, "
                        "no snippet in note_nlp (the manifest says no_text: true)")
    p.add_argument("--no-snippets", dest="no_text", action="store_true", help=argparse.SUPPRESS)  # the old name
    p.add_argument("--orders", help="imaging orders to audit (CSV, JSONL or Parquet): writes the audit table")
    p.add_argument("--edition", help="judge everything by one guideline edition (ACR-2021 or ACR-2016) "
                                     "instead of choosing by order date")
    p.add_argument("--window-days", type=int, default=28,
                   help="match an order to the patient's latest note up to this many days before it (default 28)")
    p.add_argument("--jobs", type=_positive, default=None,
                   help="worker processes (default: the number of cores; 1 runs in this process)")
    p.add_argument("--chunk-size", type=_positive, default=500,
                   help="notes per chunk: the unit of work, of parts on disk and of resuming (default 500)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run into the same --out from its last completed chunk "
                        "(same inputs and options required)")
    p.add_argument("--no-progress", action="store_true", help="no progress line on the terminal")
    p.add_argument("--keep-parts", action="store_true", help="keep the per-chunk parts in DIR/_parts")
    p.add_argument("--shared-output", action="store_true",
                   help="create the output files with the permissions your umask gives (default: readable by "
                        "you only)")
    p.add_argument("--engine", choices=("local", "spark"), default="local",
                   help="local processes (default) or Spark: the master in LBP_SPARK_MASTER (default local[*]) "
                        "or the active session; NOTES 'spark' with --table reads a table of its catalog")
    p.add_argument("--table", help="NOTES is a database (or 'spark' with --engine spark): read this table")
    p.add_argument("--query", help="NOTES is a database: read the rows of this SQL query")
    p.add_argument("--orders-table", help="ORDERS is a database: read this table")
    p.add_argument("--orders-query", help="ORDERS is a database: read the rows of this SQL query")
    p.add_argument("--omop", action="store_true",
                   help="OMOP CDM input tables (NOTE, ...) and a note_nlp output table")
    p.add_argument("--to-sql", metavar="URL", help="also write every table into this database")
    _input_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("explain", help="one note in the terminal: findings, assertions, evidence")
    p.add_argument("text", nargs="?", help="the note text ('-' or nothing: read standard input)")
    p.add_argument("--file", help="read the note from a file")
    p.add_argument("--note-id", default="note")
    p.add_argument("--json", action="store_true", help="print the findings, summary and audit as JSON")
    p.add_argument("--order", action="append", help="judge this imaging order on the spot (repeatable), "
                                                    "e.g. --order \"MRI L-spine w/o\" or a CPT code")
    p.add_argument("--priority", help="the order's priority (STAT, urgent, routine)")
    p.add_argument("--date", help="the order date (YYYY-MM-DD): picks the guideline edition in force")
    p.add_argument("--edition", help="force a guideline edition (ACR-2021 or ACR-2016)")
    _input_options(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("evaluate", help="precision / recall / F1 against an annotated corpus")
    p.add_argument("corpus", nargs="?", help="a .jsonl file or folder (default: the project's corpora/lbp)")
    p.add_argument("--negex", help="also score a NegEx/ConText test-kit file (tab-separated)")
    p.add_argument("--out", default="eval-out", help="folder for the JSON reports (default eval-out/)")
    p.add_argument("--show-errors", action="store_true", help="list every label the pipeline got wrong")
    p.add_argument("--min-micro-f1", type=float, help="exit 1 when micro-F1 falls below this")
    p.add_argument("--edition", help="judge the corpus orders by one guideline edition instead of by date")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="an HTML report of a finished run for a quality committee")
    p.add_argument("dir", help="the output folder of a finished `lbp-audit run`")
    p.add_argument("--out", help="the HTML file to write (default DIR/report.html)")
    p.add_argument("--no-text", action="store_true",
                   help="note ids, labels and rule ids only: no note text, snippets or rationales "
                        "(implied when the run was made with --no-text)")
    p.set_defaults(func=cmd_report)

    args = parser.parse_args(argv)
    try:
        with _without_quickumls():
            return args.func(args)
    except Exception as err:  # a clear one-line error; never note text
        from .corpus import CorpusError
        from .rules import RuleError
        from .scenarios import UnknownEdition
        from .tables import InputError, UsageError

        if isinstance(err, (InputError, RuleError, CorpusError, FileNotFoundError, UsageError, UnknownEdition)):
            print(f"lbp-audit: error: {err}", file=sys.stderr)
            return 2
        if isinstance(err, OSError) and err.filename is not None:  # a path that cannot be read or written
            print(f"lbp-audit: error: {err.filename}: {err.strerror or type(err).__name__}", file=sys.stderr)
            return 2
        if args.debug:
            raise
        print(f"lbp-audit: internal error: {_where(err)}; its message is not shown, as it may quote note text "
              f"(run again with --debug to see the traceback)", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _without_quickumls():
    """While a command runs, `import quickumls` gives an empty placeholder: medspaCy imports QuickUMLS only to
    register a component this tool never adds, and that import (nltk, scipy.stats) was a third of the
    start-up. The command line owns its process; afterwards the placeholders leave `sys.modules`, so a
    later `import quickumls` gets the real package. Nothing is imported here: an error before the
    pipeline is built costs nothing more."""
    if "quickumls" in sys.modules or "medspacy" in sys.modules:
        yield
        return
    component = types.ModuleType("quickumls.spacy_component")
    placeholder = types.ModuleType("quickumls")
    placeholder.spacy_component = component
    sys.modules.update({"quickumls": placeholder, "quickumls.spacy_component": component})
    try:
        yield
    finally:
        for name, module in (("quickumls", placeholder), ("quickumls.spacy_component", component)):
            if sys.modules.get(name) is module:
                del sys.modules[name]


def _where(err: BaseException) -> str:
    """An unexpected exception's type and the innermost line of this package it passed through."""
    import traceback

    ours = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).parent == Path(__file__).parent]
    return type(err).__name__ + (f" in pipeline/{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "")


if __name__ == "__main__":
    sys.exit(main())
