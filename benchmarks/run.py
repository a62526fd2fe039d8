"""The lbp-audit benchmark: throughput and peak memory against the tokenizer floor and the peers, in one run.

    python3 benchmarks/run.py                                  # 1,500 notes, every contender
    python3 benchmarks/run.py --notes 2000 --rss-notes 10000 100000

Generates a synthetic archive (`generate.py`), runs each contender in a subprocess of its own on the same
notes (the floor, medspaCy's default pipeline, negspacy, and lbp-audit's real `run` command with
`--jobs 1` and `--jobs 2`), measures each one's peak RSS, optionally the peak RSS of lbp-audit at several
archive sizes, checks the targets and writes `results.json` and `RESULTS.md`. See `benchmarks/README.md`.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import generate  # noqa: E402  (benchmarks/ is not a package)
from contenders import CONTENDERS  # noqa: E402

PEERS = ("floor", "floor-2", "medspacy", "negspacy")
ALL_CONTENDERS = (*PEERS, "lbp")
DEFAULT_NOTES = 1500
TARGETS = {"floor_share": 0.5, "jobs2_speedup": 1.7, "rss_growth": 0.15, "rss_per_worker_mb": 1024}
SAMPLE_SECONDS = 0.2


# --- running one process and measuring its memory ------------------------------------------------------------
def _read_kb(path: str, keys: tuple[str, ...]) -> dict:
    found = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in keys:
                    found[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
        pass
    return found


def _children(pid: int) -> list[int]:
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids.extend(int(k) for k in f.read().split())
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return kids


class TreeSampler(threading.Thread):
    """Samples, every `SAMPLE_SECONDS`, each process of the tree under `pid`: its high-water RSS (VmHWM) and
    the tree's summed proportional set size (Pss, so pages shared by forked workers count once)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.hwm_kb: dict[int, int] = {}
        self.max_tree_pss_kb = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(SAMPLE_SECONDS)

    def sample(self) -> None:
        tree, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(_children(pid))
        pss = 0
        for pid in tree:
            hwm = _read_kb(f"/proc/{pid}/status", ("VmHWM",)).get("VmHWM")
            if hwm:
                self.hwm_kb[pid] = max(hwm, self.hwm_kb.get(pid, 0))
            pss += _read_kb(f"/proc/{pid}/smaps_rollup", ("Pss",)).get("Pss", 0)
        self.max_tree_pss_kb = max(self.max_tree_pss_kb, pss)

    def summary(self) -> dict:
        workers = [kb for pid, kb in self.hwm_kb.items() if pid != self.pid]
        return {"main_hwm_mb": _mb_kb(self.hwm_kb.get(self.pid)), "processes": len(self.hwm_kb),
                "largest_child_hwm_mb": _mb_kb(max(workers)) if workers else None,
                "tree_pss_peak_mb": _mb_kb(self.max_tree_pss_kb)}


def _mb_kb(kb):
    return None if kb is None else round(kb / 1024, 1)


def run_measured(cmd: list[str], log: Path) -> dict:
    """Run `cmd` to its end; wall seconds, exit status, the peak RSS of its largest single process (from the
    kernel's accounting for this child, `os.wait4`) and the sampled per-process detail."""
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"wall_seconds": round(wall, 3), "cpu_seconds_all": round(usage.ru_utime + usage.ru_stime, 3),
            "returncode": proc.returncode,
            "peak_rss_mb": _mb_kb(usage.ru_maxrss), **sampler.summary(),
            "stdout": log.with_suffix(".out").read_text(), "stderr_tail": _tail(log.with_suffix(".err"))}


