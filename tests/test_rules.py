import json
import shutil

import pytest

from pipeline.labels import LABELS
from pipeline.rules import RuleError, default_rules_dir, load_rules
from pipeline.sections import find_sections

RULES = load_rules()
TARGET_EXAMPLES = [
    (rule["metadata"]["id"], example)
    for rule in RULES.target_rules
    for example in rule["metadata"].get("examples", [])
]
CONTEXT_EXAMPLES = [
    (rule["metadata"]["id"], example)
    for rule in RULES.context_rules
    for example in rule["metadata"].get("examples", [])
]
SECTION_EXAMPLES = [(rule.id, rule.category, example) for rule in RULES.section_rules for example in rule.examples]


def test_rules_every_file_loads_and_every_label_has_rules():
    assert RULES.target_rules and RULES.context_rules and RULES.section_rules
    covered = {r["category"] for r in RULES.target_rules}
    assert covered == set(LABELS)


def test_rules_every_target_rule_has_an_example():
    missing = [r["metadata"]["id"] for r in RULES.target_rules if not r["metadata"].get("examples")]
    assert missing == []


def test_rules_loader_reports_every_problem_at_once(tmp_path):
    bad = {
        "target_rules": [
            {"literal": "x", "category": "NOT_A_LABEL", "pattern": "(", "metadata": {"id": "RF-X-001"}},
            {"literal": "y", "category": "FOOT_DROP", "pattern": [{"LOWERR": "y"}], "metadata": {"id": "bad id"}},
            {"literal": "z", "category": "FOOT_DROP", "typo_key": 1, "metadata": {"id": "RF-X-001"}},
        ]
    }
    (tmp_path / "targets.json").write_text(json.dumps(bad))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(RuleError) as err:
        load_rules(tmp_path)
    text = "\n".join(err.value.problems)
    for expected in ("not a canonical label", "bad regex", "bad token pattern", "metadata.id",
                     "unknown key 'typo_key'", "duplicate id RF-X-001", "invalid JSON"):
        assert expected in text
    assert len(err.value.problems) >= 7


def test_rules_digest_changes_with_the_rules(tmp_path, rules):
    shutil.copytree(default_rules_dir(), tmp_path / "patterns")
    assert load_rules(tmp_path / "patterns").digest == rules.digest
    sections = tmp_path / "patterns" / "sections.json"
    sections.write_text(sections.read_text().replace("SEC-CC-001", "SEC-CC-009"))
    assert load_rules(tmp_path / "patterns").digest != rules.digest


@pytest.mark.parametrize("rule_id,example", TARGET_EXAMPLES, ids=[f"{r}:{e}" for r, e in TARGET_EXAMPLES])
def test_rules_target_example_is_matched_by_its_rule(extractor, rule_id, example):
    doc = extractor.doc(example)
    assert rule_id in {ent._.target_rule.metadata["id"] for ent in doc.ents}


@pytest.mark.parametrize("rule_id,example", CONTEXT_EXAMPLES, ids=[f"{r}:{e['text']}" for r, e in CONTEXT_EXAMPLES])
def test_rules_context_example_gives_its_assertion(extractor, rule_id, example):
    findings = [f for f in extractor.extract(example["text"]).findings if f.label == example["label"]]
    assert findings, f"no {example['label']} found"
    assert example["assertion"] in {f.assertion for f in findings}


@pytest.mark.parametrize("rule_id,category,example", SECTION_EXAMPLES, ids=[f"{r}:{e}" for r, _, e in SECTION_EXAMPLES])
def test_rules_section_example_starts_its_section(rule_id, category, example):
    sections = find_sections(example + "\n", RULES.section_rules)
    assert sections and sections[0].category == category
