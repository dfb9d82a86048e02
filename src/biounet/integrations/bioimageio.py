"""Export a biounet network as a BioImage Model Zoo (bioimage.io) model package, format 0.5.

The package (a folder, or a ``.zip``) holds ``bioimageio.yaml`` and the files it names:

- weights in three formats: the PyTorch state dict with its architecture (:class:`ProbabilityUNet`, imported from
  this module, so it needs biounet installed), TorchScript (traced) and ONNX (opset 17). All three map the
  preprocessed input ``(batch, channel, y, x)`` to class probabilities (softmax over the channel axis included),
  as ``biounet predict`` writes them to ``<stem>_prob.tif``; a 3D U-Net's (Cicek et al. 2016) input is
  ``(batch, channel, z, y, x)``;
- the tiling contract: input ``y`` and ``x`` sizes ``min + n * step`` with ``min`` the smallest input the network
  accepts and ``step = 2**depth`` (``16 n + 188`` for the paper's network; its 572 px tile is n = 24), and output
  sizes referenced to the input with the valid-convolution offset (``output = input - 184`` for depth 4); a 3D
  U-Net's ``z`` axis has its own ``min``, ``step`` and offset (fewer poolings in z with ``flat_levels``);
- preprocessing equal to the checkpoint's intensity normalisation (:func:`preprocessing_for`), over ``y, x`` for
  images and over the whole volume ``z, y, x`` for a 3D U-Net (as ``biounet predict`` normalises volumes);
- a test input (a synthetic image or a small synthetic volume, raw intensities) and the output biounet computes for
  it, as ``.npy``;
- a cover (image | prediction) and a README with the contract and how it was made.

``bioimageio.spec`` builds and validates the description; it is an optional dependency, imported when a package is
written (``pip install 'biounet[bioimageio]'``).
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import torch

from biounet._version import __version__
from biounet.core.extras import require
from biounet.core.model import (
    ModelConfig,
    UNet,
    align_shape,
    output_probabilities,
    output_shape,
    smallest_input_shape,
)
from biounet.data.checkpoint import load_checkpoint, model_from_payload
from biounet.data.images import write_png
from biounet.data.normalization import NORMALIZATIONS, PERCENTILES, normalize
from biounet.data.volumes import normalize_volume
from biounet.inference.exported import EXTRA, ignore_tracer_warnings
from biounet.inference.predict import TorchPredictor, predict_image
from biounet.inference.predict_volume import segment_volume
from biounet.integrations.export import (
    ONNX_OPSET,
    checkpoint_voxel_size,
    dynamic_axes,
    export_metadata,
)

INPUT_ID, OUTPUT_ID = "raw", "probabilities"
YAML_NAME = "bioimageio.yaml"
TEST_IMAGE_MIN_SIDE = 256  # the test input is the smallest valid size at least this large (and at least one tile)
TEST_VOLUME_MIN_SHAPE = (16, 48, 48)  # a 3D U-Net's test volume: the smallest valid shape at least this large
PAPER_CITATION = ("Ronneberger, O., Fischer, P., Brox, T. (2015). U-Net: Convolutional Networks for Biomedical "
                  "Image Segmentation. MICCAI 2015, LNCS 9351, 234-241.")
PAPER_DOI = "10.1007/978-3-319-24574-4_28"
CICEK_CITATION = ("Cicek, O., Abdulkadir, A., Lienkamp, S. S., Brox, T., Ronneberger, O. (2016). 3D U-Net: Learning "
                  "Dense Volumetric Segmentation from Sparse Annotation. MICCAI 2016, LNCS 9901, 424-432.")
CICEK_DOI = "10.1007/978-3-319-46723-8_49"


class ProbabilityUNet(UNet):
    """:class:`biounet.core.model.UNet` followed by a softmax over the class axis: the network of a bioimage.io package.

    Built from the fields of a :class:`biounet.core.model.ModelConfig` as keyword arguments (so that a package's
    ``architecture.kwargs`` can hold them); its state dict has the same keys as the plain ``UNet``'s.

    Examples
    --------
    >>> net = ProbabilityUNet(depth=2, base_channels=4).eval()
    >>> probs = net(torch.zeros(1, 1, 44, 44))
    >>> tuple(probs.shape), bool(torch.allclose(probs.sum(1), torch.ones(1, 4, 4)))
    ((1, 2, 4, 4), True)
    """

    def __init__(self, **config: Any) -> None:
        super().__init__(ModelConfig(**config))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> class probabilities (N, num_classes, H', W'), summing to 1 over axis 1
        (a ``distance`` model's extra channel: its sigmoid, :func:`biounet.core.model.output_probabilities`); a 3D
        U-Net's (N, in_channels, Z, Y, X) -> (N, num_classes, Z', Y', X')."""
        return output_probabilities(super().forward(x), self.config.num_classes, self.config.ray_channels)


