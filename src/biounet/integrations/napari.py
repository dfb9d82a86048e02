"""napari widgets: segment an image layer with a biounet model, train one from painted labels, and sample data.

The napari plugin (manifest ``biounet/napari.yaml``, installed with ``pip install 'biounet[napari]'``) offers:

- :class:`SegmentWidget`: segments the chosen image layer with a model file (``model.pt`` or ``.onnx``), with the
  tile size, precision, test-time augmentation and instance separation of ``biounet predict``; adds a Labels layer
  (and the class probabilities on request) on the image's scale, so it overlays the image. A 3D U-Net (Cicek et
  al. 2016) segments a ``(Z, Y, X)`` layer as one volume, tiled in 3D, into 3D labels and 3D objects; a 2D model
  segments a stack plane by plane; a 3D model given a 2D layer is refused, naming both.
- :class:`TrainWidget`: trains a U-Net from an image layer and a painted Labels layer within a time budget (the
  pair is written to a temporary ``pairs`` dataset and :func:`biounet.training.train.fit` runs on it), showing the
  loss. A ``(Z, Y, X)`` pair trains a 3D U-Net (``biounet train``'s volume defaults; the voxel size from the image
  layer's scale).
- :func:`sample_cells`: synthetic touching cells (:mod:`biounet.data.synthetic`) with their true instances.

Both widgets run their work in a napari worker thread (:func:`napari.qt.threading.thread_worker`), with a progress
bar and a Cancel button. The computations themselves (:func:`segment_array`, :func:`train_on_pair`) are plain
functions of arrays and take a ``progress`` callback and a ``cancel`` event.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from qtpy.QtCore import QObject, Signal

from biounet.core.device import PRECISIONS
from biounet.inference.instances import InstanceParams, instances_from_outputs
from biounet.inference.predictor import Predictor
from biounet.inference.segments import SegmentParams
from biounet.training.events import StepEvent, ValidationEvent

logger = logging.getLogger(__name__)

class Cancelled(Exception):
    """The user pressed Cancel; the work stopped at the next tile or training step."""


# --- the computations -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentSettings:
    """What :func:`segment_array` does: ``tile`` None chooses it from the memory budget (as ``biounet predict``)."""

    tile: int | None = None
    instances: bool = True
    probabilities: bool = False
    batch_size: int = 1


@dataclass
class SegmentResult:
    """Labels ``(H, W)`` or ``(Z, H, W)`` (instance ids, or class ids without instances) and, if asked for, class
    probabilities ``(K, H, W)`` or ``(Z, K, H, W)``. A 3D U-Net's result is one volume: ``in_shape`` is its input
    tile ``(z, y, x)`` (None for 2D models) and its instances are 3D objects."""

    labels: npt.NDArray[np.int32]
    probabilities: npt.NDArray[np.float32] | None
    class_names: list[str]
    in_tile: int
    in_shape: tuple[int, int, int] | None = None


def image_planes(data: Any, *, rgb: bool = False) -> list[npt.NDArray[Any]]:
    """The planes of napari image data as ``(H, W, C)`` arrays: ``(H, W)``, RGB(A) ``(H, W, 3|4)``, or a stack
    ``(Z, H, W)`` (``(Z, H, W, C)`` when ``rgb``). A multiscale layer's highest resolution is used.

    Raises
    ------
    ValueError
        For other shapes (e.g. a time-lapse of stacks).
    """
    if isinstance(data, (list, tuple)):  # multiscale: highest resolution first
        data = data[0]
    shape = tuple(data.shape)
    spatial = len(shape) - (1 if rgb else 0)
    if spatial == 2:
        return [np.asarray(data) if rgb else np.asarray(data)[..., None]]
    if spatial == 3:
        return [np.asarray(data[z]) if rgb else np.asarray(data[z])[..., None] for z in range(shape[0])]
    raise ValueError(f"image layer of shape {shape} is not supported; expected (H, W), (H, W, 3) or (Z, H, W)")


def segment_array(
    predictor: Predictor,
    data: Any,
    *,
    rgb: bool = False,
    settings: SegmentSettings = SegmentSettings(),
    instance_settings: tuple[str | None, InstanceParams | SegmentParams] = ("paper", InstanceParams()),
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> SegmentResult:
    """Segment napari image data plane by plane with the overlap-tile strategy (raw pixels in; the predictor's
    normalisation is applied per plane, as ``biounet predict`` does), through
    :func:`biounet.inference.predict.segment_image`; instances as ``biounet predict --instances`` makes them
    (:func:`biounet.inference.instances.instances_from_outputs`) from ``instance_settings`` (a checkpoint's:
    :func:`biounet.inference.settings.instance_settings`).

    ``progress(done, total)`` is called with tile counts; setting ``cancel`` stops at the next batch of tiles by
    raising :class:`Cancelled`. A 3D U-Net's data go to :func:`segment_volume_array`.
    """
    from biounet.inference.predict import PredictOptions, segment_image, tile_for
    from biounet.inference.tiling import count_tiles

    if predictor.dims == 3:
        return segment_volume_array(predictor, data, rgb=rgb, settings=settings, instance_settings=instance_settings,
                                    progress=progress, cancel=cancel)
    planes = image_planes(data, rgb=rgb)
    height, width, channels = planes[0].shape
    if channels != predictor.in_channels:
        raise ValueError(f"image has {channels} channel(s), the model takes {predictor.in_channels}")
    options = PredictOptions(tile=settings.tile, batch_size=settings.batch_size)
    options = replace(options, tile=tile_for(predictor, (height, width), options))
    total = len(planes) * count_tiles((height, width), predictor.geometry(options.tile))
    step = _tile_steps(total, progress, cancel)
    labels, probabilities = [], []
    target, params = instance_settings
    for plane in planes:
        result = segment_image(predictor, plane, raw=True, options=options, progress=step)
        labels.append(instances_from_outputs(result.labels, result.probabilities, target=target, params=params)
                      if settings.instances else result.labels.astype(np.int32))
        if settings.probabilities:
            probabilities.append(result.probabilities)
    single = len(planes) == 1
    return SegmentResult(
        labels=labels[0] if single else np.stack(labels),
        probabilities=(probabilities[0] if single else np.stack(probabilities)) if probabilities else None,
        class_names=list(predictor.class_names) or [f"class{k}" for k in range(predictor.num_classes)],
        in_tile=options.tile,
    )


def _tile_steps(total: int, progress: Callable[[int, int], None] | None,
                cancel: threading.Event | None) -> Callable[[int], None]:
    """A callback for ``n`` more tiles done: reports ``progress(done, total)``, raises :class:`Cancelled` once
    ``cancel`` is set."""
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled after {done} of {total} tiles")
        if progress is not None:
            progress(done, total)

    return step


def layer_volume(data: Any, *, rgb: bool = False) -> npt.NDArray[Any]:
    """napari image data ``(Z, Y, X)`` (``(Z, Y, X, C)`` when ``rgb``) as a ``(Z, Y, X, C)`` volume; a multiscale
    layer's highest resolution.

    Raises
    ------
    ValueError
        For a 2D layer (a 3D U-Net segments volumes) or more than three spatial axes.
    """
    if isinstance(data, (list, tuple)):  # multiscale: highest resolution first
        data = data[0]
    spatial = len(data.shape) - (1 if rgb else 0)
    if spatial != 3:
        what = "a 2D image" if spatial == 2 else f"{spatial} spatial axes"
        raise ValueError(f"the image layer (shape {tuple(data.shape)}) has {what}, but the model is a 3D U-Net "
                         "trained on volumes: choose a (Z, Y, X) layer, or a 2D model for images")
    volume = np.asarray(data)
    return volume if rgb else volume[..., None]


def segment_volume_array(
    predictor: Predictor,
    data: Any,
    *,
    rgb: bool = False,
    settings: SegmentSettings = SegmentSettings(),
    instance_settings: tuple[str | None, InstanceParams | SegmentParams] = ("paper", InstanceParams()),
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> SegmentResult:
    """Segment a ``(Z, Y, X)`` layer with a 3D U-Net (Cicek et al. 2016) as ``biounet predict`` does a volume file:
    the volume normalised as a whole, tiled in 3D within the memory budget
    (:func:`biounet.inference.predict_volume.segment_volume`; ``settings.tile`` fixes the in-plane tile side), its
    instances 3D objects. Probabilities come back ``(Z, K, Y, X)``, as for a stack of planes.

    Raises
    ------
    ValueError
        For a 2D layer, or another channel count than the model takes.
    """
    from biounet.inference.predict import resolve_memory_budget
    from biounet.inference.predict_volume import count_tiles_for, segment_volume, volume_tile

    volume = layer_volume(data, rgb=rgb)
    if volume.shape[-1] != predictor.in_channels:
        raise ValueError(f"image has {volume.shape[-1]} channel(s), the model takes {predictor.in_channels}")
    shape = (int(volume.shape[0]), int(volume.shape[1]), int(volume.shape[2]))
    budget = resolve_memory_budget(None).bytes
    in_shape = volume_tile(predictor, shape, budget, batch_size=settings.batch_size, tile=settings.tile)
    step = _tile_steps(count_tiles_for(predictor, shape, in_shape), progress, cancel)
    from biounet.data.volumes import normalize_volume

    result = segment_volume(predictor, normalize_volume(volume, predictor.normalization), memory_budget=budget,
                            batch_size=settings.batch_size, tile=settings.tile, progress=step)
    target, params = instance_settings
    labels = (instances_from_outputs(result.labels, result.probabilities, target=target, params=params)
              if settings.instances else result.labels.astype(np.int32))
    return SegmentResult(
        labels=labels.astype(np.int32),
        probabilities=np.moveaxis(result.probabilities, 0, 1) if settings.probabilities else None,
        class_names=list(predictor.class_names) or [f"class{k}" for k in range(predictor.num_classes)],
        in_tile=result.in_shape[-1], in_shape=result.in_shape,
    )


@dataclass(frozen=True)
class TrainSettings:
    """A small training run for the widget: the fast recipe, no validation image, stopped by the time budget.

    ``dims`` 3 trains a 3D U-Net on a ``(Z, Y, X)`` pair (``biounet train``'s volume defaults,
    :data:`biounet.training.config.VOLUME_DEFAULTS`, at ``base_channels``): ``tile`` is then the in-plane window
    side, ``tile_z`` the window depth (None: physically cubic from ``voxel_size``, as ``biounet train``), and
    ``voxel_size`` the ``(z, y, x)`` voxel size in µm (None: isotropic)."""

    time_budget_s: float = 120.0
    base_channels: int = 16
    tile: int = 316
    label_kind: str = "instances"  # "classes" when the painted ids are classes
    lr: float = 2e-3
    seed: int = 0
    init: str | None = None  # fine-tune this trained model.pt (its network and normalisation are kept)
    dims: int = 2
    voxel_size: tuple[float, float, float] | None = None
    tile_z: int | None = None

    def __post_init__(self) -> None:
        if self.time_budget_s <= 0:
            raise ValueError(f"time budget must be > 0 seconds, got {self.time_budget_s}")
        if self.dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {self.dims!r}")


def train_config(data_dir: str | Path, settings: TrainSettings) -> Any:
    """The :class:`~biounet.training.config.TrainConfig` of a widget run (as :func:`biounet.integrations.demo.demo_config`)."""
    from biounet.training.augment import AugmentConfig
    from biounet.training.autoconfig import take_architecture
    from biounet.training.config import VOLUME_DEFAULTS, TrainConfig

    network: dict[str, Any] = {"base_channels": settings.base_channels, "batch_norm": True}  # the fast recipe
    volume: dict[str, Any] = {}
    if settings.dims == 3:  # a 3D U-Net (Cicek et al. 2016): biounet train's volume defaults
        network = {key: value for key, value in VOLUME_DEFAULTS.items() if key not in ("tile", "augment")} | network
        volume = {"voxel_size": settings.voxel_size, "tile_z": settings.tile_z}
    if settings.init:
        take_architecture(network, settings.init)  # a fine-tuned model keeps its network and normalisation
    return TrainConfig(
        data=str(data_dir), layout="pairs" if settings.dims == 2 else "volumes", label_kind=settings.label_kind,
        recipe="fast", tile=settings.tile, batch_size=2 if settings.dims == 2 else 1,
        time_budget_s=settings.time_budget_s, precision="fp32", lr=settings.lr, warmup_steps=20, val_every=100,
        validation_fraction=0.0, workers=0, seed=settings.seed, init=settings.init or None,
        augment=replace(AugmentConfig(), image_order=1, **(VOLUME_DEFAULTS["augment"] if settings.dims == 3 else {})),
        **network, **volume,
    )


def write_pair(image: npt.NDArray[Any], labels: npt.NDArray[Any], out_dir: str | Path, name: str = "painted", *,
               voxel_size: tuple[float, float, float] | None = None) -> Path:
    """Write an image and its painted labels as a ``pairs`` dataset: ``images/NAME.tif`` and ``labels/NAME.tif``;
    a ``(Z, Y, X)`` pair as OME-TIFF stacks declaring their z axis (and ``voxel_size``, µm), which
    :func:`biounet.data.datasets.detect_layout` reads as ``volumes``.

    Raises
    ------
    ValueError
        If the image is neither 2-D nor 3-D single-channel, the labels' shape differs, or nothing is painted.
    """
    from biounet.data.files import check_writable_dir
    from biounet.data.images import write_tiff
    from biounet.inference.predict_volume import write_volume_tiff

    image, labels = np.asarray(image), np.asarray(labels)
    if image.ndim not in (2, 3):
        raise ValueError(f"training takes a 2-D (Y, X) or 3-D (Z, Y, X) single-channel image, got shape "
                         f"{image.shape}")
    if labels.shape != image.shape:
        raise ValueError(f"labels {labels.shape} and image {image.shape} must have the same shape")
    if not labels.any():
        raise ValueError("the labels layer is empty; paint some cells first")
    if labels.min() < 0 or labels.max() > np.iinfo(np.uint16).max:
        raise ValueError(f"label ids must be in 0..65535, got {labels.min()}..{labels.max()}")
    root = check_writable_dir(out_dir)
    images, label_dir = check_writable_dir(root / "images"), check_writable_dir(root / "labels")
    if image.ndim == 3:
        write_volume_tiff(images / f"{name}.tif", image, voxel_size)
        write_volume_tiff(label_dir / f"{name}.tif", labels.astype(np.uint16), voxel_size)
        return root
    write_tiff(images / f"{name}.tif", image)
    write_tiff(label_dir / f"{name}.tif", labels.astype(np.uint16))
    return root


def train_on_pair(
    image: npt.NDArray[Any],
    labels: npt.NDArray[Any],
    run_dir: str | Path,
    *,
    settings: TrainSettings = TrainSettings(),
    device: str = "auto",
    progress: Callable[[StepEvent | ValidationEvent], None] | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Train on one painted image; returns ``run_dir/model.pt``.

    The pair goes to ``run_dir/data`` (a ``pairs`` dataset), the run to ``run_dir/run``. Setting ``cancel`` stops
    at the next step by raising :class:`Cancelled` (no ``model.pt`` is written). A ``(Z, Y, X)`` pair needs
    ``settings.dims`` 3 (a 3D U-Net); a 2-D pair ``dims`` 2.
    """
    from biounet.training.train import fit

    run_dir = Path(run_dir)
    if settings.dims == 3 and np.ndim(image) != 3:
        raise ValueError(f"a 3D U-Net trains on a (Z, Y, X) volume, got an image of shape {np.shape(image)}")
    if settings.dims == 2 and np.ndim(image) == 3:
        raise ValueError(f"training a 2D U-Net takes a 2-D single-channel image, got shape {np.shape(image)}; a "
                         "(Z, Y, X) volume trains a 3D U-Net (dims=3)")
    data_dir = write_pair(image, labels, run_dir / "data", voxel_size=settings.voxel_size)
    config = train_config(data_dir, settings)

    def on_event(event: StepEvent | ValidationEvent) -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"training cancelled at step {event.step}")
        if progress is not None:
            progress(event)

    fit(config, run_dir / "run", device=device, progress=on_event)
    return run_dir / "run" / "model.pt"


