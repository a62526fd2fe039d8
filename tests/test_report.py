"""`lbp-audit report DIR`: the HTML report's figures against counts computed directly from the run's tables."""
import math
import os
import shlex
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.report import wilson_interval

ROOT = Path(__file__).resolve().parent.parent
MARKER = "Zqxwvmarker"  # planted in every note; a report never shows whole notes
LUMBAR_CODES = ("XR_LSPINE", "CT_LSPINE_WO", "CT_LSPINE_W", "CT_LSPINE_WWO", "MRI_LSPINE_WO", "MRI_LSPINE_W",
                "MRI_LSPINE_WWO", "CT_MYELO_LSPINE", "BONE_SCAN")
JUDGED = ("appropriate", "may_be_appropriate", "not_indicated", "wrong_modality", "wrong_protocol")
# HEDIS LBP exclusion families as note findings (present or possible), written out here independently
HEDIS_EXCLUDING_LABELS = ("CANCER_HISTORY", "IMMUNOSUPPRESSION", "OSTEOPOROSIS", "PRIOR_LUMBAR_SURGERY", "IV_DRUG_USE",
                          "SPINAL_INFECTION", "FOOT_DROP", "MOTOR_WEAKNESS", "SADDLE_ANESTHESIA",
                          "BLADDER_DYSFUNCTION", "BOWEL_DYSFUNCTION", "CAUDA_EQUINA", "TRAUMA", "STEROID_USE")


