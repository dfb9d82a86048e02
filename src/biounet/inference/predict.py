"""Prediction: a trained network plus the overlap-tile strategy, from files to label and probability images.

:class:`TorchPredictor` wraps a :class:`~biounet.core.model.UNet` with its tiling contract (context margin, pooling
alignment, intensity normalisation) and runs batches of tiles on a device, in fp32 or bf16, optionally averaged
over the 8 flips and rotations (test-time augmentation). :func:`predict_file` reads an image lazily, predicts
each plane with :func:`biounet.inference.tiling.predict_tiled`, and writes ``<stem>.tif`` (class labels) and
``<stem>_prob.tif`` (float32 probabilities, ``(K, H, W)``) atomically. Images whose outputs exceed the memory
budget are accumulated in a temporary on-disk zarr array, so peak memory does not grow with the image.

Every prediction goes through :func:`predict_plane` (files, OME-Zarr, Dask blocks) or :func:`segment_image` on
top of it (in-memory images: the API, napari, the demo): outputs ``(K', H, W)`` are the class probabilities, then
a ``distance`` model's distance map, and the labels are the arg-max over the class channels only.

:func:`predict_files` is what ``biounet predict`` runs: it checks every input first (file, size from the header,
channels, tile memory against the machine's, free disk space), writes all outputs into one hidden staging folder
inside the output folder (:class:`OutputStage`), and moves them into place only when every image is done, so a
failure leaves the output folder as it was. Outputs of an earlier run with the same stem that this run does not
write again (``<stem>_prob.tif`` without ``save_probabilities``) are removed, so they cannot be mistaken for
this run's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import torch

from biounet.core.device import autocast, resolve_device, resolve_precision
from biounet.core.model import ModelConfig, UNet, nearest_valid_sizes, output_probabilities, output_size, smallest_tile
from biounet.data.checkpoint import load_checkpoint, model_from_payload
from biounet.data.diameter import TOLERANCE as DIAMETER_TOLERANCE
from biounet.data.diameter import check_diameter, diameter_zoom, median_diameter
from biounet.data.files import (
    OutputError,
    atomic_path,
    check_creatable_dir,
    check_writable_dir,
    files_by_stem,
    format_size,
    output_stem,
    remove_tree,
)
from biounet.data.images import ImageSource, label_dtype, open_image, write_tiff
from biounet.data.normalization import normalization_for, normalize
from biounet.data.omezarr import write_ome_tiff_volume
from biounet.data.scale import PixelSizeUm, micrometres, physical_micrometres, resample, scaled_shape, zoom_factors
from biounet.data.volumes import volume_normalization
from biounet.inference.exported import OnnxPredictor
from biounet.inference.fusion import FusedUNet, fusion_available, parameter_versions
from biounet.inference.instances import instances_from_labels
from biounet.inference.predict_volume import (
    check_dims,
    count_tiles_for,
    predict_volume_outputs,
    source_reader,
    volume_tile,
    write_volume_outputs,
)
from biounet.inference.predictor import Predictor
from biounet.inference.tiling import ReadFn, TileGeometry, Window, count_tiles, predict_tiled
from biounet.inference.volumes import volume_geometry

DEFAULT_MEMORY_BUDGET = 1024 * 2**20
"""Budget where the machine's available memory is unknown, and :func:`choose_in_tile`'s fixed default."""
MEMORY_FRACTION = 0.25
"""The default budget is this fraction of the memory available now (Linux ``MemAvailable``) ..."""
MEMORY_CAP = 8 * 2**30
"""... at most this (larger tiles than ~1084 px gain little, and other processes need memory too) ..."""
MEMORY_FLOOR = 256 * 2**20
"""... and at least this (enough for a 540-px tile of a base-16 network)."""
MAX_AUTO_TILE: dict[str, int] = {"cpu": 1212, "cuda": 2044}
"""Largest tile side chosen automatically, by device type (others take the CPU's). Larger tiles recompute less
context, but on a CPU their feature maps outgrow the caches: on the project's 2-core Xeon the paper's network
ran at 1,112 / 986 / 871 / 700 GFLOP/s (bf16) on tiles of 572 / 892 / 1212 / 2236 px, a base-16 network at
742 / 866 / 585 / 368, so one 2236-px tile of a 2048^2 image took 1.97x (base 16) and 1.17x (base 64) the time
of nine 892-px tiles (``benchmarks/tile_size.py``). 1212 px keeps the recomputed context of the paper's network
within 13 % of the whole-image limit (4 tiles of a 2048^2 image) at 7 % more time per pixel than 892 px. On a
GPU the memory budget is the real bound."""
OUTPUT_SUFFIXES: tuple[str, ...] = ("", "_prob", "_instances")
"""What follows ``<stem>`` in the names of the outputs of one input (``.tif`` after it)."""
STAGE_PREFIX = ".biounet-predict-"
"""Name prefix of the hidden staging folder of one prediction call (followed by the process id)."""

logger = logging.getLogger(__name__)


class MemoryBudget(NamedTuple):
    """A memory budget in bytes and how it was chosen, in words."""

    bytes: int
    note: str


def available_memory() -> int | None:
    """Memory available to new processes now, in bytes (Linux ``/proc/meminfo`` ``MemAvailable``), or None."""
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def memory_budget_for(available_bytes: int | None) -> MemoryBudget:
    """The default budget for a machine with ``available_bytes`` free: :data:`MEMORY_FRACTION` of it, clamped to
    [:data:`MEMORY_FLOOR`, :data:`MEMORY_CAP`]; :data:`DEFAULT_MEMORY_BUDGET` where it is unknown.

    >>> [memory_budget_for(gib * 2**30).bytes / 2**30 for gib in (22, 64, 0.5)]
    [5.5, 8.0, 0.25]
    >>> memory_budget_for(None).note
    'available memory unknown; 1024 MiB'
    """
    if available_bytes is None:
        return MemoryBudget(DEFAULT_MEMORY_BUDGET, f"available memory unknown; {DEFAULT_MEMORY_BUDGET // 2**20} MiB")
    budget = int(min(max(available_bytes * MEMORY_FRACTION, MEMORY_FLOOR), MEMORY_CAP))
    return MemoryBudget(budget, f"{budget / 2**20:.0f} MiB: {MEMORY_FRACTION:g} of the {available_bytes / 2**30:.1f} "
                                f"GiB available, within [{MEMORY_FLOOR // 2**20} MiB, {MEMORY_CAP // 2**30} GiB]")


def resolve_memory_budget(budget: int | None) -> MemoryBudget:
    """``budget`` bytes as given, or the machine's default (:func:`memory_budget_for`) for None."""
    if budget is None:
        return memory_budget_for(available_memory())
    if budget < 1:
        raise ValueError(f"memory_budget must be > 0 bytes, got {budget}")
    return MemoryBudget(budget, f"{budget / 2**20:.0f} MiB as given")


@dataclass
class TorchPredictor(Predictor):
    """A PyTorch :class:`~biounet.core.model.UNet` with its tiling contract (see :class:`~biounet.inference.predictor.Predictor`).

    Runs on ``device`` in ``precision`` (fp32, or bf16 autocast), channels-last by default, optionally through
    ``torch.compile`` (the first tile of each shape pays the compilation). On the CPU the eval-mode network runs
    as :class:`~biounet.inference.fusion.FusedUNet` (ReLU fused into each convolution, batch norm folded, weights cast
    once), rebuilt whenever the weights change; ``fuse=False`` runs the module itself.
    """

    model: UNet
    normalization: str = "percentile"
    class_names: list[str] = field(default_factory=list)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    tta: bool = False
    channels_last: bool = True
    compile: bool = False
    pixel_size_um: tuple[float, float] | None = None
    fuse: bool = True
    diameter_px: float | None = None
    diameter_calibration: float = 1.0

    def __post_init__(self) -> None:
        self.model = self.model.to(self.device).eval()
        self.channels_last = self.channels_last and self.model.config.dims == 2  # 4D memory format only
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16 here, got {self.precision!r}")
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = (
            torch.compile(self.model) if self.compile else None  # type: ignore[assignment]
        )
        self._fused: tuple[Any, FusedUNet] | None = None

    @property
    def model_config(self) -> ModelConfig:
        return self.model.config

    def _to_tensor(self, batch: npt.NDArray[np.float32]) -> torch.Tensor:
        x = torch.from_numpy(batch).to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        fused = self._fused_network()
        if fused is not None:
            logits = fused(batch)
        else:
            with autocast(self.device, self.precision):
                logits = self._compiled(batch) if self._compiled is not None else self.model(batch)
        return output_probabilities(logits.float(), self.num_classes, self.model_config.ray_channels)

    def _fused_network(self) -> FusedUNet | None:
        """The fused network for the weights as they are now, or None where it does not apply."""
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        if (not self.fuse or self._compiled is not None or self.device.type != "cpu" or self.model.training
                or self.model.config.dims != 2 or not fusion_available(dtype)):
            return None
        key = (parameter_versions(self.model), self.precision)
        if self._fused is None or self._fused[0] != key:
            self._fused = (key, FusedUNet(self.model, dtype))
        return self._fused[1]


def load_predictor(
    path: str | os.PathLike[str], *, device: str = "auto", precision: str = "auto", tta: bool | None = None,
    compile: bool = False,
) -> Predictor:
    """Build a :class:`TorchPredictor` from a biounet checkpoint, or an ONNX-runtime predictor from an exported
    ``.onnx`` model (see :mod:`biounet.integrations.export`).

    ``tta=None`` (the default) takes the checkpoint's ``tta``, the choice of its training run (membrane models:
    test-time augmentation where it lowered the validation Rand error), off elsewhere. A model with directional
    outputs (radial distances, affinities) cannot be averaged over rotations: ``tta=True`` is then an error.

    ``precision="auto"`` (the default) is bf16 on CUDA and on CPUs with native bf16, fp32 elsewhere
    (:func:`biounet.core.device.resolve_precision`); tiling is exact to float rounding only in fp32, so pass
    ``"fp32"`` where tiles must agree to 1e-5."""
    if Path(path).suffix.lower() == ".onnx":
        if compile:
            raise ValueError(f"{path}: --compile applies to biounet checkpoints, not to ONNX models")
        return OnnxPredictor(path, device=device, precision=precision, tta=bool(tta))
    payload = load_checkpoint(path)
    torch_device = resolve_device(device)
    model = model_from_payload(payload, path)
    if tta is None:
        tta = bool(payload.get("tta", False))
    elif tta and (model.config.ray_channels or model.config.affinity_channels):
        raise ValueError(f"{path}: --tta averages the outputs of rotated images, but this model's "
                         f"{'radial distances' if model.config.ray_channels else 'affinities'} turn with the image: "
                         "predict it without --tta")
    return TorchPredictor(
        model=model,
        normalization=str(payload["normalization"]),
        class_names=list(payload.get("class_names") or []),
        device=torch_device,
        precision=resolve_precision(precision, torch_device),
        tta=tta,
        compile=compile,
        pixel_size_um=_pixel_size_of(payload),
        diameter_px=payload.get("diameter_px"),
        diameter_calibration=float(payload.get("diameter_calibration") or 1.0),
    )


def _pixel_size_of(payload: dict[str, Any]) -> tuple[float, float] | None:
    size = payload.get("pixel_size_um")
    return None if size is None else micrometres(*size)


def estimate_tile_bytes(in_tile: int, base_channels: int, in_channels: int = 1, batch_size: int = 1, *,
                        precision: str = "fp32") -> int:
    """Rough peak activation memory of inference on a batch of tiles, in bytes: ``6 * base`` values per input
    pixel, of 4 bytes in fp32 and 2 in bf16.

    Under ``torch.inference_mode`` a map is freed once used, so the peak is the top level's skip, up-sampled map,
    concatenation and convolution output. Resident-memory growth of one pass measured on the CPU (torch 2.13):
    base 64, 1212-px tile, 4.0 * base values per pixel in fp32 (1.50 GB) and 4.2 in bf16 (0.79 GB); base 16,
    2236 px, 4.5 and 4.7; 6 * base keeps a margin.
    """
    per_value = 2 if precision == "bf16" else 4
    return batch_size * in_tile * in_tile * per_value * (6 * base_channels + in_channels)


def predictor_tile_bytes(predictor: Predictor, in_tile: int, batch_size: int = 1) -> int:
    """:func:`estimate_tile_bytes` for ``predictor``'s width, input channels and precision."""
    return estimate_tile_bytes(in_tile, predictor.base_channels, predictor.in_channels, batch_size,
                               precision=predictor.precision)


def physical_memory() -> int:
    """The machine's physical memory in bytes (``SC_PHYS_PAGES * SC_PAGE_SIZE``)."""
    return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))


