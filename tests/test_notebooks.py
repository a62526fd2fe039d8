"""The notebooks run top to bottom in a fresh kernel of this Python, define no logic of their own, and are
committed executed, with clean metadata and no paths of the machine that ran them."""
import ast
import re
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("01-explore-a-note", "02-audit-an-archive", "03-change-a-rule")
KERNEL = "lbp-audit-tests"
MACHINE_PATHS = re.compile(r"(?:/work/|/tmp/|/home/|/root/|/Users/|[A-Z]:\\\\)")


def _read(name: str):
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def _code(cell) -> str:
    """A code cell's Python, its IPython magics left out."""
    return "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """A kernel spec that starts ipykernel on this interpreter (whatever "python3" names elsewhere)."""
    root = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(root / "kernels" / KERNEL, overrides={"display_name": KERNEL})
    return root


def test_notebooks_folder_holds_exactly_the_three():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_notebooks_define_no_logic(name):
    for cell in _read(name).cells:
        if cell.cell_type == "code":
            defined = [type(node).__name__ for node in ast.walk(ast.parse(_code(cell)))
                       if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))]
            assert not defined, f"{name} cell {cell.id} defines {defined}: put it in the package"


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_notebooks_are_committed_executed_and_clean(name):
    nb = _read(name)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), "not run top to bottom once"
    assert not [out for cell in code for out in cell.outputs if out.output_type == "error"]
    assert set(nb.metadata) <= {"kernelspec", "language_info"}
    assert all(not cell.metadata for cell in nb.cells)
    outputs = nbformat.writes(nbformat.v4.new_notebook(cells=code))
    assert not MACHINE_PATHS.search(outputs), MACHINE_PATHS.search(outputs)[0]
    assert not [out for cell in code for out in cell.outputs if out.output_type == "stream" and out.name == "stderr"]


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_notebooks_run_top_to_bottom(name, kernel, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(kernel))
    nb = _read(name)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    NotebookClient(nb, timeout=600, kernel_name=KERNEL, resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)
    assert not [out for cell in code for out in cell.outputs if out.output_type == "error"]
