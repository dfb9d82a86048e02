"""Volumes as training and prediction inputs: HDF5 files (PlantSeg / ilastik), 3-D TIFF stacks, 3-D samples, the
volumes layout and splitting one volume, on small files written in tmp_path."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import shared_path
from skimage import measure

from biounet.core.extras import MissingExtra
from biounet.core.samples import Sample, classes_and_instances, guess_label_kind
from biounet.data.datasets import detect_layout, load_dataset
from biounet.data.images import ImageError, ImageSource, open_image, volume_layout
from biounet.data.volumes import load_volumes, read_hdf5, split_volume, volume_normalization

h5py = pytest.importorskip("h5py")

VOXEL = (0.5, 0.25, 0.2)


def _write_h5(path: Path, raw: np.ndarray | None, label: np.ndarray | None = None,
              voxel: tuple[float, ...] | None = VOXEL, **extra: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as file:
        if raw is not None:
            file["raw"] = raw
            if voxel is not None:
                file["raw"].attrs["element_size_um"] = np.asarray(voxel)
        if label is not None:
            file["label"] = label
        for key, value in extra.items():
            file[key] = value
    return path


def _write_datasets(path: Path, **datasets: np.ndarray) -> Path:
    with h5py.File(path, "w") as file:
        for key, value in datasets.items():
            file[key] = value
    return path


def _ramp(shape: tuple[int, ...] = (6, 10, 12)) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.uint16).reshape(shape)


def _cells(shape: tuple[int, int, int] = (8, 16, 16), cells: int = 12, seed: int = 0) -> np.ndarray:
    """Voronoi cells of random seeds tiling the whole volume (no 0 at all, as PlantSeg's ovule), ids 1..cells."""
    rng = np.random.default_rng(seed)
    seeds = rng.uniform(0, 1, size=(cells, 3)) * np.asarray(shape)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    distance = np.linalg.norm(grid[..., None, :] - seeds, axis=-1)
    return (distance.argmin(axis=-1) + 1).astype(np.uint16)


# --- Sample --------------------------------------------------------------------------------------------------------


def test_sample_accepts_a_volume_and_says_its_dims():
    image = np.zeros((4, 5, 6, 2), np.float32)
    labels = np.zeros((4, 5, 6), np.int64)
    volume = Sample("v", image, labels, labels.astype(np.int32), (2.0, 0.5, 0.5))
    assert volume.dims == 3 and volume.labeled
    flat = Sample("i", np.zeros((5, 6, 1), np.float32), None, None, (0.5, 0.5))
    assert flat.dims == 2


def test_sample_checks_volume_shapes_and_voxel_size():
    image = np.zeros((4, 5, 6, 1), np.float32)
    with pytest.raises(ValueError, match=r"classes shape \(4, 5, 7\) does not match image \(4, 5, 6\)"):
        Sample("v", image, np.zeros((4, 5, 7), np.int64), np.zeros((4, 5, 7), np.int32))
    with pytest.raises(ValueError, match=r"pixel_size_um must be 3 positive micrometres \(z, y, x\)"):
        Sample("v", image, None, None, (0.5, 0.5))
    with pytest.raises(ValueError, match=r"pixel_size_um must be 2 positive micrometres \(y, x\)"):
        Sample("i", image[0], None, None, (1.0, 0.5, 0.5))
    with pytest.raises(ValueError, match="image must be"):
        Sample("v", np.zeros((2, 4, 5, 6, 1), np.float32), None, None)


def test_classes_of_a_volume_are_6_connected_components():
    classes = np.zeros((3, 4, 4), np.int64)
    classes[0, 0, 0] = classes[1, 1, 1] = 1  # diagonal neighbours: two objects with 6-connectivity
    classes[2, 2:, 2:] = 2
    _, instances = classes_and_instances(classes, "classes")
    brute = measure.label(classes, background=0, connectivity=1)
    np.testing.assert_array_equal(instances, brute)
    assert instances.max() == 3


def test_guess_counts_cell_pieces_cut_by_the_volume_border_as_one():
    cells = np.repeat(np.arange(1, 11), 3)[None, None, :].repeat(3, axis=0).repeat(3, axis=1)  # 10 slabs (3, 3, 30)
    cut = cells.copy()
    cut[:, 1, 0:3] = 11  # slab 1 cut in two pieces (rows 0 and 2), both on the border
    assert "100% of them one connected region" in guess_label_kind([cut]).reason
    inner = np.pad(cells, 1, constant_values=20)  # in a shell of id 20, slab 1 cut by id 11 into two inner pieces
    inner[2, 1:4, 1:4] = 11
    with pytest.raises(ValueError, match="92% of them one connected region"):  # 11 of 12 ids
        guess_label_kind([inner])
    with pytest.raises(ValueError, match="91% of them one connected region"):  # 2-D: pieces stay two regions
        guess_label_kind([cut[0]])


# --- read_hdf5 ----------------------------------------------------------------------------------------------------


def test_read_hdf5_reads_raw_label_and_voxel_size(tmp_path):
    raw, label = _ramp(), _cells((6, 10, 12))
    volume = read_hdf5(_write_h5(tmp_path / "a.h5", raw, label))
    assert volume.raw.shape == (6, 10, 12, 1) and volume.raw.dtype == np.uint16
    np.testing.assert_array_equal(volume.raw[..., 0], raw)
    np.testing.assert_array_equal(volume.label, label)
    assert volume.label.dtype == np.int64
    assert volume.voxel_size_um == VOXEL
    bare = read_hdf5(_write_h5(tmp_path / "b.h5", raw, None, voxel=None))
    assert bare.label is None and bare.voxel_size_um is None


def test_read_hdf5_channel_axis_rule(tmp_path):
    first = np.stack([_ramp(), _ramp() + 1])  # (2, z, y, x): PlantSeg's channels first
    volume = read_hdf5(_write_h5(tmp_path / "czyx.h5", first))
    assert volume.raw.shape == (6, 10, 12, 2)
    np.testing.assert_array_equal(volume.raw[..., 1], _ramp() + 1)
    last = np.moveaxis(first, 0, -1)  # (z, y, x, 2): ilastik's channels last
    np.testing.assert_array_equal(read_hdf5(_write_h5(tmp_path / "zyxc.h5", last)).raw, volume.raw)
    assert volume_layout((3, 8, 8, 3)) == "ZYXC"  # both ends short: channels last


@pytest.mark.parametrize(("datasets", "words"), [
    ({"data": np.zeros((2, 3, 4))}, r"no dataset 'raw'; datasets found: \['data'\]"),
    ({"raw": np.zeros((4, 5, 6)), "label": np.zeros((4, 5, 7), np.uint8)},
     r"'label' of shape \(4, 5, 7\) does not match 'raw' of shape \(4, 5, 6\)"),
    ({"raw": np.zeros((5, 6))}, r"a volume must be 3-D .* got shape \(5, 6\)"),
    ({"raw": np.zeros((6, 7, 8, 9))}, r"up to 4 channels first or last .* got shape \(6, 7, 8, 9\)"),
    ({"raw": np.zeros((2, 3, 4, 5, 6))}, r"got shape \(2, 3, 4, 5, 6\)"),
    ({"raw": np.zeros((4, 5, 6)), "label": np.full((4, 5, 6), 0.5)}, "non-integer"),
])
def test_read_hdf5_bad_volumes_are_one_line_value_errors(tmp_path, datasets, words):
    path = _write_datasets(tmp_path / "bad.h5", **datasets)
    with pytest.raises(ValueError, match=words) as caught:
        read_hdf5(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_read_hdf5_rejects_a_bad_voxel_size(tmp_path):
    path = _write_h5(tmp_path / "v.h5", _ramp(), voxel=(0.5, 0.0, 0.2))
    with pytest.raises(ValueError, match=r"element_size_um must be three positive micrometres"):
        read_hdf5(path)


def test_read_hdf5_rejects_files_that_are_not_hdf5(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not an HDF5 file\n" * 10)
    with pytest.raises(ValueError, match="not an HDF5 file"):
        read_hdf5(text)
    truncated = tmp_path / "cut.h5"
    data = _write_h5(tmp_path / "whole.h5", _ramp((16, 64, 64))).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="HDF5"):
        read_hdf5(truncated)
    with pytest.raises(FileNotFoundError):
        read_hdf5(tmp_path / "absent.h5")


def test_missing_h5py_names_the_extra(tmp_path, monkeypatch):
    path = _write_h5(tmp_path / "a.h5", _ramp())
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now fails as when it is not installed
    with pytest.raises(MissingExtra, match=r"pip install 'biounet\[hdf5\]'"):
        read_hdf5(path)


# --- load_volumes -------------------------------------------------------------------------------------------------


def test_load_volumes_of_a_folder_normalises_each_volume_as_a_whole(tmp_path):
    dark_then_bright = np.zeros((2, 8, 8), np.uint16)
    dark_then_bright[1] = 100
    dark_then_bright[0, 0, 0] = 50
    _write_h5(tmp_path / "b.h5", dark_then_bright, _cells((2, 8, 8), cells=9))
    _write_h5(tmp_path / "a10.h5", _ramp((3, 8, 8)) * 2, _cells((3, 8, 8), cells=9, seed=1))
    _write_h5(tmp_path / "a2.h5", _ramp((3, 8, 8)), _cells((3, 8, 8), cells=9, seed=2))
    samples = load_volumes(tmp_path, normalization="minmax")
    assert [s.name for s in samples] == ["a2", "a10", "b"]  # natural order
    for sample in samples:
        assert sample.dims == 3 and sample.pixel_size_um == VOXEL
        assert sample.image.min() == 0 and sample.image.max() == 1  # over the volume, not per plane
    np.testing.assert_allclose(samples[2].image[0, 0, 0, 0], 0.5)  # per plane it would be 1
    np.testing.assert_allclose(samples[0].image[..., 0], _ramp((3, 8, 8)) / (3 * 64 - 1), rtol=1e-6)


def test_load_volumes_voxel_size_override_and_single_file(tmp_path):
    path = _write_h5(tmp_path / "one.hdf5", _ramp(), _cells((6, 10, 12)))
    (sample,) = load_volumes(path, normalization="range", voxel_size_um=(1, 0.3, 0.3))
    assert sample.pixel_size_um == (1.0, 0.3, 0.3)
    with pytest.raises(ValueError, match="voxel size must be three positive micrometres"):
        load_volumes(path, normalization="range", voxel_size_um=(1, 0.3))


def test_load_volumes_guesses_plantseg_instances(tmp_path):
    cells = _cells((8, 16, 16), cells=12)
    assert (cells == 0).sum() == 0  # cells tile the volume, as PlantSeg's ovule
    _write_h5(tmp_path / "ovule.h5", _ramp((8, 16, 16)), cells)
    (sample,) = load_volumes(tmp_path, normalization="percentile")
    np.testing.assert_array_equal(sample.instances, cells)
    assert (sample.classes == 1).all()


def test_load_volumes_label_kinds(tmp_path):
    mask = np.zeros((4, 8, 8), np.uint8)
    mask[1:3, 2:4, 2:4] = 255
    mask[1:3, 5:7, 5:7] = 255
    _write_h5(tmp_path / "m.h5", _ramp((4, 8, 8)), mask)
    (sample,) = load_volumes(tmp_path, normalization="range")  # auto: a binary mask is classes
    assert set(np.unique(sample.classes)) == {0, 1} and sample.instances.max() == 2
    (raw_ids,) = load_volumes(tmp_path, normalization="range", label_kind="instances")
    assert raw_ids.instances.max() == 255
    three = np.zeros((4, 8, 8), np.uint8)
    three[:, :4], three[:, 4:6] = 1, 2
    _write_h5(tmp_path / "m.h5", _ramp((4, 8, 8)), three)
    with pytest.raises(ValueError, match="cannot tell class ids from instance ids"):
        load_volumes(tmp_path, normalization="range")


def test_load_volumes_requires_labels_to_train(tmp_path):
    _write_h5(tmp_path / "x.h5", _ramp(), None, extra=np.zeros(3))
    with pytest.raises(ValueError, match=r"no dataset 'label' to train on \(datasets found: \['extra', 'raw'\]\)"):
        load_volumes(tmp_path, normalization="range")
    (sample,) = load_volumes(tmp_path, normalization="range", allow_unlabeled=True)
    assert not sample.labeled
    _write_h5(tmp_path / "y.h5", _ramp(), _cells((6, 10, 12)))
    assert not any(s.labeled for s in load_volumes(tmp_path, normalization="range", split="test"))


# --- 3-D TIFF stacks ------------------------------------------------------------------------------------------------


def _imagej_stack(path: Path, data: np.ndarray, z_um: float = 2.0, xy_um: float = 0.4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / xy_um, 1 / xy_um),
                     metadata={"axes": "ZYX", "spacing": z_um, "unit": "um"})
    return path


def test_pairs_of_3d_stacks_are_volumes(tmp_path):
    labels = _cells((5, 12, 16))
    _imagej_stack(tmp_path / "images" / "s1.tif", _ramp((5, 12, 16)))
    (tmp_path / "labels").mkdir()
    tifffile.imwrite(tmp_path / "labels" / "s1.tif", labels)
    assert detect_layout(tmp_path) == "volumes"
    (sample,) = load_dataset(tmp_path)
    assert sample.image.shape == (5, 12, 16, 1) and sample.pixel_size_um == pytest.approx((2.0, 0.4, 0.4))
    np.testing.assert_array_equal(sample.instances, labels)  # label_kind auto for volumes
    planes = load_dataset(tmp_path, layout="pairs", label_kind="instances")  # 2-D planes still on request
    assert len(planes) == 5 and planes[0].dims == 2


def test_ome_stack_voxel_size_and_override(tmp_path):
    (tmp_path / "images").mkdir()
    tifffile.imwrite(tmp_path / "images" / "o.ome.tif", _ramp((4, 8, 8)), ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeZ": 1.5, "PhysicalSizeY": 300.0, "PhysicalSizeYUnit": "nm",
                               "PhysicalSizeX": 0.3})
    source = open_image(tmp_path / "images" / "o.ome.tif")
    assert source.dims == 3 and source.voxel_size_um == pytest.approx((1.5, 0.3, 0.3))
    (sample,) = load_dataset(tmp_path, split="test", voxel_size_um=[3, 1, 1])
    assert sample.pixel_size_um == (3.0, 1.0, 1.0) and not sample.labeled


