"""`biounet train` reads pairs-layout masks with --label-kind auto by default: Cellpose- and napari-style
instance ids as instances, 0/255 and 0/1 masks as classes."""

from __future__ import annotations

import logging

import pytest
from cells_folder import write_cells_folder

from biounet.cli import main
from biounet.training.config import TrainConfig
from biounet.training.train import select_samples

TINY = ["--base-channels", "4", "--depth", "2", "--tile", "92", "--iterations", "2", "--precision", "fp32", "-q"]


@pytest.mark.parametrize("style, kind", [("cellpose", "instances"), ("napari", "instances"),
                                         ("binary255", "classes"), ("binary01", "classes")])
def test_train_reads_mask_style_automatically(tmp_path, rng, caplog, style, kind):
    data = write_cells_folder(tmp_path / "cells", style, rng, n_images=3, size=64)
    caplog.set_level(logging.INFO, logger="biounet.data.datasets")
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *TINY]) == 0
    assert f"read as {kind!r}" in caplog.text
    assert (tmp_path / "run" / "model.pt").exists()


def test_label_kind_auto_is_the_default_and_leaves_other_layouts_alone():
    config = TrainConfig(data="synthetic:cells,n=3,size=64", iterations=1, tile=92, depth=2)
    assert config.label_kind == "auto"
    split = select_samples(config, None)  # the synthetic loader takes no label_kind: not passed
    assert split.num_classes == 2


def test_explicit_label_kind_overrides_the_guess(tmp_path, rng, caplog):
    data = write_cells_folder(tmp_path / "cells", "binary255", rng, n_images=2, size=64)
    caplog.set_level(logging.INFO, logger="biounet.data.datasets")
    # 0/255 masks read as instance ids as asked: each 255 region set is one "cell"; nothing is guessed
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--label-kind", "instances",
                 *TINY]) == 0
    assert "label_kind='auto'" not in caplog.text
