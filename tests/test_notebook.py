"""docs/tutorial.ipynb: written from the tutorial's own template and numbers (docs/make_notebook.py), and
run end to end as a student would, cell by cell in one kernel (nbclient; slow)."""
import os
import subprocess
import sys

import pytest

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def test_notebook_is_written_from_the_tutorial():
    check = subprocess.run([sys.executable, os.path.join(DOCS, "make_notebook.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    import nbformat
    notebook = nbformat.read(os.path.join(DOCS, "tutorial.ipynb"), as_version=4)
    nbformat.validate(notebook)
    text = "".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    tutorial = open(os.path.join(DOCS, "tutorial.md")).read()
    # Every section of the tutorial, with its published numbers, is in the notebook.
    for line in tutorial.splitlines():
        if line.startswith("## ") or line.startswith("| dense reference"):
            assert line in text, line
    assert "{{" not in text


@pytest.mark.slow
def test_notebook_runs_end_to_end():
    import nbclient
    import nbformat
    notebook = nbformat.read(os.path.join(DOCS, "tutorial.ipynb"), as_version=4)
    nbclient.NotebookClient(notebook, timeout=3600, kernel_name="python3",
                            resources={"metadata": {"path": DOCS}}).execute()
    printed = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.get("outputs", []))
    for value in ("l3_dense_acc = ", "r_npcaffe_kept = ", "ns_acc_2000 = ", "g_updates = ", "l5_report = ",
                  "f_omitted_loss = "):
        assert value in printed, value