def check_memory_budget(memory_budget: int) -> None:
    """Refuse a memory budget larger than the machine's physical memory, naming the largest one."""
    physical = physical_memory()
    if memory_budget > physical:
        raise ValueError(f"memory budget {format_size(memory_budget)} is more than this machine's memory; the "
                         f"largest is {format_size(physical)}")


def check_tile_memory(predictor: Predictor, in_tile: int, batch_size: int = 1) -> None:
    """Refuse a tile size and batch size whose activations (:func:`estimate_tile_bytes`) exceed the memory
    available now, naming the largest tile size and batch size that fit."""
    need = predictor_tile_bytes(predictor, in_tile, batch_size)
    available = available_memory() or physical_memory()
    if need <= available:
        return
    side = int((available / max(batch_size, 1) / predictor_tile_bytes(predictor, 1)) ** 0.5)
    largest_tile = nearest_valid_sizes(max(side, 1), predictor.depth, predictor.padding)[0]
    fits_tile = largest_tile >= smallest_tile(predictor) and (
        predictor_tile_bytes(predictor, largest_tile, batch_size) <= available)
    largest_batch = available // predictor_tile_bytes(predictor, in_tile)
    hints = [f"the largest tile size that fits is {largest_tile}" if fits_tile
             else f"no tile size fits with batch size {batch_size}"]
    if largest_batch >= 1 and batch_size > 1:
        hints.append(f"the largest batch size for tile size {in_tile} is {largest_batch}")
    raise ValueError(
        f"tile size {in_tile} with batch size {batch_size} needs about {format_size(need)} of memory, more than the "
        f"{format_size(available)} available; {'; '.join(hints)}"
    )