def sample_cells() -> list[tuple[Any, dict[str, Any], str]]:
    """napari sample data: a 256x256 synthetic image of touching cells and its true instances."""
    from biounet.data.synthetic import make_sample

    sample = make_sample("cells", size=(256, 256), rng=0)
    assert sample.instances is not None  # synthetic samples are labelled
    return [
        (sample.image[..., 0], {"name": "synthetic cells"}, "image"),
        (sample.instances, {"name": "synthetic cells (true instances)", "visible": False}, "labels"),
    ]


# --- the widgets --------------------------------------------------------------------------------------------------


class _Relay(QObject):
    """Carries values from a worker thread to the GUI thread (a Qt signal, queued across threads)."""

    value = Signal(object)


def _layers_of(viewer: Any, kind: str) -> Callable[[Any], list[tuple[str, Any]]]:
    def choices(_widget: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in viewer.layers if type(layer).__name__ == kind]

    return choices


class _WorkerWidget(Container):
    """A widget that runs one job at a time in a worker thread, with a progress bar, a status line and Cancel."""

    def __init__(self, napari_viewer: Any, widgets: list[Any], run_text: str) -> None:
        self.viewer = napari_viewer
        self.run_button = PushButton(text=run_text)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress_bar = ProgressBar(value=0, min=0, max=1, label="progress")
        self.status = Label(value="")
        super().__init__(widgets=[*widgets, self.run_button, self.cancel_button, self.progress_bar, self.status])
        self.worker: Any = None
        self._cancel = threading.Event()
        self._relay = _Relay()
        self._relay.value.connect(self._on_progress)
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(lambda _event: self.reset_choices())

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def cancel(self) -> None:
        """Ask the running job to stop at its next tile or step."""
        self._cancel.set()
        self.status.value = "cancelling..."

    def _launch(self, job: Callable[[], Any], on_result: Callable[[Any], None]) -> Any:
        from napari.qt.threading import create_worker

        self._cancel.clear()
        worker = create_worker(job, _start_thread=False, _ignore_errors=True)  # errors go to _on_error
        worker.returned.connect(on_result)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_button.enabled, self.cancel_button.enabled = False, True
        worker.start()
        return worker

    def _on_progress(self, value: Any) -> None:  # overridden
        pass

    def _on_error(self, error: BaseException) -> None:
        if isinstance(error, Cancelled):
            self.status.value = str(error)
        else:
            logger.error("biounet: %s", error)
            self.status.value = f"error: {error}"

    def _on_finished(self) -> None:
        self.worker = None
        self.run_button.enabled, self.cancel_button.enabled = True, False


