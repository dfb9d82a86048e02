"""The napari plugin through a real, hidden viewer: manifest, sample data, the segment and train widgets."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before napari creates its QApplication


def _start_virtual_display() -> subprocess.Popen[bytes] | None:
    """An Xvfb server for the real viewer's OpenGL canvas where there is no display but Xvfb is installed (CI:
    ``scripts/setup.sh`` installs Debian's xvfb where it can); stopped when the tests end."""
    if os.environ.get("DISPLAY") or shutil.which("Xvfb") is None:
        return None
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                              pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    if not number:
        server.terminate()
        return None
    os.environ["DISPLAY"] = f":{number}"
    atexit.register(server.terminate)
    return server


VIRTUAL_DISPLAY = _start_virtual_display()
napari = pytest.importorskip("napari")
pytest.importorskip("magicgui")

import biounet
from biounet.core.model import ModelConfig, UNet
from biounet.data.checkpoint import model_payload, save_checkpoint
from biounet.data.normalization import normalize
from biounet.inference.instances import instances_from_foreground
from biounet.integrations.napari import SegmentWidget, TrainWidget, sample_cells

MANIFEST = Path(biounet.__file__).parent / "napari.yaml"


def threshold_model(path: Path, threshold: float = 0.5) -> Path:
    """A depth-2, base-4 U-Net whose weights make it predict class 1 exactly where the normalised image exceeds
    ``threshold``: the image is passed through the top level's convolutions (centre taps of 1) and the skip
    connection, everything else is 0, and the head maps ``x`` to logits ``(0, 50 (x - threshold))``."""
    model = UNet(ModelConfig(depth=2, base_channels=4))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for conv in (model.encoder[0][0], model.encoder[0][2], model.decoder[-1][2]):
            conv.weight[0, 0, 1, 1] = 1.0
        model.decoder[-1][0].weight[0, 4, 1, 1] = 1.0  # input channels: 4 up-sampled, then the 4 of the skip
        model.head.weight[1, 0, 0, 0] = 50.0
        model.head.bias[1] = -50.0 * threshold
    return save_checkpoint(path, model_payload(model, normalization="percentile", target="paper"))


def _wait(widget, timeout_s: float = 120.0) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout_s
    while widget.busy:
        QApplication.processEvents()
        if time.monotonic() > end:
            raise TimeoutError(f"worker still running after {timeout_s} s")
        time.sleep(0.01)
    QApplication.processEvents()


def _opengl_available() -> bool:
    """Whether Qt can make an OpenGL context current (napari's canvas needs one; Qt's offscreen platform has one
    only on an X display, e.g. under Xvfb)."""
    from qtpy.QtGui import QOffscreenSurface, QOpenGLContext
    from qtpy.QtWidgets import QApplication

    _app = QApplication.instance() or QApplication([])
    context, surface = QOpenGLContext(), QOffscreenSurface()
    surface.create()
    return bool(context.create() and context.makeCurrent(surface))


@pytest.fixture
def viewer():
    """The real viewer, hidden, where an OpenGL context exists (an X display: ``xvfb-run pytest``); elsewhere napari's
    ``ViewerModel``, the same layer list and ``add_*`` methods without the canvas (the widgets use only those)."""
    if _opengl_available():
        viewer = napari.Viewer(show=False)
        yield viewer
        viewer.close()
    else:
        from napari.components import ViewerModel

        yield ViewerModel()


def _dock(viewer, widget) -> None:
    if hasattr(viewer, "window"):
        viewer.window.add_dock_widget(widget)


def test_the_real_viewer_is_used_where_a_display_exists(viewer):
    """Where Xvfb is installed (or a display is set) the widgets are tested in the real ``napari.Viewer``."""
    if not (os.environ.get("DISPLAY") and _opengl_available()):
        pytest.skip("no X display and no Xvfb: the widgets are tested on napari's ViewerModel")
    assert isinstance(viewer, napari.Viewer) and viewer.window is not None


def test_manifest_validates_and_its_commands_import():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    manifest.validate_imports()
    assert manifest.name == "biounet"
    assert {w.command for w in manifest.contributions.widgets} == {"biounet.segment", "biounet.training.train"}
    assert [s.key for s in manifest.contributions.sample_data] == ["cells"]


def test_manifest_is_the_installed_entry_point():
    from importlib.metadata import entry_points

    points = [p for p in entry_points(group="napari.manifest") if p.name == "biounet"]
    if not points:
        pytest.skip("biounet is not installed (PYTHONPATH run); the entry point is in pyproject.toml")
    assert points[0].value == "biounet:napari.yaml"


def test_sample_cells_are_an_image_and_its_instances():
    (image, image_meta, image_kind), (labels, _, labels_kind) = sample_cells()
    assert (image_kind, labels_kind) == ("image", "labels")
    assert image.shape == labels.shape == (256, 256)
    assert labels.max() >= 10 and image_meta["name"] == "synthetic cells"