def test_stacks_without_a_z_axis_stay_2d_pairs(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    tifffile.imwrite(tmp_path / "images" / "p.tif", _ramp((3, 8, 8)), photometric="minisblack")  # no declared z
    tifffile.imwrite(tmp_path / "labels" / "p.tif", np.ones((3, 8, 8), np.uint8), photometric="minisblack")
    assert open_image(tmp_path / "images" / "p.tif").dims == 2
    assert detect_layout(tmp_path) == "pairs"
    assert [s.name for s in load_dataset(tmp_path)] == ["p/0", "p/1", "p/2"]
    series = tmp_path / "images" / "t.tif"  # a time series of volumes is not one volume: planes, as before
    tifffile.imwrite(series, _ramp((2, 3, 8, 8)), imagej=True, metadata={"axes": "TZYX"})
    tifffile.imwrite(tmp_path / "labels" / "t.tif", np.ones((6, 8, 8), np.uint8), photometric="minisblack")
    assert open_image(series).dims == 2 and detect_layout(tmp_path) == "pairs"
    assert len(load_dataset(tmp_path)) == 3 + 6
    _imagej_stack(tmp_path / "images" / "q.tif", _ramp((3, 8, 8)))
    with pytest.raises(ValueError, match=r"1 image\(s\) are 3-D stacks with a z axis \(q.tif\) but 2 are not"):
        detect_layout(tmp_path)


def test_volume_pairs_errors(tmp_path):
    _imagej_stack(tmp_path / "images" / "a.tif", _ramp((4, 8, 8)))
    (tmp_path / "labels").mkdir()
    tifffile.imwrite(tmp_path / "labels" / "a.tif", np.ones((4, 8, 9), np.uint8), photometric="minisblack")
    with pytest.raises(ValueError, match=r"labels of shape \(4, 8, 9\) .* do not match the volume .* \(4, 8, 8\)"):
        load_dataset(tmp_path)
    (tmp_path / "labels" / "a.tif").unlink()
    with pytest.raises(ValueError, match="have no label file with the same stem"):
        load_dataset(tmp_path)


# --- layout and load_dataset ----------------------------------------------------------------------------------------


def test_detect_layout_of_hdf5(tmp_path):
    path = _write_h5(tmp_path / "data" / "v.h5", _ramp(), _cells((6, 10, 12)))
    assert detect_layout(tmp_path / "data") == "volumes"
    assert detect_layout(path) == "volumes"
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="a dataset must be a folder"):
        detect_layout(tmp_path / "notes.txt")


