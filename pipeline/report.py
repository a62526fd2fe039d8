"""The HTML report of a finished run for a quality committee (`lbp-audit report DIR`).

The figures are plain functions of the run's `notes` and `audit` tables (and its manifest) returning small
DataFrames and dicts; `render` turns them into one self-contained HTML file (plots as PNG data URIs, no
script, nothing fetched from the network). With `no_text` (or when the run was made with `--no-text`) the
report shows note ids, labels and rule ids only: no note text, snippet, cue or rationale.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import io
import json
import math
import numbers
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd

from . import __version__
from .audit import NEEDS_IMAGING, VERDICTS, parse_date
from .labels import LABELS
from .orders import MODALITY_OF
from .tables import InputError, private_files, write_text

# Verdicts of a lumbar order matched to an in-scope note (the denominator of concordance and overuse).
JUDGED = ("appropriate", "may_be_appropriate", "not_indicated", "wrong_modality", "wrong_protocol")
LUMBAR_VERDICTS = (*JUDGED, "out_of_scope")  # every order normalised to a lumbar procedure
PERIOD_VERDICTS = (*LUMBAR_VERDICTS, "missed_imaging")
VERDICT_WORDS = {
    "appropriate": "usually appropriate in at least one of the note's scenarios (guideline-concordant)",
    "may_be_appropriate": "at best 'may be appropriate'",
    "not_indicated": "not indicated: no scenario of the note supports imaging (overuse)",
    "wrong_modality": "imaging is indicated, but by another modality",
    "wrong_protocol": "the right modality with another contrast protocol",
    "missed_imaging": "urgent or emergent imaging was indicated and no lumbar order matched the note",
    "not_lumbar_imaging": "the order is not lumbar imaging (another region, or not imaging)",
    "out_of_scope": "a lumbar order matched to a note outside the audit's scope (no back pain documented)",
}
COLOURS = {"appropriate": "#009E73", "may_be_appropriate": "#56B4E9", "not_indicated": "#E69F00",
           "wrong_modality": "#CC79A7", "wrong_protocol": "#F0E442", "out_of_scope": "#999999",
           "missed_imaging": "#D55E00", "not_lumbar_imaging": "#DDDDDD"}
Z95, Z998 = 1.959963984540054, 3.090232306167813

# HEDIS "Use of Imaging Studies for Low Back Pain" (NCQA, MY 2025): its required-exclusion families, as the
# note-level findings that stand for them. A note with any of these present or possible (or the summary
# field true) is not uncomplicated back pain. The measure's other exclusions (palliative care, hospice,
# death, frailty with advanced illness) cannot be seen in a note.
HEDIS_EXCLUSIONS = (
    ("cancer, HIV, organ transplant, osteoporosis (diagnosis history)",
     ("CANCER_HISTORY", "IMMUNOSUPPRESSION", "OSTEOPOROSIS"), ()),
    ("lumbar surgery, osteoporosis medication (procedure history)", ("PRIOR_LUMBAR_SURGERY",), ()),
    ("IV drug use, neurologic impairment, spinal infection (recent diagnoses)",
     ("IV_DRUG_USE", "SPINAL_INFECTION", "FOOT_DROP", "MOTOR_WEAKNESS", "SADDLE_ANESTHESIA", "BLADDER_DYSFUNCTION",
      "BOWEL_DYSFUNCTION", "CAUDA_EQUINA"), ("bilateral_deficit", "progressive_deficit")),
    ("trauma or fragility fracture (recent injuries)", ("TRAUMA",), ()),
    ("prolonged corticosteroid use", ("STEROID_USE",), ()),
)
HEDIS_AGES = (18, 75)
HEDIS_DAYS = 28
HEDIS_MODALITIES = ("XR", "CT", "MRI", "MYELO")  # the measure's plain X-ray, CT and MRI (CT myelography is CT)

NOTE_COLUMNS = ("note_id", *LABELS, "age", "bilateral_deficit", "progressive_deficit", "duration_days",
                "duration_class", "in_scope", "patient_id", "note_date", "scenarios", "urgency", "edition")
_BOOLEAN_COLUMNS = ("in_scope", "bilateral_deficit", "progressive_deficit")
_NUMBER_COLUMNS = ("age", "duration_days", "start", "end")
_TRUE = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
EXAMPLES_PER_VERDICT = 3
EVIDENCE_PER_EXAMPLE = 5
SNIPPET_CHARS = 80
LIMITS = (
    "The findings come from rules, not from a reader: on the project's annotated corpus (211 synthetic notes "
    "written while the rules were developed) note-level micro-F1 is 0.96 and verdict agreement 0.97; expect "
    "lower figures on unseen notes. A red flag the note does not state, or states in words the rules do not "
    "know, is missed, and its order may then be called overuse.",
    "An order is judged against the one note it was matched to (by note id, by encounter, else the patient's "
    "latest note up to the match window before it); orders that matched no note are not judged.",
    "The 2021 ACR ratings for variants 3 to 7 beyond 'usually' and 'may be appropriate' come from secondary "
    "summaries; procedures they do not list are taken as usually not appropriate. The severe or progressive "
    "neurological deficit scenario is rated from the 2016 edition and ACP/APS 2007.",
    "'Missed imaging' means that no lumbar order in the orders given to the run matched the note: imaging "
    "ordered elsewhere, or outside the match window, is not seen.",
    "Small denominators: a share of a site, provider or month with few orders has a wide interval; read the "
    "intervals and the funnel limits, not the point estimates.",
)


class ReportError(InputError):
    """The folder is not a finished run, or its tables cannot be read (one line, never note text): the
    command line reports it as it reports any unreadable input."""


# ---------------------------------------------------------------- statistics


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion successes / n (NaN, NaN when n is 0):
    (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))  # p inside despite rounding


def funnel_limits(p: float, n: int, z: float) -> tuple[float, float]:
    """The control limits of a funnel plot around the overall share p for a denominator n (normal
    approximation to the binomial, clipped to 0–1)."""
    if n <= 0 or p != p:
        return math.nan, math.nan
    half = z * math.sqrt(p * (1 - p) / n)
    return max(0.0, p - half), min(1.0, p + half)


def _share(k: int, n: int) -> dict:
    low, high = wilson_interval(k, n)
    return {"k": int(k), "n": int(n), "share": k / n if n else math.nan, "low": low, "high": high}


# ---------------------------------------------------------------- reading a run


@dataclass(frozen=True)
class Run:
    """A finished run: its folder, manifest, notes table and audit table (None without orders)."""

    dir: Path
    manifest: dict
    notes: pd.DataFrame
    audit: pd.DataFrame | None
    errors: int
    unmatched_orders: int | None
    no_text: bool


def table_path(run_dir: Path, name: str) -> Path | None:
    for suffix in (".parquet", ".csv"):
        path = run_dir / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def read_table(run_dir: Path, name: str, columns: Sequence[str] | None = None,
               note_ids: Iterable[str] | None = None) -> pd.DataFrame | None:
    """DIR/NAME.parquet or DIR/NAME.csv (None when neither exists), typed alike: blanks are missing, the
    summary's booleans are booleans and numbers numbers. `columns`: those of them that exist; `note_ids`:
    only the rows of these notes (read by filter or in blocks, so a large table is never held whole)."""
    path = table_path(run_dir, name)
    if path is None:
        return None
    wanted = set(note_ids) if note_ids is not None else None
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        keep = [c for c in columns if c in names] if columns else None
        if wanted is not None and not wanted:
            schema = pq.read_schema(path)
            frame = schema.empty_table().to_pandas()[keep or schema.names]
        else:
            filters = [("note_id", "in", sorted(wanted))] if wanted else None
            frame = pd.read_parquet(path, columns=keep, filters=filters)
    else:
        use = (lambda c: c in columns) if columns else None
        blocks = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], usecols=use, chunksize=50_000)
        pieces = [b[b["note_id"].isin(wanted)] if wanted is not None else b for b in blocks]
        frame = pd.concat(pieces, ignore_index=True) if pieces else pd.read_csv(path, dtype=str, usecols=use, nrows=0)
    return _typed(frame)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in frame.columns:
        if column in _BOOLEAN_COLUMNS and frame[column].dtype != bool:
            frame[column] = frame[column].map(
                lambda v: v if isinstance(v, bool) else _TRUE.get(str(v).strip().lower(), False)
                if v is not None and v == v else False).astype(bool)
        elif column in _NUMBER_COLUMNS:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
        elif frame[column].dtype == object:
            frame[column] = frame[column].map(lambda v: None if v is None or v != v or v == "" else v)
    return frame


def load_run(run_dir: str | Path, no_text: bool = False) -> Run:
    """The tables of a finished run in `run_dir`; ReportError when it is not one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such folder")
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise ReportError(f"{run_dir} is not a finished lbp-audit run (no manifest.json): "
                          f"run `lbp-audit run NOTES --out {run_dir}` first")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ReportError(f"{manifest_path}: cannot be read as JSON ({type(err).__name__})") from None
    if not isinstance(manifest, dict):
        raise ReportError(f"{manifest_path}: not a run manifest")
    try:
        notes = read_table(run_dir, "notes", NOTE_COLUMNS)
        if notes is None:
            raise ReportError(f"{run_dir} is not a finished lbp-audit run (no notes table)")
        missing = [c for c in ("note_id", "in_scope") if c not in notes.columns]
        if missing:
            raise ReportError(f"{table_path(run_dir, 'notes')}: not a notes table (no {', '.join(missing)})")
        audit = read_table(run_dir, "audit")
        if audit is None and "orders" in (manifest.get("inputs") or {}):
            raise ReportError(f"{run_dir}: the run was given orders but has no audit table (unfinished run?)")
        errors = read_table(run_dir, "errors", ("note_id",))
        unmatched = read_table(run_dir, "unmatched_orders", ("order_id",))
        findings_path = table_path(run_dir, "findings")
        text_kept = findings_path is not None and "text" in _columns_of(findings_path)
    except ReportError:
        raise
    except (OSError, ValueError, KeyError) as err:  # a damaged table: its type only, never its content
        raise ReportError(f"{run_dir}: a table cannot be read ({type(err).__name__})") from None
    for column in NOTE_COLUMNS:
        if column not in notes.columns:
            notes[column] = False if column in _BOOLEAN_COLUMNS else None
    return Run(dir=run_dir, manifest=manifest, notes=notes, audit=audit,
               errors=len(errors) if errors is not None else int((manifest.get("counts") or {}).get("errors", 0)),
               unmatched_orders=len(unmatched) if unmatched is not None else None,
               no_text=bool(no_text or manifest.get("no_text") or not text_kept))


