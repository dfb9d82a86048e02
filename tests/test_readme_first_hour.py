"""The README's "Segment your own cells" commands and its Python quick start, run as written on small folders
of cells with napari-style instance masks: annotated ($DATA), new images to segment ($NEW), a test set ($TEST)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cells_folder import write_cells_folder

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def _venv_shim(cwd: Path) -> None:
    """``.venv/bin/biounet`` in ``cwd`` runs this interpreter's biounet, so the commands paste unchanged."""
    bin_dir = cwd / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    shim = bin_dir / "biounet"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m biounet "$@"\n')
    shim.chmod(0o755)


@pytest.mark.slow
def test_segment_your_own_cells_commands(tmp_path):
    roifile = pytest.importorskip("roifile")
    section = _section("Segment your own cells")
    blocks = _blocks(section, "bash")
    assert len(blocks) == 3, "train, predict, evaluate"
    # the README's own one-minute check: the train command with these flags added at its end
    rehearsal = re.search(r"run the same command with `([^`]+)` added\s+at its end", section)
    assert rehearsal is not None
    train, predict, evaluate = blocks
    assert train.strip().startswith(".venv/bin/biounet train") and train.strip().count("\n") == 0
    train = train.strip() + " " + " ".join(rehearsal.group(1).split()) + "\n"  # markdown joins the lines

    data = write_cells_folder(tmp_path / "my_cells", "napari", np.random.default_rng(5), n_images=3, size=96)
    new = write_cells_folder(tmp_path / "new_cells", "napari", np.random.default_rng(7), n_images=3, size=96)
    test = write_cells_folder(tmp_path / "test_cells", "napari", np.random.default_rng(8), n_images=2, size=96)
    out = tmp_path / "unet"
    _venv_shim(tmp_path)
    env = {**os.environ, "DATA": str(data), "NEW": str(new / "images"), "TEST": str(test), "OUT": str(out),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    for block in (train, predict, evaluate):
        run = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, f"{block}\n{run.stdout}\n{run.stderr}"
    assert "objects, pooled over" in run.stdout  # the evaluate table, of the test images
    assert sorted(p.name for p in (out / "test").glob("*_instances.tif")) == ["cell_00_instances.tif",
                                                                            "cell_01_instances.tif"]

    assert (out / "run" / "model.pt").exists() and (out / "run" / "report.html").exists()
    results = out / "results"
    for stem in (f"cell_{i:02d}" for i in range(3)):
        for suffix in (".tif", "_instances.tif", "_rois.zip", "_overlay.png"):
            assert (results / f"{stem}{suffix}").exists(), f"{stem}{suffix}"
        cells = tifffile.imread(results / f"{stem}_instances.tif")
        assert len(roifile.roiread(results / f"{stem}_rois.zip")) == np.unique(cells[cells > 0]).size


@pytest.mark.slow
def test_python_quick_start(tmp_path, monkeypatch, capsys):
    (block,) = _blocks(_section("Usage"), "python")
    assert len(block.strip().splitlines()) == 5
    write_cells_folder(tmp_path / "my_cells", "napari", np.random.default_rng(6), n_images=3, size=64)
    monkeypatch.chdir(tmp_path)
    budget = 'time_budget="30m"'
    assert budget in block
    # the one change: a 2-step tiny network instead of 30 minutes
    code = block.replace(budget, 'iterations=2, base_channels=4, settings={"depth": 2, "tile": 92}')
    exec(compile(code, "README quick start", "exec"), {})
    assert capsys.readouterr().out.strip().endswith("cells")