def test_load_dataset_dispatches_volumes_and_refuses_2d_only_options(tmp_path):
    _write_h5(tmp_path / "v.h5", _ramp(), _cells((6, 10, 12)))
    (sample,) = load_dataset(tmp_path)
    assert sample.dims == 3 and sample.name == "v" and sample.instances.max() == 12
    (as_classes,) = load_dataset(tmp_path, label_kind="classes")
    assert as_classes.classes.max() == 12
    with pytest.raises(ValueError, match="num_classes=3 applies to the .'pairs',. layout"):
        load_dataset(tmp_path, num_classes=3)
    (sparse,) = load_dataset(tmp_path, ignore_label=7)  # sparse annotation: label 7 means unpainted
    assert (sparse.classes == -1).sum() == (_cells((6, 10, 12)) == 7).sum() > 0
    with pytest.raises(ValueError, match=r"voxel_size_um=\(1, 1, 1\) applies to the 'volumes' layout"):
        load_dataset("synthetic:cells,n=1,size=64", voxel_size_um=(1, 1, 1))


# --- split_volume -------------------------------------------------------------------------------------------------


def _volume(shape: tuple[int, int, int], voxel: tuple[float, float, float] | None) -> Sample:
    labels = np.arange(int(np.prod(shape))).reshape(shape)
    return Sample("v", labels[..., None].astype(np.float32), labels.astype(np.int64), labels.astype(np.int32), voxel)