def preprocessing_for(normalization: str, input_dtype: str, axes: Sequence[str] = ("y", "x")) -> list[Any]:
    """The bioimage.io preprocessing steps that compute biounet's intensity normalisation ``normalization``.

    biounet normalises each plane and channel on its own (:mod:`biounet.data.normalization`), so statistics are taken per sample
    and channel over the spatial axes ``y, x``; a volume for a 3D U-Net as a whole
    (:func:`biounet.data.volumes.volume_normalization`): pass ``axes=("z", "y", "x")``:

    - ``percentile``: ``scale_range`` with percentiles 1 and 99.8 (linear interpolation, as ``np.percentile``);
    - ``minmax``: ``scale_range`` with percentiles 0 and 100;
    - ``zscore``: ``zero_mean_unit_variance`` (population standard deviation, as ``np.std``);
    - ``range``: a fixed ``scale_linear`` from the integer range of ``input_dtype`` to 0..1 (float input: none).

    bioimage.io adds ``eps = 1e-6`` to the divisor where biounet divides exactly (a relative difference of
    ``1e-6 / (p99.8 - p1)``). The steps end by casting to float32, the type the weights take (without that
    last step the spec would append a cast back to the input's data type).

    Raises
    ------
    ValueError
        For an unknown normalisation, or ``range`` with a dtype that is neither integer nor float.
    """
    from bioimageio.spec.model import v0_5 as spec

    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    spatial = [spec.AxisId(axis) for axis in axes]
    to_float = spec.EnsureDtypeDescr(kwargs=spec.EnsureDtypeKwargs(dtype="float32"))
    if normalization == "percentile":
        low, high = PERCENTILES
        return [spec.ScaleRangeDescr(kwargs=spec.ScaleRangeKwargs(axes=spatial, min_percentile=low,
                                                                   max_percentile=high)), to_float]
    if normalization == "minmax":
        return [spec.ScaleRangeDescr(kwargs=spec.ScaleRangeKwargs(axes=spatial, min_percentile=0.0,
                                                                   max_percentile=100.0)), to_float]
    if normalization == "zscore":
        return [spec.ZeroMeanUnitVarianceDescr(kwargs=spec.ZeroMeanUnitVarianceKwargs(axes=spatial)), to_float]
    dtype = np.dtype(input_dtype)
    if dtype.kind == "f":
        return [to_float]
    if dtype.kind not in "ui":
        raise ValueError(f"normalization 'range' needs an integer or float input dtype, got {input_dtype!r}")
    info = np.iinfo(dtype)
    span = float(info.max) - float(info.min)  # biounet.data.normalization: (x - min) / (max - min)
    scale = spec.ScaleLinearDescr(kwargs=spec.ScaleLinearKwargs(gain=1.0 / span, offset=(0 - float(info.min)) / span))
    return [to_float, scale, to_float]


