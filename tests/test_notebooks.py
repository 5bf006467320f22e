"""Execute the committed example notebooks and check their key outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _run(name: str, tmp_path: Path) -> nbformat.NotebookNode:
    # Run a copy so the committed notebook (with its outputs) is never rewritten by the test.
    path = tmp_path / name
    shutil.copyfile(NOTEBOOKS / name, path)
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    return nb


def _outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for out in _outputs(nb):
        parts.append(out.get("text", ""))
        data = out.get("data", {})
        parts.append(data.get("text/plain", "") + data.get("text/html", ""))
    return "\n".join(parts)


def _num_png(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for out in _outputs(nb))


def _stderr(nb: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for out in _outputs(nb) if out.get("name") == "stderr")


@pytest.mark.parametrize(
    ("name", "min_png", "needles", "forbidden"),
    [
        pytest.param(
            "01_soft_se2_laplace.ipynb",
            3,
            ["equivariance_level[lift]", "equivariance_level[convs.0]", "log evidence"],
            [],
            id="soft_se2_laplace",
        ),
        pytest.param(
            "02_compare_symmetry_hypotheses.ipynb",
            1,
            [
                "strict",
                "relaxed",
                "unconstrained",
                "elpd_loo",
                "log_evidence",
                "best by evidence",
                "ood_rmse",
            ],
            # N-body physics is exactly SO(3)-equivariant: the evidence must not pick the plain MLP.
            ["best by evidence: unconstrained"],
            id="compare_hypotheses",
        ),
        pytest.param(
            "03_remul_tradeoff.ipynb", 1, ["test_rmse", "1000.0", "E'"], [], id="remul_tradeoff"
        ),
    ],
)
def test_notebook_executes(
    name: str, min_png: int, needles: list[str], forbidden: list[str], tmp_path: Path
) -> None:
    committed = nbformat.read(NOTEBOOKS / name, as_version=4)
    # The committed file carries its outputs and figures (built by notebooks/build.py).
    assert _num_png(committed) >= min_png
    nb = _run(name, tmp_path)
    assert not any(out.get("output_type") == "error" for out in _outputs(nb))
    assert _num_png(nb) >= min_png
    text = _text(nb)
    for needle in needles:
        assert needle in text, f"{name}: no output mentions {needle!r}"
    for needle in forbidden:
        assert needle not in text, f"{name}: an output says {needle!r}"
    assert "Warning" not in _stderr(nb), _stderr(nb)