def test_segment_widget_adds_labels_with_the_expected_cells(viewer, tmp_path):
    model = threshold_model(tmp_path / "threshold.pt")
    for data, meta, kind in sample_cells():
        getattr(viewer, f"add_{kind}")(data, **meta)
    viewer.layers["synthetic cells"].scale = (0.5, 0.5)
    widget = SegmentWidget(viewer)
    _dock(viewer, widget)
    widget.image_layer.value = viewer.layers["synthetic cells"]
    widget.model_file.value = model
    widget.probabilities.value = True
    assert widget.start() is not None
    _wait(widget)
    assert widget.status.value.startswith("done"), widget.status.value
    layer = viewer.layers["synthetic cells instances"]
    assert isinstance(layer, napari.layers.Labels)
    np.testing.assert_array_equal(layer.scale, (0.5, 0.5))  # overlays the image
    # the threshold network's instances are the components of (image > 0.5): touching cells may merge
    image = viewer.layers["synthetic cells"].data
    expected = instances_from_foreground(normalize(image, "percentile") > 0.5)
    np.testing.assert_array_equal(layer.data, expected)
    true_cells = int(viewer.layers["synthetic cells (true instances)"].data.max())
    assert 0.3 * true_cells <= layer.data.max() <= 1.5 * true_cells
    assert widget.progress_bar.value == widget.progress_bar.max > 0
    probability = viewer.layers["synthetic cells p(class1)"].data
    np.testing.assert_array_equal(probability > 0.5, normalize(image, "percentile") > 0.5)


def test_segment_widget_cancel_stops_and_adds_nothing(viewer, tmp_path):
    model = threshold_model(tmp_path / "threshold.pt")
    viewer.add_image(np.random.default_rng(0).random((600, 600)).astype(np.float32), name="noise")
    widget = SegmentWidget(viewer)
    widget.image_layer.value = viewer.layers["noise"]
    widget.model_file.value = model
    widget.tile.value = 60  # many small tiles, so the cancel lands before the end
    widget.start()
    widget.cancel()
    _wait(widget)
    assert "cancelled" in widget.status.value
    assert [layer.name for layer in viewer.layers] == ["noise"]


def test_segment_widget_asks_for_a_model(viewer):
    viewer.add_image(np.zeros((32, 32), np.float32), name="empty")
    widget = SegmentWidget(viewer)
    assert widget.start() is None
    assert "model file" in widget.status.value


def test_train_widget_trains_from_painted_labels_and_shows_the_loss(viewer, tmp_path):
    (image, _, _), (labels, _, _) = sample_cells()
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="painted")
    widget = TrainWidget(viewer)
    widget.image_layer.value, widget.labels_layer.value = viewer.layers["cells"], viewer.layers["painted"]
    widget.time_budget.value, widget.base_channels.value, widget.tile.value = 5.0, 4, 188  # a fast run
    widget.run_folder.value = tmp_path / "run"
    assert widget.start() is not None
    _wait(widget, timeout_s=180)
    assert widget.model_path == tmp_path / "run" / "run" / "model.pt" and widget.model_path.is_file()
    assert widget.losses and all(np.isfinite(widget.losses))
    assert widget.loss.value.startswith("step ")
    assert (tmp_path / "run" / "data" / "images" / "painted.tif").is_file()


def test_train_widget_refuses_an_empty_labels_layer(viewer, tmp_path):
    viewer.add_image(np.zeros((64, 64), np.float32), name="cells")
    viewer.add_labels(np.zeros((64, 64), np.int32), name="painted")
    widget = TrainWidget(viewer)
    widget.image_layer.value, widget.labels_layer.value = viewer.layers["cells"], viewer.layers["painted"]
    widget.run_folder.value = tmp_path / "run"
    widget.start()
    _wait(widget)
    assert "paint some cells" in widget.status.value


def test_train_widget_fine_tunes_a_trained_model(viewer, tmp_path):
    """With a model file the run starts from its weights, keeping its network (the width field is ignored)."""
    from biounet.data.checkpoint import load_checkpoint

    torch.manual_seed(0)
    start = save_checkpoint(tmp_path / "start.pt", model_payload(UNet(ModelConfig(base_channels=4)),
                                                                 normalization="percentile"))
    (image, _, _), (labels, _, _) = sample_cells()
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="painted")
    widget = TrainWidget(viewer)
    widget.image_layer.value, widget.labels_layer.value = viewer.layers["cells"], viewer.layers["painted"]
    widget.time_budget.value, widget.base_channels.value, widget.tile.value = 5.0, 16, 188
    widget.init_model.value, widget.run_folder.value = start, tmp_path / "run"
    assert widget.start() is not None
    _wait(widget, timeout_s=180)
    assert widget.model_path is not None and widget.model_path.is_file(), widget.status.value
    trained = load_checkpoint(widget.model_path)
    assert trained["train_config"]["init"] == str(start) and trained["model_config"]["base_channels"] == 4
    widget.init_model.value = tmp_path / "missing.pt"
    assert widget.start() is None and "missing.pt" in widget.status.value
