"""docs/quickstart.ipynb runs from top to bottom (a real kernel, as a user's Jupyter would run it)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "quickstart.ipynb"


def test_quickstart_notebook_executes(real_npz, inception_weights, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("BLOODGEN_CACHE", str(tmp_path / "cache"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = {i: "".join(o.get("text", "") for o in cell.get("outputs", []))
               for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"}
    printed = "\n".join(outputs.values())
    assert "(200, 28, 28, 3) uint8 [25 25 25 25 25 25 25 25]" in printed
    assert "[ 0 12  0  0  0  0  0  4]" in printed
    assert "samples FID" in printed and "disjoint floor FID" in printed
    assert any(o.get("data", {}).get("image/png") for cell in notebook.cells for o in cell.get("outputs", []))