class SegmentWidget(_WorkerWidget):
    """Segment the chosen image layer with a biounet model; adds a Labels layer (and probabilities on request)."""

    def __init__(self, napari_viewer: Any) -> None:
        self.image_layer = ComboBox(label="image", choices=_layers_of(napari_viewer, "Image"))
        self.model_file = FileEdit(label="model", filter="*.pt *.onnx", mode="r")
        self.tile = SpinBox(label="tile (0 = auto)", value=0, min=0, max=4096, step=16)
        self.precision = ComboBox(label="precision", choices=list(PRECISIONS), value="fp32")
        self.tta = CheckBox(text="test-time augmentation (8 flips and rotations)", value=False)
        self.instances = CheckBox(text="separate touching cells (instances)", value=True)
        self.probabilities = CheckBox(text="add class probabilities", value=False)
        super().__init__(napari_viewer, [self.image_layer, self.model_file, self.tile, self.precision, self.tta,
                                         self.instances, self.probabilities], "Segment")

    def start(self) -> Any:
        """Start segmenting in a worker thread; returns the worker (None when the inputs are missing)."""
        layer, model = self.image_layer.value, Path(self.model_file.value)
        if layer is None or not model.is_file():
            self.status.value = "choose an image layer and a model file (.pt or .onnx)"
            return None
        settings = SegmentSettings(tile=self.tile.value or None, instances=self.instances.value,
                                   probabilities=self.probabilities.value)
        precision, tta, relay, cancel = self.precision.value, self.tta.value, self._relay, self._cancel
        data, rgb = layer.data, bool(getattr(layer, "rgb", False))

        def job() -> SegmentResult:
            from biounet.inference.predict import load_predictor
            from biounet.inference.settings import instance_settings

            predictor = load_predictor(model, precision=precision, tta=tta)
            post = instance_settings(model) if settings.instances else (None, InstanceParams())
            return segment_array(predictor, data, rgb=rgb, settings=settings, instance_settings=post,
                                 progress=lambda done, total: relay.value.emit((done, total)), cancel=cancel)

        self.status.value = f"segmenting {layer.name}..."
        return self._launch(job, lambda result: self._add_layers(layer, result))

    def _on_progress(self, value: Any) -> None:
        done, total = value
        self.progress_bar.max, self.progress_bar.value = total, done

    def _add_layers(self, layer: Any, result: SegmentResult) -> None:
        place = {"scale": layer.scale[-result.labels.ndim:], "translate": layer.translate[-result.labels.ndim:]}
        kind = "instances" if self.instances.value else "labels"
        self.viewer.add_labels(result.labels, name=f"{layer.name} {kind}", **place)
        if result.probabilities is not None:
            for k, name in enumerate(result.class_names[1:], start=1):
                self.viewer.add_image(result.probabilities[..., k, :, :], name=f"{layer.name} p({name})",
                                      colormap="magma", blending="additive", contrast_limits=(0, 1), **place)
        count = f", {int(result.labels.max())} cells" if self.instances.value else ""
        tiles = (f"{result.in_tile}-px tiles" if result.in_shape is None else
                 "x".join(map(str, result.in_shape)) + "-voxel (z, y, x) 3D tiles")
        self.status.value = f"done: {layer.name} ({tiles}{count})"