def test_split_volume_cuts_the_physically_longest_axis():
    train, validation = split_volume(_volume((10, 20, 12), (3.0, 1.0, 1.0)), 0.25)  # z: 30 um, y: 20, x: 12
    assert train.image.shape == (8, 20, 12, 1) and validation.image.shape == (2, 20, 12, 1)  # round(2.5) = 2
    assert (train.name, validation.name) == ("v/train", "v/validation")
    full = _volume((10, 20, 12), None)  # in voxels: y
    train, validation = split_volume(full, 0.2)
    assert train.image.shape[:3] == (10, 16, 12) and validation.classes.shape == (10, 4, 12)
    np.testing.assert_array_equal(np.concatenate([train.instances, validation.instances], axis=1), full.instances)
    assert split_volume(_volume((4, 6, 6), None), 0.01)[1].image.shape[1] == 1  # at least one slice
    assert split_volume(_volume((4, 6, 6), None), 0.99)[0].image.shape[1] == 1  # and at least one left


def test_split_volume_errors():
    with pytest.raises(ValueError, match=r"validation_fraction must be in \(0, 1\)"):
        split_volume(_volume((4, 6, 6), None), 1.0)
    with pytest.raises(ValueError, match="split_volume cuts volumes"):
        split_volume(Sample("i", np.zeros((4, 4, 1), np.float32), None, None), 0.2)
    with pytest.raises(ValueError, match="one slice along its longest axis"):
        split_volume(_volume((1, 1, 1), None), 0.5)


