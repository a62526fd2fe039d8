"""The benchmark in `benchmarks/`: the archive generator, the target checks, and one small run of every
contender end to end (marker `benchmark`, about 45 s)."""
import csv
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generate():
    return _module("generate")


@pytest.fixture(scope="module")
def bench():
    return _module("run")


def _rows(path: Path) -> list[dict]:
    csv.field_size_limit(sys.maxsize)
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_generate_same_seed_same_archive(generate, tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        generate.write_archive(tmp_path / name, 120, seed)
    for table in ("notes.csv", "orders.csv"):
        assert (tmp_path / "a" / table).read_bytes() == (tmp_path / "b" / table).read_bytes()
    assert (tmp_path / "a" / "notes.csv").read_bytes() != (tmp_path / "c" / "notes.csv").read_bytes()


def test_generate_smaller_archive_is_a_prefix(generate, tmp_path):
    generate.write_archive(tmp_path / "small", 40, 1)
    generate.write_archive(tmp_path / "large", 200, 1)
    assert _rows(tmp_path / "small" / "notes.csv") == _rows(tmp_path / "large" / "notes.csv")[:40]


@pytest.fixture(scope="module")
def archive(generate, tmp_path_factory):
    out = tmp_path_factory.mktemp("archive")
    info = generate.write_archive(out, 3000, 0)
    return info, _rows(out / "notes.csv"), _rows(out / "orders.csv")


def test_generate_lengths_within_bounds_median_near_2500(archive):
    info, notes, _ = archive
    lengths = [len(n["text"]) for n in notes]
    assert len(notes) == info["notes"] == 3000
    assert min(lengths) >= 300 and max(lengths) <= 8000
    assert max(lengths) > 7000  # the long tail of templated notes is there
    assert 2200 <= statistics.median(lengths) <= 2800
    assert info["lengths"]["median"] == int(statistics.median(lengths))


def test_generate_orders_link_to_notes(archive):
    _, notes, orders = archive
    note_ids = {n["note_id"] for n in notes}
    encounters = {n["encounter_id"] for n in notes}
    patients = {n["patient_id"] for n in notes}
    assert len(note_ids) == len(notes)
    assert 0.10 <= len({o["order_id"].rsplit("-", 1)[0] for o in orders}) / len(notes) <= 0.20
    for order in orders:
        assert order["note_id"] in note_ids | {""} and order["encounter_id"] in encounters | {""}
        assert order["patient_id"] in patients and order["order_date"]
        assert order["description"] or order["cpt"]
    descriptions = " ".join(o["description"] for o in orders)
    assert "LUMBAR" in descriptions and "CHEST" in descriptions  # lumbar and non-lumbar imaging
    assert any(o["cpt"] and not o["description"] for o in orders)
    assert any(o["description"] and not o["cpt"] for o in orders)


@pytest.mark.parametrize("phrase, low, high", [
    ("saddle anesthesia", 0.30, 0.95),   # negated ROS lists in most notes
    ("foot drop", 0.003, 0.05),          # red flags are rare
    ("cauda equina", 0.002, 0.04),
    ("Return", 0.15, 0.80),              # safety-netting
], ids=["negated-ros", "foot-drop", "ces", "return-precautions"])
def test_generate_phrase_prevalence(archive, phrase, low, high):
    _, notes, _ = archive
    share = sum(phrase.lower() in n["text"].lower() for n in notes) / len(notes)
    assert low <= share <= high


def _lbp(jobs, notes, wall, rss=300, main=None, worker=None):
    return {"id": f"lbp-j{jobs}", "kind": "lbp", "jobs": jobs, "jobs_option": True, "notes": notes,
            "bytes": notes * 2500, "wall_seconds": wall, "peak_rss_mb": rss, "main_hwm_mb": main,
            "largest_child_hwm_mb": worker}


def test_bench_startup_excluded_is_the_marginal_rate(bench):
    end_to_end, excluded = bench.lbp_rows(_lbp(1, 1001, 60.0), _lbp(1, 1, 10.0))
    assert end_to_end["notes_per_s"] == round(1001 / 60.0, 2)
    assert excluded["notes_per_s"] == 20.0 and excluded["notes"] == 1000
    assert excluded["startup_seconds"] == pytest.approx(9.95)


def test_bench_startup_not_separable_on_a_tiny_archive(bench):
    rows = bench.lbp_rows(_lbp(2, 30, 20.0), _lbp(2, 20, 21.0))
    assert rows[1]["notes_per_s"] is None and "too few notes" in rows[1]["warning"]


def test_bench_target_checks(bench):
    rows = {"floor": {"notes_per_s": 100.0}, "medspacy": {"notes_per_s": 5.0},
            "lbp-j1-excl": {"notes_per_s": 60.0}, "lbp-j2-excl": {"notes_per_s": 90.0},
            "lbp-j2": _lbp(2, 1000, 20.0, rss=700, main=300, worker=700)}
    rss = [_lbp(1, 10_000, 500.0, rss=300), _lbp(1, 100_000, 5000.0, rss=400),
           _lbp(2, 10_000, 300.0, rss=1100)]
    checks = bench.target_checks(rows, rss)
    # 60 % of the floor; 12 x medspaCy; 1.5 x with 2 jobs; +33 % RSS at 100k; a 1,100 MB process
    assert [c["status"] for c in checks] == ["pass", "pass", "FAIL", "FAIL", "FAIL"]
    assert "+33.3 %" in checks[3]["measured"] and "1100 MB" in checks[4]["measured"]
    # the floor waited for the CPU half the time: the ratio is judged by notes per CPU second
    rows["floor"].update(notes=1000, seconds=10.0, cpu_seconds=5.0, id="floor")
    rows["lbp-j1-excl"].update(notes=1000, seconds=1000 / 60.0, cpu_seconds=1000 / 60.0, id="lbp-j1-excl")
    starved = bench.target_checks(rows, rss)[0]
    assert starved["status"] == "FAIL" and starved["measured"].startswith("30.0 %")
    assert "floor had 50 % of a core" in starved["measured"]
    # the floor's own 2-process speed-up is shown beside the --jobs 2 figure
    rows["floor-2"] = {"notes_per_s": rows["floor"]["notes_per_s"] * 1.6}
    assert "the floor itself runs 1.60 x as fast on 2 processes" in bench.target_checks(rows, rss)[2]["measured"]
    none = bench.target_checks({}, [])
    assert {c["status"] for c in none} == {"not measured"}


@pytest.mark.benchmark
def test_bench_runs_every_contender_on_the_same_notes(bench, tmp_path):
    """Generator + every contender on 30 notes, lbp-audit with --jobs 1 and its start-up run."""
    status = bench.main(["--notes", "30", "--jobs", "1", "--work", str(tmp_path / "work"), "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    rows = {r["id"]: r for r in results["rows"]}
    assert status == 0
    assert list(rows) == ["floor", "floor-2", "medspacy", "negspacy", "lbp-j1", "lbp-j1-excl"]
    for name in ("floor", "floor-2", "medspacy", "negspacy", "lbp-j1"):
        assert rows[name]["notes"] == 30 and rows[name]["notes_per_s"] > 0 and rows[name]["peak_rss_mb"] > 20
    assert rows["medspacy"]["entities"] > 0 and rows["negspacy"]["entities"] > 0 and rows["floor"]["entities"] == 0
    assert rows["lbp-j1"]["notes_written"] + rows["lbp-j1"]["errors"] == 30
    assert rows["lbp-j1-excl"]["notes"] == 29
    excluded = rows["lbp-j1-excl"]["notes_per_s"]
    assert excluded is None or excluded > rows["lbp-j1"]["notes_per_s"]  # start-up is a real share at 30 notes
    assert results["machine"]["cores"] >= 1 and results["archive"]["lengths"]["min"] >= 300
    report = (tmp_path / "RESULTS.md").read_text()
    for label in ('floor: spacy.blank("en") tokenizer', "medspaCy default pipeline", "negspacy Negex",
                  "lbp-audit run --jobs 1: end to end", "## Targets"):
        assert label in report
