"""OME-Zarr (NGFF 0.4 and 0.5) in and out of ``biounet predict``, and OME-TIFF pixel sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from biounet.cli import main
from biounet.data.images import ImageError, open_image
from biounet.data.omezarr import (
    LabelImageWriter,
    LabelLayout,
    NgffError,
    PixelSize,
    PlaneStack,
    is_omezarr,
    ome_tiff_pixel_size,
    open_ngff,
)

PIXEL_UM = 0.5


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "m.pt"
    assert main(["init", "--out", str(path), "--base-channels", "4", "--depth", "2", "--seed", "1"]) == 0
    return path


def _image(rng: np.random.Generator, shape: tuple[int, ...] = (70, 90)) -> np.ndarray:
    return (rng.random(shape) * 255).astype(np.uint8)


def _write_ngff(path: Path, image: np.ndarray, axes: str, version: str, scale: list[float]) -> Path:
    """An NGFF image written by ome-zarr (the reference implementation), one resolution level."""
    pytest.importorskip("ome_zarr")
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_multiscale

    fmt = FormatV05() if version == "0.5" else FormatV04()
    group = zarr.open_group(str(path), mode="w", zarr_format=3 if version == "0.5" else 2)
    kinds = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    axes_meta = [{"name": a, "type": kinds[a], **({"unit": "micrometer"} if a in "yx" else {})} for a in axes]
    write_multiscale([image], group, fmt=fmt, axes=axes_meta,
                     coordinate_transformations=[[{"type": "scale", "scale": scale}]])
    return path


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_open_ngff_reads_the_highest_level_lazily_with_its_pixel_size(tmp_path, rng, version):
    image = _image(rng, (2, 3, 40, 50))  # c, z, y, x
    path = _write_ngff(tmp_path / "img.ome.zarr", image, "czyx", version, [1.0, 2.0, PIXEL_UM, PIXEL_UM])
    assert is_omezarr(path)
    ngff = open_ngff(path)
    assert (ngff.version, ngff.axes) == (version, ("c", "z", "y", "x"))
    assert ngff.pixel_size == PixelSize(PIXEL_UM, PIXEL_UM, "micrometer")
    source = open_image(path)
    assert source.shape == (3, 40, 50, 2)  # z planes, H, W, channels
    np.testing.assert_array_equal(source.read(1, slice(5, 9), slice(0, 3)),
                                  np.moveaxis(image[:, 1, 5:9, 0:3], 0, -1))
    assert source.pixel_size == ngff.pixel_size


def test_plane_stack_folds_t_and_z_into_planes(rng):
    data = rng.random((2, 3, 4, 5, 6))  # t, c, z, y, x
    stack = PlaneStack(data, ("t", "c", "z", "y", "x"))
    assert stack.shape == (8, 3, 5, 6)
    np.testing.assert_array_equal(stack[5, slice(None), slice(1, 3), slice(None)], data[1, :, 1, 1:3, :])


def test_a_zarr_folder_without_ngff_metadata_is_not_omezarr(tmp_path):
    zarr.open_array(str(tmp_path / "plain.zarr"), mode="w", shape=(20, 20), dtype="uint8")
    assert not is_omezarr(tmp_path / "plain.zarr")
    with pytest.raises(NgffError, match="not an OME-Zarr image"):
        open_ngff(tmp_path / "plain.zarr")
    assert open_image(tmp_path / "plain.zarr").shape == (1, 20, 20, 1)  # still read as a plain zarr array


def test_unsupported_ngff_version_is_named(tmp_path):
    group = zarr.open_group(str(tmp_path / "old.zarr"), mode="w", zarr_format=2)
    group.attrs["multiscales"] = [{"version": "0.3", "axes": ["y", "x"], "datasets": [{"path": "0"}]}]
    with pytest.raises(ImageError, match="version '0.3' is not supported"):
        open_image(tmp_path / "old.zarr")


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_predict_writes_labels_into_the_images_labels_group(model_path, tmp_path, rng, version):
    """Round trip: an NGFF image written by ome-zarr, predicted by the CLI, read back by ome-zarr's reader."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    image = _image(rng)
    path = _write_ngff(tmp_path / "cells.ome.zarr", image[None], "cyx", version, [1.0, PIXEL_UM, PIXEL_UM])
    tifffile.imwrite(tmp_path / "same.tif", image)
    assert main(["predict", str(model_path), str(path), str(tmp_path / "same.tif"), "--out", str(tmp_path / "out"),
                 "-q"]) == 0
    expected = tifffile.imread(tmp_path / "out" / "same.tif")  # the same image through the TIFF path
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["same.tif"]

    nodes = list(Reader(parse_url(str(path / "labels" / "biounet")))())
    label_node = next(node for node in nodes if node.load(Label))
    labels = np.asarray(label_node.data[0])
    assert labels.shape == (1, 70, 90)  # the image's axes, one channel
    np.testing.assert_array_equal(labels[0], expected)
    transforms = label_node.metadata["coordinateTransformations"][0]
    assert transforms == [{"type": "scale", "scale": [1.0, PIXEL_UM, PIXEL_UM]}]  # pixel size kept
    labels_group = zarr.open_group(str(path / "labels"), mode="r")
    attrs = dict(labels_group.attrs)
    assert (attrs["ome"] if version == "0.5" else attrs)["labels"] == ["biounet"]
    label_attrs = dict(zarr.open_group(str(path / "labels" / "biounet"), mode="r").attrs)
    assert "image-label" in (label_attrs["ome"] if version == "0.5" else label_attrs)