def _tail(path: Path, lines: int = 5) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the contenders --------------------------------------------------------------------------------------------
def run_peer(name: str, archive: dict, work: Path) -> dict:
    say(f"  {CONTENDERS[name][0]} ...")
    measured = run_measured([sys.executable, str(HERE / "contenders.py"), name, archive["notes_path"]],
                            work / f"log-{name}")
    row = {"id": name, "contender": CONTENDERS[name][0], "description": CONTENDERS[name][1], "kind": "peer",
           **_drop_output(measured)}
    if measured["returncode"] != 0:
        return {**row, "error": measured["stderr_tail"]}
    report = json.loads(measured["stdout"].strip().splitlines()[-1])
    row.update({k: report[k] for k in ("notes", "bytes", "tokens", "entities", "read_seconds", "build_seconds",
                                       "seconds", "cpu_seconds", "pipeline")})
    return row


def run_floor_pair(archive: dict, work: Path) -> dict:
    """The floor on two processes side by side, each tokenising every other note: what two cores of this
    machine give work that shares nothing (the ceiling for any `--jobs 2` speed-up here)."""
    say("  floor on 2 processes side by side ...")
    halves = []
    with open(archive["notes_path"], newline="", encoding="utf-8") as f:
        csv.field_size_limit(sys.maxsize)
        reader = csv.DictReader(f)
        rows = list(reader)
    for k in range(2):
        path = work / f"floor-half-{k}.csv"
        with open(path, "w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=reader.fieldnames)
            writer.writeheader()
            writer.writerows(rows[k::2])
        halves.append(path)
    logs = [work / f"log-floor-2-{k}" for k in range(2)]
    with contextlib.ExitStack() as stack:
        procs = [subprocess.Popen([sys.executable, str(HERE / "contenders.py"), "floor", str(path)],
                                  stdout=stack.enter_context(open(log.with_suffix(".out"), "w")),
                                  stderr=stack.enter_context(open(log.with_suffix(".err"), "w")),
                                  stdin=subprocess.DEVNULL) for path, log in zip(halves, logs)]
        codes = [proc.wait() for proc in procs]
    row = {"id": "floor-2", "contender": CONTENDERS["floor"][0] + ", 2 processes side by side",
           "description": "the floor on two processes at once, each given every other note; notes/s is all notes "
                          "over the span from the first loop's start to the last loop's end", "kind": "peer"}
    if any(codes):
        return {**row, "error": "; ".join(_tail(log.with_suffix(".err")) for log in logs)}
    reports = [json.loads(log.with_suffix(".out").read_text().strip().splitlines()[-1]) for log in logs]
    row.update({k: sum(r[k] for r in reports) for k in ("notes", "bytes", "tokens", "entities", "cpu_seconds")})
    row.update({"seconds": round(max(r["ended_at"] for r in reports) - min(r["started_at"] for r in reports), 3),
                "build_seconds": max(r["build_seconds"] for r in reports), "read_seconds": None,
                "pipeline": reports[0]["pipeline"], "processes": 2,
                "peak_rss_mb": _mb_kb(max(r["self_maxrss_kb"] for r in reports))})
    for path in halves:
        path.unlink()
    return row


def _drop_output(measured: dict) -> dict:
    return {k: v for k, v in measured.items() if k not in ("stdout", "stderr_tail")}


def lbp_options() -> set[str]:
    """The options `lbp-audit run` has today (--jobs, --no-progress and --chunk-size are recent)."""
    help_text = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--help"], capture_output=True,
                               text=True).stdout
    return {opt for opt in ("--jobs", "--no-progress", "--chunk-size") if opt in help_text}


def lbp_command(archive: dict, out: Path, jobs: int, options: set[str], chunk_size: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline.cli", "run", archive["notes_path"], "--orders", archive["orders_path"],
           "--out", str(out)]
    if "--jobs" in options:
        cmd += ["--jobs", str(jobs)]
    if "--no-progress" in options:
        cmd += ["--no-progress"]
    if chunk_size and "--chunk-size" in options:
        cmd += ["--chunk-size", str(chunk_size)]
    return cmd


