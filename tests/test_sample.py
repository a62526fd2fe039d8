"""The bundled sample archive (`corpora/sample/`): the shipped files are what its documented command writes,
and the archive has the shape its README promises."""
import csv
import datetime as dt
import gzip
import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pipeline.orders import normalise

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "corpora" / "sample"
NOTE_COLUMNS = ["note_id", "patient_id", "note_date", "encounter_id", "text"]
ORDER_COLUMNS = ["order_id", "patient_id", "encounter_id", "note_id", "order_date", "description", "cpt", "priority",
                 "provider", "site"]


def _read(path: Path) -> tuple[list[str], list[dict]]:
    csv.field_size_limit(sys.maxsize)
    with gzip.open(path, "rt", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def _documented_command() -> list[str]:
    """The generator command of the sample's README."""
    lines = [line for line in (SAMPLE / "README.md").read_text().splitlines()
             if line.startswith("python3 benchmarks/generate.py")]
    assert len(lines) == 1, "the README names one generator command"
    return shlex.split(lines[0])


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    argv = _documented_command()
    out = argv.index("--out")
    assert argv[out + 1] == "corpora/sample"
    argv[out + 1] = str(tmp_path_factory.mktemp("sample"))
    subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, check=True, capture_output=True, timeout=120)
    return Path(argv[out + 1])


@pytest.fixture(scope="module")
def notes() -> list[dict]:
    columns, rows = _read(SAMPLE / "notes.csv.gz")
    assert columns == NOTE_COLUMNS
    return rows


@pytest.fixture(scope="module")
def orders() -> list[dict]:
    columns, rows = _read(SAMPLE / "orders.csv.gz")
    assert columns == ORDER_COLUMNS
    return rows


@pytest.mark.parametrize("name", ["notes.csv.gz", "orders.csv.gz"], ids=["notes", "orders"])
def test_sample_is_what_the_documented_command_writes(regenerated, name):
    _, shipped = _read(SAMPLE / name)
    _, fresh = _read(regenerated / name)
    differ = next((i for i, (a, b) in enumerate(zip(shipped, fresh)) if a != b), None)
    assert differ is None, f"row {differ + 1} differs: regenerate with the README's command"
    assert len(shipped) == len(fresh)
    with gzip.open(SAMPLE / name) as a, gzip.open(regenerated / name) as b:
        assert a.read() == b.read()  # and the same bytes (line endings, quoting)


@pytest.mark.parametrize("name", ["notes.csv.gz", "orders.csv.gz"], ids=["notes", "orders"])
def test_sample_gzip_has_no_timestamp(regenerated, name):
    """Regenerating with the same zlib leaves git with nothing to commit."""
    for folder in (SAMPLE, regenerated):
        assert (folder / name).read_bytes()[4:8] == b"\0\0\0\0"  # the gzip header's mtime


def test_sample_has_2000_notes_of_about_1500_patients(notes):
    assert len(notes) >= 2000
    assert len({n["note_id"] for n in notes}) == len(notes)
    assert all(n["text"].strip() and n["encounter_id"] for n in notes)
    visits = Counter(n["patient_id"] for n in notes)
    assert 1300 <= len(visits) <= 1700
    returning = Counter(visits.values())
    assert returning[2] >= 100 and returning[3] >= 50 and max(visits.values()) <= 3


def test_sample_notes_span_two_years_every_month(notes, orders):
    note_dates = [dt.date.fromisoformat(n["note_date"]) for n in notes]
    assert (max(note_dates) - min(note_dates)).days >= 730
    assert min(note_dates) >= dt.date(2023, 1, 1) and max(note_dates) <= dt.date(2025, 12, 31)
    per_month = Counter((d.year, d.month) for d in note_dates)
    assert len(per_month) == 36 and min(per_month.values()) >= 20  # by-month plots have something to show
    order_dates = [dt.date.fromisoformat(o["order_date"]) for o in orders]
    assert min(order_dates) >= dt.date(2023, 1, 1) and max(order_dates) <= dt.date(2025, 12, 31)


def test_sample_sites_and_providers_with_uneven_volumes(orders):
    sites = Counter(o["site"] for o in orders)
    providers = Counter(o["provider"] for o in orders)
    assert 4 <= len(sites) <= 6 and 15 <= len(providers) <= 25
    assert max(providers.values()) >= 10 * min(providers.values())
    assert max(sites.values()) >= 2 * min(sites.values())
    homes = {o["provider"]: o["site"] for o in orders}
    assert all(o["site"] == homes[o["provider"]] for o in orders)  # each provider orders from a home site


def test_sample_orders_lumbar_and_non_lumbar(orders):
    procedures = [normalise(o["description"] or None, o["cpt"] or None) for o in orders]
    lumbar = sum(p.lumbar for p in procedures)
    assert 0.7 <= lumbar / len(orders) <= 0.95
    reasons = " | ".join(p.reason or "" for p in procedures if not p.lumbar)
    for region in ("cervical", "head", "chest", "limb or joint"):
        assert region in reasons


def test_sample_orders_text_only_and_cpt_only(orders):
    assert all(o["description"] or o["cpt"] for o in orders)
    assert sum(bool(o["description"]) and not o["cpt"] for o in orders) >= 0.1 * len(orders)
    assert sum(bool(o["cpt"]) and not o["description"] for o in orders) >= 0.05 * len(orders)
    assert all(re.fullmatch(r"\d{5}", o["cpt"]) for o in orders if o["cpt"])


def test_sample_orders_link_by_every_route_and_some_to_no_note(notes, orders):
    note_ids = {n["note_id"] for n in notes}
    encounters = {n["encounter_id"] for n in notes}
    dates = {}
    for n in notes:
        dates.setdefault(n["patient_id"], []).append(dt.date.fromisoformat(n["note_date"]))
    by_note = [o for o in orders if o["note_id"]]
    by_encounter = [o for o in orders if not o["note_id"] and o["encounter_id"] in encounters]
    by_patient = [o for o in orders if not o["note_id"] and not o["encounter_id"]]
    assert all(o["note_id"] in note_ids for o in by_note)
    assert len(by_note) <= 0.3 * len(orders)  # note_id is mostly empty
    assert len(by_encounter) >= 0.3 * len(orders) and len(by_patient) >= 0.2 * len(orders)

    def no_note_in_window(order: dict) -> bool:
        day = dt.date.fromisoformat(order["order_date"])
        return (order["note_id"] == "" and order["encounter_id"] not in encounters
                and not any(0 <= (day - d).days <= 28 for d in dates.get(order["patient_id"], [])))

    assert sum(no_note_in_window(o) for o in orders) >= 20
    assert any(o["encounter_id"] and o["encounter_id"] not in encounters for o in orders)