def export_package(
    model: UNet,
    out: str | os.PathLike[str],
    *,
    normalization: str,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
    opset: int = ONNX_OPSET,
    seed: int = 0,
    pixel_size_um: Sequence[float] | None = None,
    voxel_size_um: Sequence[float] | None = None,
) -> Path:
    """Write ``model`` as a bioimage.io model package (format 0.5) to the folder or ``.zip`` file ``out``.

    Parameters
    ----------
    model : UNet
        The network (a copy is exported in eval mode on the CPU).
    out : path-like
        A ``.zip`` file, or a folder that does not exist yet or is empty. Written atomically: a failure leaves
        nothing behind.
    normalization : str
        The checkpoint's intensity normalisation (one of :data:`biounet.data.normalization.NORMALIZATIONS`); becomes the
        package's preprocessing (:func:`preprocessing_for`).
    class_names : sequence of str, optional
        One per class: the output channel names.
    name : str, optional
        The package's ``name``; by default ``"biounet U-Net depth D base B K classes"``.
    opset : int
        ONNX opset of the ONNX weights.
    seed : int
        Seed of the synthetic test image.
    pixel_size_um : (float, float), optional
        The training images' pixel size ``(y, x)``: the space axes' ``unit`` (micrometer) and ``scale``.
    voxel_size_um : (float, float, float), optional
        A 3D U-Net's training voxel size ``(z, y, x)``: the ``z``, ``y``, ``x`` axes' unit and scale.

    Returns
    -------
    out : Path
        The package written; ``bioimageio.spec`` has validated it (errors raise, warnings are logged).

    Raises
    ------
    ModuleNotFoundError
        If bioimageio.spec (or onnx, for the ONNX weights) is not installed.
    ValueError
        For an ``out`` folder that is not empty, a same-padded network, or an invalid description.
    """
    spec_package = _require_bioimageio()
    out = Path(out)
    is_zip = out.suffix.lower() == ".zip"
    if out.exists() and (is_zip and out.is_dir() or not is_zip and (not out.is_dir() or any(out.iterdir()))):
        raise ValueError(f"{out}: exists; give a new or empty folder, or a .zip file")
    if model.config.padding != "valid":
        # bioimage.io tiles with one fixed halo; biounet discards a tile-size-dependent border of same-padded tiles.
        raise ValueError("only valid-padded networks (the paper's) can be exported to bioimage.io")
    metadata = export_metadata(model, normalization=normalization, class_names=class_names,
                               pixel_size_um=pixel_size_um, voxel_size_um=voxel_size_um)
    network = ProbabilityUNet(**model.config.to_dict())
    network.load_state_dict(copy.deepcopy(model).cpu().state_dict())
    network.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        stage = Path(tmp) / "stage"
        stage.mkdir()
        descr = _describe(network, stage, metadata, name=name, opset=opset, seed=seed)
        with spec_package.get_validation_context().replace(file_name=YAML_NAME):  # not the default rdf.yaml
            written = Path(spec_package.save_bioimageio_package_as_folder(descr, output_path=Path(tmp) / "package"))
        if is_zip:
            written = _zip_folder(written, Path(tmp) / out.name)
        # Validated outside the packaging context (inside it, the files the description names are not found).
        _check_valid(spec_package.load_description(written if is_zip else written / YAML_NAME), written)
        if out.is_dir():
            out.rmdir()  # empty, checked above
        os.replace(written, out)
    return out


def export_checkpoint_package(
    checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *, opset: int = ONNX_OPSET
) -> Path:
    """Export the network of a biounet checkpoint with its normalisation and class names (see
    :func:`export_package`)."""
    payload = load_checkpoint(checkpoint)
    model = model_from_payload(payload, checkpoint)
    return export_package(model, out, normalization=str(payload["normalization"]),
                          class_names=payload.get("class_names"), opset=opset,
                          pixel_size_um=payload.get("pixel_size_um"), voxel_size_um=checkpoint_voxel_size(payload))


# --- building the description -------------------------------------------------------------------------------------


class SizeGrid(NamedTuple):
    """The valid sizes of each space axis of a package: input ``first + step * n``, output ``input + offset``."""

    axes: tuple[str, ...]  # ("y", "x"), or a 3D U-Net's ("z", "y", "x")
    first: tuple[int, ...]
    step: tuple[int, ...]
    offset: tuple[int, ...]  # output - input: -2 * margin for valid convolutions


