"""Volumes through every stage (issue 22): ``biounet train`` on HDF5 volumes -> ``predict --instances`` ->
``evaluate``, checking the arrays that flow between the stages, and the bad input of each stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from biounet.cli import main
from biounet.core.model import output_shape
from biounet.data.checkpoint import load_checkpoint
from biounet.training.config import read_config_toml

h5py = pytest.importorskip("h5py")

VOXEL = (0.5, 0.25, 0.25)


def nuclei_volume(seed: int, shape: tuple[int, int, int] = (20, 40, 40)) -> tuple[np.ndarray, np.ndarray]:
    """Bright ellipsoids (half as long in z, as the voxels are twice as deep) on a noisy background."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    labels = np.zeros(shape, np.uint16)
    for cell in range(1, 7):
        centre = rng.uniform([3, 6, 6], [shape[0] - 3, shape[1] - 6, shape[2] - 6])
        radius = rng.uniform(4, 6)
        inside = ((z - centre[0]) * 2) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 < radius**2
        labels[inside & (labels == 0)] = cell
    raw = np.clip((labels > 0) * 150 + rng.normal(40, 15, shape), 0, 255).astype(np.uint8)
    return raw, labels


def write_h5(path: Path, raw: np.ndarray, labels: np.ndarray | None = None, voxel=VOXEL) -> Path:
    with h5py.File(path, "w") as handle:
        handle.create_dataset("raw", data=raw).attrs["element_size_um"] = voxel
        if labels is not None:
            handle.create_dataset("label", data=labels)
    return path


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("volumes")
    for seed in range(2):
        write_h5(folder / f"v{seed}.h5", *nuclei_volume(seed))
    return folder


@pytest.fixture(scope="module")
def run(volumes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", "--data", str(volumes), "--out", str(out), "--iterations", "2", "--val-every", "2",
                 "--tile", "92", "--base-channels", "4", "--precision", "fp32", "-q"]) == 0
    return out


def test_volumes_train_a_3d_unet_with_the_voxel_size(run):
    config = read_config_toml(run / "config.toml")
    assert (config.dims, config.voxel_size, config.flat_levels) == (3, VOXEL, 1)  # z twice as deep: one flat level
    network = load_checkpoint(run / "model.pt")["model_config"]
    assert (network["dims"], network["flat_levels"], network["variant"]) == (3, 1, "cicek")
    assert (run / "overlay_v1_z=10.png").exists() or any(run.glob("overlay_*_z=*.png"))


def test_the_sampler_feeds_the_network_3d_windows_and_output_sized_targets(run, volumes):
    from biounet.training.train import TileSampler, prepare_samples, select_samples

    config = read_config_toml(run / "config.toml")
    split = select_samples(config, None)
    prepared = prepare_samples(split.train, config, split.num_classes)
    images, labels, weights = TileSampler(prepared, config, length=1)[0]
    out = output_shape(config.window_shape, config.model_config(1, 2))
    assert images.shape == (1, 1, *config.window_shape)
    assert labels.shape == weights.shape == (1, *out)
    assert set(np.unique(labels.numpy())) <= {0, 1, 2}  # background, interior, boundary


def test_predict_evaluate_carry_the_volume_through(run, volumes, tmp_path):
    from biounet.inference.instances import instances_from_outputs
    from biounet.inference.settings import instance_settings

    raw, truth = nuclei_volume(5)
    image = write_h5(tmp_path / "new.h5", raw)
    out = tmp_path / "pred"
    assert main(["predict", str(run / "model.pt"), str(image), "--out", str(out), "--instances",
                 "--save-probabilities", "-q"]) == 0
    labels = tifffile.imread(out / "new.tif")
    probs = tifffile.imread(out / "new_prob.tif")
    instances = tifffile.imread(out / "new_instances.tif")
    assert labels.shape == instances.shape == raw.shape and instances.dtype == np.int32
    assert probs.shape == (raw.shape[0], 3, *raw.shape[1:])  # (Z, K, Y, X)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(labels, probs.argmax(axis=1))
    target, params = instance_settings(run / "model.pt")
    expected = instances_from_outputs(labels, np.moveaxis(probs, 1, 0), target=target, params=params)
    np.testing.assert_array_equal(instances, expected)  # 3D objects of the whole volume, not plane by plane
    with tifffile.TiffFile(out / "new_instances.tif") as tif:
        assert 'PhysicalSizeZ="0.5"' in tif.ome_metadata
    truth_dir = tmp_path / "truth"
    truth_dir.mkdir()
    tifffile.imwrite(truth_dir / "new.tif", truth)
    assert main(["evaluate", "--pred", str(out), "--truth", str(truth_dir), "--kind", "instances", "--json"]) == 0


