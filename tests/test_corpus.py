"""The golden corpus as a test: a ratchet on the accuracy reached so far."""
import pytest

from pipeline.corpus import load_corpus
from pipeline.evaluate import evaluate_corpus
from pipeline.labels import LABELS

# Raise these when the rules improve; never lower them to make a change pass.
MIN_MICRO_F1 = 0.95
MAX_FALSE_ALARM_RATE = 0.015
MIN_STATUS_ACCURACY = 0.96
MIN_MENTION_ASSERTION_ACCURACY = 0.95
MIN_VERDICT_AGREEMENT = 0.96
MIN_SCENARIO_ACCURACY = 0.93


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


def test_corpus_covers_every_label_present_and_absent(corpus):
    assert len(corpus) >= 150
    for label in LABELS:
        present = sum(n.labels.get(label) in ("present", "possible") for n in corpus)
        absent = sum(n.labels.get(label) == "absent" for n in corpus)
        assert present >= 8 and absent >= 8, label
    assert len({n.note_type for n in corpus}) == 8
    assert sum(1 for n in corpus if n.mentions) >= 50


@pytest.mark.corpus
def test_corpus_accuracy_ratchet(corpus, extractor):
    report = evaluate_corpus(corpus, extractor)
    assert report["micro"]["f1"] >= MIN_MICRO_F1
    assert report["false_alarm_rate"] <= MAX_FALSE_ALARM_RATE
    assert report["status_accuracy"] >= MIN_STATUS_ACCURACY
    assert report["mentions"]["assertion_accuracy"] >= MIN_MENTION_ASSERTION_ACCURACY
    audit = report["audit"]
    assert audit["verdict_agreement"] >= MIN_VERDICT_AGREEMENT
    assert audit["scenario_accuracy"] >= MIN_SCENARIO_ACCURACY
    assert audit["missed_imaging"]["found"] == audit["missed_imaging"]["gold"]


def test_corpus_gold_scenarios_follow_the_rules(corpus, rules):
    """The rule data applied to each note's gold labels gives its gold scenarios and urgency (2021 edition),
    and its gold verdicts under the edition of the note's date: a check of both the gold and the rules."""
    from pipeline.audit import parse_date, verdict_of
    from pipeline.orders import normalise
    from pipeline.scenarios import choose_edition, recommend
    from pipeline.summary import in_scope

    latest = choose_edition(rules.editions, None, "ACR-2021")
    for note in corpus:
        gold = {label: note.labels.get(label) for label in LABELS}
        gold.update({k: note.gold.get(k) for k in ("age", "bilateral_deficit", "progressive_deficit")})
        gold["in_scope"] = in_scope(gold)
        recommendation = recommend(gold, latest)
        assert set(recommendation.scenario_ids) == set(note.gold["scenarios"]), note.note_id
        assert (recommendation.urgency if recommendation.in_scope else "none") == note.gold["urgency"], note.note_id
        for order in note.orders:
            edition = choose_edition(rules.editions, parse_date(order.get("order_date")) or parse_date(note.note_date))
            procedure = normalise(order.get("description"), order.get("cpt"), rules.orders)
            if order.get("gold_procedure"):
                assert procedure.procedure == order["gold_procedure"], order["order_id"]
            assert verdict_of(procedure, recommend(gold, edition))[0] == order["gold_verdict"], order["order_id"]