MeasureFn = Callable[[Predictor, int, int], int | None]  # (predictor, in_tile, batch_size) -> bytes, or None


def measure_tile_bytes(predictor: Predictor, in_tile: int, batch_size: int = 1) -> int | None:
    """Peak memory of one forward pass of a batch of ``in_tile`` tiles, measured; None where it cannot be.

    On CUDA this is the growth of ``torch.cuda.max_memory_allocated`` over one pass of zeros. On the CPU it is
    not measured (None): resident-set growth is blurred by the allocator keeping freed memory, earlier
    passes and other threads, so :func:`estimate_tile_bytes` (calibrated on CPU) is used there instead.
    """
    device = getattr(predictor, "device", None)
    if not isinstance(device, torch.device) or device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    predictor(np.zeros((batch_size, predictor.in_channels, in_tile, in_tile), np.float32))
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - before)


def choose_in_tile(
    predictor: Predictor, shape: tuple[int, int], *, memory_budget: int = DEFAULT_MEMORY_BUDGET,
    batch_size: int = 1, measure: MeasureFn | None = measure_tile_bytes,
) -> int:
    """Input tile side for an image of ``shape``: the cheapest tiling that fits the memory budget.

    The cost of a tiling is its number of tiles times the pixels of one input tile (the network's work grows with
    the input area); among equal costs the larger tile wins. Candidates go up to the device's ``MAX_AUTO_TILE``
    (a tile covering the whole image in one piece is among them where it is no larger).

    A tile's memory is first :func:`estimate_tile_bytes`; then the chosen tile is measured once with
    ``measure(predictor, in_tile, batch_size)`` (:func:`measure_tile_bytes`: on CUDA only). If that gives a
    number, the estimates of all candidates are scaled by measured / estimated and the choice is made again.
    """
    smallest = smallest_tile(predictor)
    candidates = [*range(smallest, max_auto_tile(predictor) + 1, 2**predictor.depth)] or [smallest]

    def cost(size: int) -> tuple[int, int]:
        return count_tiles(shape, predictor.geometry(size)) * size * size, -size

    def best(scale: float) -> int:
        fits = [size for size in candidates
                if scale * predictor_tile_bytes(predictor, size, batch_size) <= memory_budget]
        return min(fits or [smallest], key=cost)

    chosen = best(1.0)
    measured = measure(predictor, chosen, batch_size) if measure is not None else None
    if measured is None:
        return chosen
    estimated = predictor_tile_bytes(predictor, chosen, batch_size)
    rechosen = best(measured / estimated)
    logger.info("tile %d px: measured %.0f MiB for estimated %.0f MiB; tile %d px fits the %.0f MiB budget",
                chosen, measured / 2**20, estimated / 2**20, rechosen, memory_budget / 2**20)
    return rechosen


def max_auto_tile(predictor: Predictor) -> int:
    """The largest tile side chosen automatically for ``predictor``'s device (:data:`MAX_AUTO_TILE`)."""
    device = getattr(predictor, "device", None)
    kind = device.type if isinstance(device, torch.device) else "cpu"
    return MAX_AUTO_TILE.get(kind, MAX_AUTO_TILE["cpu"])


def check_in_tile(predictor: Predictor, in_tile: int) -> int:
    """Validate a user-given tile side, naming the nearest valid sizes."""
    smallest = smallest_tile(predictor)
    try:
        output_size(in_tile, predictor.depth, predictor.padding)
    except ValueError:
        below, above = nearest_valid_sizes(in_tile, predictor.depth, predictor.padding)
        below = max(below, smallest)
        raise ValueError(
            f"tile size {in_tile} is not valid for this network (depth {predictor.depth}, {predictor.padding} "
            f"convolutions); nearest valid tile sizes: {below} or {max(above, smallest)}"
        ) from None
    if in_tile < smallest:
        raise ValueError(f"tile size {in_tile} is too small for tiling; the smallest valid tile size is {smallest}")
    return in_tile


