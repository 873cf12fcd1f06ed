"""The analysis notebooks: stored without outputs, and executed end to end on demo results (so none can rot)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks_and_they_are_stored_without_outputs():
    assert [p.name for p in NOTEBOOKS] == ["leaderboard_analysis.ipynb"]
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, (
                    f"{path.name}: strip outputs"
                )


@pytest.fixture(scope="module")
def demo_results(demo_root, tmp_path_factory) -> Path:
    """Two splits of the demo corpus (speaker-independent and random), two feature sets, three models."""
    from sertool.cli import main

    out = tmp_path_factory.mktemp("nb")
    for split in ("speaker-3fold", "random-3fold"):
        code = main(
            [
                "bench", "--corpus", "demo", "--root", str(demo_root), "--cache", str(out / "cache"),
                "--results", str(out / "results"), "--features", "handcrafted94,mfcc40",
                "--models", "logreg,knn,gnb", "--split", split, "--jobs", "1",
            ]
        )  # fmt: skip
        assert code == 0
    return out / "results"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_on_demo_results(path, demo_results, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("SERTOOL_RESULTS", str(demo_results))
    monkeypatch.setenv("SERTOOL_N_BOOT", "100")
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute(env=dict(os.environ))  # raises CellExecutionError on any failing cell

    texts, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            images += "image/png" in data
            texts.append(out.get("text", "") + data.get("text/plain", "") + data.get("text/html", ""))
    text = "\n".join(texts)
    assert "splits: [('demo', 'random-3fold" in text or "splits: [('demo', 'speaker-3fold" in text
    for model in ("logreg", "knn", "gnb"):
        assert model in text
    assert "gap@demo" in text  # both protocols present: the speaker-dependent gap is shown
    assert "no single-layer Whisper views" in text  # demo results have none: said, not crashed
    # per split: UA/CI plot, recall heat map, confusion matrix, cost plot
    assert images == 2 * 4
