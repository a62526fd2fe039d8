"""The README's worked example is what the tool prints now."""
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
