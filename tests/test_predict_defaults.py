"""Prediction defaults sized to the machine: precision auto, the memory budget, the measured tile memory."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from biounet.cli import _build_parser, main
from biounet.core.model import ModelConfig, UNet
from biounet.inference.predict import (
    MEMORY_CAP,
    MEMORY_FLOOR,
    TorchPredictor,
    choose_in_tile,
    estimate_tile_bytes,
    measure_tile_bytes,
    memory_budget_for,
    resolve_memory_budget,
)


@pytest.fixture(scope="module")
def predictor() -> TorchPredictor:
    return TorchPredictor(UNet(ModelConfig(depth=2, base_channels=4)), channels_last=False)


def test_predict_defaults_to_auto_precision_and_machine_budget():
    args = _build_parser().parse_args(["predict", "m.pt", "x.png", "--out", "o"])
    assert (args.precision, args.memory_budget) == ("auto", None)


def test_memory_budget_is_a_quarter_of_available_clamped():
    assert memory_budget_for(4 * 2**30).bytes == 2**30
    assert memory_budget_for(2**40).bytes == MEMORY_CAP
    assert memory_budget_for(2**20).bytes == MEMORY_FLOOR
    assert "0.25 of the 4.0 GiB available" in memory_budget_for(4 * 2**30).note


def test_resolved_budget_follows_the_machine_or_the_user():
    assert MEMORY_FLOOR <= resolve_memory_budget(None).bytes <= MEMORY_CAP
    assert resolve_memory_budget(123).bytes == 123
    with pytest.raises(ValueError, match="memory_budget must be > 0 bytes, got 0"):
        resolve_memory_budget(0)


def test_tile_memory_is_not_measured_on_the_cpu(predictor):
    assert measure_tile_bytes(predictor, 132) is None


def test_a_measured_tile_rescales_the_estimates(predictor):
    budget = estimate_tile_bytes(500, predictor.base_channels)
    unmeasured = choose_in_tile(predictor, (2000, 2000), memory_budget=budget, measure=None)
    calls = []

    def four_times(p, in_tile, batch_size):  # the network needs 4x the estimate
        calls.append(in_tile)
        return 4 * estimate_tile_bytes(in_tile, p.base_channels, p.in_channels, batch_size)

    measured = choose_in_tile(predictor, (2000, 2000), memory_budget=budget, measure=four_times)
    assert calls == [unmeasured]  # measured once, the tile first chosen
    assert measured < unmeasured and 4 * estimate_tile_bytes(measured, predictor.base_channels) <= budget


def test_cli_reports_the_chosen_precision_and_budget(tmp_path, capsys):
    model = tmp_path / "m.pt"
    assert main(["init", "--out", str(model), "--base-channels", "4", "--depth", "2"]) == 0
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "a.png")
    capsys.readouterr()
    assert main(["predict", str(model), str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "biounet predict: precision " in err and "(auto); memory budget " in err and "GiB available" in err


def test_bf16_tiles_are_estimated_at_half_the_bytes_and_grow():
    fp32 = TorchPredictor(UNet(ModelConfig(depth=2, base_channels=4)), precision="fp32", channels_last=False)
    bf16 = TorchPredictor(UNet(ModelConfig(depth=2, base_channels=4)), precision="bf16", channels_last=False)
    assert 2 * estimate_tile_bytes(300, 4, precision="bf16") == estimate_tile_bytes(300, 4)
    budget = estimate_tile_bytes(300, 4)
    assert choose_in_tile(bf16, (4000, 4000), memory_budget=budget) > choose_in_tile(
        fp32, (4000, 4000), memory_budget=budget)


def test_cpu_tiles_stop_at_the_cap_even_where_one_tile_would_cover(predictor):
    from biounet.inference.predict import MAX_AUTO_TILE, max_auto_tile

    assert max_auto_tile(predictor) == MAX_AUTO_TILE["cpu"] < MAX_AUTO_TILE["cuda"]
    ample = 2**40
    assert choose_in_tile(predictor, (300, 300), memory_budget=ample) < MAX_AUTO_TILE["cpu"]  # one covering tile
    big = choose_in_tile(predictor, (2048, 2048), memory_budget=ample)  # one 2060-px tile would cover it
    assert 900 < big <= MAX_AUTO_TILE["cpu"]
