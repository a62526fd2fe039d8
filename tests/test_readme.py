"""The README's worked example is what the tool prints now."""
import json
import re
import shlex
from pathlib import Path

from pipeline.cli import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_readme_worked_example_matches_the_tool(capsys):
    block = re.search(r"```console\n\$ lbp-audit (.+?)\n(.*?)```", README, re.S)
    args, expected = shlex.split(block.group(1)), block.group(2)
    assert main(args) == 0
    assert capsys.readouterr().out.rstrip() == expected.rstrip()


def test_readme_python_example_prints_what_it_shows(capsys):
    block = re.search(r"## Python\n\n```python\n(.*?)```\n\n```text\n(.*?)```", README, re.S)
    code, expected = block.group(1), block.group(2)
    namespace: dict = {}
    exec(code, namespace)
    printed = capsys.readouterr().out
    assert [line.rstrip() for line in printed.splitlines()] == expected.rstrip("\n").splitlines()
    view = namespace["view"]
    assert {"FOOT_DROP · present", "SADDLE_ANESTHESIA · negated"} <= {span["label"] for span in view.spans()}
    assert "SADDLE_ANESTHESIA · negated" in view._repr_html_()


def test_readme_first_run_on_the_bundled_sample_gives_a_report(tmp_path, monkeypatch, capsys):
    """The set-up section's run command, as a newcomer types it (from the repository root), on the
    2,000-note sample: every note accounted for, audit rows, and the report written."""
    block = re.search(r"## Set up and run on the bundled sample\n\n```bash\n(.*?)```", README, re.S).group(1)
    line = next(line for line in block.splitlines() if line.startswith("lbp-audit run"))
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    for command in line.split("&&"):
        args = shlex.split(command)
        assert args[0] == "lbp-audit"
        args = [a if a != "results" else str(tmp_path / "results") for a in args[1:]]
        assert main(args + (["--no-progress"] if args[0] == "run" else [])) == 0, command
    printed = capsys.readouterr().out
    assert "2,000 notes read" in printed and "report: " in printed
    counts = json.loads((tmp_path / "results" / "manifest.json").read_text())["counts"]
    assert counts["notes_written"] + counts["errors"] == 2000 and counts["orders_read"] == 511
    assert (tmp_path / "results" / "report.html").stat().st_size > 50_000