class Page(HTMLParser):
    """The report's tables by id (each a list of rows: the tr's attributes, its cells as (text, attributes),
    and the texts of the <q> quotes in it), their column headers, every src / href, the attributes of
    elements with an id, and the tags used."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.headers, self.links, self.ids, self.tags = {}, {}, [], {}, set()
        self._table = self._row = self._cell = self._quote = self._head = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        self.links += [attrs[k] for k in ("src", "href") if k in attrs]
        if "id" in attrs:
            self.ids[attrs["id"]] = attrs
        if tag == "table":
            self._table = attrs.get("id", f"table-{len(self.tables)}")
            self.tables[self._table], self.headers[self._table] = [], []
        elif tag == "thead":
            self._head = True
        elif tag == "tr" and self._table is not None and not self._head:
            self._row = (attrs, [], [])
        elif tag == "th" and self._head:
            self._cell = ["", attrs]
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ["", attrs]
        elif tag == "q" and self._row is not None:
            self._quote = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            if self._head:
                self.headers[self._table].append(self._cell[0].strip())
            else:
                self._row[1].append((self._cell[0].strip(), self._cell[1]))
            self._cell = None
        elif tag == "q" and self._quote is not None:
            self._row[2].append(self._quote)
            self._quote = None
        elif tag == "thead":
            self._head = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data
        if self._quote is not None:
            self._quote += data

    def rows(self, table_id: str) -> dict:
        """data-key -> {column header: (text, attributes)}."""
        return {attrs["data-key"]: dict(zip(self.headers[table_id], cells))
                for attrs, cells, _ in self.tables[table_id]}


def parse(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def value(cell) -> float:
    return float(cell[1]["data-value"])


def interval(cell) -> tuple[float, float]:
    return float(cell[1]["data-low"]), float(cell[1]["data-high"])


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """200 generated notes over several years with orders from several sites and providers, the marker
    planted in every note, run once to Parquet and once to CSV."""
    root = tmp_path_factory.mktemp("report")
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "generate.py"), "--notes", "200", "--seed", "11",
                    "--out", str(root / "in")], check=True, capture_output=True)
    notes = pd.read_csv(root / "in" / "notes.csv", dtype=str, keep_default_na=False)
    notes["text"] = notes["text"] + f"\nSeen with {MARKER} today."
    notes.to_csv(root / "notes.csv", index=False)
    orders = root / "in" / "orders.csv"
    for fmt in ("parquet", "csv"):
        assert main(["run", str(root / "notes.csv"), "--orders", str(orders), "--out", str(root / fmt),
                     "--format", fmt, "--jobs", "1", "--no-progress"]) == 0
    return root


@pytest.fixture(scope="module")
def tables(archive):
    out = archive / "parquet"
    return {name: pd.read_parquet(out / f"{name}.parquet") for name in ("notes", "audit", "findings")}


@pytest.fixture(scope="module")
def page(archive):
    assert main(["report", str(archive / "parquet")]) == 0
    return parse(archive / "parquet" / "report.html")


def lumbar(audit: pd.DataFrame) -> pd.DataFrame:
    return audit[audit["procedure"].isin(LUMBAR_CODES)]


def judged(audit: pd.DataFrame) -> pd.DataFrame:
    rows = lumbar(audit)
    return rows[rows["verdict"] != "out_of_scope"]


# ---------------------------------------------------------------- Wilson interval


@pytest.mark.parametrize("k, n, low, high", [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
    (29, 29, 0.8830, 1.0),
], ids=["81-of-263", "15-of-148", "0-of-20", "1-of-29", "29-of-29"])
def test_report_wilson_interval_known_values(k, n, low, high):
    # Newcombe RG, Stat Med 1998;17:857-72, Table I (method 3, Wilson score without continuity correction)
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_report_wilson_interval_holds_the_share_even_at_0_and_n():
    for n in range(1, 80):
        for k in range(n + 1):
            low, high = wilson_interval(k, n)
            assert 0 <= low <= k / n <= high <= 1, (k, n)


def test_report_wilson_interval_of_nothing_is_undefined():
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


# ---------------------------------------------------------------- figures against the tables


def test_report_command_prints_path_and_summary_and_gives_the_same_file_again(archive, tables, page, capsys):
    out = archive / "elsewhere.html"
    code, stdout, _ = run_cli(["report", str(archive / "parquet"), "--out", str(out)], capsys)
    assert code == 0
    lines = stdout.strip().splitlines()
    assert lines[0] == f"report: {out}" and len(lines) == 2
    assert f"{len(tables['notes']):,} notes" in lines[1]
    assert out.read_bytes() == (archive / "parquet" / "report.html").read_bytes()  # deterministic
    assert os.stat(out).st_mode & 0o077 == 0  # it may quote notes: readable by its owner only


def test_report_headline_figures_match_tables(page, tables):
    notes, audit = tables["notes"], tables["audit"]
    rows = page.rows("headline")
    assert value(rows["notes"]["Value"]) == len(notes)
    assert value(rows["in_scope"]["Value"]) == notes["in_scope"].sum()
    assert value(rows["lumbar_orders"]["Value"]) == len(lumbar(audit))
    n = len(judged(audit))
    for key, verdict in (("concordant", "appropriate"), ("overuse", "not_indicated")):
        k = int((audit["verdict"] == verdict).sum())
        assert value(rows[key]["Value"]) == pytest.approx(k / n, abs=1e-6)
        assert interval(rows[key]["95 % interval"]) == pytest.approx(wilson_interval(k, n), abs=1e-6)
        assert rows[key]["Value"][0] == f"{100 * k / n:.1f} %"
        assert f"{k:,} of {n:,}" in rows[key]["Definition"][0]
    assert value(rows["missed"]["Value"]) == (audit["verdict"] == "missed_imaging").sum() > 0


def test_report_verdict_table_matches_audit(page, tables):
    counts = tables["audit"]["verdict"].value_counts()
    rows = page.rows("verdicts")
    assert {k for k, r in rows.items() if value(r["Rows"])} == set(counts.index)
    for verdict, n in counts.items():
        assert value(rows[verdict]["Rows"]) == n


def test_report_verdicts_by_period_match_dates(page, tables):
    notes, audit = tables["notes"], tables["audit"]
    unit = page.headers["by-period"][0]
    assert unit in ("Month", "Quarter")
    rows = audit[audit["procedure"].isin(LUMBAR_CODES) | (audit["verdict"] == "missed_imaging")]
    note_dates = rows["note_id"].map(notes.set_index("note_id")["note_date"])
    dates = pd.to_datetime(rows["order_date"].fillna(note_dates).where(lambda d: d != "", note_dates))
    periods = dates.dt.to_period("M" if unit == "Month" else "Q").astype(str)
    expected = pd.crosstab(periods, rows["verdict"])
    shown = page.rows("by-period")
    for period, counts in expected.iterrows():
        for verdict, n in counts.items():
            assert value(shown[period][verdict]) == n, (period, verdict)
    assert sum(value(r["Judged"]) for r in shown.values()) == len(judged(audit))
    for period in set(shown) - set(expected.index):  # a period without a row is shown empty
        assert all(value(shown[period][verdict]) == 0 for verdict in expected.columns)


@pytest.mark.parametrize("column, table_id", [("site", "by-site"), ("provider", "by-provider")],
                         ids=["site", "provider"])
def test_report_verdicts_by_site_and_provider_match_audit(page, tables, column, table_id):
    rows = lumbar(tables["audit"])
    expected = pd.crosstab(rows[column].fillna("(not recorded)"), rows["verdict"])
    shown = page.rows(table_id)
    assert set(shown) == set(expected.index)
    for group, counts in expected.iterrows():
        n = int(counts.reindex(list(JUDGED), fill_value=0).sum())
        assert value(shown[group]["Judged"]) == n
        for verdict, count in counts.items():
            assert value(shown[group][verdict]) == count
        k = int(counts.get("appropriate", 0))
        assert value(shown[group]["Concordant"]) == pytest.approx(k / n, abs=1e-6)
        assert interval(shown[group]["Concordant 95 % CI"]) == pytest.approx(wilson_interval(k, n), abs=1e-6)
        k = int(counts.get("not_indicated", 0))
        assert value(shown[group]["Not indicated"]) == pytest.approx(k / n, abs=1e-6)
        assert interval(shown[group]["Not indicated 95 % CI"]) == pytest.approx(wilson_interval(k, n), abs=1e-6)


def test_report_provider_funnel_flags_only_providers_outside_the_limits(page, tables):
    audit = judged(tables["audit"])
    p = (audit["verdict"] == "appropriate").mean()
    for provider, row in page.rows("by-provider").items():
        n, share = value(row["Judged"]), value(row["Concordant"])
        half95 = 1.959964 * math.sqrt(p * (1 - p) / n)
        flagged = row["Funnel"][0]
        assert bool(flagged) == (abs(share - p) > half95 + 1e-9), provider


def test_report_red_flag_prevalence_matches_notes(page, tables):
    notes = tables["notes"]
    scope = notes[notes["in_scope"]]
    rows = page.rows("red-flags")
    for label in ("FOOT_DROP", "CANCER_HISTORY", "FEVER", "OSTEOPOROSIS", "SADDLE_ANESTHESIA", "NIGHT_PAIN"):
        present, possible = (scope[label] == "present").sum(), (scope[label] == "possible").sum()
        assert value(rows[label]["Present"]) == present
        assert value(rows[label]["Possible"]) == possible
        assert value(rows[label]["Documented absent"]) == (scope[label] == "absent").sum()
        assert value(rows[label]["Present or possible, % of in-scope notes"]) == pytest.approx(
            (present + possible) / len(scope), abs=1e-6)
        assert value(rows[label]["Drove a scenario"]) <= present + possible
    # a foot drop always makes NEURO apply, a cancer history (or its suspicion) CANCER_INFECTION; night pain
    # drives no scenario
    assert value(rows["FOOT_DROP"]["Drove a scenario"]) == (scope["FOOT_DROP"] == "present").sum() > 0
    assert value(rows["CANCER_HISTORY"]["Drove a scenario"]) == scope["CANCER_HISTORY"].isin(
        ("present", "possible")).sum() > 0
    assert value(rows["NIGHT_PAIN"]["Drove a scenario"]) == 0


def test_report_scenario_counts_match_notes(page, tables):
    notes = tables["notes"]
    scenarios = notes.loc[notes["in_scope"], "scenarios"].str.split(";").explode()
    counts = scenarios[scenarios.fillna("") != ""].value_counts()
    rows = page.rows("scenarios")
    assert {k: value(r["Notes"]) for k, r in rows.items() if k != "(none)"} == counts.to_dict()


def test_report_hedis_figure_matches_tables(page, tables):
    notes, audit = tables["notes"], tables["audit"]
    scope = notes[notes["in_scope"]]
    excluded = scope[list(HEDIS_EXCLUDING_LABELS)].isin(("present", "possible")).any(axis=1)
    excluded |= scope["bilateral_deficit"] | scope["progressive_deficit"]
    age_ok = scope["age"].isna() | scope["age"].between(18, 75)
    eligible = scope[~excluded & age_ok]
    orders = audit[audit["procedure"].str.match(r"^(XR|CT|MRI)_").fillna(False)]
    days = (pd.to_datetime(orders["order_date"]) -
            pd.to_datetime(orders["note_id"].map(notes.set_index("note_id")["note_date"]))).dt.days
    imaged = set(orders.loc[days.between(0, 28) | days.isna(), "note_id"])
    k, n = int(eligible["note_id"].isin(imaged).sum()), len(eligible)
    figure = page.ids["hedis-figure"]
    assert (int(figure["data-k"]), int(figure["data-n"])) == (k, n)
    assert 0 < k < n
    total = page.rows("hedis")["all ages"]
    assert value(total["Share"]) == pytest.approx(k / n, abs=1e-6)
    assert interval(total["95 % interval"]) == pytest.approx(wilson_interval(k, n), abs=1e-6)
    young = eligible["age"].between(18, 64)
    assert value(page.rows("hedis")["18–64"]["Uncomplicated notes"]) == young.sum()


def test_report_examples_show_evidence_of_each_verdict(page, tables):
    audit, findings = tables["audit"], tables["findings"]
    for verdict, count in audit["verdict"].value_counts().items():
        rows = page.tables[f"examples-{verdict}"]
        assert len(rows) == min(3, count)
        for attrs, cells, _ in rows:
            assert attrs["data-note"] in set(audit.loc[audit["verdict"] == verdict, "note_id"])
    # the snippets shown are the words the rules matched in that note, never the note
    quotes = [(attrs["data-note"], quote) for verdict in audit["verdict"].unique()
              for attrs, cells, quotes in page.tables[f"examples-{verdict}"] for quote in quotes]
    assert len(quotes) >= 5
    for note_id, quote in quotes:
        assert quote in set(findings.loc[findings["note_id"] == note_id, "text"]), note_id


def test_report_methods_name_version_rules_editions_and_date(page, archive):
    import json

    manifest = json.loads((archive / "parquet" / "manifest.json").read_text())
    methods = {attrs["data-key"]: cells[1][0] for attrs, cells, _ in page.tables["methods"]}
    assert manifest["version"] in methods["version"]
    assert manifest["rules_digest"] in methods["rules_digest"]
    assert all(edition in methods["editions"] for edition in manifest["guideline_editions"])
    assert manifest["timings"]["started_at"][:10] in methods["run_date"]


# ---------------------------------------------------------------- the file itself


def test_report_is_self_contained(page, archive):
    text = (archive / "parquet" / "report.html").read_text(encoding="utf-8")
    assert page.links and all(not link.startswith(("http:", "https:", "//")) for link in page.links)
    images = [link for link in page.links if not link.startswith("#")]
    assert len(images) >= 5 and all(link.startswith("data:image/png;base64,") for link in images)
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    assert "http://" not in text and "https://" not in text
    assert MARKER not in text  # whole notes are never shown


def test_report_of_a_csv_run_has_the_same_figures(archive, page):
    assert main(["report", str(archive / "csv")]) == 0
    other = parse(archive / "csv" / "report.html")
    for table_id in ("headline", "verdicts", "by-period", "by-site", "by-provider", "red-flags", "hedis"):
        assert other.tables[table_id] == page.tables[table_id], table_id


# ---------------------------------------------------------------- note text


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    """A few notes whose evidence quotes the marker, with and without `run --no-text`."""
    root = tmp_path_factory.mktemp("report-text")
    notes = pd.DataFrame([
        {"note_id": "t1", "patient_id": "P1", "note_date": "2024-05-02",
         "text": f"45M LBP x 3 days, pain radiates {MARKER} down the left leg. Strength 5/5. No saddle anesthesia."},
        {"note_id": "t2", "patient_id": "P2", "note_date": "2024-06-11",
         "text": f"62F chronic LBP. R foot drop, EHL 3/5. {MARKER} noted."},
        {"note_id": "t3", "patient_id": "P3", "note_date": "2024-06-20", "text": f"Mechanical LBP x 1 wk. {MARKER}."},
    ])
    orders = pd.DataFrame([
        {"order_id": "o1", "note_id": "t1", "order_date": "2024-05-02", "description": "XR L-spine <b>2 views</b>",
         "provider": "Dr <A&B>", "site": "North"},
        {"order_id": "o3", "note_id": "t3", "order_date": "2024-06-21", "description": "MRI lumbar spine w/o",
         "provider": "Dr C", "site": "South"},
    ])
    notes.to_csv(root / "notes.csv", index=False)
    orders.to_csv(root / "orders.csv", index=False)
    runs = {}
    for name, extra in (("text", []), ("no-text", ["--no-text"])):
        runs[name] = root / name
        assert main(["run", str(root / "notes.csv"), "--orders", str(root / "orders.csv"), "--out",
                     str(runs[name]), "--jobs", "1", "--no-progress", *extra]) == 0
    return runs


def test_report_quotes_escaped_evidence_with_text(small_runs):
    assert main(["report", str(small_runs["text"])]) == 0
    text = (small_runs["text"] / "report.html").read_text(encoding="utf-8")
    assert f"radiates {MARKER} down the left leg" in text  # the words the rule matched
    assert "&lt;b&gt;2 views&lt;/b&gt;" in text and "<b>2 views" not in text
    assert "Dr &lt;A&amp;B&gt;" in text
    assert "Strength 5/5. No saddle" not in text  # the rest of the note is not


def _manifest_says_no_text(run: Path, tmp_path: Path) -> Path:
    """A copy of the text run whose manifest says it was made with --no-text."""
    import json
    import shutil

    copy = shutil.copytree(run, tmp_path / "copy")
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "no_text": True}))
    return copy


@pytest.mark.parametrize("run, option, prepare", [
    ("text", ["--no-text"], None),
    ("no-text", [], None),
    ("text", [], _manifest_says_no_text),
], ids=["report-no-text", "run-no-text", "manifest-no-text"])
def test_report_no_text_shows_ids_and_labels_only(small_runs, run, option, prepare, tmp_path):
    out = tmp_path / "report.html"
    folder = prepare(small_runs[run], tmp_path) if prepare else small_runs[run]
    assert main(["report", str(folder), "--out", str(out), *option]) == 0
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    assert MARKER not in text and "<q>" not in text
    assert "2 views" not in text  # nor the orders' free text
    examples = page.tables["examples-not_indicated"]
    evidence = " ".join(cells[5][0] for attrs, cells, _ in examples)
    assert "RADICULOPATHY" in evidence and "RF-RADIC" in evidence
    assert "t1" in [attrs["data-note"] for attrs, cells, _ in examples]


# ---------------------------------------------------------------- runs that are not what the report needs


def test_report_of_a_run_without_orders_leaves_the_order_sections_out(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(ROOT / "samples" / "notes.csv"), "--out", str(out), "--jobs", "1", "--no-progress"]) == 0
    code, stdout, _ = run_cli(["report", str(out)], capsys)
    assert code == 0 and "no orders" in stdout
    page = parse(out / "report.html")
    notes = pd.read_parquet(out / "notes.parquet")
    assert value(page.rows("headline")["in_scope"]["Value"]) == notes["in_scope"].sum()
    assert "lumbar_orders" not in page.rows("headline")
    assert not {"by-site", "by-provider", "hedis", "verdicts"} & set(page.tables)
    assert "made without orders" in (out / "report.html").read_text(encoding="utf-8")
    elsewhere = tmp_path / "reports" / "2026" / "committee.html"  # --out into folders not made yet
    code, stdout, _ = run_cli(["report", str(out), "--out", str(elsewhere)], capsys)
    assert code == 0 and f"report: {elsewhere}" in stdout and elsewhere.read_bytes() == (out / "report.html").read_bytes()
    assert elsewhere.parent.stat().st_mode & 0o077 == 0


def _no_manifest(path: Path) -> Path:
    path.mkdir()
    return path


def _no_notes_table(path: Path) -> Path:
    path.mkdir()
    (path / "manifest.json").write_text('{"version": "0.1.0"}')
    return path


@pytest.mark.parametrize("make", [lambda p: p, _no_manifest, _no_notes_table],
                         ids=["no-folder", "no-manifest", "no-notes-table"])
def test_report_of_an_unfinished_run_is_a_one_line_error(tmp_path, make, capsys):
    folder = make(tmp_path / "out")
    code, stdout, stderr = run_cli(["report", str(folder)], capsys)
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("lbp-audit: error: ") and "Traceback" not in stderr
    assert not (folder / "report.html").exists()


def test_report_readme_commands_run(tmp_path, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## The report"):]
    block = section[section.index("```bash\n") + 8:section.index("```", section.index("```bash\n") + 8)]
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    monkeypatch.chdir(tmp_path)
    for line in block.strip().splitlines():
        args = shlex.split(line, comments=True)
        assert args[0] == "lbp-audit"
        if args[1] == "run":
            args += ["--jobs", "1", "--no-progress"]
        assert main(args[1:]) == 0, line
    assert capsys.readouterr().out.count("report: ") == 2
    assert "<q>" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "<q>" not in (tmp_path / "committee.html").read_text(encoding="utf-8")
