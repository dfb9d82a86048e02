"""``biounet``'s error contract: bad input is one line and exit code 2; a programming error (a TypeError that no
check of biounet raised) keeps its traceback instead of passing for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

import biounet.cli.info
from biounet.cli import main, raised_by_a_check
from biounet.inference.outputs import count_cells


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.pt"
    assert main(["init", "--base-channels", "4", "--depth", "2", "--out", str(path), "-q"]) == 0
    return path


def test_a_bug_inside_a_command_propagates_with_its_traceback(model, monkeypatch, capsys):
    def broken(args):
        return len(args.model.stat().st_size)  # TypeError: object of type 'int' has no len()

    monkeypatch.setattr(biounet.cli.info, "run", broken)
    with pytest.raises(TypeError, match="has no len"):
        main(["info", str(model)])
    assert "error:" not in capsys.readouterr().err


def test_a_type_check_on_the_input_is_one_line_and_exit_2(model, tmp_path, capsys):
    image = tmp_path / "mask.tif"
    tifffile.imwrite(image, np.ones((40, 40), dtype=bool))
    assert main(["predict", str(model), str(image), "--out", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("biounet predict: error: ") and "pixel type bool" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_checks_are_told_from_bugs_by_where_they_are_raised():
    from biounet.inference.instances import _check_mask

    with pytest.raises(TypeError) as check:
        _check_mask(np.zeros((2, 2)), "mask")  # a raise statement of biounet's: bad input
    assert raised_by_a_check(check.value)
    with pytest.raises(TypeError) as bug:
        count_cells(5)  # Python raises it inside biounet: not a check
    assert not raised_by_a_check(bug.value)
    with pytest.raises(TypeError) as outside:
        len(5)  # type: ignore[arg-type]
    assert not raised_by_a_check(outside.value)


def test_a_check_that_rewraps_a_bug_is_still_a_bug(monkeypatch):
    """``dataset_object_scores`` re-raises its images' errors with the image's index: a bug stays a bug."""
    from biounet.evaluation.metrics import objects

    pairs = [(np.ones((2, 2), dtype=np.int32), np.ones((2, 2), dtype=np.int32))]
    monkeypatch.setattr(objects, "object_scores", lambda pred, true, thresholds: len(5))
    with pytest.raises(TypeError, match=r"pairs\[0\]") as wrapped:
        objects.dataset_object_scores(pairs, thresholds=(0.5,))
    assert not raised_by_a_check(wrapped.value)

    def check(pred, true, thresholds):
        raise TypeError("pred must be an integer label image")

    monkeypatch.setattr(objects, "object_scores", check)  # a check here, in a test file, is not biounet's
    with pytest.raises(TypeError) as rewrapped:
        objects.dataset_object_scores(pairs, thresholds=(0.5,))
    assert not raised_by_a_check(rewrapped.value)