def volume_settings(layer: Any) -> dict[str, Any]:
    """The :class:`TrainSettings` fields a ``(Z, Y, X)`` image layer sets (a 3D U-Net: ``dims`` 3, the volume
    defaults' in-plane window, the layer's scale as the voxel size unless it is napari's default of 1); none for a
    2-D or RGB layer."""
    from biounet.training.config import VOLUME_DEFAULTS

    if np.ndim(layer.data) != 3 or bool(getattr(layer, "rgb", False)):
        return {}
    scale = tuple(float(v) for v in layer.scale[-3:])
    return {"dims": 3, "tile": int(VOLUME_DEFAULTS["tile"]), "voxel_size": None if scale == (1.0, 1.0, 1.0) else scale}


class TrainWidget(_WorkerWidget):
    """Train a U-Net from an image layer and a painted Labels layer within a time budget, showing the loss."""

    def __init__(self, napari_viewer: Any) -> None:
        self.image_layer = ComboBox(label="image", choices=_layers_of(napari_viewer, "Image"))
        self.labels_layer = ComboBox(label="labels", choices=_layers_of(napari_viewer, "Labels"))
        self.label_kind = ComboBox(label="painted ids are", choices=["instances", "classes"], value="instances")
        self.time_budget = FloatSpinBox(label="time budget (s)", value=120.0, min=5.0, max=86400.0, step=30.0)
        self.base_channels = SpinBox(label="base channels", value=16, min=4, max=64, step=4)
        self.tile = SpinBox(label="tile (16k + 60)", value=316, min=188, max=1084, step=16)
        self.init_model = FileEdit(label="fine-tune model (empty: from scratch)", mode="r", value="",
                                   filter="*.pt")
        self.run_folder = FileEdit(label="run folder (empty: temporary)", mode="d", value="")
        self.loss = Label(value="loss: -")
        super().__init__(napari_viewer, [self.image_layer, self.labels_layer, self.label_kind, self.time_budget,
                                         self.base_channels, self.tile, self.init_model, self.run_folder, self.loss],
                         "Train")
        self.losses: list[float] = []
        self.model_path: Path | None = None

    def start(self) -> Any:
        """Start training in a worker thread; returns the worker (None when the inputs are missing)."""
        image, labels = self.image_layer.value, self.labels_layer.value
        if image is None or labels is None:
            self.status.value = "choose an image layer and a painted labels layer"
            return None
        try:
            init = str(self.init_model.value)
            settings = TrainSettings(time_budget_s=float(self.time_budget.value), tile=int(self.tile.value),
                                     base_channels=int(self.base_channels.value), label_kind=str(self.label_kind.value),
                                     init=init if init not in ("", ".") else None, **volume_settings(image))
            train_config("<check>", settings)  # an invalid tile size or model file is reported now
        except (ValueError, FileNotFoundError) as err:
            self.status.value = f"error: {err}"
            return None
        folder = str(self.run_folder.value)
        run_dir = Path(folder) if folder not in ("", ".") else Path(tempfile.mkdtemp(prefix="biounet-napari-"))
        image_data, label_data = np.asarray(image.data), np.asarray(labels.data)
        relay, cancel = self._relay, self._cancel
        self.losses, self.model_path = [], None
        self.progress_bar.max, self.progress_bar.value = int(settings.time_budget_s), 0

        def job() -> Path:
            return train_on_pair(image_data, label_data, run_dir, settings=settings, progress=relay.value.emit,
                                 cancel=cancel)

        what = (f"a 3D U-Net ({settings.tile}-px windows in-plane; the tile field is for 2D)"
                if settings.dims == 3 else "a U-Net")
        self.status.value = f"training {what} in {run_dir}..."
        return self._launch(job, self._on_trained)

    def _on_progress(self, value: Any) -> None:
        if isinstance(value, StepEvent):
            self.losses.append(value.loss)
            recent = float(np.mean(self.losses[-20:]))
            self.loss.value = f"step {value.step}: loss {value.loss:.4f} (mean of last 20: {recent:.4f})"
            self.progress_bar.value = min(int(value.elapsed_s), self.progress_bar.max)

    def _on_trained(self, model_path: Path) -> None:
        self.model_path = model_path
        self.progress_bar.value = self.progress_bar.max
        self.status.value = f"model: {model_path}"


__all__ = [
    "Cancelled", "SegmentResult", "SegmentSettings", "SegmentWidget", "TrainSettings", "TrainWidget", "image_planes",
    "layer_volume", "sample_cells", "segment_array", "segment_volume_array", "train_config",
    "train_on_pair", "volume_settings", "write_pair",
]
