"""Figures and the HTML report (biounet.evaluation.report)."""

from __future__ import annotations

import numpy as np
import pytest

from biounet.core.weights import separation_borders, weight_map
from biounet.evaluation.report import plot_weight_map


def test_plot_weight_map_writes_png(tmp_path):
    cells = np.zeros((40, 48), np.int32)
    cells[5:20, 5:24] = 1
    cells[5:20, 24:40] = 2  # touching
    cells[25:36, 10:30] = 3
    image = np.random.default_rng(0).random(cells.shape) + (cells > 0)
    separated = separation_borders(cells)
    path = plot_weight_map(image, cells, (separated > 0).astype(int), weight_map(separated), tmp_path / "fig3.png")
    assert path == tmp_path / "fig3.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["fig3.png"]  # no temporary file left behind
    with pytest.raises(ValueError, match="must share"):
        plot_weight_map(image[:5], cells, separated > 0, weight_map(separated), tmp_path / "bad.png")