def size_grid(config: ModelConfig) -> SizeGrid:
    """The :class:`SizeGrid` of a network: per space axis its smallest input, pooling step and output offset.

    >>> size_grid(ModelConfig(dims=3, depth=2, flat_levels=1))
    SizeGrid(axes=('z', 'y', 'x'), first=(18, 44, 44), step=(2, 4, 4), offset=(-16, -40, -40))
    """
    first = smallest_input_shape(config)
    offset = tuple(out - size for out, size in zip(output_shape(first, config), first))
    return SizeGrid(("y", "x") if config.dims == 2 else ("z", "y", "x"), first, align_shape(config), offset)


def _describe(
    network: ProbabilityUNet, stage: Path, metadata: dict[str, Any], *, name: str | None, opset: int, seed: int
) -> Any:
    """Write the package's files into ``stage`` and return its ``ModelDescr``."""
    from bioimageio.spec.model import v0_5 as spec

    config, class_names = network.config, metadata["class_names"]
    grid = size_grid(config)
    raw, x, probabilities = _test_tensors(network, metadata, seed)
    np.save(stage / "test_input.npy", raw)
    np.save(stage / "test_output.npy", probabilities)
    _write_cover(network, metadata, raw, stage / "cover.png")
    weights = _write_weights(network, stage, x, opset)

    input_descr, output_descr = _tensor_descrs(network, metadata, stage, str(raw.dtype), grid)
    readme = stage / "README.md"
    readme.write_text(_documentation(metadata, grid), encoding="utf-8")
    volume = config.dims == 3
    title = name or (f"biounet {'3D ' if volume else ''}U-Net depth {config.depth} base {config.base_channels} "
                     f"{config.num_classes} classes")
    sizes = " and ".join(f"{axis} {first} + {step} n" for axis, first, step in
                         zip(grid.axes, grid.first, grid.step)) if volume else f"{grid.first[-1]} + {grid.step[-1]} n"
    what = "3D U-Net (Cicek et al. 2016)" if volume else "2D U-Net (Ronneberger et al. 2015)"
    cite = [spec.CiteEntry(text=PAPER_CITATION, doi=spec.Doi(PAPER_DOI))]
    if volume:
        cite.insert(0, spec.CiteEntry(text=CICEK_CITATION, doi=spec.Doi(CICEK_DOI)))
    return spec.ModelDescr(
        name=title,
        description=(f"{what} with valid convolutions, exported by biounet {__version__}: {config.in_channels} "
                     f"channel(s) in, class probabilities for {', '.join(class_names)} out; tile with input sizes "
                     f"{sizes}"),
        cite=cite,
        license=spec.LicenseId("MIT"),
        tags=["unet", "segmentation", "3d" if volume else "2d", "pytorch", "biounet"],
        documentation=spec.FileDescr(source=readme),
        covers=[spec.FileDescr(source=stage / "cover.png")],
        inputs=[input_descr],
        outputs=[output_descr],
        weights=weights,
        config=spec.Config(biounet=_contract(metadata)),
    )


def _space_units(metadata: dict[str, Any], axes: Sequence[str]) -> list[dict[str, Any]]:
    """Per space axis, its ``unit`` and ``scale`` where the training pixel (or a 3D U-Net's voxel) size is known."""
    size = metadata.get("voxel_size_um") if len(axes) == 3 else metadata["pixel_size_um"]
    return [{"unit": "micrometer", "scale": float(s)} for s in size] if size else [{} for _ in axes]


