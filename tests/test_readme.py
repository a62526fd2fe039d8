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


def test_readme_python_example_runs():
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    namespace: dict = {}
    exec(code, namespace)
    assert namespace["result"].summary["MOTOR_WEAKNESS"] == "present"
    assert namespace["assessment"].recommendation.scenario_ids == ("NEURO",)
    assert namespace["assessment"].verdicts[0][2]["verdict"] == "appropriate"
