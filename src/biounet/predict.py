"""Prediction: a trained network plus the overlap-tile strategy, from files to label and probability images.

:class:`TorchPredictor` wraps a :class:`~biounet.model.UNet` with its tiling contract (context margin, pooling
alignment, intensity normalisation) and runs batches of tiles on a device, in fp32 or bf16, optionally averaged
over the 8 flips and rotations (test-time augmentation). :func:`predict_file` reads an image lazily, predicts
each plane with :func:`biounet.tiling.predict_tiled`, and writes ``<stem>.tif`` (class labels) and
``<stem>_prob.tif`` (float32 probabilities, ``(K, H, W)``) atomically. Images whose outputs exceed the memory
budget are accumulated in a temporary on-disk zarr array, so peak memory does not grow with the image.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from biounet.checkpoint import load_checkpoint, model_from_payload
from biounet.device import autocast, resolve_device, resolve_precision
from biounet.export import OnnxPredictor
from biounet.io import (
    ImageSource,
    check_writable_dir,
    files_by_stem,
    normalization_for,
    open_image,
    output_stem,
    remove_tree,
    write_tiff,
)
from biounet.model import ModelConfig, UNet, nearest_valid_sizes, output_size, smallest_tile
from biounet.predictor import Predictor
from biounet.tiling import count_tiles, predict_tiled

DEFAULT_MEMORY_BUDGET = 1024 * 2**20
MAX_AUTO_TILE = 1084  # beyond this, larger tiles barely reduce the overlap cost (output/input area ~0.7)


@dataclass
class TorchPredictor(Predictor):
    """A PyTorch :class:`~biounet.model.UNet` with its tiling contract (see :class:`~biounet.predictor.Predictor`).

    Runs on ``device`` in ``precision`` (fp32, or bf16 autocast), channels-last by default, optionally through
    ``torch.compile`` (the first tile of each shape pays the compilation).
    """

    model: UNet
    normalization: str = "percentile"
    class_names: list[str] = field(default_factory=list)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    tta: bool = False
    channels_last: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        self.model = self.model.to(self.device).eval()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16 here, got {self.precision!r}")
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = (
            torch.compile(self.model) if self.compile else None  # type: ignore[assignment]
        )

    @property
    def model_config(self) -> ModelConfig:
        return self.model.config

    def _to_tensor(self, batch: npt.NDArray[np.float32]) -> torch.Tensor:
        x = torch.from_numpy(batch).to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.precision):
            logits = self._compiled(batch) if self._compiled is not None else self.model(batch)
        return torch.softmax(logits.float(), dim=1)


def load_predictor(
    path: str | os.PathLike[str], *, device: str = "auto", precision: str = "fp32", tta: bool = False,
    compile: bool = False,
) -> Predictor:
    """Build a :class:`TorchPredictor` from a biounet checkpoint, or an ONNX-runtime predictor from an exported
    ``.onnx`` model (see :mod:`biounet.export`)."""
    if Path(path).suffix.lower() == ".onnx":
        if compile:
            raise ValueError(f"{path}: --compile applies to biounet checkpoints, not to ONNX models")
        return OnnxPredictor(path, device=device, precision=precision, tta=tta)
    payload = load_checkpoint(path)
    torch_device = resolve_device(device)
    return TorchPredictor(
        model=model_from_payload(payload, path),
        normalization=str(payload["normalization"]),
        class_names=list(payload.get("class_names") or []),
        device=torch_device,
        precision=resolve_precision(precision, torch_device),
        tta=tta,
        compile=compile,
    )


def estimate_tile_bytes(in_tile: int, base_channels: int, in_channels: int = 1, batch_size: int = 1) -> int:
    """Rough peak activation memory of inference on a batch of tiles, in bytes: ``6 * base`` float32 values per
    input pixel.

    Under ``torch.inference_mode`` a map is freed once used, so the peak is the top level's skip, up-sampled map,
    concatenation and convolution output. Measured on CPU (torch 2.13, base 64): 314 MB of resident memory for a
    540-px tile (4.2 * base values per pixel) and 677 MB for 748 px (4.9 * base); 6 * base keeps a margin.
    """
    per_pixel = 4 * (6 * base_channels + in_channels)
    return batch_size * in_tile * in_tile * per_pixel


def choose_in_tile(
    predictor: Predictor, shape: tuple[int, int], *, memory_budget: int = DEFAULT_MEMORY_BUDGET,
    batch_size: int = 1,
) -> int:
    """Input tile side for an image of ``shape``: the cheapest tiling that fits the memory budget.

    The cost of a tiling is its number of tiles times the pixels of one input tile (the network's work grows with
    the input area); among equal costs the larger tile wins. Candidates go up to ``MAX_AUTO_TILE``, and a tile
    just big enough to cover the image in one piece is always a candidate when it fits the budget.
    """
    base = predictor.base_channels
    smallest = smallest_tile(predictor)
    candidates = [*range(smallest, MAX_AUTO_TILE + 1, 2**predictor.depth), _covering_tile(predictor, shape)]
    fits = [
        size for size in candidates
        if estimate_tile_bytes(size, base, predictor.in_channels, batch_size) <= memory_budget
    ] or [smallest]

    def cost(size: int) -> tuple[int, int]:
        return count_tiles(shape, predictor.geometry(size)) * size * size, -size

    return min(fits, key=cost)


def _covering_tile(predictor: Predictor, shape: tuple[int, int]) -> int:
    """The smallest input tile whose output covers the whole image."""
    size = smallest_tile(predictor)
    while predictor.geometry(size).out_tile < max(shape):
        size += 2**predictor.depth
    return size


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
    memory_budget: int = DEFAULT_MEMORY_BUDGET

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.memory_budget < 1:
            raise ValueError(f"memory_budget must be > 0 bytes, got {self.memory_budget}")


@dataclass
class PredictResult:
    """Files written for one input image and the tiling used."""

    labels_path: Path
    probabilities_path: Path | None
    shape: tuple[int, int, int]  # planes, H, W
    in_tile: int
    tiles: int


def check_output_stems(paths: Sequence[str | os.PathLike[str]]) -> dict[str, Path]:
    """The inputs of one prediction call by output stem (:func:`biounet.io.output_stem`).

    Raises
    ------
    ValueError
        If two inputs have the same stem (``x.tif`` and ``x.png``), so that their outputs would overwrite each
        other; the message names both.
    """
    try:
        return files_by_stem(paths)
    except ValueError as err:
        raise ValueError(f"{err}: both would be written as <stem>.tif; rename one or predict them into "
                         f"different output folders") from None


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

    ``<stem>`` is :func:`biounet.io.output_stem` of ``path``. ``progress(done, total)`` is called with tile counts. Outputs are written only when the whole image is done,
    each to a temporary name first, so a failure leaves no partial file.
    """
    source = open_image(path)
    check_compatible(predictor, source)
    out_dir = check_writable_dir(out_dir)
    planes, height, width = source.planes, source.height, source.width
    in_tile = (
        check_in_tile(predictor, options.tile) if options.tile is not None
        else choose_in_tile(predictor, (height, width), memory_budget=options.memory_budget,
                            batch_size=options.batch_size)
    )
    geometry = predictor.geometry(in_tile)
    total = planes * count_tiles((height, width), geometry)
    num_classes = predictor.num_classes
    label_dtype = np.uint8 if num_classes <= 255 else np.uint16
    prob_shape = (planes, num_classes, height, width)
    on_disk = planes * num_classes * height * width * 4 > options.memory_budget // 4
    stem = output_stem(path)
    labels_path, prob_path = out_dir / f"{stem}.tif", out_dir / f"{stem}_prob.tif"
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    with (
        _outputs(out_dir, (planes, height, width), label_dtype, on_disk=on_disk, name=stem) as labels,
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

            predict_tiled(
                read, (height, width), predictor, geometry,
                probabilities=_PlaneView(probs, plane) if options.save_probabilities else None,
                labels=_PlaneView(labels, plane), batch_size=options.batch_size, progress=step,
            )
        write_tiff(labels_path, labels[0] if planes == 1 else labels, pixel_size=source.pixel_size)
        if options.save_probabilities:
            write_tiff(prob_path, probs[0] if planes == 1 else probs, pixel_size=source.pixel_size)
    return PredictResult(
        labels_path, prob_path if options.save_probabilities else None, (planes, height, width), in_tile, total
    )


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
    """Class probabilities ``(K, H, W)`` for an already normalised in-memory ``(H, W)`` or ``(H, W, C)`` image."""
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    if image.shape[-1] != predictor.in_channels:
        raise ValueError(f"image has {image.shape[-1]} channel(s), the model takes {predictor.in_channels}")
    if not np.all(np.isfinite(image)):
        raise ValueError("image contains NaN or Inf pixels")
    height, width = image.shape[:2]
    in_tile = check_in_tile(predictor, tile) if tile is not None else choose_in_tile(
        predictor, (height, width), memory_budget=memory_budget, batch_size=batch_size)
    probs = np.zeros((predictor.num_classes, height, width), dtype=np.float32)
    predict_tiled(
        lambda rows, cols: image[rows, cols], (height, width), predictor, predictor.geometry(in_tile),
        probabilities=probs, batch_size=batch_size,
    )
    return probs