def _tensor_descrs(
    network: ProbabilityUNet, metadata: dict[str, Any], stage: Path, raw_dtype: str, grid: SizeGrid
) -> tuple[Any, Any]:
    """The input and output ``TensorDescr`` of the package: input sizes ``first + step n`` per space axis, the output
    ``offset`` larger (negative: valid convolutions), space axes in micrometres where the training pixel (voxel)
    size is known."""
    from bioimageio.spec.model import v0_5 as spec

    config, normalization = network.config, metadata["normalization"]
    ids, units = [spec.AxisId(axis) for axis in grid.axes], _space_units(metadata, grid.axes)
    input_descr = spec.InputTensorDescr(
        id=spec.TensorId(INPUT_ID),
        description=f"raw image, {config.in_channels} channel(s); normalised by the preprocessing ({normalization})",
        axes=[
            spec.BatchAxis(),
            spec.ChannelAxis(channel_names=[f"channel{c}" for c in range(config.in_channels)]),
            *(spec.SpaceInputAxis(id=axis, size=spec.ParameterizedSize(min=first, step=step), **unit)
              for axis, first, step, unit in zip(ids, grid.first, grid.step, units)),
        ],
        test_tensor=spec.FileDescr(source=stage / "test_input.npy"),
        data=spec.IntervalOrRatioDataDescr(type=raw_dtype),
        preprocessing=preprocessing_for(normalization, raw_dtype, grid.axes),
    )
    output_descr = spec.OutputTensorDescr(
        id=spec.TensorId(OUTPUT_ID),
        description=(f"class probabilities (softmax over channel); valid convolutions: "
                     f"{' x '.join(str(-o) for o in grid.offset) if config.dims == 3 else -grid.offset[-1]} "
                     f"px smaller"),
        axes=[
            spec.BatchAxis(),
            spec.ChannelAxis(channel_names=list(metadata["class_names"])),
            *(spec.SpaceOutputAxis(id=axis, size=spec.SizeReference(tensor_id=spec.TensorId(INPUT_ID), axis_id=axis,
                                                                     offset=offset), **unit)
              for axis, offset, unit in zip(ids, grid.offset, units)),
        ],
        test_tensor=spec.FileDescr(source=stage / "test_output.npy"),
        data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
    )
    return input_descr, output_descr


def _test_tensors(
    network: ProbabilityUNet, metadata: dict[str, Any], seed: int
) -> tuple[npt.NDArray[Any], torch.Tensor, npt.NDArray[np.float32]]:
    """A synthetic raw test image ``(1, C, S, S)`` (a 3D U-Net's: a volume ``(1, C, Z, Y, X)``), its normalised
    float32 tensor and the network's output."""
    config = network.config
    if config.dims == 3:
        raw = _test_volume(config, metadata, seed)  # (C, Z, Y, X)
        normalised = normalize_volume(np.moveaxis(raw, 0, -1), metadata["normalization"])
    else:
        raw = _test_image(config, metadata, seed)  # (C, S, S)
        normalised = normalize(np.moveaxis(raw, 0, -1), metadata["normalization"])  # as predict does
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(normalised, -1, 0)))[None]
    with torch.inference_mode():
        probabilities = network(x).numpy().astype(np.float32)
    return raw[None], x, probabilities


def _as_raw(image: npt.NDArray[Any], channels: int, normalization: str) -> npt.NDArray[Any]:
    """Channels ``(C, ...)`` of an 8-bit microscope image made of a 0..1 image: float32 unless ``range`` needs the
    integer type."""
    raw = np.stack([np.clip(20 + 200 * image * (1 - 0.15 * c), 0, 255) for c in range(channels)]).astype(np.uint8)
    return raw.astype(np.float32) if normalization != "range" else raw  # the package takes any image as float32


def _test_image(config: ModelConfig, metadata: dict[str, Any], seed: int) -> npt.NDArray[Any]:
    """A synthetic raw test image ``(C, S, S)``: touching cells, the smallest valid side >= TEST_IMAGE_MIN_SIDE."""
    from biounet.data.synthetic import make_sample

    step = metadata["align"]
    side = metadata["smallest_tile"]
    while side < TEST_IMAGE_MIN_SIDE:
        side += step
    image = make_sample("cells", size=side, rng=seed).image[..., 0]  # percentile-normalised, about 0..1
    return _as_raw(image, config.in_channels, metadata["normalization"])