@dataclass(frozen=True)
class PredictOptions:
    """How :func:`predict_file` tiles and what it writes."""

    tile: int | None = None  # input tile side; None chooses from the memory budget
    batch_size: int = 1
    save_probabilities: bool = False
    memory_budget: int | None = None  # bytes; None: the machine's default (resolve_memory_budget)
    pixel_size_um: PixelSizeUm | None = None  # the images' pixel size (y, x); None: from their metadata
    rescale: bool = True  # resample images to the model's pixel size (biounet.data.scale) or object diameter
    diameter_px: float | None = None  # the images' object diameter; None: estimated (models with a diameter)

    def __post_init__(self) -> None:
        if self.pixel_size_um is not None:
            micrometres(*self.pixel_size_um)  # checks it
        if self.diameter_px is not None:
            check_diameter(self.diameter_px)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.memory_budget is not None and self.memory_budget < 1:
            raise ValueError(f"memory_budget must be > 0 bytes, got {self.memory_budget}")


@dataclass
class PredictResult:
    """Files written for one input image and the tiling used."""

    labels_path: Path
    probabilities_path: Path | None
    shape: tuple[int, int, int]  # planes, H, W
    in_tile: int
    tiles: int
    zoom: tuple[float, float] | None = None  # how much the image was enlarged to the model's pixel size (y, x)
    pixel_size_um: PixelSizeUm | None = None  # the image's pixel size, where known
    in_shape: tuple[int, ...] | None = None  # a volume's input tile shape (z, y, x); None for images


def check_output_stems(paths: Sequence[str | os.PathLike[str]]) -> dict[str, Path]:
    """The inputs of one prediction call by output stem (:func:`biounet.data.files.output_stem`).

    Raises
    ------
    ValueError
        If two inputs have the same stem (``x.tif`` and ``x.png``), so that their outputs would overwrite each
        other; the message names both.
    """
    try:
        stems = files_by_stem(paths)
    except ValueError as err:
        raise ValueError(f"{err}: both would be written as <stem>.tif; rename one or predict them into "
                         f"different output folders") from None
    for stem, path in stems.items():
        for suffix in OUTPUT_SUFFIXES[1:]:
            if stem.endswith(suffix) and stem[: -len(suffix)] in stems:
                raise ValueError(f"{stems[stem[: -len(suffix)]]} and {path}: the outputs of the first include "
                                 f"{stem}.tif, the labels of the second; rename one or predict them into "
                                 f"different output folders")
    return stems


def check_compatible(predictor: Predictor, source: ImageSource) -> None:
    if source.channels != predictor.in_channels:
        raise ValueError(
            f"{source.path}: image has {source.channels} channel(s), the model takes {predictor.in_channels}"
        )


@contextlib.contextmanager
def _outputs(
    out_dir: Path, shape: tuple[int, ...], dtype: Any, *, on_disk: bool, name: str
) -> Iterator[Any]:
    """An output array: in memory, or a temporary on-disk zarr array removed afterwards."""
    if not on_disk:
        yield np.zeros(shape, dtype=dtype)
        return
    import zarr

    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".zarr", dir=out_dir))
    try:
        chunks = (*(1,) * (len(shape) - 2), 512, 512)
        yield zarr.open_array(str(tmp), mode="w", shape=shape, chunks=chunks, dtype=dtype)
    finally:
        remove_tree(tmp)


def predict_file(
    predictor: Predictor,
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: PredictOptions = PredictOptions(),
    *,
    progress: Callable[[int, int], None] | None = None,
) -> PredictResult:
    """Segment every plane of the image at ``path``; write ``out_dir/<stem>.tif`` and, if asked, ``<stem>_prob.tif``.

    ``<stem>`` is :func:`biounet.data.files.output_stem` of ``path``. ``progress(done, total)`` is called with tile
    counts. Outputs are written only when the whole image is done, each to a temporary name first, so a failure
    leaves no partial file (:func:`predict_files` also rolls back the other outputs of a call).
    """
    source = open_image(path)
    check_compatible(predictor, source)
    if source.dims == 3 or predictor.dims == 3:
        return predict_volume_file(predictor, source, out_dir, options, progress=progress)
    image_um, zoom, shape = prediction_scale(predictor, source, options)
    planes, height, width = source.planes, source.height, source.width
    if zoom is None and planes == 1:
        zoom = object_zoom(predictor, source, options)
        shape = shape if zoom is None else scaled_shape(shape, zoom)
    in_tile = tile_for(predictor, shape, options)
    out_dir = check_writable_dir(out_dir)
    geometry = predictor.geometry(in_tile)
    total = planes * count_tiles(shape, geometry)
    labels_dtype = label_dtype(predictor.num_classes)
    prob_shape = (planes, predictor.output_channels, height, width)
    budget = resolve_memory_budget(options.memory_budget).bytes
    on_disk = planes * predictor.output_channels * height * width * 4 > budget // 4
    stem = output_stem(path)
    labels_path, prob_path = out_dir / f"{stem}.tif", out_dir / f"{stem}_prob.tif"
    step = tile_counter(total, progress)
    with (
        _outputs(out_dir, (planes, height, width), labels_dtype, on_disk=on_disk, name=stem) as labels,
        _outputs(out_dir, prob_shape if options.save_probabilities else (1, 1, 1, 1), np.float32,
                 on_disk=on_disk and options.save_probabilities, name=f"{stem}_prob") as probs,
    ):
        for plane in range(planes):
            norm = normalization_for(source, plane, predictor.normalization)

            def read(rows: slice, cols: slice, plane: int = plane, norm: Any = norm) -> npt.NDArray[np.float32]:
                try:
                    return norm.apply(source.read(plane, rows, cols))
                except ValueError as err:
                    raise ValueError(f"{source.path}: {err}") from err

            plane_probs = _PlaneView(probs, plane) if options.save_probabilities else None
            if zoom is None:
                predict_plane(predictor, read, (height, width), geometry, probabilities=plane_probs,
                              labels=_PlaneView(labels, plane), batch_size=options.batch_size, progress=step,
                              path=source.path)
            else:
                rescaled = predict_rescaled(predictor, read(slice(0, height), slice(0, width)), shape, geometry,
                                            batch_size=options.batch_size, progress=step, path=source.path)
                labels[plane] = class_labels(rescaled, predictor.num_classes)
                if plane_probs is not None:
                    plane_probs[:] = rescaled
        write_tiff(labels_path, labels[0] if planes == 1 else labels, labels=True, pixel_size=source.pixel_size)
        if options.save_probabilities:
            write_tiff(prob_path, probs[0] if planes == 1 else probs, pixel_size=source.pixel_size)
    return PredictResult(
        labels_path, prob_path if options.save_probabilities else None, (planes, height, width), in_tile, total,
        zoom, image_um,
    )