def _columns_of(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_schema(path).names
    return list(pd.read_csv(path, nrows=0).columns)


# ---------------------------------------------------------------- headline figures


def lumbar_orders(audit: pd.DataFrame) -> pd.DataFrame:
    """Rows of orders normalised to a lumbar procedure (judged or out of scope)."""
    return audit[audit["verdict"].isin(LUMBAR_VERDICTS)]


def judged_orders(audit: pd.DataFrame) -> pd.DataFrame:
    """Lumbar orders matched to an in-scope note: the denominator of concordance and overuse."""
    return audit[audit["verdict"].isin(JUDGED)]


def headline(run: Run) -> dict:
    """The figures at the top of the report."""
    notes = run.notes
    in_scope = notes[notes["in_scope"]]
    figures = {"notes": len(notes), "errors": run.errors, "in_scope": len(in_scope),
               "needing_imaging": int(in_scope["urgency"].isin(NEEDS_IMAGING).sum())}
    if run.audit is None:
        return figures
    audit = run.audit
    judged = judged_orders(audit)
    verdicts = audit["verdict"].value_counts()
    figures.update({
        "lumbar_orders": len(lumbar_orders(audit)),
        "judged": len(judged),
        "out_of_scope": int(verdicts.get("out_of_scope", 0)),
        "not_lumbar": int(verdicts.get("not_lumbar_imaging", 0)),
        "unmatched_orders": run.unmatched_orders,
        "concordant": _share(int(verdicts.get("appropriate", 0)), len(judged)),
        "may_be": _share(int(verdicts.get("may_be_appropriate", 0)), len(judged)),
        "overuse": _share(int(verdicts.get("not_indicated", 0)), len(judged)),
        "missed": int(verdicts.get("missed_imaging", 0)),
        "missed_emergent": int(((audit["verdict"] == "missed_imaging") & (audit["urgency"] == "emergent")).sum()),
    })
    return figures


def verdict_table(audit: pd.DataFrame) -> pd.DataFrame:
    """Rows per verdict, and the share of judged lumbar orders for the judged verdicts."""
    counts = audit["verdict"].value_counts()
    judged = int(counts.reindex(list(JUDGED)).fillna(0).sum())
    rows = []
    for verdict in (*VERDICTS, *sorted(set(counts.index) - set(VERDICTS))):
        n = int(counts.get(verdict, 0))
        rows.append({"verdict": verdict, "rows": n,
                     "share": n / judged if verdict in JUDGED and judged else math.nan})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- by period, site, provider


def row_dates(audit: pd.DataFrame, notes: pd.DataFrame) -> pd.Series:
    """The date of each audit row: the order's date, else (missed imaging, undated orders) its note's."""
    note_dates = notes.set_index("note_id")["note_date"]
    order = audit["order_date"].map(parse_date)
    note = audit["note_id"].map(note_dates).map(parse_date)
    return pd.to_datetime(order.where(order.notna(), note))


def period_unit(dates: pd.Series) -> str:
    """'month', or 'quarter' when the dates span more than four years (so the plot stays legible)."""
    dates = dates.dropna()
    if dates.empty:
        return "month"
    months = (dates.max().year - dates.min().year) * 12 + dates.max().month - dates.min().month + 1
    return "month" if months <= 48 else "quarter"


def period_labels(dates: pd.Series, unit: str) -> pd.Series:
    freq = "M" if unit == "month" else "Q"
    return dates.map(lambda d: str(pd.Period(d, freq=freq)) if pd.notna(d) else None)


def _group_counts(rows: pd.DataFrame, key: pd.Series, verdicts: Sequence[str]) -> pd.DataFrame:
    table = pd.crosstab(key.fillna("(not recorded)"), rows["verdict"]).reindex(columns=list(verdicts), fill_value=0)
    table["lumbar_orders"] = table.reindex(columns=list(LUMBAR_VERDICTS), fill_value=0).sum(axis=1)
    table["judged"] = table.reindex(columns=list(JUDGED), fill_value=0).sum(axis=1)
    for name, verdict in (("concordant", "appropriate"), ("overuse", "not_indicated")):
        shares = [_share(k, n) for k, n in zip(table[verdict], table["judged"])]
        for part in ("share", "low", "high"):
            table[f"{name}_{part}"] = [s[part] for s in shares]
    return table


def verdicts_by_period(audit: pd.DataFrame, notes: pd.DataFrame) -> tuple[pd.DataFrame, str, int]:
    """Verdict counts per month (or quarter) of lumbar orders and missed imaging, with concordance;
    the unit; and how many of these rows have no date."""
    rows = audit[audit["verdict"].isin(PERIOD_VERDICTS)]
    dates = row_dates(rows, notes)
    unit = period_unit(dates)
    labels = period_labels(dates, unit)
    dated = labels.notna()
    table = _group_counts(rows[dated], labels[dated], PERIOD_VERDICTS)
    if len(table):  # every period from the first to the last, those without a row as zeros
        freq = "M" if unit == "month" else "Q"
        span = pd.period_range(dates.min(), dates.max(), freq=freq).astype(str)
        table = table.reindex(span)
        counts = [c for c in table.columns if not c.endswith(("_share", "_low", "_high"))]
        table[counts] = table[counts].fillna(0).astype(int)
    return table, unit, int((~dated).sum())


def verdicts_by(audit: pd.DataFrame, column: str) -> pd.DataFrame | None:
    """Lumbar-order verdicts per value of the order's `column` (site, provider); None when no lumbar order
    has one."""
    rows = lumbar_orders(audit)
    if column not in rows.columns or rows[column].notna().sum() == 0:
        return None
    table = _group_counts(rows, rows[column], LUMBAR_VERDICTS)
    return table.sort_values(["judged", "lumbar_orders"], ascending=False, kind="stable")


def funnel_flags(table: pd.DataFrame, measure: str, overall: float) -> pd.Series:
    """Per group: 'above' / 'below' the 99.8 % limits, 'above 95 %' / 'below 95 %', or ''."""
    flags = []
    for share, n in zip(table[f"{measure}_share"], table["judged"]):
        flag = ""
        if n:
            for z, word in ((Z998, ""), (Z95, " 95 %")):
                low, high = funnel_limits(overall, int(n), z)
                if share > high + 1e-12:
                    flag = f"above{word} limit"
                    break
                if share < low - 1e-12:
                    flag = f"below{word} limit"
                    break
        flags.append(flag)
    return pd.Series(flags, index=table.index)


# ---------------------------------------------------------------- red flags and scenarios


def _summary_of(row: Mapping) -> dict:
    summary = {label: row.get(label) for label in LABELS}
    age = row.get("age")
    summary.update({"age": None if age is None or age != age else int(age),
                    "bilateral_deficit": bool(row.get("bilateral_deficit")),
                    "progressive_deficit": bool(row.get("progressive_deficit")),
                    "duration_days": row.get("duration_days"), "duration_class": row.get("duration_class"),
                    "in_scope": bool(row.get("in_scope"))})
    return summary


@dataclass(frozen=True)
class ScenarioEvidence:
    """What drove each in-scope note's scenarios, recomputed from the notes table with the rules."""

    by_note: dict  # note_id -> {scenario: (evidence keys...)}
    differ: int  # notes whose recomputed scenarios differ from the table's (other rules than the run's)
    elderly_age: int | None


def scenario_evidence(notes: pd.DataFrame, editions: Sequence) -> ScenarioEvidence:
    """Recompute `recommend` for every in-scope note (its guideline edition from the table) to learn which
    labels and summary fields made each scenario apply."""
    from .scenarios import choose_edition, recommend

    by_id = {e.id: e for e in editions}
    default = choose_edition(editions) if editions else None
    by_note, differ = {}, 0
    for row in notes[notes["in_scope"]].to_dict("records"):
        edition = by_id.get(row.get("edition")) or default
        if edition is None:
            continue
        recommendation = recommend(_summary_of(row), edition)
        by_note[row["note_id"]] = {m.scenario: tuple("age" if e.startswith("age ") else e for e in m.evidence)
                                   for m in recommendation.scenarios}
        if ";".join(recommendation.scenario_ids) != (row.get("scenarios") or ""):
            differ += 1
    elderly = default.parameters.get("elderly_age") if default is not None else None
    return ScenarioEvidence(by_note, differ, elderly)


def _condition_keys(condition: dict) -> set[str]:
    if "any" in condition or "all" in condition:
        return set().union(*(_condition_keys(c) for c in condition.get("any", condition.get("all", []))))
    if "not" in condition:
        return set()
    return {condition.get("label") or condition.get("field")}


def drivable(editions: Sequence) -> dict[str, list[str]]:
    """Per label or summary field: the scenarios whose conditions name it (in any edition)."""
    out: dict[str, list[str]] = {}
    for edition in editions:
        for rule in edition.scenario_rules:
            for key in _condition_keys(rule.when):
                if rule.scenario not in out.setdefault(key, []):
                    out[key].append(rule.scenario)
    return out


def finding_words(label: str) -> str:
    """FOOT_DROP -> 'foot drop', IV_DRUG_USE -> 'IV drug use'."""
    return " ".join(w if w in ("IV", "MRI", "CES") else w.lower() for w in label.split("_"))


def red_flags(notes: pd.DataFrame, evidence: ScenarioEvidence, editions: Sequence) -> pd.DataFrame:
    """Per finding (every label but low back pain, and the bilateral / progressive deficit and elderly
    fields): in-scope notes where it is present, possible, documented absent, and where it drove a scenario."""
    scope = notes[notes["in_scope"]]
    drives = drivable(editions)
    drove: dict[str, int] = {}
    for scenarios in evidence.by_note.values():
        for key in {k for keys in scenarios.values() for k in keys}:
            drove[key] = drove.get(key, 0) + 1
    rows = []
    for label in LABELS:
        if label == "LOW_BACK_PAIN":
            continue
        status = scope[label]
        rows.append({"key": label, "finding": finding_words(label),
                     "present": int((status == "present").sum()), "possible": int((status == "possible").sum()),
                     "absent": int((status == "absent").sum()), "drove": drove.get(label, 0),
                     "can_drive": ", ".join(drives.get(label, []))})
    for key, words in (("bilateral_deficit", "bilateral deficit"), ("progressive_deficit", "progressive deficit")):
        rows.append({"key": key, "finding": words, "present": int(scope[key].sum()), "possible": 0, "absent": 0,
                     "drove": drove.get(key, 0), "can_drive": ", ".join(drives.get(key, []))})
    if evidence.elderly_age is not None:
        rows.append({"key": "age", "finding": f"age {evidence.elderly_age} or over",
                     "present": int((scope["age"] >= evidence.elderly_age).sum()), "possible": 0, "absent": 0,
                     "drove": drove.get("age", 0), "can_drive": ", ".join(drives.get("age", []))})
    table = pd.DataFrame(rows)
    n = len(scope)
    table["share"] = (table["present"] + table["possible"]) / n if n else math.nan
    return table.sort_values(["share", "present"], ascending=False, kind="stable").reset_index(drop=True)


def scenario_table(notes: pd.DataFrame) -> pd.DataFrame:
    """In-scope notes per scenario (a note can have several) and per highest urgency."""
    scope = notes[notes["in_scope"]]
    scenarios = scope["scenarios"].fillna("").str.split(";").explode()
    counts = scenarios[scenarios != ""].value_counts()
    order = list(dict.fromkeys(s for value in scope["scenarios"].dropna() for s in value.split(";") if s))
    rows = [{"scenario": s, "notes": int(counts.get(s, 0))} for s in order]
    rows.sort(key=lambda r: -r["notes"])
    none = int((scope["scenarios"].fillna("") == "").sum())
    if none:
        rows.append({"scenario": "(none)", "notes": none})
    return pd.DataFrame(rows, columns=["scenario", "notes"])


# ---------------------------------------------------------------- the HEDIS-style figure


def hedis_excluded(notes: pd.DataFrame) -> pd.DataFrame:
    """One boolean column per HEDIS exclusion family: the note has one of its findings."""
    out = {}
    for family, labels, fields_ in HEDIS_EXCLUSIONS:
        mask = pd.Series(False, index=notes.index)
        for label in labels:
            mask |= notes[label].isin(("present", "possible"))
        for name in fields_:
            mask |= notes[name].astype(bool)
        out[family] = mask
    return pd.DataFrame(out, index=notes.index)


def hedis_figure(notes: pd.DataFrame, audit: pd.DataFrame) -> dict:
    """Of uncomplicated back-pain notes (in scope, no finding of a HEDIS exclusion family, age 18–75 when
    documented), those with lumbar X-ray, CT or MRI ordered on the note's date or in the 28 days after."""
    scope = notes[notes["in_scope"]]
    excluded = hedis_excluded(scope)
    any_excluded = excluded.any(axis=1)
    low, high = HEDIS_AGES
    age = scope["age"]
    age_out = age.notna() & ~age.between(low, high)
    eligible = scope[~any_excluded & ~age_out]
    orders = lumbar_orders(audit)
    orders = orders[orders["procedure"].map(MODALITY_OF).isin(HEDIS_MODALITIES)]
    note_dates = notes.set_index("note_id")["note_date"].map(parse_date)
    order_dates = orders["order_date"].map(parse_date)
    days = [(o - n).days if o is not None and n is not None else None
            for o, n in zip(order_dates, orders["note_id"].map(note_dates))]
    in_window = [d is None or 0 <= d <= HEDIS_DAYS for d in days]
    imaged = set(orders["note_id"][in_window])
    is_imaged = eligible["note_id"].isin(imaged)
    strata = []
    for name, mask in (("all ages", pd.Series(True, index=eligible.index)),
                       ("18–64", eligible["age"].between(18, 64)), ("65–75", eligible["age"].between(65, 75)),
                       ("age not documented", eligible["age"].isna())):
        strata.append({"stratum": name, **_share(int((is_imaged & mask).sum()), int(mask.sum()))})
    return {"in_scope": len(scope), "excluded": int(any_excluded.sum()),
            "excluded_by": {family: int(excluded[family].sum()) for family in excluded.columns},
            "age_out": int((age_out & ~any_excluded).sum()), "strata": strata, "imaged": strata[0],
            "inverted": 1 - strata[0]["share"] if strata[0]["n"] else math.nan,
            "inverted_low": 1 - strata[0]["high"] if strata[0]["n"] else math.nan,
            "inverted_high": 1 - strata[0]["low"] if strata[0]["n"] else math.nan}


# ---------------------------------------------------------------- examples


def _pick_order(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def example_rows(audit: pd.DataFrame, per_verdict: int = EXAMPLES_PER_VERDICT) -> dict[str, pd.DataFrame]:
    """Up to `per_verdict` audit rows per verdict, chosen by a hash of note and order id (stable, and spread
    over the archive rather than its first notes)."""
    out = {}
    keyed = audit.assign(_key=[_pick_order(f"{n}\0{o or ''}") for n, o in zip(audit["note_id"], audit["order_id"])])
    for verdict in VERDICTS:
        rows = keyed[keyed["verdict"] == verdict]
        if len(rows):
            out[verdict] = rows.sort_values("_key").head(per_verdict).drop(columns="_key")
    return out


def example_evidence(findings: pd.DataFrame | None, note_id: str, keys: Iterable[str]) -> list[dict]:
    """The findings of `note_id` for the labels that drove its scenarios: mentions that count for the
    patient first, at most a few."""
    if findings is None or findings.empty:
        return []
    wanted = [k for k in dict.fromkeys(keys) if k in LABELS]
    rows = findings[(findings["note_id"] == note_id) & findings["label"].isin(wanted)]
    rank = {"present": 0, "historical": 1, "possible": 2}
    rows = rows.assign(_rank=rows["assertion"].map(lambda a: rank.get(a, 9)),
                       _label=rows["label"].map(wanted.index))
    rows = rows[rows["_rank"] < 9].sort_values(["_label", "_rank", "start"], kind="stable")
    return rows.drop_duplicates("label").head(EVIDENCE_PER_EXAMPLE).to_dict("records")


# ---------------------------------------------------------------- methods


def run_date(manifest: Mapping, manifest_path: Path) -> str:
    """When the run started (UTC), from the manifest; for a run whose manifest does not say, when its
    manifest.json was written."""
    started = (manifest.get("timings") or {}).get("started_at")
    try:
        stamp = dt.datetime.fromisoformat(started).astimezone(dt.timezone.utc)
        return stamp.strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError):
        stamp = dt.datetime.fromtimestamp(manifest_path.stat().st_mtime, tz=dt.timezone.utc)
        return stamp.strftime("%Y-%m-%d %H:%M UTC") + " (when manifest.json was written)"


# ---------------------------------------------------------------- the report


@dataclass
class Report:
    """Everything the HTML shows, computed from one run."""

    run: Run
    headline: dict
    rules_digest: str | None = None
    verdicts: pd.DataFrame | None = None
    by_period: pd.DataFrame | None = None
    period_unit: str = "month"
    undated: int = 0
    by_site: pd.DataFrame | None = None
    by_provider: pd.DataFrame | None = None
    flags: pd.DataFrame | None = None
    scenarios: pd.DataFrame | None = None
    evidence: ScenarioEvidence | None = None
    hedis: dict | None = None
    examples: dict = field(default_factory=dict)
    example_findings: pd.DataFrame | None = None


def build(run: Run, rules_dir: str | Path | None = None) -> Report:
    """Compute every figure of the report."""
    from .rules import load_rules

    rules = load_rules(rules_dir)
    report = Report(run=run, headline=headline(run), rules_digest=rules.digest)
    report.evidence = scenario_evidence(run.notes, rules.editions)
    report.flags = red_flags(run.notes, report.evidence, rules.editions)
    report.scenarios = scenario_table(run.notes)
    if run.audit is not None:
        audit = run.audit
        report.verdicts = verdict_table(audit)
        report.by_period, report.period_unit, report.undated = verdicts_by_period(audit, run.notes)
        report.by_site = verdicts_by(audit, "site")
        report.by_provider = verdicts_by(audit, "provider")
        report.hedis = hedis_figure(run.notes, audit)
        report.examples = example_rows(audit)
        ids = {n for rows in report.examples.values() for n in rows["note_id"]}
        columns = ["note_id", "label", "assertion", "section", "start", "rule_id", "cue_rule_id"]
        if not run.no_text:
            columns += ["text", "cue"]
        report.example_findings = read_table(run.dir, "findings", columns, note_ids=ids)
    return report


def summary_line(report: Report) -> str:
    h = report.headline
    line = f"{h['notes']:,} notes ({h['in_scope']:,} in scope)"
    if "judged" not in h:
        return line + "; no orders were audited"
    c = h["concordant"]
    return (line + f"; {h['lumbar_orders']:,} lumbar orders: {_pct(c['share'])} concordant "
            f"(95 % CI {_ci(c['low'], c['high'])}), {_pct(h['overuse']['share'])} not indicated; "
            f"{h['missed']:,} missed urgent imaging")


def write_report(run_dir: str | Path, out: str | Path | None = None, no_text: bool = False,
                 rules_dir: str | Path | None = None) -> tuple[Path, str]:
    """Write the HTML report of the run in `run_dir` (default DIR/report.html); returns its path and a
    one-line summary."""
    run = load_run(run_dir, no_text=no_text)
    report = build(run, rules_dir)
    page = render(report)
    path = Path(out) if out else run.dir / "report.html"
    try:  # as run writes: the folder (made if missing) and the file readable by the owner only
        with private_files():
            write_text(page, path)
    except OSError as err:
        raise ReportError(f"{err.filename or path}: cannot be written ({err.strerror})") from None
    return path, summary_line(report)


# ---------------------------------------------------------------- plots (matplotlib, Agg canvas, no pyplot)


def _figure_of(width: float, height: float, rows: int = 1, cols: int = 1, **kwargs):
    """A figure on its own Agg canvas (no display, no global pyplot state) and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, **kwargs)


def _png(fig) -> str:
    """The figure as a PNG data URI (no Software / date metadata: the same data gives the same bytes)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _percent_axis(axis, which: str = "y") -> None:
    from matplotlib.ticker import PercentFormatter

    (axis.yaxis if which == "y" else axis.xaxis).set_major_formatter(PercentFormatter(100, decimals=0))


def plot_verdict_bars(verdicts: pd.DataFrame) -> str:
    rows = verdicts[verdicts["rows"] > 0].iloc[::-1]
    fig, ax = _figure_of(8, 0.42 * len(rows) + 1.2)
    bars = ax.barh(rows["verdict"], rows["rows"], color=[COLOURS.get(v, "#bbbbbb") for v in rows["verdict"]],
                   edgecolor="#555555", linewidth=0.5)
    ax.bar_label(bars, labels=[f"{n:,}" for n in rows["rows"]], padding=3, fontsize=9)
    ax.set_xlabel("audit rows")
    ax.set_title(f"Audit rows by verdict (n = {int(verdicts['rows'].sum()):,})", fontsize=11)
    ax.margins(x=0.12)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def plot_period_panels(table: pd.DataFrame, unit: str) -> str:
    fig, (top, bottom) = _figure_of(11, 6.8, 2, 1, sharex=True, height_ratios=[3, 2])
    x = list(range(len(table)))
    base = [0] * len(table)
    for verdict in PERIOD_VERDICTS:
        values = table[verdict].tolist()
        if sum(values):
            top.bar(x, values, bottom=base, color=COLOURS[verdict], label=verdict, width=0.85,
                    edgecolor="white", linewidth=0.3)
            base = [b + v for b, v in zip(base, values)]
    top.yaxis.get_major_locator().set_params(integer=True)
    top.set_ylabel(f"rows per {unit}")
    top.set_title(f"Lumbar orders by verdict, and missed imaging, per {unit}", fontsize=11)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    top.spines[["top", "right"]].set_visible(False)
    judged = table["judged"] > 0
    xs = [i for i, ok in zip(x, judged) if ok]
    shares = (table.loc[judged, "concordant_share"] * 100).tolist()
    below = [s - lo * 100 for s, lo in zip(shares, table.loc[judged, "concordant_low"])]
    above = [hi * 100 - s for s, hi in zip(shares, table.loc[judged, "concordant_high"])]
    bottom.errorbar(xs, shares, yerr=[below, above], fmt="o", color=COLOURS["appropriate"], ecolor="#777777",
                    elinewidth=0.8, capsize=2, markersize=4)
    total_k, total_n = int(table["appropriate"].sum()), int(table["judged"].sum())
    if total_n:
        bottom.axhline(100 * total_k / total_n, color="#333333", linestyle="--", linewidth=0.8)
    bottom.set_ylim(-2, 102)
    _percent_axis(bottom)
    bottom.set_ylabel("concordant (of judged)")
    bottom.set_xlabel(unit)
    bottom.spines[["top", "right"]].set_visible(False)
    step = max(1, math.ceil(len(x) / 36))
    bottom.set_xticks(x[::step], [str(p) for p in table.index[::step]], rotation=90, fontsize=8)
    return _png(fig)


def plot_interval_plot(table: pd.DataFrame, overall: float, what: str) -> str:
    rows = table[table["judged"] > 0].sort_values("concordant_share", kind="stable")
    fig, ax = _figure_of(8, 0.38 * len(rows) + 1.4)
    y = list(range(len(rows)))
    shares = (rows["concordant_share"] * 100).tolist()
    ax.errorbar(shares, y, xerr=[[s - lo * 100 for s, lo in zip(shares, rows["concordant_low"])],
                                 [hi * 100 - s for s, hi in zip(shares, rows["concordant_high"])]],
                fmt="o", color=COLOURS["appropriate"], ecolor="#777777", capsize=3, markersize=5)
    ax.set_yticks(y, [f"{name} (n = {n:,})" for name, n in zip(rows.index, rows["judged"])], fontsize=9)
    if overall == overall:
        ax.axvline(overall * 100, color="#333333", linestyle="--", linewidth=0.8)
    ax.set_xlim(-2, 102)
    _percent_axis(ax, "x")
    ax.set_xlabel("judged lumbar orders that are concordant (95 % Wilson interval)")
    ax.set_title(f"Guideline-concordant share by {what}", fontsize=11)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def plot_funnel_panels(table: pd.DataFrame, concordant: float, overuse: float) -> str:
    rows = table[table["judged"] > 0]
    fig, axes = _figure_of(11, 4.6, 1, 2)
    top_n = max(int(rows["judged"].max()) if len(rows) else 1, 2)
    ns = [n / 4 for n in range(4, 4 * top_n + 5)]
    for ax, measure, overall, words in ((axes[0], "concordant", concordant, "concordant"),
                                        (axes[1], "overuse", overuse, "not indicated (overuse)")):
        if overall == overall:
            for z, style, name in ((Z95, "--", "95 % limits"), (Z998, ":", "99.8 % limits")):
                limits = [funnel_limits(overall, n, z) for n in ns]
                ax.plot(ns, [lo * 100 for lo, _ in limits], style, color="#555555", linewidth=0.9, label=name)
                ax.plot(ns, [hi * 100 for _, hi in limits], style, color="#555555", linewidth=0.9)
            ax.axhline(overall * 100, color="#333333", linewidth=0.8, label=f"all providers ({overall * 100:.1f} %)")
        ax.scatter(rows["judged"], rows[f"{measure}_share"] * 100, s=22, zorder=3,
                   color=COLOURS["appropriate" if measure == "concordant" else "not_indicated"], edgecolor="#333333",
                   linewidth=0.4)
        flags = funnel_flags(rows, measure, overall)
        for name, n, share in zip(rows.index, rows["judged"], rows[f"{measure}_share"]):
            if flags[name]:
                ax.annotate(str(name), (n, share * 100), textcoords="offset points", xytext=(4, 3), fontsize=8)
        ax.set_ylim(-2, 102)  # a provider at 0 % or 100 % stays in view
        ax.set_xlim(0, top_n * 1.05 + 1)
        _percent_axis(ax)
        ax.set_xlabel("judged lumbar orders of the provider (n)")
        ax.set_ylabel(words)
        ax.set_title(f"{words.capitalize()} by ordering provider", fontsize=11)
        ax.legend(fontsize=8, frameon=False, loc="lower right" if measure == "concordant" else "upper right")
        ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def plot_flag_bars(flags: pd.DataFrame, in_scope: int) -> str:
    rows = flags.iloc[::-1]
    fig, ax = _figure_of(9, 0.3 * len(rows) + 1.4)
    n = max(in_scope, 1)
    y = list(range(len(rows)))
    present = (rows["present"] / n * 100).tolist()
    possible = (rows["possible"] / n * 100).tolist()
    drove = (rows["drove"] / n * 100).tolist()
    ax.barh(y, present, height=0.7, color="#0072B2", label="present")
    ax.barh(y, possible, left=present, height=0.7, color="#9ecae1", label="possible")
    ax.scatter(drove, y, marker="D", s=16, color="#D55E00", zorder=3, label="drove a scenario")
    ax.set_yticks(y, rows["finding"].tolist(), fontsize=9)
    _percent_axis(ax, "x")
    ax.set_xlim(0, max([p + q for p, q in zip(present, possible)] + drove + [1]) * 1.06)
    ax.set_xlabel(f"share of the {in_scope:,} in-scope notes")
    ax.set_title("Red flags and other findings among in-scope notes", fontsize=11)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


# ---------------------------------------------------------------- HTML


def _pct(value: float, digits: int = 1) -> str:
    return "–" if value is None or value != value else f"{100 * value:.{digits}f} %"


def _ci(low: float, high: float) -> str:
    return "–" if low != low else f"{100 * low:.1f}–{100 * high:.1f} %"


def _e(value) -> str:
    return html.escape("" if value is None or value != value else str(value))


def _td(text, value=None, extra: str = "") -> str:
    data = "" if value is None else f' data-value="{_e(_raw(value))}"'
    return f"<td{data}{extra}>{text}</td>"


def _raw(value) -> str:
    """A number as plain digits (numpy 2's repr of its scalars would add 'np.float64(...)')."""
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        return "" if value != value else repr(round(value, 6))
    return str(value)


_NUM = ' class="num"'


def _n(value) -> str:
    return _td(f"{int(value):,}", int(value), _NUM)


def _share_cells(share: float, low: float, high: float) -> str:
    return (_td(_pct(share), share, _NUM) +
            f'<td class="num" data-low="{_raw(low)}" data-high="{_raw(high)}">{_ci(low, high)}</td>')


def _table(table_id: str, headers: Sequence[str], rows: Iterable[str], caption: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    cap = f"<caption>{caption}</caption>" if caption else ""
    return (f'<div class="wide"><table id="{table_id}">{cap}<thead><tr>{head}</tr></thead><tbody>'
            + "".join(rows) + "</tbody></table></div>")


def _figure(uri: str, alt: str, caption: str) -> str:
    return (f'<figure><img src="{uri}" alt="{_e(alt)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _headline_html(report: Report) -> str:
    h = report.headline
    rows = [
        ("notes", "Notes audited", _n(h["notes"]),
         f"notes summarised by the run; {h['errors']:,} more could not be processed (errors table)"),
        ("in_scope", "In-scope back-pain notes", _n(h["in_scope"]),
         "back pain, radiculopathy or neurogenic claudication present, or cauda equina present or possible"),
    ]
    if "judged" in h:
        c, o = h["concordant"], h["overuse"]
        rows += [
            ("lumbar_orders", "Lumbar imaging orders", _n(h["lumbar_orders"]),
             f"orders matched to a note and normalised to lumbar imaging; {h['judged']:,} of them matched to an "
             f"in-scope note are judged ({h['out_of_scope']:,} out of scope). Not counted: "
             f"{h['not_lumbar']:,} non-lumbar orders"
             + (f", {h['unmatched_orders']:,} orders that matched no note" if h["unmatched_orders"] is not None
                else "")),
            ("concordant", "Guideline-concordant", _share_cells(c["share"], c["low"], c["high"]),
             f"{c['k']:,} of {c['n']:,} judged lumbar orders 'appropriate'; 95 % Wilson interval"),
            ("overuse", "Overuse (not indicated)", _share_cells(o["share"], o["low"], o["high"]),
             f"{o['k']:,} of {o['n']:,} judged lumbar orders 'not_indicated'"),
            ("missed", "Missed urgent imaging", _n(h["missed"]),
             f"in-scope notes needing urgent or emergent imaging ({h['missed_emergent']:,} emergent) with no lumbar "
             f"order; {h['needing_imaging']:,} in-scope notes needed urgent or emergent imaging"),
        ]
    body = []
    for key, name, cells, words in rows:
        if cells.count("<td") == 1:
            cells += "<td></td>"
        body.append(f'<tr data-key="{key}"><th scope="row">{name}</th>{cells}<td class="words">{words}</td></tr>')
    return _table("headline", ["Figure", "Value", "95 % interval", "Definition"], body)


def _verdicts_html(report: Report) -> str:
    rows = []
    for r in report.verdicts.itertuples():
        rows.append(f'<tr data-key="{_e(r.verdict)}"><td><span class="swatch" style="background:'
                    f'{COLOURS.get(r.verdict, "#fff")}"></span>{_e(r.verdict)}</td>{_n(r.rows)}'
                    f'{_td(_pct(r.share), r.share if r.share == r.share else None, _NUM)}'
                    f'<td class="words">{_e(VERDICT_WORDS.get(r.verdict, ""))}</td></tr>')
    return _table("verdicts", ["Verdict", "Rows", "Share of judged lumbar orders", "Meaning"], rows)


def _group_html(table_id: str, table: pd.DataFrame, label: str, verdicts: Sequence[str],
                flags: pd.Series | None = None) -> str:
    verdicts = [v for v in verdicts if table[v].sum()]  # a verdict no row has gets no column
    headers = [label, *verdicts, "Judged", "Concordant", "Concordant 95 % CI", "Not indicated",
               "Not indicated 95 % CI"]
    if flags is not None:
        headers.append("Funnel")
    rows = []
    for key, r in table.iterrows():
        cells = "".join(_n(r[v]) for v in verdicts)
        cells += _n(r["judged"])
        cells += _share_cells(r["concordant_share"], r["concordant_low"], r["concordant_high"])
        cells += _share_cells(r["overuse_share"], r["overuse_low"], r["overuse_high"])
        if flags is not None:
            cells += f"<td>{_e(flags[key])}</td>"
        rows.append(f'<tr data-key="{_e(key)}"><th scope="row">{_e(key)}</th>{cells}</tr>')
    return _table(table_id, headers, rows)


def _flags_html(report: Report) -> str:
    n = report.headline["in_scope"]
    rows = []
    for r in report.flags.itertuples():
        rows.append(f'<tr data-key="{_e(r.key)}"><th scope="row">{_e(r.finding)}</th>{_n(r.present)}{_n(r.possible)}'
                    f'{_td(_pct(r.share), r.share, _NUM)}{_n(r.absent)}{_n(r.drove)}'
                    f'<td>{_e(r.can_drive)}</td></tr>')
    return _table("red-flags", ["Finding", "Present", "Possible", "Present or possible, % of in-scope notes",
                                "Documented absent", "Drove a scenario", "Scenarios it can drive"], rows,
                  f"Among {n:,} in-scope notes")


def _scenarios_html(report: Report) -> str:
    n = report.headline["in_scope"]
    rows = [f'<tr data-key="{_e(r.scenario)}"><th scope="row">{_e(r.scenario)}</th>{_n(r.notes)}'
            f'{_td(_pct(r.notes / n if n else math.nan), None, _NUM)}</tr>'
            for r in report.scenarios.itertuples()]
    return _table("scenarios", ["Scenario", "Notes", "% of in-scope notes"], rows,
                  "A note can match several scenarios")


def _hedis_html(report: Report) -> str:
    h = report.hedis
    imaged = h["imaged"]
    low, high = HEDIS_AGES
    rows = [f'<tr data-key="{_e(s["stratum"])}"><th scope="row">{_e(s["stratum"])}</th>{_n(s["n"])}{_n(s["k"])}'
            f'{_share_cells(s["share"], s["low"], s["high"])}</tr>' for s in h["strata"]]
    excluded = [f'<tr data-key="{_e(family)}"><th scope="row">{_e(family)}</th>{_n(count)}'
                f'<td>{_e(", ".join(labels + fields_))}</td></tr>'
                for (family, labels, fields_), count in zip(HEDIS_EXCLUSIONS, h["excluded_by"].values())]
    return (
        f'<p class="big" id="hedis-figure" data-k="{imaged["k"]}" data-n="{imaged["n"]}">'
        f'<strong>{_pct(imaged["share"])}</strong> of {imaged["n"]:,} uncomplicated back-pain notes had lumbar '
        f'imaging ordered within {HEDIS_DAYS} days (95 % CI {_ci(imaged["low"], imaged["high"])}); '
        f'as HEDIS reports it (inverted, higher is better): <strong>{_pct(h["inverted"])}</strong> without '
        f"imaging ({_ci(h['inverted_low'], h['inverted_high'])}).</p>"
        "<p><b>Definition.</b> Denominator: in-scope notes with none of the findings of a HEDIS exclusion family "
        f"present or possible (table below) and age {low}–{high} when the note states it "
        f"({h['in_scope']:,} in scope, {h['excluded']:,} excluded by a finding, {h['age_out']:,} more by age). "
        f"Numerator: those with a lumbar X-ray, CT (CT myelography included) or MRI order matched to the note and "
        f"dated on the note's date or in the {HEDIS_DAYS} days after (an order or note without a date counts when "
        "the order is linked to the note).</p>"
        + _table("hedis", ["Age", "Uncomplicated notes", "With imaging ≤ 28 days", "Share", "95 % interval"], rows)
        + _table("hedis-exclusions", ["HEDIS exclusion family", "In-scope notes excluded", "Findings that stand for it"],
                 excluded)
        + "<p><b>How this differs from the claims-based measure</b> (NCQA HEDIS <i>Use of Imaging Studies for Low "
        "Back Pain</i>, MY 2025):</p><ul>"
        "<li>HEDIS counts members 18–75 with a principal diagnosis of uncomplicated low back pain, takes each "
        "member's first episode in the intake period (the index date) after 180 days without one, and requires "
        "continuous enrolment; here every in-scope note counts, the same patient possibly several times, and a note "
        "without a stated age is kept.</li>"
        "<li>HEDIS exclusions are coded diagnoses, procedures and dispensed drugs with look-back windows (any time "
        "for cancer, HIV, transplant, osteoporosis; 365 days for IV drug use, neurologic impairment, spinal "
        "infection; 90 days for trauma; 90 consecutive days of corticosteroids); here they are what this note "
        "documents, present or possible. Immunosuppression is broader than HIV and transplant. Palliative care, "
        "hospice, death and frailty with advanced illness cannot be seen and are not excluded. Fever, weight loss "
        "and night pain are not HEDIS exclusions, so such notes stay in the denominator.</li>"
        "<li>HEDIS counts any imaging claim for the member in the window; here only the orders given to the run "
        "and matched to this note count (an order matched to a later note of the patient is not seen here).</li>"
        "<li>HEDIS reports the inverted rate (1 − imaged share, higher is better); both are shown.</li></ul>")


def _examples_html(report: Report, evidence: ScenarioEvidence) -> str:
    no_text = report.run.no_text
    findings = report.example_findings
    parts = []
    for verdict, rows in report.examples.items():
        body = []
        for r in rows.to_dict("records"):
            keys = [k for keys in evidence.by_note.get(r["note_id"], {}).values() for k in keys]
            items = []
            for f in example_evidence(findings, r["note_id"], keys):
                where = f" [{_e(f['section'])}]" if f.get("section") else ""
                if no_text:
                    cue = f" ← {_e(f['cue_rule_id'])}" if f.get("cue_rule_id") else ""
                    items.append(f"<li>{_e(f['label'])} {_e(f['assertion'])}{where} "
                                 f"<code>{_e(f['rule_id'])}</code>{cue}</li>")
                else:
                    snippet = str(f.get("text") or "")
                    snippet = snippet if len(snippet) <= SNIPPET_CHARS else snippet[:SNIPPET_CHARS - 1] + "…"
                    cue = f" ← '{_e(f['cue'])}'" if f.get("cue") else ""
                    items.append(f"<li>{_e(f['label'])} {_e(f['assertion'])}{where}: "
                                 f"<q>{_e(snippet)}</q>{cue} <code>{_e(f['rule_id'])}</code></li>")
            fields_ = [k for k in dict.fromkeys(keys) if k not in LABELS]
            if fields_:
                items.append(f"<li>summary: {_e(', '.join(f.replace('_', ' ') for f in fields_))}</li>")
            order = _e(r.get("order_id") or "(no order)")
            what = _e(r.get("procedure") or "")
            if not no_text and r.get("description"):
                what += f" <span class=\"muted\">“{_e(r['description'])}”</span>"
            why = (f"<code>{_e(r.get('rule_ids') or '')}</code>" if no_text
                   else f"{_e(r.get('rationale') or '')}<br><code>{_e(r.get('rule_ids') or '')}</code>")
            if r.get("advisory") and not no_text:
                why = f"<em>{_e(r['advisory'])}</em><br>" + why
            body.append(f'<tr data-note="{_e(r["note_id"])}"><td>{_e(r["note_id"])}</td><td>{order}</td>'
                        f"<td>{what}</td><td>{_e(r.get('scenarios') or '')}</td><td>{_e(r.get('urgency') or '')}</td>"
                        f"<td><ul class=\"ev\">{''.join(items) or '<li>—</li>'}</ul></td><td class=\"words\">{why}</td></tr>")
        parts.append(f"<h3>{_e(verdict)}</h3>" + _table(
            f"examples-{verdict}", ["Note", "Order", "Procedure", "Scenarios", "Urgency", "Evidence", "Why"], body))
    return "".join(parts)


def _methods_html(report: Report) -> str:
    run, m = report.run, report.run.manifest
    editions = m.get("guideline_editions") or {}
    used = run.audit["edition"].value_counts() if run.audit is not None else pd.Series(dtype=int)
    edition_rows = "".join(
        f"<li><b>{_e(e)}</b>: {_e(info.get('citation'))}; in force from {_e(info.get('effective_from') or 'the start')}"
        + (f"; {int(used.get(e, 0)):,} audit rows judged by it" if run.audit is not None else "") + "</li>"
        for e, info in editions.items())
    files = "".join(f"<tr><td><code>{_e(name)}</code></td><td><code>{_e(digest)}</code></td></tr>"
                    for name, digest in (m.get("rule_files") or {}).items())
    same = ("" if report.rules_digest == m.get("rules_digest") else
            f" <b>The rules used to recompute which findings drove each scenario ({_e(report.rules_digest)}) are not "
            f"the run's</b>: {report.evidence.differ:,} in-scope notes get other scenarios with them.")
    rows = [("version", "Tool version", f"lbp-audit {_e(m.get('version'))} (report made by lbp-audit {__version__})"),
            ("rules_digest", "Rule-set hash", f"<code>{_e(m.get('rules_digest'))}</code>{same}"),
            ("editions", "Guideline edition(s)", f"<ul>{edition_rows}</ul>"
             + (f"forced: {_e(m.get('edition_forced'))}" if m.get("edition_forced") else
                "each order judged by the edition in force on its date (else its note's)")),
            ("run_date", "Date of the run", _e(run_date(m, run.dir / "manifest.json"))),
            ("window", "Order matching window", f"{_e(m.get('match_window_days'))} days"),
            ("text", "Note text in this report", "none: note ids, labels and rule ids only" if run.no_text
             else f"short evidence snippets (at most {SNIPPET_CHARS} characters) and rationales; never whole notes")]
    body = "".join(f'<tr data-key="{k}"><th scope="row">{name}</th><td>{value}</td></tr>' for k, name, value in rows)
    return (f'<table id="methods"><tbody>{body}</tbody></table>'
            f"<details><summary>Rule files and their SHA-256</summary><table>{files}</table></details>"
            "<h3>Definitions</h3><ul>"
            "<li><b>Lumbar orders</b>: orders matched to a note whose text or CPT code normalises to lumbar imaging "
            "(radiographs, CT, MRI, CT myelography, bone scan). Orders of another region or not imaging "
            "(<code>not_lumbar_imaging</code>) are not lumbar orders; <code>missed_imaging</code> rows have no order.</li>"
            "<li><b>Judged</b>: lumbar orders matched to an in-scope note (all but <code>out_of_scope</code>).</li>"
            "<li><b>Guideline-concordant</b>: <code>appropriate</code> among judged lumbar orders (usually appropriate "
            "in at least one of the note's scenarios, under the edition in force); <code>may_be_appropriate</code> is "
            "not counted as concordant. <b>Overuse</b>: <code>not_indicated</code> among judged lumbar orders.</li>"
            "<li><b>Missed urgent imaging</b>: in-scope notes whose guideline urgency is urgent or emergent and that "
            "no lumbar order matched.</li>"
            f"<li><b>By {report.period_unit}</b>: an order counts in the {report.period_unit} of its order date (its "
            f"note's date when it has none); a missed-imaging row in its note's.</li>"
            "<li><b>95 % intervals</b>: Wilson score interval for k of n, "
            "(p + z²/2n ± z·√(p(1−p)/n + z²/4n²)) / (1 + z²/n) with p = k/n, z = 1.96. "
            "<b>Funnel limits</b>: the overall share p ± z·√(p(1−p)/n) for z = 1.96 (95 %) and 3.09 (99.8 %).</li>"
            "<li><b>Drove a scenario</b>: the finding is among the conditions that made one of the note's scenarios "
            "apply (recomputed from the notes table with the rule set).</li></ul>"
            "<h3>Known limits</h3><ul>" + "".join(f"<li>{_e(t)}</li>" for t in LIMITS) + "</ul>")


def render(report: Report) -> str:
    """The report as one HTML page."""
    run, h = report.run, report.headline
    sections = [("summary", "Headline figures", _headline_html(report))]
    if report.verdicts is not None:
        sections.append(("verdicts-all", "Verdicts", _verdicts_html(report)
                         + _figure(plot_verdict_bars(report.verdicts), "Audit rows by verdict",
                                   "Audit rows by verdict (lumbar orders, missed imaging, non-lumbar orders).")))
        unit = report.period_unit
        if len(report.by_period):
            undated = (f" {report.undated:,} rows have no date and are left out." if report.undated else "")
            sections.append(("by-period", f"Verdicts by {unit}",
                             _figure(plot_period_panels(report.by_period, unit),
                                     f"Verdicts and concordance by {unit}",
                                     f"Top: lumbar orders by verdict and missed imaging per {unit} (orders by order "
                                     f"date, missed imaging by note date). Bottom: concordant share of judged orders "
                                     f"with its 95 % Wilson interval; dashed line: the whole period.{undated}")
                             + _group_html("by-period", report.by_period, unit.capitalize(), PERIOD_VERDICTS)))
        else:
            sections.append(("by-period", f"Verdicts by {unit}", "<p>No audit row has a date.</p>"))
        overall = h["concordant"]["share"]
        if report.by_site is not None:
            sections.append(("by-site", "Verdicts by site",
                             _figure(plot_interval_plot(report.by_site, overall, "site"),
                                     "Concordance by site", "Concordant share of judged lumbar orders per ordering "
                                     "site with 95 % Wilson intervals (n = judged orders); dashed line: all sites. "
                                     "Missed imaging has no order, so no site.")
                             + _group_html("by-site", report.by_site, "Site", LUMBAR_VERDICTS)))
        else:
            sections.append(("by-site", "Verdicts by site", "<p>The orders carry no site.</p>"))
        if report.by_provider is not None:
            flags = funnel_flags(report.by_provider, "concordant", overall)
            sections.append(("by-provider", "Verdicts by ordering provider",
                             _figure(plot_funnel_panels(report.by_provider, overall, h["overuse"]["share"]),
                                     "Funnel plots by provider",
                                     "Each dot is an ordering provider: share of judged lumbar orders against their "
                                     "number. Inside the funnels a provider does not differ from the whole more "
                                     "than chance would make it (lines: 95 % and 99.8 % limits). Few orders give a "
                                     "wide funnel: do not rank providers by their point estimates.")
                             + _group_html("by-provider", report.by_provider, "Provider", LUMBAR_VERDICTS, flags)))
        else:
            sections.append(("by-provider", "Verdicts by ordering provider", "<p>The orders carry no provider.</p>"))
    else:
        sections.append(("orders", "Imaging orders",
                         "<p>This run was made without orders (<code>--orders</code>), so there is no audit: the "
                         "concordance, overuse, missed-imaging, by-period, site, provider, HEDIS and example sections "
                         "are left out. Red flags and scenarios below come from the notes alone.</p>"))
    sections.append(("red-flags", "Red flags among in-scope notes",
                     _figure(plot_flag_bars(report.flags, h["in_scope"]), "Red-flag prevalence",
                             "Share of in-scope notes with each finding present or possible, and with it among the "
                             "conditions of one of the note's scenarios.")
                     + _flags_html(report) + "<h3>Scenarios</h3>" + _scenarios_html(report)))
    if report.hedis is not None:
        sections.append(("hedis", "Imaging of uncomplicated back pain within 28 days (HEDIS-style)",
                         _hedis_html(report)))
        sections.append(("examples", "Examples by verdict",
                         ("<p>Note ids, labels and rule ids only: the run or the report was made with "
                          "<code>--no-text</code>.</p>" if run.no_text else
                          "<p>The evidence is the words the rules matched, not the note.</p>")
                         + _examples_html(report, report.evidence)))
    sections.append(("methods", "Methods", _methods_html(report)))
    nav = "".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}-section"><h2 id="{sid}">{_e(title)}</h2>{content}</section>'
                   for sid, title, content in sections)
    template = resources.files("pipeline").joinpath("templates", "report.html").read_text(encoding="utf-8")
    subtitle = (f"{h['notes']:,} notes" + (" and their imaging orders" if run.audit is not None else "")
                + f" · run of {_e(run_date(run.manifest, run.dir / 'manifest.json'))}"
                + f" · lbp-audit {_e(run.manifest.get('version'))}, rules {_e(run.manifest.get('rules_digest'))}")
    return (template.replace("{{title}}", "Lumbar imaging audit")
            .replace("{{subtitle}}", subtitle).replace("{{nav}}", nav).replace("{{body}}", body))