def run_lbp(archive: dict, jobs: int, work: Path, options: set[str], chunk_size: int | None, tag: str) -> dict:
    out = work / f"out-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = lbp_command(archive, out, jobs, options, chunk_size)
    measured = run_measured(cmd, work / f"log-{tag}")
    row = {"id": tag, "kind": "lbp", "jobs": jobs, "jobs_option": "--jobs" in options, "notes": archive["notes"],
           "bytes": archive["text_bytes"], "command": _show(cmd), **_drop_output(measured)}
    manifest_path = out / "manifest.json"
    if measured["returncode"] != 0 or not manifest_path.exists():
        shutil.rmtree(out, ignore_errors=True)
        return {**row, "error": f"exit {measured['returncode']}: {measured['stderr_tail']}"}
    manifest = json.loads(manifest_path.read_text())
    counts = manifest.get("counts", {})
    row.update({"notes_written": counts.get("notes_written"), "errors": counts.get("errors"),
                "findings": counts.get("findings"), "workers": manifest.get("workers"),
                "chunks": manifest.get("chunks"), "manifest_timings": manifest.get("timings")})
    if (counts.get("notes_written") or 0) + (counts.get("errors") or 0) != archive["notes"]:
        row["error"] = (f"{counts.get('notes_written')} notes + {counts.get('errors')} errors written for "
                        f"{archive['notes']} notes in")
    shutil.rmtree(out, ignore_errors=True)
    return row


def _show(cmd: list[str]) -> str:
    return shlex.join(["lbp-audit", *cmd[3:]]) if cmd[1:3] == ["-m", "pipeline.cli"] else shlex.join(cmd)