# --- open_image and normalisation -----------------------------------------------------------------------------------


def test_open_image_of_hdf5_is_a_lazy_volume(tmp_path):
    raw = np.stack([_ramp(), _ramp() + 7])  # (C, Z, Y, X)
    source = open_image(_write_h5(tmp_path / "p.h5", raw, _cells((6, 10, 12))))
    assert (source.shape, source.layout, source.dims, source.voxel_size_um) == ((6, 10, 12, 2), "CZYX", 3, VOXEL)
    expected = np.moveaxis(raw, 0, -1)
    np.testing.assert_array_equal(source.read(2, slice(1, 4), slice(3, 9)), expected[2, 1:4, 3:9])
    np.testing.assert_array_equal(source.read_region(slice(1, 5), slice(2, 6), slice(0, 3)), expected[1:5, 2:6, :3])
    with pytest.raises(ImageError, match=r"no dataset 'raw'; datasets found: \['label'\]"):
        open_image(_write_h5(tmp_path / "q.h5", None, _cells((6, 10, 12))))


def test_volume_normalization_samples_large_volumes(monkeypatch):
    from biounet.data import volumes

    raw = np.random.default_rng(0).integers(0, 1000, size=(40, 30, 30, 1)).astype(np.uint16)
    source = ImageSource(Path("<array>"), raw, raw.shape, raw.dtype, "ZYXC", dims=3)
    exact = volume_normalization(source, "zscore")
    assert exact.offset[0] == pytest.approx(raw.mean()) and exact.scale[0] == pytest.approx(raw.std())
    monkeypatch.setattr(volumes, "STATS_MAX_PIXELS", 4000)  # 36,000 voxels: sampled
    monkeypatch.setattr(volumes, "VOLUME_STATS_PLANES", 8)
    sampled = volume_normalization(source, "zscore")
    assert sampled.offset[0] == pytest.approx(raw.mean(), rel=0.05)
    assert sampled.scale[0] == pytest.approx(raw.std(), rel=0.05)


# --- the real data, when present -------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_real_plantseg_volumes():
    root = shared_path("plantseg-3d")
    assert detect_layout(root) == "volumes"
    samples = {s.name: s for s in load_dataset(root)}
    nuclei, ovule = samples["1135_mini"], samples["sample_ovule"]
    assert nuclei.image.shape == (100, 100, 100, 1) and ovule.image.shape == (32, 128, 128, 1)
    assert nuclei.pixel_size_um == pytest.approx((0.284, 0.127, 0.127), abs=1e-3)
    assert ovule.pixel_size_um == pytest.approx((0.235, 0.15, 0.15))
    assert len(np.unique(nuclei.instances)) - 1 == 54
    assert (ovule.instances == 0).mean() < 0.01 and len(np.unique(ovule.instances)) - 1 == 50
    assert guess_label_kind([read_hdf5(root / "sample_ovule.h5").label]).kind == "instances"
    train, validation = split_volume(nuclei, 0.2)  # z is longest: 100 x 0.284 um
    assert train.image.shape[0] == 80 and validation.image.shape[0] == 20