def predict_volume_file(
    predictor: Predictor, source: ImageSource, out_dir: str | os.PathLike[str], options: PredictOptions, *,
    progress: Callable[[int, int], None] | None = None,
) -> PredictResult:
    """:func:`predict_file` for a volume and a 3D U-Net: tiles in 3D, the volume normalised as a whole (as training
    normalised it), outputs in the volume's voxel size (:mod:`biounet.inference.predict_volume`).

    Outputs over a quarter of the memory budget grow in temporary on-disk zarr arrays, written tile by tile and then
    into the TIFFs plane by plane (:func:`biounet.data.omezarr.write_ome_tiff_volume`), so memory stays at a few
    tiles and planes whatever the volume's size; the files are the same either way."""
    check_dims(predictor, source.dims, source.path)
    shape = (source.planes, source.height, source.width)
    in_shape = volume_tile_for(predictor, shape, options)
    out_dir = check_writable_dir(out_dir)
    stem = output_stem(source.path)
    channels = predictor.output_channels
    on_disk = channels * int(np.prod(shape)) * 4 > resolve_memory_budget(options.memory_budget).bytes // 4
    prob_shape = (channels, *shape) if options.save_probabilities else (1, 1, 1, 1)
    total = count_tiles_for(predictor, shape, in_shape)
    read = source_reader(source, volume_normalization(source, predictor.normalization))
    with (
        _outputs(out_dir, shape, label_dtype(predictor.num_classes), on_disk=on_disk, name=stem) as labels,
        _outputs(out_dir, prob_shape, np.float32, on_disk=on_disk and options.save_probabilities,
                 name=f"{stem}_prob") as staged,
    ):
        probs = staged if options.save_probabilities else None
        predict_volume_outputs(predictor, read, shape, volume_geometry(predictor.model_config, in_shape),
                               probabilities=probs, labels=labels, batch_size=options.batch_size,
                               progress=tile_counter(total, progress), path=source.path)
        if not on_disk:
            labels_path, prob_path = write_volume_outputs(out_dir, stem, labels, probs, source.voxel_size_um)
        else:
            labels_path, prob_path = out_dir / f"{stem}.tif", None
            with atomic_path(labels_path) as tmp:
                write_ome_tiff_volume(tmp, (labels[z] for z in range(shape[0])), shape=shape, dtype=labels.dtype,
                                      voxel_size_um=source.voxel_size_um)
            if probs is not None:
                prob_path = out_dir / f"{stem}_prob.tif"
                with atomic_path(prob_path) as tmp:  # (K, Z, Y, X) staged, (Z, K, Y, X) in the file
                    write_ome_tiff_volume(tmp, (probs[k, z] for z in range(shape[0]) for k in range(channels)),
                                          shape=(shape[0], channels, *shape[1:]), dtype=np.float32,
                                          voxel_size_um=source.voxel_size_um)
    return PredictResult(labels_path, prob_path, shape, in_shape[-1], total, None, None, in_shape=in_shape)


def volume_tile_for(predictor: Predictor, shape: tuple[int, int, int], options: PredictOptions) -> tuple[int, int, int]:
    """The input tile shape of a volume as predicted (:func:`biounet.inference.predict_volume.volume_tile`), checked
    against the memory budget."""
    budget = resolve_memory_budget(options.memory_budget).bytes
    check_memory_budget(budget)
    return volume_tile(predictor, shape, budget, batch_size=options.batch_size, tile=options.tile)


def image_pixel_size(source: ImageSource, options: PredictOptions) -> PixelSizeUm | None:
    """The image's pixel size in micrometres: the one given in ``options``, else its metadata's, else None."""
    if options.pixel_size_um is not None:
        return options.pixel_size_um
    return physical_micrometres(source.pixel_size)


def zoom_to_model(
    predictor: Predictor, image_um: PixelSizeUm | None, options: PredictOptions
) -> tuple[float, float] | None:
    """How much to enlarge the image to the model's pixel size, or None where nothing is resampled (sizes equal
    within 2 %, either unknown, or ``options.rescale`` off)."""
    if not options.rescale or image_um is None or predictor.pixel_size_um is None:
        return None
    return zoom_factors(image_um, predictor.pixel_size_um)


def prediction_scale(
    predictor: Predictor, source: ImageSource, options: PredictOptions
) -> tuple[PixelSizeUm | None, tuple[float, float] | None, tuple[int, int]]:
    """The image's pixel size, how much it is enlarged to the model's (None: predicted as it is), and the
    ``(H, W)`` the network sees."""
    image_um = image_pixel_size(source, options)
    zoom = zoom_to_model(predictor, image_um, options)
    shape = (source.height, source.width)
    return image_um, zoom, shape if zoom is None else scaled_shape(shape, zoom)


