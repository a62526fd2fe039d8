"""Accuracy against annotated corpora: note-level statuses, mention-level assertions, and the
sentence-level NegEx/ConText test-kit format."""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from spacy.tokens import Span

from .corpus import GoldNote
from .audit import NEEDS_IMAGING, judge, needs_imaging, parse_date
from .extract import Extractor
from .findings import context_categories
from .labels import LABELS
from .orders import normalise
from .scenarios import choose_edition, recommend
from .summary import evidence_by_label


def prf(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = (2 * precision * recall / (precision + recall)) if precision and recall else (0.0 if tp + fp and tp + fn else None)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def evaluate_corpus(notes: list[GoldNote], extractor: Extractor, edition: str | None = None) -> dict:
    """Per-label P/R/F1 of note-level `present`, status accuracy, false alarms, mention assertions,
    and (when the rules define guideline editions) scenario, urgency and verdict agreement."""
    counts = {label: Counter() for label in LABELS}
    status_total = status_right = absent_total = absent_false_alarm = 0
    confusion: Counter = Counter()
    field_right: Counter = Counter()
    mention_total = mention_found = assertion_right = 0
    mention_confusion: Counter = Counter()
    mismatches = []
    results = list(extractor.pipe((n.note_id, n.text) for n in notes))
    for note, result in zip(notes, results):
        predicted = result.summary
        for label in LABELS:
            gold = note.labels.get(label, "empty")
            pred = predicted[label] or "empty"
            status_total += 1
            status_right += gold == pred
            confusion[(gold, pred)] += 1
            if gold != pred:
                mismatches.append({"note_id": note.note_id, "label": label, "gold": gold, "predicted": pred})
            if gold == "present" and pred == "present":
                counts[label]["tp"] += 1
            elif pred == "present":
                counts[label]["fp"] += 1
            elif gold == "present":
                counts[label]["fn"] += 1
            if gold == "absent":
                absent_total += 1
                absent_false_alarm += pred == "present"
        for key in ("age", "duration_class", "bilateral_deficit", "progressive_deficit"):
            if key in note.gold:
                field_right[key] += note.gold[key] == predicted[key]
                field_right[key + "_n"] += 1
        for mention in note.mentions or []:
            mention_total += 1
            match = next((f for f in result.findings if f.label == mention.label
                          and f.start < mention.end and mention.start < f.end), None)
            if match:
                mention_found += 1
                assertion_right += match.assertion == mention.assertion
                mention_confusion[(mention.assertion, match.assertion)] += 1
            else:
                mention_confusion[(mention.assertion, "missed")] += 1
    per_label = {label: prf(c["tp"], c["fp"], c["fn"]) for label, c in counts.items()}
    micro = prf(*(sum(c[k] for c in counts.values()) for k in ("tp", "fp", "fn")))
    return {
        "notes": len(notes),
        "per_label": per_label,
        "micro": micro,
        "status_accuracy": status_right / status_total if status_total else None,
        "false_alarm_rate": absent_false_alarm / absent_total if absent_total else None,
        "documented_absent": absent_total,
        "status_confusion": {f"{g}->{p}": n for (g, p), n in sorted(confusion.items())},
        "fields": {k: field_right[k] / field_right[k + "_n"] for k in ("age", "duration_class", "bilateral_deficit",
                                                                       "progressive_deficit") if field_right[k + "_n"]},
        "mentions": {
            "gold": mention_total,
            "found": mention_found,
            "recall": mention_found / mention_total if mention_total else None,
            "assertion_accuracy": assertion_right / mention_found if mention_found else None,
            "confusion": {f"{g}->{p}": n for (g, p), n in sorted(mention_confusion.items())},
        },
        "mismatches": mismatches,
        "audit": evaluate_audit(notes, results, extractor.rules, edition) if extractor.rules.editions else None,
    }


def evaluate_audit(notes: list[GoldNote], results, rules, edition: str | None = None) -> dict:
    """Scenario-set and urgency accuracy per note, and verdict agreement over the gold orders plus the
    missed_imaging rows (gold: an urgent or emergent note with no lumbar order)."""
    scenario_right = urgency_right = scored = 0
    confusion: Counter = Counter()
    disagreements = []
    for note, result in zip(notes, results):
        evidence = evidence_by_label(result.findings)
        note_date = parse_date(note.note_date)
        recommendation = recommend(result.summary, choose_edition(rules.editions, note_date, edition))
        if "scenarios" in note.gold:
            scored += 1
            scenario_right += set(recommendation.scenario_ids) == set(note.gold["scenarios"])
            urgency_right += (recommendation.urgency if recommendation.in_scope else "none") == note.gold.get("urgency")
        lumbar_ordered = False
        for order in note.orders:
            chosen = choose_edition(rules.editions, parse_date(order.get("order_date")) or note_date, edition)
            procedure = normalise(order.get("description"), order.get("cpt"), rules.orders)
            lumbar_ordered |= procedure.lumbar
            predicted = judge(procedure, recommend(result.summary, chosen), chosen, evidence)["verdict"]
            gold = order.get("gold_verdict")
            if gold:
                confusion[(gold, predicted)] += 1
                if gold != predicted:
                    disagreements.append({"note_id": note.note_id, "order_id": order.get("order_id"),
                                          "edition": chosen.id, "gold": gold, "predicted": predicted})
        if "urgency" in note.gold:
            gold_lumbar = any(o.get("gold_verdict") != "not_lumbar_imaging" for o in note.orders)
            gold_missed = note.gold["urgency"] in NEEDS_IMAGING and not gold_lumbar
            predicted_missed = needs_imaging(recommendation) and not lumbar_ordered
            if gold_missed or predicted_missed:
                pair = ("missed_imaging" if gold_missed else "no_row", "missed_imaging" if predicted_missed else "no_row")
                confusion[pair] += 1
                if pair[0] != pair[1]:
                    disagreements.append({"note_id": note.note_id, "order_id": "", "edition": recommendation.edition,
                                          "gold": pair[0], "predicted": pair[1]})
    rows = sum(confusion.values())
    agree = sum(n for (g, p), n in confusion.items() if g == p)
    missed_gold = sum(n for (g, _), n in confusion.items() if g == "missed_imaging")
    missed_found = confusion[("missed_imaging", "missed_imaging")]
    return {
        "notes_scored": scored,
        "scenario_accuracy": scenario_right / scored if scored else None,
        "urgency_accuracy": urgency_right / scored if scored else None,
        "verdict_rows": rows,
        "verdict_agreement": agree / rows if rows else None,
        "missed_imaging": {"gold": missed_gold, "found": missed_found,
                           "recall": missed_found / missed_gold if missed_gold else None},
        "confusion": {f"{g}->{p}": n for (g, p), n in sorted(confusion.items())},
        "disagreements": disagreements,
    }


# ---------------------------------------------------------------- NegEx / ConText test kit

KIT_COLUMNS = ("id", "condition", "sentence", "negation", "temporality", "experiencer")


def read_negex_kit(path: str | Path) -> list[dict]:
    """Rows of a tab-separated kit file (header row optional). Files with only a negation column
    (row id, condition, sentence, negation) are read too; their other columns are None."""
    rows = []
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        for line in handle:
            fields = [f.strip() for f in line.rstrip("\r\n").split("\t")]
            if len(fields) < 4 or not fields[0]:
                continue
            if fields[3].lower().startswith("negation"):
                continue
            values = [_unquote(f) for f in fields[:6]] + [None] * (6 - min(6, len(fields)))
            rows.append(dict(zip(KIT_COLUMNS, values)))
    return rows


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) > 1 and value[0] == value[-1] == '"' else value


