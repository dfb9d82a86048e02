"""Tests for biounet.data.datasets: every dataset layout on tiny fixtures, the errors, and the real data when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from biounet.core.samples import IGNORE, Sample
from biounet.data.datasets import (
    ISBI_MEMBRANE_CLASS,
    LAYOUTS,
    detect_layout,
    load_dataset,
    split_samples,
    unannotated_cells,
)
from biounet.data.images import ImageError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def _tif(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array, photometric="minisblack")
    return path


def _ramp(height: int = 12, width: int = 16, offset: int = 0) -> np.ndarray:
    return (np.arange(height * width).reshape(height, width) * 3 + offset) % 256


# --- pairs ------------------------------------------------------------------------------------------------------


def test_pairs_png_and_tiff(tmp_path: Path) -> None:
    classes = np.zeros((12, 16), dtype=np.uint8)
    classes[2:6, 2:6] = 1
    classes[2:6, 6:9] = 2  # touches the class-1 square: separate instances
    classes[8:10, 8:10] = 1
    _png(tmp_path / "images" / "b.png", _ramp())
    _png(tmp_path / "labels" / "b.png", classes)
    _tif(tmp_path / "images" / "a.tif", _ramp(offset=5).astype(np.uint16))
    _tif(tmp_path / "labels" / "a.tif", classes.astype(np.uint16))

    assert detect_layout(tmp_path) == "pairs"
    samples = load_dataset(tmp_path)
    assert [sample.name for sample in samples] == ["a", "b"]
    for sample in samples:
        assert sample.image.shape == (12, 16, 1) and sample.image.dtype == np.float32
        assert sample.classes.dtype == np.int64 and sample.instances.dtype == np.int32
        np.testing.assert_array_equal(sample.classes, classes)
        assert sample.instances.max() == 3
        assert len(np.unique(sample.instances[2:6, 2:9])) == 2
        np.testing.assert_array_equal(sample.instances > 0, classes > 0)


def test_pairs_binary_mask_255_is_class_1(tmp_path: Path) -> None:
    mask = np.zeros((12, 16), dtype=np.uint8)
    mask[3:7, 3:7] = 255
    mask[9:11, 12:14] = 255
    _png(tmp_path / "images" / "x.png", _ramp())
    _png(tmp_path / "labels" / "x.png", mask)
    (sample,) = load_dataset(tmp_path, num_classes=2)
    np.testing.assert_array_equal(sample.classes, mask // 255)
    assert sample.instances.max() == 2


def test_pairs_diagonal_touch_is_two_instances(tmp_path: Path) -> None:
    labels = np.zeros((12, 16), dtype=np.uint8)
    labels[2:4, 2:4] = 1
    labels[4:6, 4:6] = 1  # meets the first square only at a corner: not 4-connected
    _png(tmp_path / "images" / "x.png", _ramp())
    _png(tmp_path / "labels" / "x.png", labels)
    (sample,) = load_dataset(tmp_path)
    assert sample.instances[3, 3] != sample.instances[4, 4]
    assert sample.instances.max() == 2


def test_pairs_instance_labels(tmp_path: Path) -> None:
    instances = np.zeros((12, 16), dtype=np.uint16)
    instances[2:6, 2:6] = 7
    instances[2:6, 6:10] = 300  # touching cells stay apart
    _png(tmp_path / "images" / "x.png", _ramp())
    _tif(tmp_path / "labels" / "x.tif", instances)
    (sample,) = load_dataset(tmp_path, label_kind="instances")
    np.testing.assert_array_equal(sample.instances, instances)
    np.testing.assert_array_equal(sample.classes, (instances > 0).astype(np.int64))


@pytest.mark.parametrize(("images", "labels"), [("image", "label"), ("img", "masks"), ("images", "masks")])
def test_pairs_folder_names(tmp_path: Path, images: str, labels: str) -> None:
    _png(tmp_path / images / "x.png", _ramp())
    _png(tmp_path / labels / "x.png", np.ones((12, 16)))
    assert detect_layout(tmp_path) == "pairs"
    assert len(load_dataset(tmp_path)) == 1


def test_pairs_multipage_gives_one_sample_per_page(tmp_path: Path) -> None:
    _tif(tmp_path / "images" / "stack.tif", np.stack([_ramp(), _ramp(offset=9)]).astype(np.uint8))
    _tif(tmp_path / "labels" / "stack.tif", np.ones((2, 12, 16), dtype=np.uint8))
    assert [sample.name for sample in load_dataset(tmp_path)] == ["stack/0", "stack/1"]


def test_pairs_missing_labels(tmp_path: Path) -> None:
    for index in range(7):
        _png(tmp_path / "images" / f"{index}.png", _ramp())
    _png(tmp_path / "labels" / "0.png", np.ones((12, 16)))
    with pytest.raises(ValueError, match=r"6 image\(s\).*1.png, 2.png, 3.png, 4.png, 5.png and 1 more"):
        load_dataset(tmp_path)
    samples = load_dataset(tmp_path, allow_unlabeled=True)
    assert [sample.labeled for sample in samples] == [True] + [False] * 6
    assert samples[1].classes is None and samples[1].instances is None


def test_pairs_missing_label_folder(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "x.png", _ramp())
    with pytest.raises(FileNotFoundError, match="no label folder"):
        load_dataset(tmp_path)
    (sample,) = load_dataset(tmp_path, split="test")
    assert not sample.labeled


def test_pairs_orphan_labels(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "x.png", _ramp())
    _png(tmp_path / "labels" / "x.png", np.ones((12, 16)))
    _png(tmp_path / "labels" / "y_mask.png", np.ones((12, 16)))
    with pytest.raises(ValueError, match="y_mask.png"):
        load_dataset(tmp_path)


def test_pairs_size_mismatch(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "x.png", _ramp())
    _png(tmp_path / "labels" / "x.png", np.ones((12, 15)))
    with pytest.raises(ValueError, match=r"labels/x.png is 12x15 \(1 plane\) but .*images/x.png is 12x16"):
        load_dataset(tmp_path)


def test_pairs_class_out_of_range(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "x.png", _ramp())
    _png(tmp_path / "labels" / "x.png", np.full((12, 16), 3))
    with pytest.raises(ValueError, match=r"x.png: class id 3 out of range for num_classes=3"):
        load_dataset(tmp_path, num_classes=3)


def test_pairs_negative_class(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "x.png", _ramp())
    _tif(tmp_path / "labels" / "x.tif", np.full((12, 16), -2, dtype=np.int16))
    with pytest.raises(ValueError, match="negative class id -2"):
        load_dataset(tmp_path)


def test_pairs_corrupt_file(tmp_path: Path) -> None:
    _png(tmp_path / "labels" / "x.png", np.ones((12, 16)))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "x.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageError, match=r"x.png: not a readable image"):
        load_dataset(tmp_path)


def test_pairs_duplicate_stem(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "x.png", _ramp())
    _tif(tmp_path / "images" / "x.tif", _ramp().astype(np.uint8))
    with pytest.raises(ValueError, match="two files with the stem 'x'"):
        load_dataset(tmp_path, allow_unlabeled=True)


def test_pairs_empty_image_folder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        load_dataset(tmp_path)


# --- isbi2012 ---------------------------------------------------------------------------------------------------


def _isbi_label(index: int) -> np.ndarray:
    label = np.full((12, 16), 255, dtype=np.uint8)
    label[:, 7] = 0  # a membrane splitting two cells
    label[index % 12, :] = 0
    return label


def _isbi_slices(root: Path, count: int = 12, tests: int = 3) -> None:
    for index in range(count):
        _png(root / "train" / "image" / f"{index}.png", _ramp(offset=index))
        _png(root / "train" / "label" / f"{index}.png", _isbi_label(index))
    for index in range(tests):
        _png(root / "test" / "image" / f"{index}.png", _ramp(offset=index))


def test_isbi_slices_in_numeric_order_with_membrane_class_1(tmp_path: Path) -> None:
    _isbi_slices(tmp_path)
    assert detect_layout(tmp_path) == "isbi2012"
    samples = load_dataset(tmp_path)
    assert [sample.name for sample in samples] == [f"isbi2012/train/{index}" for index in range(12)]
    label = _isbi_label(0)
    np.testing.assert_array_equal(samples[0].classes == ISBI_MEMBRANE_CLASS, label == 0)
    assert samples[0].classes[0, 0] == 1  # row 0 is membrane: class 1, the paper's foreground
    # cells are the instances: row 0 and column 7 are membrane, leaving a left and a right cell
    assert samples[0].instances.max() == 2
    np.testing.assert_array_equal(samples[0].instances > 0, label == 255)


def test_isbi_test_split(tmp_path: Path) -> None:
    _isbi_slices(tmp_path)
    samples = load_dataset(tmp_path, split="test")
    assert [sample.name for sample in samples] == ["isbi2012/test/0", "isbi2012/test/1", "isbi2012/test/2"]
    assert not any(sample.labeled for sample in samples)


def test_isbi_split_folder_paths(tmp_path: Path) -> None:
    _isbi_slices(tmp_path)
    assert detect_layout(tmp_path / "test") == "isbi2012"
    assert len(load_dataset(tmp_path / "test")) == 3
    with pytest.raises(ValueError, match="ambiguous layout"):
        detect_layout(tmp_path / "train")
    samples = load_dataset(tmp_path / "train", layout="isbi2012")
    assert len(samples) == 12 and samples[0].classes[0, 0] == ISBI_MEMBRANE_CLASS
    with pytest.raises(ValueError, match="conflicts with the path"):
        load_dataset(tmp_path / "train", layout="isbi2012", split="test")


def test_isbi_rejects_other_label_values(tmp_path: Path) -> None:
    _isbi_slices(tmp_path, count=2)
    _png(tmp_path / "train" / "label" / "1.png", np.ones((12, 16)))
    with pytest.raises(ValueError, match=r"1.png: ISBI 2012 labels must be 0 \(membrane\) or 255"):
        load_dataset(tmp_path)


def test_isbi_missing_label(tmp_path: Path) -> None:
    _isbi_slices(tmp_path, count=3)
    (tmp_path / "train" / "label" / "2.png").unlink()
    with pytest.raises(ValueError, match="2.png"):
        load_dataset(tmp_path)


def test_isbi_multipage_volume(tmp_path: Path) -> None:
    volume = np.stack([_ramp(offset=index) for index in range(3)]).astype(np.uint8)
    labels = np.stack([_isbi_label(index) for index in range(3)])
    _tif(tmp_path / "train-volume.tif", volume)
    _tif(tmp_path / "train-labels.tif", labels)
    _tif(tmp_path / "test-volume.tif", volume[:2])
    assert detect_layout(tmp_path) == "isbi2012"
    samples = load_dataset(tmp_path)
    assert [sample.name for sample in samples] == ["isbi2012/train/0", "isbi2012/train/1", "isbi2012/train/2"]
    for sample, label in zip(samples, labels):
        np.testing.assert_array_equal(sample.classes, (label == 0).astype(np.int64))
    tests = load_dataset(tmp_path, split="test")
    assert len(tests) == 2 and not tests[0].labeled


def test_isbi_multipage_page_count_mismatch(tmp_path: Path) -> None:
    _tif(tmp_path / "train-volume.tif", np.zeros((3, 12, 16), dtype=np.uint8))
    _tif(tmp_path / "train-labels.tif", np.full((2, 12, 16), 255, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"labels.tif is 12x16 \(2 planes\) but .*volume.tif is 12x16 \(3 planes"):
        load_dataset(tmp_path)


# --- ctc --------------------------------------------------------------------------------------------------------


def _ctc(root: Path, sequence: str = "01", frames: int = 4) -> None:
    for frame in range(frames):
        _tif(root / sequence / f"t{frame:03d}.tif", _ramp(offset=frame).astype(np.uint8))
        silver = np.zeros((12, 16), dtype=np.uint16)
        silver[1:5, 1:5] = 4
        silver[6:11, 9:15] = 9
        _tif(root / f"{sequence}_ST" / "SEG" / f"man_seg{frame:03d}.tif", silver)
    gold = np.zeros((12, 16), dtype=np.uint16)
    gold[1:5, 1:6] = 1  # partial: labels only the first cell
    _tif(root / f"{sequence}_GT" / "SEG" / "man_seg001.tif", gold)


def test_ctc_gold_truth_with_silver_ignore(tmp_path: Path) -> None:
    _ctc(tmp_path)
    assert detect_layout(tmp_path) == "ctc"
    (sample,) = load_dataset(tmp_path)
    assert sample.name == f"{tmp_path.name}/01/t001"
    assert sample.instances.dtype == np.int32 and sample.instances.max() == 1
    # the second cell is only in silver truth: IGNORE, not background; the first cell is class 1 from gold truth
    assert np.all(sample.classes[6:11, 9:15] == IGNORE)
    assert np.all(sample.classes[1:5, 1:6] == 1)
    assert np.count_nonzero(sample.classes == IGNORE) == 30
    assert np.all(sample.instances[6:11, 9:15] == 0)


def test_ctc_silver_frames(tmp_path: Path) -> None:
    _ctc(tmp_path)
    samples = load_dataset(tmp_path, use_silver=True)
    assert [sample.name[-4:] for sample in samples] == ["t000", "t001", "t002", "t003"]
    assert samples[0].instances.max() == 9 and not np.any(samples[0].classes == IGNORE)
    assert samples[1].instances.max() == 1  # gold truth wins where both exist
    silver_only = load_dataset(tmp_path, use_gt=False, use_silver=True)
    assert silver_only[1].instances.max() == 9
    with pytest.raises(ValueError, match="both False"):
        load_dataset(tmp_path, use_gt=False)


def test_ctc_test_split_and_sequence_folder(tmp_path: Path) -> None:
    _ctc(tmp_path)
    _ctc(tmp_path, "02", frames=2)
    tests = load_dataset(tmp_path, split="test")
    assert len(tests) == 6 and not any(sample.labeled for sample in tests)
    assert [sample.name[-7:] for sample in load_dataset(tmp_path)] == ["01/t001", "02/t001"]
    assert detect_layout(tmp_path / "02") == "ctc"
    assert [sample.name[-7:] for sample in load_dataset(tmp_path / "02", split="test")] == ["02/t000", "02/t001"]
    assert len(load_dataset(tmp_path, sequences=["02"], use_silver=True)) == 2
    with pytest.raises(FileNotFoundError, match=r"sequence folder\(s\) \['03'\] not found"):
        load_dataset(tmp_path, sequences=["03"])
    unlabeled = load_dataset(tmp_path, sequences=["01"], allow_unlabeled=True)
    assert [sample.labeled for sample in unlabeled] == [False, True, False, False]


def test_ctc_ignores_3d_mask_names_and_rejects_orphan_masks(tmp_path: Path) -> None:
    _ctc(tmp_path)
    _tif(tmp_path / "01_GT" / "SEG" / "man_seg_001_002.tif", np.ones((12, 16), dtype=np.uint16))
    assert len(load_dataset(tmp_path)) == 1
    _tif(tmp_path / "01_GT" / "SEG" / "man_seg007.tif", np.ones((12, 16), dtype=np.uint16))
    with pytest.raises(ValueError, match=r"man_seg007.tif"):
        load_dataset(tmp_path)


def test_ctc_size_mismatch(tmp_path: Path) -> None:
    _ctc(tmp_path)
    _tif(tmp_path / "01_GT" / "SEG" / "man_seg001.tif", np.ones((10, 16), dtype=np.uint16))
    with pytest.raises(ValueError, match=r"man_seg001.tif is 10x16 \(1 plane\) but .*t001.tif is 12x16"):
        load_dataset(tmp_path)


def test_unannotated_cells_margin() -> None:
    gold = np.zeros((1, 10), dtype=np.int32)
    gold[0, :3] = 1
    silver = np.zeros((1, 10), dtype=np.int32)
    silver[0, :6] = 5
    # pixels 3, 4, 5 are 1, 2, 3 px from the gold cell: only pixel 5 is beyond a 2 px margin
    np.testing.assert_array_equal(np.flatnonzero(unannotated_cells(gold, silver, margin_px=2)), [5])
    assert unannotated_cells(np.zeros_like(gold), silver).sum() == 6


# --- detection and general errors -------------------------------------------------------------------------------


def test_detect_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such dataset folder"):
        detect_layout(tmp_path / "absent")
    with pytest.raises(ValueError, match="dataset folder is empty"):
        detect_layout(tmp_path)
    (tmp_path / "stuff").mkdir()
    with pytest.raises(ValueError, match=r"unrecognised dataset layout; expected one of: 'pairs'"):
        detect_layout(tmp_path)
    file = _png(tmp_path / "x.png", _ramp())
    with pytest.raises(ValueError, match="must be a folder"):
        detect_layout(file)


def test_load_dataset_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such dataset folder"):
        load_dataset(tmp_path / "absent")
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "absent", layout="ctc")
    with pytest.raises(ValueError, match=r"layout must be one of \('pairs', 'isbi2012', 'ctc', 'synthetic'\)"):
        load_dataset(tmp_path, layout="voc")
    with pytest.raises(ValueError, match="normalization must be one of"):
        load_dataset(tmp_path, normalization="unit")
    with pytest.raises(ValueError, match="split must be one of"):
        load_dataset(tmp_path, split="val")
    with pytest.raises(ValueError, match=r"use_silver=True applies to the \('ctc',\) layout"):
        load_dataset("synthetic:cells", use_silver=True)
    with pytest.raises(ValueError, match="label_kind=.instances. applies"):
        _isbi_slices(tmp_path, count=1)
        load_dataset(tmp_path, label_kind="instances")
    assert set(LAYOUTS) == {"pairs", "isbi2012", "ctc", "synthetic"}


def test_normalization_is_applied(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "x.png", _ramp())
    _png(tmp_path / "labels" / "x.png", np.ones((12, 16)))
    (ranged,) = load_dataset(tmp_path, normalization="range")
    np.testing.assert_allclose(ranged.image[..., 0], _ramp() / 255, rtol=1e-6)
    (minmax,) = load_dataset(tmp_path, normalization="minmax")
    assert minmax.image.min() == 0 and minmax.image.max() == 1


# --- synthetic layout -------------------------------------------------------------------------------------------


def test_synthetic_layout() -> None:
    samples = load_dataset("synthetic:membranes,n=3,size=40x48,seed=2")
    assert len(samples) == 3 and samples[0].image.shape == (40, 48, 1)
    assert samples[0].name == "synthetic/membranes/0"
    again = load_dataset("synthetic:membranes,n=3,size=40x48,seed=2")
    np.testing.assert_array_equal(samples[2].image, again[2].image)
    tests = load_dataset("synthetic:membranes,n=3,size=40x48,seed=2", split="test")
    assert not tests[0].labeled and not np.array_equal(tests[0].image, samples[0].image)
    assert load_dataset("synthetic:")[0].name == "synthetic/cells/0"
    with pytest.raises(ValueError, match="synthetic kind must be one of"):
        load_dataset("synthetic:nuclei")
    with pytest.raises(ValueError, match="bad option 'count=3'"):
        load_dataset("synthetic:cells,count=3")


# --- samples and splitting --------------------------------------------------------------------------------------


def _samples(count: int) -> list[Sample]:
    return [Sample(str(index), np.zeros((4, 4, 1), np.float32), None, None) for index in range(count)]


def test_sample_validation() -> None:
    with pytest.raises(TypeError, match="image must be float32"):
        Sample("x", np.zeros((4, 4, 1)), None, None)
    with pytest.raises(ValueError, match=r"image must be \(H, W, C\)"):
        Sample("x", np.zeros((4, 4), np.float32), None, None)
    with pytest.raises(ValueError, match="both be given or both be None"):
        Sample("x", np.zeros((4, 4, 1), np.float32), np.zeros((4, 4), np.int64), None)
    with pytest.raises(ValueError, match=r"classes shape \(4, 5\) does not match image \(4, 4\)"):
        Sample("x", np.zeros((4, 4, 1), np.float32), np.zeros((4, 5), np.int64), np.zeros((4, 5), np.int32))
    with pytest.raises(TypeError, match="instances must be int32"):
        Sample("x", np.zeros((4, 4, 1), np.float32), np.zeros((4, 4), np.int64), np.zeros((4, 4), np.int64))


def test_split_samples() -> None:
    samples = _samples(10)
    train, validation = split_samples(samples)
    assert len(train) == 8 and len(validation) == 2
    assert sorted(s.name for s in train + validation) == sorted(s.name for s in samples)
    assert [s.name for s in train] == sorted((s.name for s in train), key=int)  # input order kept
    again = split_samples(samples)
    assert [s.name for s in again[1]] == [s.name for s in validation]
    for count in (2, 3):
        train, validation = split_samples(_samples(count), validation_fraction=0.01)
        assert len(train) >= 1 and len(validation) == 1
    train, validation = split_samples(_samples(2), validation_fraction=0.9)
    assert len(train) == 1 and len(validation) == 1
    assert len(split_samples(_samples(5), validation_fraction=0.0)[1]) == 0
    assert len(split_samples(_samples(1))[1]) == 0


def test_split_samples_errors() -> None:
    with pytest.raises(ValueError, match=r"validation_fraction must be in \[0, 1\), got 1"):
        split_samples(_samples(3), validation_fraction=1)
    with pytest.raises(ValueError, match="no samples"):
        split_samples([])


# --- the real data, when present --------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_real_isbi2012() -> None:
    root = SHARED / "isbi2012"
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    assert detect_layout(root) == "isbi2012"
    samples = load_dataset(root)
    assert [sample.name for sample in samples] == [f"isbi2012/train/{index}" for index in range(20)]
    assert all(sample.image.shape == (512, 512, 1) for sample in samples)
    membrane = np.mean([np.mean(sample.classes == ISBI_MEMBRANE_CLASS) for sample in samples])
    assert 0.18 < membrane < 0.26
    assert all(sample.instances.max() > 50 for sample in samples)
    tests = load_dataset(root, split="test")
    assert len(tests) == 30 and not any(sample.labeled for sample in tests)


@pytest.mark.shared_data
def test_real_dic_hela() -> None:
    root = SHARED / "DIC-C2DH-HeLa"
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    assert detect_layout(root) == "ctc"
    samples = load_dataset(root)
    frames = ["t002", "t005", "t021", "t031", "t033", "t034", "t039", "t054", "t067"]
    assert [sample.name for sample in samples] == [f"DIC-C2DH-HeLa/01/{frame}" for frame in frames]
    assert all(sample.image.shape == (512, 512, 1) for sample in samples)
    assert all(sample.instances.max() >= 3 for sample in samples)
    partial = samples[-1]
    assert partial.instances.max() == 3 and np.mean(partial.classes == IGNORE) > 0.3  # unlabelled cells ignored
    assert np.mean(samples[0].classes == IGNORE) < 0.01  # complete gold truth: almost nothing ignored
    silver = load_dataset(root, use_silver=True, sequences=["01"])
    assert len(silver) == 84


def test_pairs_pair_names_with_dots_by_their_full_stem(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "a.1.png", _ramp())
    _png(tmp_path / "images" / "a.2.png", _ramp(offset=7))
    _tif(tmp_path / "labels" / "a.1.tif", np.ones((12, 16), dtype=np.uint8))
    _tif(tmp_path / "labels" / "a.2.tif", np.zeros((12, 16), dtype=np.uint8))
    samples = load_dataset(tmp_path)
    assert sorted(sample.name.rsplit("/", 1)[-1] for sample in samples) == ["a.1", "a.2"]  # not merged into "a"