def auto_chunk_size(notes: int, jobs: int) -> int | None:
    """Small archives get chunks small enough for at least 8 per worker (the product's default of 500 would
    leave a worker idle at a few thousand notes); large ones keep the product's default."""
    return None if notes >= 16 * 500 else max(10, notes // (8 * max(2, jobs)))


# --- figures and targets ----------------------------------------------------------------------------------------
def rates(row: dict) -> None:
    """notes/s and MB/s of a row from its `seconds`."""
    seconds = row.get("seconds")
    ok = seconds and seconds > 0 and not row.get("error")
    row["notes_per_s"] = round(row["notes"] / seconds, 2) if ok else None
    row["mb_per_s"] = round(row["bytes"] / 1e6 / seconds, 3) if ok else None


def lbp_rows(raw: dict, small: dict | None) -> list[dict]:
    """The raw end-to-end row and, with a run of the same command on a prefix of the archive, the
    start-up-excluded row: the marginal rate (N - n0) / (T(N) - T(n0)), where fixed costs cancel."""
    label = f"lbp-audit run --jobs {raw['jobs']}" if raw["jobs_option"] else "lbp-audit run (no --jobs option yet)"
    end_to_end = {**raw, "contender": f"{label}: end to end", "seconds": raw["wall_seconds"],
                  "cpu_seconds": raw.get("cpu_seconds_all")}
    rates(end_to_end)
    rows = [end_to_end]
    if small and not small.get("error") and not raw.get("error") and raw["notes"] > small["notes"]:
        extra = raw["wall_seconds"] - small["wall_seconds"]
        if extra <= 0:
            return rows + [{**raw, "id": raw["id"] + "-excl", "contender": f"{label}: start-up excluded",
                            "seconds": None, "notes_per_s": None, "mb_per_s": None, "baseline_notes": small["notes"],
                            "baseline_seconds": small["wall_seconds"],
                            "warning": "too few notes to separate the work from the start-up"}]
        per_note = extra / (raw["notes"] - small["notes"])
        excl = {**raw, "id": raw["id"] + "-excl", "contender": f"{label}: start-up excluded",
                "seconds": round(extra, 3), "notes": raw["notes"] - small["notes"],
                "cpu_seconds": round(raw["cpu_seconds_all"] - small["cpu_seconds_all"], 3)
                if raw.get("cpu_seconds_all") is not None and small.get("cpu_seconds_all") is not None else None,
                "bytes": raw["bytes"] - small["bytes"], "baseline_notes": small["notes"],
                "baseline_seconds": small["wall_seconds"], "baseline_peak_rss_mb": small["peak_rss_mb"],
                "startup_seconds": round(small["wall_seconds"] - small["notes"] * per_note, 3)}
        rates(excl)
        rows.append(excl)
    return rows


def baseline_notes(jobs: int, chunk_size: int | None) -> int:
    """Notes for the fixed-cost run: one note in-process; one chunk per worker with several processes (the
    product runs a single chunk in-process, which would leave the workers' start-up out)."""
    return 1 if jobs == 1 else jobs * (chunk_size or 500)


def check(name: str, passed, measured: str, target: str) -> dict:
    status = "not measured" if passed is None else ("pass" if passed else "FAIL")
    return {"target": name, "status": status, "measured": measured, "required": target}


CORE_SHARE = 0.85  # below this share of a core (CPU s / wall s) a single-process contender waited for the CPU


def core_share(row: dict) -> float | None:
    """CPU seconds / wall seconds of a single-process row: about 1 when it had a core to itself."""
    if not (row.get("cpu_seconds") and row.get("seconds")):
        return None
    return row["cpu_seconds"] / row["seconds"]


def single_process_ratio(row: dict, other: dict, percent: bool = False) -> tuple[float, str]:
    """row's notes/s over other's, and how it was judged: by wall clock when both had a core, else by notes
    per CPU second (what the ratio would be had neither waited for a core), saying so."""
    wall = row["notes_per_s"] / other["notes_per_s"]
    shares = [core_share(row), core_share(other)]
    if None in shares or min(shares) >= CORE_SHARE:
        return wall, "by wall clock"
    cpu = (row["notes"] / row["cpu_seconds"]) / (other["notes"] / other["cpu_seconds"])
    starved = " and ".join(f"{r['id']} had {100 * share:.0f} %" for r, share in zip((row, other), shares)
                           if share < CORE_SHARE)
    shown = f"{100 * wall:.1f} %" if percent else f"{wall:.1f} x"
    return cpu, f"judged by CPU time ({starved} of a core; by wall clock {shown})"


def target_checks(rows: dict, rss_rows: list[dict]) -> list[dict]:
    floor, medspacy = rows.get("floor"), rows.get("medspacy")
    j1, j2 = rows.get("lbp-j1-excl"), rows.get("lbp-j2-excl")

    def rate(row):
        return row and row.get("notes_per_s")

    checks = []
    if rate(j1) and rate(floor):
        share, how = single_process_ratio(j1, floor, percent=True)
        checks.append(check("lbp-audit --jobs 1 >= 50 % of the floor's notes/s", share >= TARGETS["floor_share"],
                            f"{100 * share:.1f} % ({j1['notes_per_s']:.1f} vs {floor['notes_per_s']:.1f} notes/s, "
                            f"start-up excluded; {how})", ">= 50 %"))
    else:
        checks.append(check("lbp-audit --jobs 1 >= 50 % of the floor's notes/s", None, "-", ">= 50 %"))
    if rate(j1) and rate(medspacy):
        times, how = single_process_ratio(j1, medspacy)
        checks.append(check("lbp-audit --jobs 1 faster than medspaCy's default pipeline", times > 1,
                            f"{times:.1f} x ({j1['notes_per_s']:.1f} vs {medspacy['notes_per_s']:.1f} notes/s; {how})",
                            "> 1 x"))
    else:
        checks.append(check("lbp-audit --jobs 1 faster than medspaCy's default pipeline", None, "-", "> 1 x"))
    if rate(j1) and rate(j2):
        speedup = j2["notes_per_s"] / j1["notes_per_s"]
        pair = rows.get("floor-2")
        ceiling = (f"; the floor itself runs {pair['notes_per_s'] / floor['notes_per_s']:.2f} x as fast on 2 "
                   "processes side by side" if rate(pair) and rate(floor) else "")
        checks.append(check("lbp-audit --jobs 2 >= 1.7 x --jobs 1", speedup >= TARGETS["jobs2_speedup"],
                            f"{speedup:.2f} x ({j2['notes_per_s']:.1f} vs {j1['notes_per_s']:.1f} notes/s, start-up "
                            f"excluded; wall clock, so other load on the machine lowers it{ceiling})", ">= 1.7 x"))
    else:
        checks.append(check("lbp-audit --jobs 2 >= 1.7 x --jobs 1", None, "-", ">= 1.7 x"))
    by_jobs1 = sorted((r for r in rss_rows if r["jobs"] == 1 and not r.get("error")), key=lambda r: r["notes"])
    if len(by_jobs1) >= 2:
        small, large = by_jobs1[0], by_jobs1[-1]
        growth = large["peak_rss_mb"] / small["peak_rss_mb"] - 1
        checks.append(check(f"peak RSS at {large['notes']:,} notes within 15 % of {small['notes']:,} (--jobs 1)",
                            growth <= TARGETS["rss_growth"],
                            f"{large['peak_rss_mb']:.0f} vs {small['peak_rss_mb']:.0f} MB = {100 * growth:+.1f} %",
                            "<= +15 %"))
    else:
        checks.append(check("peak RSS at the largest size within 15 % of the smallest (--jobs 1)", None,
                            "run with --rss-notes A B", "<= +15 %"))
    lbp_runs = [*rss_rows, *(row for key, row in rows.items() if key.startswith("lbp-j"))]
    per_process = [(r["id"], r["peak_rss_mb"]) for r in lbp_runs if r.get("peak_rss_mb") and not r.get("error")]
    if per_process:
        worst = max(per_process, key=lambda p: p[1])
        checks.append(check("peak RSS < 1 GB per process (main or worker), every lbp-audit run",
                            worst[1] < TARGETS["rss_per_worker_mb"], f"largest {worst[1]:.0f} MB ({worst[0]})",
                            "< 1024 MB"))
    return checks


# --- the machine and the report ---------------------------------------------------------------------------------
def machine_info() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = _read_kb("/proc/meminfo", ("MemTotal",)).get("MemTotal", 0)

    def version(package):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                                text=True).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "pipeline", "patterns"], cwd=HERE.parent,
                                    capture_output=True, text=True).stdout.strip())
    except OSError:
        commit, dirty = None, None
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem_kb / 1024 ** 2, 1),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "spacy": version("spacy"), "medspacy": version("medspacy"), "negspacy": version("negspacy"),
            "pyrush": version("PyRuSH"), "lbp_audit": version("lbp-audit"), "git_commit": commit,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "uncommitted_pipeline_changes": dirty}