def condition_span(doc, condition: str, sentence: str) -> Span | None:
    """The row's condition in the sentence: its upper-cased occurrence, else any occurrence."""
    start = sentence.find(condition.upper())
    if start < 0:
        start = sentence.lower().find(condition.lower())
    if start < 0:
        return None
    return doc.char_span(start, start + len(condition), label="CONDITION", alignment_mode="expand")


def kit_assertions(nlp, sentence: str, condition: str) -> set[str] | None:
    """The ConText categories our rules give the row's condition (None if it cannot be found)."""
    doc = nlp.make_doc(sentence)
    for name, proc in nlp.pipeline:
        if name == "medspacy_target_matcher":
            span = condition_span(doc, condition, sentence)
            if span is None:
                return None
            doc.ents = [span]
            continue
        doc = proc(doc)
    return context_categories(doc.ents[0])


def evaluate_negex_kit(path: str | Path, extractor: Extractor) -> dict:
    """Negation, temporality and experiencer P/R/F1 of our ConText rules on a test-kit file."""
    counts = {"negation": Counter(), "temporality": Counter(), "experiencer": Counter()}
    skipped = 0
    confusion = defaultdict(Counter)
    rows = read_negex_kit(path)
    for row in rows:
        categories = kit_assertions(extractor.nlp, row["sentence"], row["condition"])
        if categories is None:
            skipped += 1
            continue
        predicted = {
            "negation": "Negated" if "NEGATED_EXISTENCE" in categories else "Affirmed",
            "temporality": "Historical" if "HISTORICAL" in categories else
                           "Not particular" if "HYPOTHETICAL" in categories else "Recent",
            "experiencer": "Other" if "FAMILY" in categories else "Patient",
        }
        positive = {"negation": "Negated", "temporality": "Historical", "experiencer": "Other"}
        for key, pos in positive.items():
            gold = row[key]
            if gold is None:
                continue
            gold_pos = gold == pos if key != "experiencer" else gold != "Patient"
            pred_pos = predicted[key] == pos
            counts[key]["tp" if gold_pos and pred_pos else "fp" if pred_pos else "fn" if gold_pos else "tn"] += 1
            confusion[key][(gold, predicted[key])] += 1
    report = {"rows": len(rows), "skipped": skipped}
    for key, c in counts.items():
        report[key] = {**prf(c["tp"], c["fp"], c["fn"]), "tn": c["tn"],
                       "accuracy": (c["tp"] + c["tn"]) / max(1, sum(c.values()))}
        report[key]["confusion"] = {f"{g}->{p}": n for (g, p), n in sorted(confusion[key].items())}
    return report