def _test_volume(config: ModelConfig, metadata: dict[str, Any], seed: int) -> npt.NDArray[Any]:
    """A synthetic raw test volume ``(C, Z, Y, X)`` of the smallest valid shape at least TEST_VOLUME_MIN_SHAPE (and
    one tile): a few bright ellipsoids (half as long in z) on smooth noise."""
    shape = [int(size) for size in metadata["smallest_tile_shape"]]
    for axis, step in enumerate(metadata["align_shape"]):
        while shape[axis] < TEST_VOLUME_MIN_SHAPE[axis]:
            shape[axis] += int(step)
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=np.float32)
    image = rng.normal(0.1, 0.05, shape).astype(np.float32)
    for _ in range(6):
        centre, radius = rng.uniform(0, 1, 3) * np.array(shape), rng.uniform(0.15, 0.3) * min(shape[1:])
        image[((z - centre[0]) * 2) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 < radius**2] += 0.7
    return _as_raw(np.clip(image, 0, 1), config.in_channels, metadata["normalization"])


def _write_weights(network: ProbabilityUNet, stage: Path, example: torch.Tensor, opset: int) -> Any:
    """Write the state dict, TorchScript and ONNX weights into ``stage``; return the ``WeightsDescr``."""
    from bioimageio.spec.model import v0_5 as spec

    onnx = require("onnx", "ONNX weights", extra=EXTRA)
    torch_version = spec.Version(torch.__version__.split("+")[0])
    torch.save(network.state_dict(), stage / "weights.pt")
    with warnings.catch_warnings():
        ignore_tracer_warnings()
        traced = torch.jit.trace(network, example, check_trace=False)  # sizes stay shape ops: any valid size runs
        torch.jit.save(traced, str(stage / "weights_torchscript.pt"))
        torch.onnx.export(
            network, (example,), str(stage / "weights.onnx"), dynamo=False, opset_version=opset,
            input_names=[INPUT_ID], output_names=[OUTPUT_ID],
            dynamic_axes=dynamic_axes(INPUT_ID, OUTPUT_ID, network.config.dims),
        )
    onnx.checker.check_model(str(stage / "weights.onnx"))
    parent = "pytorch_state_dict"
    return spec.WeightsDescr(
        pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
            source=stage / "weights.pt",
            architecture=spec.ArchitectureFromLibraryDescr(
                callable=spec.Identifier(ProbabilityUNet.__name__), import_from="biounet.bioimageio",
                kwargs=network.config.to_dict()),
            pytorch_version=torch_version,
            comment=f"needs biounet {__version__} installed (the architecture is imported from it)",
        ),
        torchscript=spec.TorchscriptWeightsDescr(
            source=stage / "weights_torchscript.pt", pytorch_version=torch_version, parent=parent,
            comment="traced; accepts any valid input size"),
        onnx=spec.OnnxWeightsDescr(source=stage / "weights.onnx", opset_version=opset, parent=parent,
                                   comment="TorchScript-based exporter; dynamic batch and spatial axes"),
    )


def _write_cover(network: ProbabilityUNet, metadata: dict[str, Any], raw: npt.NDArray[Any], path: Path) -> None:
    """image | predicted classes, predicted over the whole test image with biounet's overlap-tile strategy (a
    volume's: in 3D, its middle z plane shown)."""
    from biounet.evaluation.report import overlay, side_by_side, to_gray_uint8

    image = np.moveaxis(raw[0], 0, -1)
    predictor = TorchPredictor(UNet(network.config), normalization=metadata["normalization"])
    predictor.model.load_state_dict(network.state_dict())
    if network.config.dims == 3:
        normalised = normalize_volume(image, metadata["normalization"])
        classes = segment_volume(predictor, normalised, memory_budget=2**30).labels
        middle = image.shape[0] // 2
        image, labels = image[middle], classes[middle]
    else:
        labels = predict_image(predictor, normalize(image, metadata["normalization"])).argmax(0)
    write_png(path, side_by_side([to_gray_uint8(image), overlay(image, labels)]))


