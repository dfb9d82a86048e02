"""``--target auto`` for instance-labelled cells: the target that won the measurement nearest the run's budget."""

from __future__ import annotations

import pytest

from biounet.training import config as config_module
from biounet.training.config import CELL_TARGET_SCORES, TrainConfig, cell_target_for, resolve_target


@pytest.fixture
def measurements(monkeypatch):
    table = {300.0: {"paper": 0.2, "boundary": 0.5, "distance": 0.4},
             1800.0: {"paper": 0.7, "boundary": 0.6, "distance": 0.8}}
    monkeypatch.setattr(config_module, "CELL_TARGET_SCORES", table)
    return table


def test_the_winner_of_the_nearest_measured_budget(measurements):
    assert cell_target_for(240.0)[:2] == ("boundary", 300.0)
    assert cell_target_for(600.0)[:2] == ("boundary", 300.0)  # 2x from 5 min, 3x from 30 min
    assert cell_target_for(1200.0)[:2] == ("distance", 1800.0)
    assert cell_target_for(None)[:2] == ("distance", 1800.0)  # iterations: the longest measured


def test_auto_says_which_target_and_why(measurements):
    config, note = resolve_target(TrainConfig(data="x", time_budget_s=7200.0), "cells")
    assert config.target == "distance"
    assert "measured for 30 min" in note and "paper 0.70, boundary 0.60, distance 0.80" in note
    assert resolve_target(TrainConfig(data="x", iterations=5), "membranes") == (
        TrainConfig(data="x", iterations=5, target="paper"), None)
    given = TrainConfig(data="x", iterations=5, target="paper")
    assert resolve_target(given, "cells") == (given, None)


def test_the_measured_table_names_every_target():
    for scores in CELL_TARGET_SCORES.values():
        assert set(scores) == {"paper", "boundary", "distance"} and all(0.0 <= v <= 1.0 for v in scores.values())
