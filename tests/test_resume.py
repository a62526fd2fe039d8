"""Interrupted runs: the real command killed with SIGKILL at seeded random moments (while chunks are being
extracted on 1 or 2 processes, and while the tables are being published), resumed each time; the tables
are those of an uninterrupted run, byte for byte, with no note missing or repeated."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline.batch import run
from pipeline.corpus import load_corpus

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("findings", "notes", "errors", "audit", "unmatched_orders")
CHUNK = 3
SEED = 20240611


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """The corpus audit notes (with their orders, and again under other ids), a duplicate and an empty note."""
    folder = tmp_path_factory.mktemp("archive")
    notes, orders = [], []
    for copy in range(2):  # (the second copy without orders: their missed_imaging rows instead)
        for note in load_corpus(ROOT / "corpora" / "lbp" / "audit_cases.jsonl"):
            suffix = f"-c{copy}"
            notes.append({"note_id": note.note_id + suffix, "patient_id": note.patient_id + suffix,
                          "note_date": note.note_date, "text": note.text})
            orders += [{"order_id": order["order_id"] + suffix, "patient_id": note.patient_id + suffix,
                        "order_date": order.get("order_date"), "description": order.get("description"),
                        "cpt": order.get("cpt"), "priority": order.get("priority")}
                       for order in (note.orders if copy == 0 else [])]
    notes[5:5] = [{"note_id": notes[0]["note_id"], "text": "a duplicate"}, {"note_id": "empty", "text": " "}]
    pd.DataFrame(notes).to_csv(folder / "notes.csv", index=False)
    pd.DataFrame(orders).to_csv(folder / "orders.csv", index=False)
    return folder / "notes.csv", folder / "orders.csv", len(notes)


@pytest.fixture(scope="module")
def reference(archive, extractor, tmp_path_factory):
    notes, orders, _ = archive
    out = tmp_path_factory.mktemp("reference")
    return out, run(notes, out, orders_path=orders, extractor=extractor, jobs=1, chunk_size=CHUNK)


class Command:
    """`lbp-audit run` of the archive into `out`, started in its own process group."""

    def __init__(self, archive, out: Path):
        notes, orders, _ = archive
        self.out = out
        self.args = [sys.executable, "-m", "pipeline.cli", "run", str(notes), "--orders", str(orders),
                     "--out", str(out), "--chunk-size", str(CHUNK)]
        self.env = {**os.environ, "CI": "1", "PYTHONPATH": str(ROOT)}

    def start(self, *options: str) -> subprocess.Popen:
        return subprocess.Popen([*self.args, *options], cwd=ROOT, env=self.env, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def done(self) -> int:
        folder = self.out / "_parts" / "done"
        return len(list(folder.glob("*.json"))) if folder.exists() else 0

    def publishing(self) -> bool:
        """A table being written or published while the parts are still there (the run has not finished)."""
        return (self.out / "_parts").exists() and any(p.name.endswith(".tmp") for p in self.out.iterdir())


def _kill_when(process: subprocess.Popen, ready, delay: float, timeout: float = 240) -> bool:
    """SIGKILL the main process once `ready()` (after `delay` s more); False if the run ended first."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if ready():
                time.sleep(delay)
                if process.poll() is not None:
                    break
                process.send_signal(signal.SIGKILL)
                process.wait()
                return True
            time.sleep(0.002)
        return False
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
        try:  # the workers of a killed run leave on their own; this only tidies up after a failed test
            time.sleep(1.5)
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def test_resume_after_kills_at_random_moments_gives_the_uninterrupted_tables(archive, reference, tmp_path):
    rng = random.Random(SEED)
    command = Command(archive, tmp_path / "out")
    chunks = reference[1]["chunks"]
    kills = []
    # 1. a fresh run on one process, killed after a few chunks and a random fraction of the next one
    target = rng.randint(1, 4)
    assert _kill_when(command.start("--jobs", "1"), lambda: command.done() >= target, rng.uniform(0, 0.3))
    kills.append(command.done())
    # 2. resumed on two processes, killed again further on
    target = min(chunks - 3, kills[-1] + rng.randint(2, 5))
    assert _kill_when(command.start("--jobs", "2", "--resume"), lambda: command.done() >= target,
                      rng.uniform(0, 0.3))
    kills.append(command.done())
    assert 0 < kills[0] <= kills[1] < chunks
    # 3. resumed, killed while it publishes the tables (every chunk done); a try that finishes first keeps
    #    its parts (--keep-parts), so the next one has only the publishing left to do
    caught = False
    for _ in range(4):
        if _kill_when(command.start("--jobs", "1", "--resume", "--keep-parts"), command.publishing,
                      rng.uniform(0, 0.03)):
            caught = True
            break
    assert caught, "the run finished publishing every time before it could be killed"
    # 4. resumed to the end
    finished = subprocess.run([*command.args, "--jobs", "2", "--resume"], cwd=ROOT, env=command.env,
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    manifest = json.loads((command.out / "manifest.json").read_text())
    assert manifest["resumed"] == chunks and manifest["counts"] == reference[1]["counts"]
    for name in TABLES:
        assert (command.out / f"{name}.parquet").read_bytes() == (reference[0] / f"{name}.parquet").read_bytes(), name
    notes = pd.read_parquet(command.out / "notes.parquet")
    errors = pd.read_parquet(command.out / "errors.parquet")
    assert notes.note_id.is_unique and len(notes) + len(errors) == archive[2]
    assert sorted(p.name for p in command.out.iterdir()) == sorted([*(f"{t}.parquet" for t in TABLES),
                                                                    "manifest.json"])