def predicted_diameter(outputs: npt.NDArray[np.float32], num_classes: int) -> float | None:
    """The median diameter (px) of the cells in a prediction ``(K', H, W)``: its class labels made instances as
    ``--instances`` makes them from labels (:func:`~biounet.inference.instances.instances_from_labels`)."""
    return median_diameter(instances_from_labels(class_labels(outputs, num_classes)))


DIAMETER_PASSES = 3
"""Predictions :func:`estimate_diameter` may make: small cells merge at their own scale, so the first measure runs
large; each further pass predicts at the scale the last measure asked for and measures again."""


def estimate_diameter(predictor: Predictor, image: npt.NDArray[np.float32], tile: int | None = None,
                      passes: int = DIAMETER_PASSES) -> float | None:
    """The median diameter (px) of the cells in a normalised ``(H, W, C)`` image, as the model's own predictions find
    them (class labels made instances as ``--instances`` makes them from labels); None where they find none.

    The first prediction is at the image's scale; while the measure asks for a zoom beyond
    :data:`biounet.data.diameter.TOLERANCE` and passes remain, the image is predicted again at that zoom and its
    cells measured there (in the image's pixels). Each measure is divided by the model's
    ``diameter_calibration``: how much larger its predicted cells measure than the true ones on its validation
    images (:func:`predicted_diameter` against the labels, at the common diameter)."""
    zoom, diameter = 1.0, None
    for _ in range(passes):
        shape = scaled_shape(image.shape[:2], (zoom, zoom))
        scaled = image if zoom == 1.0 else np.moveaxis(resample(np.moveaxis(image, -1, 0), shape, order=3), 0, -1)
        measured = predicted_diameter(predict_image(predictor, scaled, tile=tile), predictor.num_classes)
        if measured is None:
            return diameter
        diameter = measured / zoom / predictor.diameter_calibration
        if predictor.diameter_px is None:
            return diameter
        wanted = predictor.diameter_px / diameter  # the zoom this measure asks for
        if abs(wanted / zoom - 1.0) <= DIAMETER_TOLERANCE:
            return diameter  # measured at (about) the scale it asks for
        zoom = wanted
    return diameter


def object_zoom(predictor: Predictor, source: ImageSource, options: PredictOptions) -> tuple[float, float] | None:
    """How much to enlarge a 2-D image so that its cells are the model's common diameter
    (:mod:`biounet.data.diameter`): from ``options.diameter_px``, else a first prediction
    (:func:`estimate_diameter`); None for models without one, with ``options.rescale`` off, or sizes within 10 %."""
    if predictor.diameter_px is None or not options.rescale:
        return None
    diameter = options.diameter_px
    if diameter is None:
        image = normalization_for(source, 0, predictor.normalization).apply(
            source.read(0, slice(0, source.height), slice(0, source.width)))
        diameter = estimate_diameter(predictor, image, tile=options.tile)
    zoom = diameter_zoom(diameter, predictor.diameter_px)
    return None if zoom is None else (zoom, zoom)


def check_native_scale(predictor: Predictor, source: ImageSource, options: PredictOptions, how: str) -> None:
    """Refuse an image whose pixel size differs from the model's where ``how`` (a prediction path that streams
    blocks) does not resample."""
    image_um, zoom, _ = prediction_scale(predictor, source, options)
    if zoom is not None and image_um is not None and predictor.pixel_size_um is not None:
        model_um = predictor.pixel_size_um
        raise ValueError(
            f"{source.path}: pixel size {image_um[0]:.4g} x {image_um[1]:.4g} µm differs from the model's "
            f"{model_um[0]:.4g} x {model_um[1]:.4g} µm and {how} does not resample; resample the image first, or "
            "give --no-rescale to predict it at its own scale")


def predict_rescaled(
    predictor: Predictor, image: npt.NDArray[np.float32], shape: tuple[int, int], geometry: Any, *,
    batch_size: int = 1, progress: Callable[[int], None] | None = None, path: Path | str = "<image>",
) -> npt.NDArray[np.float32]:
    """Outputs ``(K', H, W)`` of a normalised ``(H, W, C)`` image predicted at the model's scale: the image is
    resampled to ``shape`` (cubic), predicted tile by tile, and the probabilities resampled back (linear, so they
    stay in [0, 1] and sum to 1) [Falk et al. 2019]. A star-convex model's radial distances, lengths in the
    resampled image's pixels, are converted to the image's (divided by the mean zoom)."""
    scaled = np.moveaxis(resample(np.moveaxis(image, -1, 0), shape, order=3), 0, -1)
    outputs = np.zeros((predictor.output_channels, *shape), dtype=np.float32)
    predict_plane(predictor, lambda rows, cols: scaled[rows, cols], shape, geometry, probabilities=outputs,
                  batch_size=batch_size, progress=progress, path=path)
    back = resample(outputs, image.shape[:2], order=1)
    rays = predictor.model_config.ray_channels
    if rays:
        back[-rays:] /= (shape[0] / image.shape[0] + shape[1] / image.shape[1]) / 2
    return back


def tile_counter(total: int, progress: Callable[[int, int], None] | None) -> Callable[[int], None]:
    """A ``progress`` for :func:`biounet.inference.tiling.predict_tiled` (tiles just done) that reports ``(done, total)``."""
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    return step


def tile_for(predictor: Predictor, shape: tuple[int, int], options: PredictOptions) -> int:
    """The tile side for an image of ``shape`` (H, W) as predicted: the given one, checked, or the one chosen from
    the memory budget; either way checked against the memory the machine has. Every prediction path asks here."""
    budget = resolve_memory_budget(options.memory_budget).bytes
    check_memory_budget(budget)
    in_tile = (
        check_in_tile(predictor, options.tile) if options.tile is not None
        else choose_in_tile(predictor, shape, memory_budget=budget, batch_size=options.batch_size)
    )
    check_tile_memory(predictor, in_tile, options.batch_size)
    return in_tile


