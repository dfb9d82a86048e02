"""autoconfig.resolve_train_config takes a TrainRequest (a dataclass the CLI and train_dataset build), not argparse."""

from __future__ import annotations

import pytest

from biounet.training.autoconfig import TrainRequest, resolve_train_config


def _request(tmp_path, **settings):
    return TrainRequest(data="synthetic:cells,n=4,size=96x96", out=tmp_path / "run", settings=settings)


def test_unknown_setting_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="unknown training settings: tile_size; known: .*base_channels"):
        _request(tmp_path, tile_size=92)


def test_paper_recipe_is_fixed_without_measuring(tmp_path):
    config, notes = resolve_train_config(_request(tmp_path, recipe="paper", iterations=5))
    assert (config.recipe, config.precision, config.base_channels, config.iterations) == ("paper", "fp32", 64, 5)
    assert any(note.startswith("recipe paper") for note in notes)


def test_time_budget_wins_over_iterations_and_none_is_not_given(tmp_path):
    config, _ = resolve_train_config(_request(tmp_path, recipe="paper", iterations=5, time_budget_s=60.0,
                                              depth=None))
    assert (config.iterations, config.time_budget_s, config.depth) == (None, 60.0, 4)


def test_everything_given_measures_nothing(tmp_path):
    config, notes = resolve_train_config(_request(tmp_path, base_channels=4, depth=2, tile=92, precision="fp32",
                                                  workers=0, iterations=3))
    assert (config.base_channels, config.depth, config.tile, config.precision, config.workers) == (4, 2, 92, "fp32", 0)
    assert notes == []


def test_a_budget_is_required(tmp_path):
    with pytest.raises(ValueError, match="give --iterations N or --time-budget T"):
        resolve_train_config(_request(tmp_path, base_channels=4))


def test_resume_needs_the_run_config(tmp_path):
    request = TrainRequest(data="synthetic:cells", out=tmp_path / "none", resume=True)
    with pytest.raises(FileNotFoundError, match="config.toml: no such file"):
        resolve_train_config(request)
