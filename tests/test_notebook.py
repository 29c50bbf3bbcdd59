"""examples/tour.ipynb runs from top to bottom without an error (so it can never go stale), and is kept in git
without outputs."""

import json
import os
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")  # the dev extra's; skipped, not failed, where it is missing
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402  (after the skips: nbclient brings it)
from jupyter_client.manager import KernelManager  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "tour.ipynb"


def test_the_notebook_in_git_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert cells and all(c.outputs == [] and c.execution_count is None for c in cells), \
        "clear the notebook's outputs before committing (Jupyter: Edit > Clear Outputs of All Cells)"


def kernel_of_this_interpreter(tmp_path: Path) -> KernelManager:
    """A kernel running this test's Python, with this checkout's picollm first on its path: a kernel spec
    written into a folder of its own, so whatever kernels the machine has installed play no part."""
    spec_dir = tmp_path / "kernels" / "picollm-tour"
    spec_dir.mkdir(parents=True)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "picollm tour", "language": "python",
        "env": {"PYTHONPATH": path, "PICOLLM_DATA_DIR": os.environ["PICOLLM_DATA_DIR"]},
    }))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return KernelManager(kernel_name="picollm-tour", kernel_spec_manager=specs, transport="ipc",
                         ip=str(tmp_path / "kernel"))  # local sockets, not TCP


@pytest.mark.timeout(600)
def test_the_tour_notebook_runs_without_errors(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    workdir = tmp_path / "work"
    workdir.mkdir()
    client = nbclient.NotebookClient(nb, km=kernel_of_this_interpreter(tmp_path), timeout=300,
                                     resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on the first error
    print(f"examples/tour.ipynb ran in {time.perf_counter() - start:.1f} s")  # the issue asks for <= 90 s
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert any((workdir / "analysis_tour").glob("runs.*")), "the tour wrote its table of runs"
