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