def _finite(predictor: Predictor, path: Path) -> Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]:
    """``predictor``, refusing NaN or infinite probabilities (which would silently become class-0 labels)."""

    def predict(batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        probs = predictor(batch)
        if not np.all(np.isfinite(probs)):
            raise FloatingPointError(f"{path}: the network's output is NaN or infinite; nothing was written")
        return probs

    return predict


# --- several inputs: check all first, write all or nothing ---------------------------------------------------------


@dataclass(frozen=True)
class PlannedInput:
    """One input of :func:`predict_files`, checked: its output stem, shape ``(planes, H, W)`` and tile side."""

    path: Path
    stem: str
    shape: tuple[int, int, int]
    in_tile: int
    output_bytes: int  # upper bound of the disk space its outputs and temporary arrays take, uncompressed


def plan_predictions(
    predictor: Predictor, paths: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str],
    options: PredictOptions = PredictOptions(), *, instances: bool = False,
) -> list[PlannedInput]:
    """Check every input of a prediction call before any pixel is predicted.

    Checks, in order: distinct output stems (:func:`check_output_stems`), the output folder (a folder, or
    creatable, and writable), the memory budget against the machine's memory, then for each input: that it
    opens as an image, its size from the header (:func:`biounet.data.images.check_plane_size`), its pixel type and
    channels, and the memory of its tiles (:func:`check_tile_memory`); finally the free disk space for all
    outputs (uncompressed, plus the temporary arrays of large images).

    Raises
    ------
    FileNotFoundError, ValueError, TypeError
        Naming the first input or folder that fails a check.
    """
    stems = check_output_stems(paths)
    out_dir = check_creatable_dir(out_dir)
    budget = resolve_memory_budget(options.memory_budget).bytes
    check_memory_budget(budget)
    plans = []
    for stem, path in stems.items():
        source = open_image(path)
        check_compatible(predictor, source)
        if source.dims == 3 or predictor.dims == 3:
            check_dims(predictor, source.dims, source.path)
            in_tile = volume_tile_for(predictor, (source.planes, source.height, source.width), options)[-1]
        else:
            in_tile = tile_for(predictor, prediction_scale(predictor, source, options)[2], options)
        pixels = source.planes * source.height * source.width
        channels = predictor.output_channels
        outputs = pixels * (1 + 4 * channels * options.save_probabilities + 4 * instances)
        on_disk = pixels * channels * 4 > budget // 4
        temporary = pixels * (1 + 4 * channels * options.save_probabilities) if on_disk else 0
        plans.append(PlannedInput(Path(path), stem, (source.planes, source.height, source.width), in_tile,
                                  outputs + temporary))
    check_disk_space(out_dir, sum(plan.output_bytes for plan in plans))
    return plans


def check_disk_space(out_dir: Path, need: int) -> None:
    """Refuse when the file system of ``out_dir`` (or of its nearest existing parent) has less than ``need``
    bytes free."""
    existing = out_dir.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if need > free:
        raise ValueError(f"{out_dir}: not enough free disk space for the outputs: they need up to "
                         f"{format_size(need)}, {format_size(free)} is free")


def predict_files(
    predictor: Predictor,
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    options: PredictOptions = PredictOptions(),
    *,
    progress: Callable[[Path], Callable[[int, int], None] | None] | None = None,
    after_each: Callable[[PredictResult], None] | None = None,
    instances: bool = False,
) -> list[PredictResult]:
    """Predict several images as one all-or-nothing call; returns the results with their final paths.

    Every input is checked first (:func:`plan_predictions`). The outputs are written into a hidden staging
    folder in ``out_dir`` and moved into place when all images are done; ``after_each(result)`` may add files
    beside ``result.labels_path`` (``<stem>_instances.tif``) before that. When anything fails, nothing in
    ``out_dir`` changes. Earlier outputs of the same stems that this call does not write again are removed.
    ``progress(path)`` returns the tile-count callback for one input (or None).
    """
    plans = plan_predictions(predictor, paths, out_dir, options, instances=instances)
    out_dir = check_writable_dir(out_dir)
    results = []
    with OutputStage(out_dir) as stage:
        for plan in plans:
            result = predict_file(predictor, plan.path, stage.dir, options,
                                  progress=progress(plan.path) if progress is not None else None)
            if after_each is not None:
                after_each(result)
            results.append(result)
        stage.commit([plan.stem for plan in plans])
    return [dataclasses.replace(
        r, labels_path=out_dir / r.labels_path.name,
        probabilities_path=out_dir / r.probabilities_path.name if r.probabilities_path else None,
    ) for r in results]