def product_fingerprint() -> str:
    """A hash of the product's code and rules as they are on disk (the package is installed editable, so a
    change made during the run changes what the later contenders run)."""
    digest = hashlib.sha256()
    for folder in ("pipeline", "patterns"):
        for path in sorted((HERE.parent / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(HERE.parent)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _fmt(value, digits=1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def table(rows: list[dict], floor_rate: float | None) -> str:
    lines = ["| contender | notes | MB | seconds | CPU s | notes/s | MB/s | peak RSS MB | × floor "
             "| build / start-up s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = r["notes_per_s"] / floor_rate if r.get("notes_per_s") and floor_rate else None
        fixed = r.get("build_seconds", r.get("startup_seconds"))
        rss = _fmt(r.get("peak_rss_mb"), 0)
        if r.get("kind") == "lbp" and r.get("jobs", 1) > 1:
            rss += f" (main {_fmt(r.get('main_hwm_mb'), 0)}, largest worker {_fmt(r['largest_child_hwm_mb'], 0)})"
        name = r["contender"] + (f" — ERROR: {r['error'].splitlines()[-1][:80]}" if r.get("error") else "")
        name += f" — n/a: {r['warning']}" if r.get("warning") else ""
        lines.append(f"| {name} | {r['notes']:,} | {r['bytes'] / 1e6:.2f} | {_fmt(r.get('seconds'), 2)} | "
                     f"{_fmt(r.get('cpu_seconds'), 2)} | "
                     f"{_fmt(r.get('notes_per_s'))} | {_fmt(r.get('mb_per_s'), 3)} | {rss} | "
                     f"{_fmt(ratio, 2)} | {_fmt(fixed, 2)} |")
    return "\n".join(lines)


def rss_table(rss_rows: list[dict]) -> str:
    lines = ["| lbp-audit run | notes | seconds (end to end) | CPU s | notes/s | peak RSS MB (largest process) "
             "| main MB | largest worker MB | tree PSS peak MB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rss_rows:
        err = f" — ERROR: {r['error'].splitlines()[-1][:80]}" if r.get("error") else ""
        lines.append(f"| --jobs {r['jobs']}{err} | {r['notes']:,} | {_fmt(r.get('wall_seconds'), 1)} | "
                     f"{_fmt(r.get('cpu_seconds_all'), 1)} | "
                     f"{_fmt(r.get('notes_per_s'))} | {_fmt(r.get('peak_rss_mb'), 0)} | "
                     f"{_fmt(r.get('main_hwm_mb'), 0)} | "
                     f"{_fmt(r.get('largest_child_hwm_mb'), 0)} | {_fmt(r.get('tree_pss_peak_mb'), 0)} |")
    return "\n".join(lines)


def checks_table(checks: list[dict]) -> str:
    lines = ["| target | status | measured | required |", "|---|---|---|---|"]
    lines += [f"| {c['target']} | {c['status']} | {c['measured']} | {c['required']} |" for c in checks]
    return "\n".join(lines)


def markdown(results: dict) -> str:
    m, a, s = results["machine"], results["archive"], results["archive"]["lengths"]
    floor = next((r for r in results["rows"] if r["id"] == "floor"), None)
    contended = [r["id"] for r in results["rows"] if (r["kind"] == "peer" or r.get("jobs") == 1)
                 and (core_share(r) or 1) < CORE_SHARE]
    parts = [
        "# lbp-audit benchmark results", "",
        f"**{results['label']}** — {results['date']}", "",
        f"Command: `{results['command']}`"
        + (f" (target checks recomputed from its results.json on {results['checks_recomputed']})"
           if results.get("checks_recomputed") else ""), "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}; Python {m['python']}, "
        f"spaCy {m['spacy']}, medspaCy {m['medspacy']}, negspacy {m['negspacy']}, PyRuSH {m['pyrush']}, "
        f"lbp-audit {m['lbp_audit']} (commit {m['git_commit']}"
        + (", with uncommitted changes in pipeline/ or patterns/" if m["uncommitted_pipeline_changes"] else "") + "). "
        f"Load average (1 / 5 / 15 min) {m['load_average_at_start']} at the start, {m['load_average_at_end']} at "
        "the end"
        + (f". **Other work shared the CPUs: {', '.join(contended)} got less than 85 % of a core (CPU s / seconds), "
           "so their wall-clock figures are pessimistic; the CPU-seconds column is less affected.**"
           if contended else "; every single-process contender got at least 85 % of a core."),
        "",
        f"Archive: {a['notes']:,} synthetic notes (seed {a['seed']}), {a['text_bytes'] / 1e6:.2f} MB of text, "
        f"length min {s['min']:,} / median {s['median']:,} / max {s['max']:,} characters; {a['orders']:,} orders on "
        f"{a['notes_with_orders']:,} notes."
        + (f" lbp-audit `--chunk-size {results['chunk_size']}` (auto: at least 8 chunks per worker at this size)."
           if results.get("chunk_size") else ""), "",
        *(["**The product's code or rules changed on disk during this run (fingerprint "
            f"{results['product_fingerprint_at_start']} → {results['product_fingerprint_at_end']}): the lbp-audit rows "
            "may not measure one version. Rerun on a quiet tree.**", ""]
          if results["product_fingerprint_at_start"] != results["product_fingerprint_at_end"] else []),
        "## Throughput (same notes for every contender)", "",
        table(results["rows"], floor and floor.get("notes_per_s")), "",
        *[f"- {r['contender']}: {r['description']}." for r in results["rows"] if r.get("description")],
        "- Peers: only the `nlp.pipe` loop is timed; reading the CSV and building the pipeline (imports included: "
        "last column) are not.",
        "- lbp-audit end to end: the whole `lbp-audit run` process (start-up, read, extract, summarise, audit, write "
        "Parquet), wall clock. Start-up excluded: the same command is also run on the archive's first n0 notes "
        "(1 for `--jobs 1`; one chunk per worker otherwise, so the workers start too) and the row is the marginal "
        "rate (N - n0) / (T(N) - T(n0)); the last column is the fixed cost that this implies.",
        "- Peak RSS: the largest single process of the contender's process tree (the kernel's accounting for that "
        "child, `wait4`); for several processes the main / largest-worker split is sampled from `/proc/<pid>/status` "
        "VmHWM every 0.2 s.", "",
    ]
    if results["rss"]:
        parts += ["## Peak memory by archive size", "", rss_table(results["rss"]), ""]
    else:
        parts += ["## Peak memory by archive size", "", "Not run (use `--rss-notes 10000 100000`).", ""]
    parts += ["## Targets", "", checks_table(results["targets"]), "",
              "The targets are recorded, not tuned for: the benchmark measures the product as it is.", ""]
    return "\n".join(parts)


# --- the command --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notes", type=int, default=DEFAULT_NOTES,
                        help=f"notes in the throughput archive (default {DEFAULT_NOTES}: about 10 minutes on 2 cores)")
    parser.add_argument("--seed", type=int, default=0, help="archive seed (default 0)")
    parser.add_argument("--contenders", nargs="+", choices=ALL_CONTENDERS, default=list(ALL_CONTENDERS),
                        help="which contenders to run (default all)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2],
                        help="lbp-audit --jobs values for the throughput runs (default 1 2)")
    parser.add_argument("--no-startup", action="store_true",
                        help="skip the 1-note lbp-audit runs that measure the fixed start-up cost")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="lbp-audit --chunk-size (default: the product's default at >= 8,000 notes, smaller "
                             "below so that every worker gets >= 8 chunks)")
    parser.add_argument("--rss-notes", type=int, nargs="*", default=[],
                        help="archive sizes for the lbp-audit peak RSS runs, e.g. 10000 100000 (default: none)")
    parser.add_argument("--rss-jobs", type=int, nargs="+", default=[1],
                        help="lbp-audit --jobs values for the RSS runs (default 1)")
    parser.add_argument("--work", default=str(HERE / ".work"), help="scratch folder for archives and outputs")
    parser.add_argument("--out", default=str(HERE), help="folder for results.json and RESULTS.md (default benchmarks/)")
    parser.add_argument("--label", help="what this run is, for RESULTS.md (default: its size)")
    parser.add_argument("--render", metavar="RESULTS_JSON",
                        help="run nothing: recompute the target checks of a results.json and rewrite it and "
                             "RESULTS.md in --out")
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads(Path(args.render).read_text())
        results["targets"] = target_checks({r["id"]: r for r in results["rows"]}, results["rss"])
        results["checks_recomputed"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        return write_results(results, Path(args.out))

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    label = args.label or (f"{args.notes:,} notes" + (f"; peak RSS at {' / '.join(f'{n:,}' for n in args.rss_notes)} "
                                                       "notes" if args.rss_notes else ""))
    results = {"label": label, "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
               "command": shlex.join(["python3", "benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]),
               "machine": machine_info(), "targets_required": TARGETS,
               "product_fingerprint_at_start": product_fingerprint()}

    archive = generate.write_archive(work / f"archive-{args.notes}-seed{args.seed}", args.notes, args.seed)
    say(f"archive: {generate.describe(archive)}")
    results["archive"] = archive
    rows: list[dict] = []
    for name in PEERS:
        if name in args.contenders:
            row = run_floor_pair(archive, work) if name == "floor-2" else run_peer(name, archive, work)
            rates(row)
            rows.append(row)
            say(f"    {_fmt(row.get('notes_per_s'))} notes/s, peak RSS {_fmt(row.get('peak_rss_mb'), 0)} MB"
                + (f" ERROR {row['error']}" if row.get("error") else ""))
    options = lbp_options() if "lbp" in args.contenders or args.rss_notes else set()
    results["lbp_options_found"] = sorted(options)
    chunk_size = args.chunk_size or auto_chunk_size(args.notes, max(args.jobs))
    results["chunk_size"] = chunk_size if "--chunk-size" in options else None
    if "lbp" in args.contenders:
        for jobs in (args.jobs if "--jobs" in options else [1]):
            say(f"  lbp-audit run --jobs {jobs} ...")
            raw = run_lbp(archive, jobs, work, options, chunk_size, f"lbp-j{jobs}")
            small = None
            n0 = baseline_notes(jobs, chunk_size)
            if not args.no_startup and n0 < args.notes:
                prefix = generate.write_archive(work / f"archive-{n0}-seed{args.seed}", n0, args.seed)
                small = run_lbp(prefix, jobs, work, options, chunk_size, f"lbp-j{jobs}-baseline")
            for row in lbp_rows(raw, small):
                rows.append(row)
                say(f"    {row['contender']}: {_fmt(row.get('notes_per_s'))} notes/s, peak RSS "
                    f"{_fmt(row.get('peak_rss_mb'), 0)} MB" + (f" ERROR {row['error']}" if row.get("error") else ""))
    results["rows"] = rows

    rss_rows = []
    for n in args.rss_notes:
        rss_archive = generate.write_archive(work / f"archive-{n}-seed{args.seed}", n, args.seed)
        for jobs in (args.rss_jobs if "--jobs" in options else [1]):
            say(f"  peak RSS: lbp-audit run --jobs {jobs} on {n:,} notes ...")
            row = run_lbp(rss_archive, jobs, work, options, args.chunk_size, f"rss-{n}-j{jobs}")
            row["seconds"] = row["wall_seconds"]
            rates(row)
            rss_rows.append(row)
            say(f"    peak RSS {_fmt(row.get('peak_rss_mb'), 0)} MB, {_fmt(row.get('notes_per_s'))} notes/s"
                + (f" ERROR {row['error']}" if row.get("error") else ""))
        if n >= 10_000:
            shutil.rmtree(rss_archive["notes_path"].rsplit("/", 1)[0], ignore_errors=True)
    results["rss"] = rss_rows
    results["targets"] = target_checks({r["id"]: r for r in rows}, rss_rows)
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["product_fingerprint_at_end"] = product_fingerprint()

    return write_results(results, Path(args.out))


def write_results(results: dict, out: Path) -> int:
    """Write results.json and RESULTS.md, print the report; 1 if a contender failed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report = markdown(results)
    (out / "RESULTS.md").write_text(report)
    print(report)
    print(f"wrote {out / 'results.json'} and {out / 'RESULTS.md'} ({results['seconds']} s)")
    return 1 if any(r.get("error") for r in [*results["rows"], *results["rss"]]) else 0


if __name__ == "__main__":
    sys.exit(main())
