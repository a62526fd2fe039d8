"""One in-process benchmark contender, run by `run.py` in a subprocess of its own:

    python3 benchmarks/contenders.py floor|medspacy|negspacy NOTES.csv

reads the note texts, builds the pipeline, runs `nlp.pipe` over every text consuming each doc, and prints
one JSON line: notes, characters, bytes, read / build / work seconds (wall and CPU), entities found, peak
RSS of this process. Only the `nlp.pipe` loop is timed as the work.
"""
from __future__ import annotations

import csv
import json
import resource
import sys
import time
import warnings

CONTENDERS = {  # name: (short label, what runs)
    "floor": ('floor: spacy.blank("en") tokenizer', 'spacy.blank("en"), tokenizer only'),
    "medspacy": ("medspaCy default pipeline + our target rules",
                 "medspacy.load(): medspaCy tokenizer, PyRuSH sentencizer, TargetMatcher with our target rules, "
                 "ConText with medspaCy's default rules"),
    "negspacy": ("negspacy Negex + our target rules",
                 'spacy.blank("en") + sentencizer + medspaCy TargetMatcher with our target rules + negspacy Negex '
                 "(en_clinical termset)"),
}


def read_texts(path: str) -> list[str]:
    csv.field_size_limit(sys.maxsize)
    with open(path, newline="", encoding="utf-8") as f:
        return [row["text"] for row in csv.DictReader(f)]


def target_rules():
    """Our target rules as medspaCy `TargetRule`s, built as `pipeline/nlp.py` builds them."""
    from medspacy.target_matcher import TargetRule

    from pipeline.rules import load_rules

    return [TargetRule(r["literal"], r["category"], pattern=r.get("pattern"), metadata=r["metadata"])
            for r in load_rules().target_rules]


def _quiet_medspacy() -> None:
    from loguru import logger

    logger.disable("PyRuSH")
    logger.disable("PyFastNER")
    warnings.filterwarnings("ignore")


def build_floor():
    import spacy

    return spacy.blank("en")


def build_medspacy():
    _quiet_medspacy()
    import medspacy

    nlp = medspacy.load()
    nlp.get_pipe("medspacy_target_matcher").add(target_rules())
    return nlp


def build_negspacy():
    _quiet_medspacy()
    import spacy
    from medspacy.target_matcher import TargetMatcher  # noqa: F401  (registers the factory)
    from negspacy.negation import Negex  # noqa: F401  (registers the "negex" factory)
    from negspacy.termsets import termset

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("medspacy_target_matcher", config={"result_type": "ents"}).add(target_rules())
    nlp.add_pipe("negex", config={"neg_termset": termset("en_clinical").get_patterns()})
    return nlp


BUILDERS = {"floor": build_floor, "medspacy": build_medspacy, "negspacy": build_negspacy}


def measure(name: str, notes_path: str) -> dict:
    started = time.perf_counter()
    texts = read_texts(notes_path)
    read_seconds = time.perf_counter() - started
    started = time.perf_counter()
    nlp = BUILDERS[name]()
    build_seconds = time.perf_counter() - started
    entities = tokens = 0
    started_at = time.time()  # wall clock stamps: comparable across processes run side by side
    started, cpu_started = time.perf_counter(), time.process_time()
    for doc in nlp.pipe(texts):
        tokens += len(doc)
        entities += len(doc.ents)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    ended_at = time.time()
    return {
        "contender": name, "pipeline": nlp.pipe_names, "notes": len(texts), "chars": sum(map(len, texts)),
        "bytes": sum(len(t.encode("utf-8")) for t in texts), "tokens": tokens, "entities": entities,
        "read_seconds": round(read_seconds, 3), "build_seconds": round(build_seconds, 3),
        "seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3),
        "started_at": started_at, "ended_at": ended_at,
        "self_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in BUILDERS:
        print(f"usage: contenders.py {{{','.join(BUILDERS)}}} NOTES.csv", file=sys.stderr)
        return 2
    print(json.dumps(measure(*argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
