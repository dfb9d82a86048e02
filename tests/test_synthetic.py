"""Tests for biounet.data.synthetic: shapes, exact labels, reproducibility, touching cells and the pairs writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import measure

from biounet.core.samples import IGNORE, Sample
from biounet.data.datasets import load_dataset
from biounet.data.normalization import PERCENTILES
from biounet.data.synthetic import KINDS, make_dataset, make_sample, write_dataset


def _touching_pairs(instances: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of different instance ids that are 4-neighbours somewhere."""
    pairs = set()
    for first, second in ((instances[1:], instances[:-1]), (instances[:, 1:], instances[:, :-1])):
        touch = (first != second) & (first > 0) & (second > 0)
        pairs |= {(int(min(a, b)), int(max(a, b))) for a, b in zip(first[touch], second[touch])}
    return pairs


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_dtypes(kind: str) -> None:
    sample = make_sample(kind, size=(48, 80), rng=1)
    assert sample.name == f"synthetic/{kind}"
    assert sample.image.shape == (48, 80, 1) and sample.image.dtype == np.float32
    assert sample.classes.shape == (48, 80) and sample.classes.dtype == np.int64
    assert sample.instances.shape == (48, 80) and sample.instances.dtype == np.int32
    assert set(np.unique(sample.classes).tolist()) <= {0, 1}
    assert np.all(np.isfinite(sample.image))


@pytest.mark.parametrize("kind", KINDS)
def test_percentile_normalised(kind: str) -> None:
    image = make_sample(kind, rng=0).image
    low, high = np.percentile(image, PERCENTILES)
    assert low == pytest.approx(0, abs=1e-5) and high == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_instances_are_exact(kind: str) -> None:
    sample = make_sample(kind, size=128, rng=3)
    ids = np.unique(sample.instances)
    np.testing.assert_array_equal(ids, np.arange(ids.size))  # numbered 0..N without gaps
    # every instance is one 4-connected piece
    components = measure.label(sample.instances, background=0, connectivity=1)
    assert components.max() == ids.size - 1
    if kind == "membranes":
        np.testing.assert_array_equal(sample.classes == 1, sample.instances == 0)
    else:
        np.testing.assert_array_equal(sample.classes == 1, sample.instances > 0)


@pytest.mark.parametrize("size", [32, 64, 256])
@pytest.mark.parametrize("seed", range(4))
def test_cells_touch(size: int, seed: int) -> None:
    sample = make_sample("cells", size=size, rng=seed)
    assert len(_touching_pairs(sample.instances)) >= 1


def test_cells_are_crowded_enough() -> None:
    sample = make_sample("cells", rng=0)
    assert sample.instances.max() >= 10
    assert len(_touching_pairs(sample.instances)) >= 3
    assert 0.15 < sample.classes.mean() < 0.6


def test_membranes_look_like_isbi() -> None:
    sample = make_sample("membranes", rng=0)
    assert 0.05 < sample.classes.mean() < 0.3
    assert sample.instances.max() >= 20
    image = sample.image[..., 0]
    assert image[sample.classes == 1].mean() < image[sample.classes == 0].mean() - 0.2  # dark membranes


def test_dic_relief_has_bright_and_dark_sides() -> None:
    sample = make_sample("dic", rng=0)
    image = sample.image[..., 0]
    background = np.median(image[sample.instances == 0])
    cells = image[sample.instances > 0]
    assert cells.max() > background + 0.3 and cells.min() < background - 0.3


@pytest.mark.parametrize("kind", KINDS)
def test_reproducible_from_seed(kind: str) -> None:
    first, second, other = (make_sample(kind, size=64, rng=seed) for seed in (7, 7, 8))
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.instances, second.instances)
    assert not np.array_equal(first.image, other.image)


def test_make_dataset_samples_do_not_depend_on_n() -> None:
    three = make_dataset("cells", 3, size=48, rng=5)
    two = make_dataset("cells", 2, size=48, rng=5)
    assert [sample.name for sample in three] == ["synthetic/cells/0", "synthetic/cells/1", "synthetic/cells/2"]
    np.testing.assert_array_equal(three[1].image, two[1].image)
    assert not np.array_equal(three[0].image, three[1].image)


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"kind must be one of \('cells', 'membranes', 'dic'\), got 'nuclei'"):
        make_sample("nuclei")
    with pytest.raises(ValueError, match=r"at least 16 px per side, got \(8, 64\)"):
        make_sample("cells", size=(8, 64))
    with pytest.raises(ValueError, match="size must be an int or"):
        make_sample("cells", size=(64, 64, 3))
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        make_dataset("cells", 0)
    with pytest.raises(ValueError, match="normalization must be one of"):
        make_sample("cells", size=32, normalization="unit")


def test_write_dataset_round_trip(tmp_path: Path) -> None:
    samples = make_dataset("cells", 2, size=40, rng=0)
    out = write_dataset(samples, tmp_path / "out")
    written = sorted(path.name for path in (out / "images").iterdir())
    assert written == ["synthetic_cells_0.tif", "synthetic_cells_1.tif"]
    loaded = load_dataset(out, normalization="range", label_kind="instances")
    for original, copy in zip(samples, loaded):
        np.testing.assert_array_equal(copy.image, original.image)
        np.testing.assert_array_equal(copy.instances, original.instances)
        np.testing.assert_array_equal(copy.classes, original.classes)
    percentile = load_dataset(out, label_kind="instances")
    np.testing.assert_allclose(percentile[0].image, samples[0].image, atol=1e-5)


def test_write_dataset_classes(tmp_path: Path) -> None:
    (sample,) = make_dataset("membranes", 1, size=40, rng=0)
    write_dataset([sample], tmp_path, label_kind="classes")
    (loaded,) = load_dataset(tmp_path, num_classes=2)
    np.testing.assert_array_equal(loaded.classes, sample.classes)


def test_write_dataset_errors(tmp_path: Path) -> None:
    sample = make_sample("cells", size=32, rng=0)
    with pytest.raises(ValueError, match="would both be written as synthetic_cells.tif"):
        write_dataset([sample, sample], tmp_path)
    ignored = Sample("a", sample.image, sample.classes.copy(), sample.instances)
    ignored.classes[0, 0] = IGNORE
    with pytest.raises(ValueError, match="'a': classes with IGNORE pixels do not fit"):
        write_dataset([ignored], tmp_path, label_kind="classes")
    rgb = Sample("rgb", np.zeros((32, 32, 3), np.float32), None, None)
    with pytest.raises(ValueError, match="only single-channel"):
        write_dataset([rgb], tmp_path)
    with pytest.raises(ValueError, match="label_kind must be one of"):
        write_dataset([sample], tmp_path, label_kind="masks")
    assert not (tmp_path / "images").exists()  # nothing written when the arguments are bad