def test_predict_out_zarr_from_an_ome_tiff_keeps_the_pixel_size(model_path, tmp_path, rng):
    image = _image(rng)
    tifffile.imwrite(tmp_path / "cells.ome.tif", image, ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": PIXEL_UM, "PhysicalSizeY": PIXEL_UM})
    out = tmp_path / "result.zarr"
    assert main(["predict", str(model_path), str(tmp_path / "cells.ome.tif"), "--out", str(out), "--instances",
                 "-q"]) == 0
    ngff = open_ngff(out)
    assert ngff.axes == ("y", "x") and ngff.pixel_size == PixelSize(PIXEL_UM, PIXEL_UM, "micrometer")
    assert ngff.array.shape == (70, 90) and ngff.array.dtype == np.uint32  # instance ids
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_out_zarr_takes_one_input(model_path, tmp_path, rng, capsys):
    for name in ("a.png", "b.png"):
        from PIL import Image

        Image.fromarray(_image(rng)).save(tmp_path / name)
    assert main(["predict", str(model_path), str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--out",
                 str(tmp_path / "x.zarr")]) == 2
    assert "give one input" in capsys.readouterr().err


def test_ome_tiff_pixel_size_is_read_and_written_with_the_outputs(model_path, tmp_path, rng):
    tifffile.imwrite(tmp_path / "cells.ome.tif", _image(rng), ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.5})
    assert open_image(tmp_path / "cells.ome.tif").pixel_size == PixelSize(0.5, 0.65, "micrometer")
    out = tmp_path / "out"
    assert main(["predict", str(model_path), str(tmp_path / "cells.ome.tif"), "--out", str(out),
                 "--save-probabilities", "-q"]) == 0
    for name in ("cells.tif", "cells_prob.tif"):
        with tifffile.TiffFile(out / name) as tif:
            assert ome_tiff_pixel_size(tif.ome_metadata) == PixelSize(0.5, 0.65, "micrometer")
    assert tifffile.imread(out / "cells.tif").shape == (70, 90)


def test_plain_tiff_outputs_stay_plain(model_path, tmp_path, rng):
    tifffile.imwrite(tmp_path / "plain.tif", _image(rng))
    assert main(["predict", str(model_path), str(tmp_path / "plain.tif"), "--out", str(tmp_path / "out"), "-q"]) == 0
    with tifffile.TiffFile(tmp_path / "out" / "plain.tif") as tif:
        assert not tif.is_ome


def test_label_writer_leaves_nothing_behind_on_error(tmp_path):
    layout = LabelLayout(("y", "x"), (8, 8), (1.0, 1.0), (None, None))
    with pytest.raises(RuntimeError, match="boom"), LabelImageWriter(layout, np.uint8, out=tmp_path / "x.zarr"):
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_ome_tiff_pixel_size_needs_both_axes():
    xml = '<OME><Image><Pixels PhysicalSizeX="0.5"/></Image></OME>'
    assert ome_tiff_pixel_size(xml) is None and ome_tiff_pixel_size(None) is None
    assert ome_tiff_pixel_size("<not xml") is None
    with pytest.raises(ValueError, match="positive"):
        PixelSize(0.0, 1.0)


def test_instances_go_beside_the_class_labels_in_the_image(model_path, tmp_path, rng):
    image = _image(rng, (2, 60, 70))  # z, y, x: two planes
    path = _write_ngff(tmp_path / "stack.ome.zarr", image, "zyx", "0.5", [2.0, PIXEL_UM, PIXEL_UM])
    assert main(["predict", str(model_path), str(path), "--out", str(tmp_path / "out"), "--instances", "-q"]) == 0
    classes = np.asarray(zarr.open_array(str(path / "labels" / "biounet" / "0"), mode="r"))
    instances = open_ngff(path / "labels" / "biounet_instances")
    assert classes.shape == instances.array.shape == (2, 60, 70)
    assert instances.scale == (2.0, PIXEL_UM, PIXEL_UM)
    from biounet.inference.instances import instances_from_labels

    for z in range(2):  # the init model's checkpoint names no target: defaults, as for TIFF outputs
        np.testing.assert_array_equal(instances.array[z], instances_from_labels(classes[z]))
    labels_attrs = dict(zarr.open_group(str(path / "labels"), mode="r").attrs)["ome"]
    assert labels_attrs["labels"] == ["biounet", "biounet_instances"]
    assert list((tmp_path / "out").iterdir()) == []  # nothing written to the output folder for it