def test_evaluate_counts_3d_objects(tmp_path, capsys):
    import json

    _, truth = nuclei_volume(3)
    for name in ("pred", "truth"):
        (tmp_path / name).mkdir()
    tifffile.imwrite(tmp_path / "truth" / "a.tif", truth)
    tifffile.imwrite(tmp_path / "pred" / "a_instances.tif", truth.astype(np.int32))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"),
                 "--kind", "instances", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["images"][0]
    cells = len(np.unique(truth)) - 1
    assert (row["cells"], row["predicted_cells"], row["f1"], row["seg"]) == (cells, cells, 1.0, 1.0)


def test_dims_2_trains_the_2d_network_on_the_planes(volumes, tmp_path):
    out = tmp_path / "run2d"
    assert main(["train", "--data", str(volumes), "--out", str(out), "--iterations", "1", "--val-every", "1",
                 "--dims", "2", "--tile", "188", "--depth", "3", "--base-channels", "4", "--precision", "fp32",
                 "-q"]) == 0
    network = load_checkpoint(out / "model.pt")["model_config"]
    assert network["dims"] == 2
    assert read_config_toml(out / "config.toml").dims == 2


def _one_line_error(capsys, argv: list[str]) -> str:
    """The error: exit 2, one line (after the notes on the settings chosen, where training got that far)."""
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith("biounet "), lines
    return lines[0]


def test_a_2d_model_given_a_volume_and_the_reverse_are_refused(run, tmp_path, capsys):
    volume = write_h5(tmp_path / "v.h5", *nuclei_volume(1))
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.zeros((64, 64), np.uint8))
    model2d = tmp_path / "m2d.pt"
    assert main(["init", "--out", str(model2d), "--base-channels", "4", "--depth", "2", "-q"]) == 0
    err = _one_line_error(capsys, ["predict", str(model2d), str(volume), "--out", str(tmp_path / "o1"), "-q"])
    assert "volume" in err and "2D U-Net" in err
    err = _one_line_error(capsys, ["predict", str(run / "model.pt"), str(flat), "--out", str(tmp_path / "o2"), "-q"])
    assert "3D U-Net" in err
    assert not (tmp_path / "o1").exists() or not any((tmp_path / "o1").iterdir())
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").iterdir())


def test_a_volume_smaller_than_the_network_is_mirrored_not_refused(run, tmp_path):
    """Overlap-tile mirrors missing context (paper Fig. 2), so any volume size is segmented."""
    raw = np.random.default_rng(2).integers(0, 255, (3, 9, 11), dtype=np.uint8)
    out = tmp_path / "small"
    assert main(["predict", str(run / "model.pt"), str(write_h5(tmp_path / "s.h5", raw)), "--out", str(out),
                 "-q"]) == 0
    assert tifffile.imread(out / "s.tif").shape == (3, 9, 11)


def test_bad_training_volumes_are_one_line_errors(tmp_path, capsys):
    raw, labels = nuclei_volume(0)
    no_raw = tmp_path / "no_raw"
    no_raw.mkdir()
    with h5py.File(no_raw / "a.h5", "w") as handle:
        handle.create_dataset("volume", data=raw)
        handle.create_dataset("label", data=labels)
    err = _one_line_error(capsys, ["train", "--data", str(no_raw), "--out", str(tmp_path / "r1"),
                                   "--iterations", "1", "--precision", "fp32", "-q"])
    assert "raw" in err
    mismatched = tmp_path / "mismatched"
    mismatched.mkdir()
    write_h5(mismatched / "a.h5", raw, labels[:, :-1])
    err = _one_line_error(capsys, ["train", "--data", str(mismatched), "--out", str(tmp_path / "r2"),
                                   "--iterations", "1", "--precision", "fp32", "-q"])
    assert str(raw.shape[1]) in err and str(raw.shape[1] - 1) in err
    assert not (tmp_path / "r1" / "model.pt").exists() and not (tmp_path / "r2" / "model.pt").exists()


def test_sparse_annotation_unpainted_voxels_are_ignored(tmp_path):
    """Cicek et al.'s sparse annotation: a few painted slices, the ignore label everywhere else."""
    from biounet.data.datasets import load_dataset

    raw, labels = nuclei_volume(4)
    sparse = labels.astype(np.int32)
    sparse[1::3] = 99  # two of every three slices unpainted
    folder = tmp_path / "sparse"
    folder.mkdir()
    write_h5(folder / "a.h5", raw, sparse)
    (sample,) = load_dataset(folder, ignore_label=99, label_kind="instances")
    assert sample.dims == 3
    np.testing.assert_array_equal(sample.classes == -1, sparse == 99)
    painted = sparse != 99
    np.testing.assert_array_equal(sample.instances[painted] > 0, labels[painted] > 0)