class OutputStage:
    """A hidden folder inside ``out_dir`` that collects the outputs of one call until :meth:`commit` moves them
    into place; as a context manager it removes itself on exit, and turns an ``OSError`` on a file inside it
    into an :class:`~biounet.data.files.OutputError` naming the output folder or file, never the staging path.

    Staging folders left by killed runs (their process is gone) are removed when a new stage is made.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        remove_stale_stages(self.out_dir)
        try:
            self.dir = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-", dir=self.out_dir))
        except OSError as err:
            raise OutputError(self.out_dir, err) from err

    def commit(self, stems: Sequence[str]) -> list[Path]:
        """Move every staged file into ``out_dir`` and remove outputs of ``stems`` that were not staged."""
        staged = sorted(p for p in self.dir.iterdir() if p.is_file() and not p.name.startswith("."))
        moved = []
        for path in staged:
            target = self.out_dir / path.name
            try:
                os.replace(path, target)
            except OSError as err:
                raise OutputError(target, err) from err
            moved.append(target)
        written = {p.name for p in moved}
        for stem in stems:
            for suffix in OUTPUT_SUFFIXES:
                stale = self.out_dir / f"{stem}{suffix}.tif"
                if stale.name not in written and stale.is_file():
                    try:
                        stale.unlink()
                    except OSError as err:
                        raise OutputError(stale, err, "cannot remove the earlier output") from err
        return moved

    def __enter__(self) -> OutputStage:
        return self

    def __exit__(self, kind: Any, err: BaseException | None, traceback: Any) -> None:
        remove_tree(self.dir)
        if isinstance(err, OSError) and self._inside(err):
            reason = OSError(err.errno, err.reason if isinstance(err, OutputError) else (err.strerror or str(err)))
            if isinstance(err, OutputError):
                raise OutputError(self.out_dir / err.path.name, reason, err.action) from err
            raise OutputError(self.out_dir, reason, "cannot write the outputs") from err

    def _inside(self, err: OSError) -> bool:
        candidate = err.path if isinstance(err, OutputError) else err.filename
        if candidate is None:
            return False
        with contextlib.suppress(ValueError, TypeError):
            Path(os.fsdecode(candidate)).absolute().relative_to(self.dir.absolute())
            return True
        return False


def remove_stale_stages(out_dir: Path) -> None:
    """Remove staging folders in ``out_dir`` whose process no longer runs (a killed ``biounet predict``)."""
    for entry in out_dir.glob(f"{STAGE_PREFIX}*"):
        pid_text = entry.name[len(STAGE_PREFIX):].split("-", 1)[0]
        if entry.is_dir() and pid_text.isdigit() and not _process_alive(int(pid_text)):
            remove_tree(entry)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


class _PlaneView:
    """Slice assignment into one plane of a (planes, ...) array, numpy or zarr, without loading it."""

    def __init__(self, array: Any, plane: int) -> None:
        self.array, self.plane = array, plane
        self.dtype = array.dtype

    def __setitem__(self, index: Any, value: Any) -> None:
        index = index if isinstance(index, tuple) else (index,)
        self.array[(self.plane, *index)] = value


def predict_image(
    predictor: Predictor, image: npt.NDArray[np.float32], *, tile: int | None = None, batch_size: int = 1,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> npt.NDArray[np.float32]:
    """Outputs ``(K', H, W)`` (class probabilities, then a ``distance`` model's distance map) of an already
    normalised in-memory ``(H, W)`` or ``(H, W, C)`` image: :func:`segment_image`'s ``probabilities``."""
    options = PredictOptions(tile=tile, batch_size=batch_size, memory_budget=memory_budget)
    return segment_image(predictor, image, options=options).probabilities


# --- the one prediction path ---------------------------------------------------------------------------------------


def predict_plane(
    predictor: Predictor, read: ReadFn, shape: tuple[int, int], geometry: TileGeometry, *,
    probabilities: Any | None = None, labels: Any | None = None, batch_size: int = 1,
    progress: Callable[[int], None] | None = None, window: Window | None = None, path: Path | str = "<image>",
) -> None:
    """Predict one plane of ``shape`` (H, W), or a ``window`` of it, with the overlap-tile strategy: the one path
    every caller takes (files, OME-Zarr, blocks, in-memory images through :func:`segment_image`).

    ``probabilities`` (``(K', h, w)``, K' = :attr:`~biounet.inference.predictor.Predictor.output_channels`: the
    class probabilities, then a ``distance`` model's distance map) and ``labels`` (``(h, w)``, the arg-max over
    the class channels only, never the distance map) are written where given; ``read``, ``window`` and
    ``progress`` as in :func:`biounet.inference.tiling.predict_tiled`.

    Raises
    ------
    FloatingPointError
        If the network's output is NaN or infinite (``path`` names the image).
    """
    predict_tiled(read, shape, _finite(predictor, Path(path)), geometry, probabilities=probabilities, labels=labels,
                  batch_size=batch_size, progress=progress, label_channels=predictor.num_classes, window=window)


def class_labels(outputs: npt.NDArray[np.float32], num_classes: int) -> npt.NDArray[np.integer]:
    """Class ids ``(..., H, W)`` of outputs ``(..., K', H, W)``: the arg-max over the first ``num_classes``
    channels (a ``distance`` model's last channel is its distance map, not a class), in
    :func:`biounet.data.images.label_dtype`.

    >>> class_labels(np.array([[[0.4]], [[0.6]], [[0.9]]], np.float32), 2).tolist()
    [[1]]
    """
    if outputs.ndim < 3 or outputs.shape[-3] < num_classes:
        raise ValueError(f"outputs must be (..., K, H, W) with K >= {num_classes}, got shape {outputs.shape}")
    return np.argmax(outputs[..., :num_classes, :, :], axis=-3).astype(label_dtype(num_classes))


@dataclass(frozen=True)
class Segmentation:
    """What :func:`segment_image` gives for one plane."""

    probabilities: npt.NDArray[np.float32]  # (K', H, W): class probabilities, then a distance model's distance map
    labels: npt.NDArray[np.integer]  # (H, W): arg-max over the class channels only
    in_tile: int


def segment_image(
    predictor: Predictor, image: npt.NDArray[Any], *, raw: bool = False, options: PredictOptions = PredictOptions(),
    progress: Callable[[int], None] | None = None,
) -> Segmentation:
    """Outputs and class labels of one in-memory ``(H, W)`` or ``(H, W, C)`` image (API, napari, demo).

    ``raw`` images are normalised first as the predictor expects (:func:`biounet.data.normalization.normalize`); otherwise
    the image must be normalised already. The tile side is :func:`tile_for`'s; ``progress(n)`` gets the tiles
    just done (:func:`predict_plane`).

    Raises
    ------
    ValueError
        If the image is not 2-D/3-D, has another channel count than the model takes, or holds NaN or Inf.
    """
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    if image.shape[-1] != predictor.in_channels:
        raise ValueError(f"image has {image.shape[-1]} channel(s), the model takes {predictor.in_channels}")
    pixels = normalize(np.asarray(image), predictor.normalization) if raw else image
    if not np.all(np.isfinite(pixels)):
        raise ValueError("image contains NaN or Inf pixels")
    shape = (int(image.shape[0]), int(image.shape[1]))
    in_tile = tile_for(predictor, shape, options)
    probabilities = np.zeros((predictor.output_channels, *shape), dtype=np.float32)
    labels = np.zeros(shape, dtype=label_dtype(predictor.num_classes))
    predict_plane(predictor, lambda rows, cols: pixels[rows, cols], shape, predictor.geometry(in_tile),
                  probabilities=probabilities, labels=labels, batch_size=options.batch_size, progress=progress)
    return Segmentation(probabilities, labels, in_tile)