def _contract(metadata: dict[str, Any]) -> dict[str, Any]:
    """The tiling contract of :func:`biounet.integrations.export.export_metadata`, for the package's ``config.biounet``
    (a 3D U-Net's with its per-axis (z, y, x) contract, :func:`biounet.integrations.export.volume_contract`)."""
    keep = ("biounet_version", "model_config", "class_names", "normalization", "depth", "padding", "align",
            "margin", "smallest_input_size", "smallest_tile", "valid_tile_sizes", "tile_examples")
    if metadata.get("dims") == 3:
        keep += ("dims", "flat_levels", "axes", "voxel_size_um", "align_shape", "margins", "smallest_input_shape",
                 "smallest_tile_shape", "valid_tile_shapes", "tile_shape_examples")
    return {key: metadata[key] for key in keep}


def _documentation(metadata: dict[str, Any], grid: SizeGrid) -> str:
    config = ModelConfig(**metadata["model_config"])
    names = ", ".join(f"{k}: {n}" for k, n in enumerate(metadata["class_names"]))
    first, step, offset = grid.first[-1], grid.step[-1], grid.offset[-1]
    if config.dims == 3:
        net = ("A 3D U-Net as Cicek et al. (2016) describe it (valid 3x3x3 convolutions, 2x2x2 max-pooling and "
               f"up-convolutions; the top {config.flat_levels} level(s) convolve (1x3x3) and pool (1x2x2) in-plane "
               "only, for anisotropic voxels)")
        layout = "(batch, channel, z, y, x)"
        sizes = "; ".join(f"`{a}`: `{f} + {s} n`, output {o:+d}" for a, f, s, o in zip(*grid))
        valid = (f"Valid sizes per axis: {sizes} (n = 0, 1, ...). Preprocessing: biounet's "
                 f"`{metadata['normalization']}` intensity normalisation over the whole volume, per channel")
    else:
        net = ("A 2D U-Net as Ronneberger, Fischer & Brox (2015) describe it (valid 3x3 convolutions, 2x2 "
               "max-pooling, up-convolutions, skip connections cropped to size)")
        layout = "(batch, channel, y, x)"
        valid = (f"Valid sizes of `y` and `x`: `{first} + {step} n` for n = 0, 1, ...\n(the network pools "
                 f"{config.depth} times by 2). Preprocessing: biounet's `{metadata['normalization']}`\nintensity "
                 "normalisation, per image and channel")
    return f"""# biounet U-Net

{net}, exported by biounet {__version__}.
Architecture: depth {config.depth}, {config.base_channels} base channels, {config.variant} variant,
{config.in_channels} input channel(s), {config.num_classes} classes ({names}).

## Input
`raw` `{layout}`. {valid} (see `bioimageio.yaml`).

## Output
`probabilities` `{layout}`, float32, softmax over the classes (they sum to 1). Valid convolutions
shrink the image: output size = input size {offset} ({-offset // 2} px lost on each side in-plane). To segment an
image of any size, tile it with overlapping tiles whose context is mirrored at the image border (the overlap-tile
strategy): each output tile covers the centre of its input tile. Tile origins that are multiples of
{' x '.join(map(str, grid.step))} make the stitched result equal to a single pass over the whole image; `biounet
predict` does this.

## Validation
The test tensors are a synthetic image and biounet's own prediction for it; they check that the weights and the
preprocessing reproduce biounet, not segmentation quality. Validate on annotated images of your own:
`biounet predict` then `biounet evaluate --kind isbi2012` (pixel, Rand and warping error) or `--kind ctc` (SEG).
"""


def _zip_folder(folder: Path, path: Path) -> Path:
    """The files of ``folder`` (flat, as a package folder is) in the zip archive ``path``."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, arcname=file.name)
    return path


def _check_valid(descr: Any, path: Path) -> None:
    from bioimageio.spec import InvalidDescr

    if isinstance(descr, InvalidDescr):
        raise ValueError(f"{path}: the package written is not a valid bioimage.io description:\n"
                         f"{descr.validation_summary.format()}")


def _require_bioimageio() -> Any:
    return require("bioimageio.spec", "bioimage.io export", extra="bioimageio", package="bioimageio.spec")
