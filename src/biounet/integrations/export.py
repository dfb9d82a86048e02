"""Export a trained U-Net to ONNX or TorchScript with its tiling contract, and predict with an ONNX export.

An exported file holds the network (input ``image`` ``(N, in_channels, H, W)`` float32, already normalised;
output ``logits`` ``(N, num_classes, H', W')``, softmax over axis 1 gives probabilities; a 3D U-Net's
``(N, C, Z, Y, X)``, Cicek et al. 2016) with dynamic batch and spatial axes, plus everything needed to tile an image
of any size as :mod:`biounet.inference.tiling` (a volume: :mod:`biounet.inference.volumes`) does: the context
margin, the pooling alignment, the rule for valid tile sizes, the smallest tile, the intensity normalisation, the
class names, the voxel size and the full ``model_config`` (with ``dims`` and ``flat_levels``). The contract is a JSON object stored under the key ``"biounet"`` in
the ONNX ``metadata_props``, or as the extra file ``biounet.json`` of a TorchScript archive; :func:`read_metadata`
reads either (:mod:`biounet.inference.exported`, with :class:`OnnxPredictor` that predicts with an ONNX export).
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from biounet._version import __version__
from biounet.core.extras import require
from biounet.core.model import (
    ModelConfig,
    UNet,
    align_shape,
    axis_depths,
    context_margin,
    context_margins,
    geometry_sizes,
    output_shape,
    smallest_input_shape,
    smallest_input_size,
    smallest_tile,
)
from biounet.data.checkpoint import load_checkpoint, model_from_payload
from biounet.data.files import OutputError, write_bytes
from biounet.data.normalization import NORMALIZATIONS
from biounet.inference.exported import (
    EXPORT_FORMAT_VERSION,
    EXTRA,
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_NAME,
    TORCHSCRIPT_EXTRA_FILE,
    OnnxPredictor,
    ignore_tracer_warnings,
    read_metadata,
)

EXPORT_FORMATS: tuple[str, ...] = ("onnx", "torchscript")
ONNX_OPSET = 17


def export_metadata(
    model: UNet, *, normalization: str, class_names: Sequence[str] | None = None, export_format: str = "onnx",
    pixel_size_um: Sequence[float] | None = None, voxel_size_um: Sequence[float] | None = None,
) -> dict[str, Any]:
    """The tiling contract of ``model``, as stored in an exported file.

    Parameters
    ----------
    model : UNet
        The network.
    normalization : str
        Intensity normalisation the network was trained with, one of :data:`biounet.data.normalization.NORMALIZATIONS`.
    class_names : sequence of str, optional
        One name per class; ``class0, class1, ...`` when omitted.
    export_format : str
        ``"onnx"`` or ``"torchscript"``; recorded in the metadata.
    pixel_size_um : (float, float), optional
        Pixel size ``(y, x)`` in micrometres of the training images (:mod:`biounet.data.scale`).
    voxel_size_um : (float, float, float), optional
        A 3D U-Net's training voxel size ``(z, y, x)`` in micrometres.

    Returns
    -------
    metadata : dict
        JSON-serialisable. ``dims`` is 2 (images) or 3 (volumes); the in-plane keys below hold for both, and a 3D
        U-Net adds the per-axis ``(z, y, x)`` contract of :func:`volume_contract`. ``margin`` is the context in pixels per side (``in_tile - 2 * margin = out_tile`` for
        valid convolutions); valid tile sides are ``smallest_input_size + k * align`` for ``k >= 0``; tile origins
        must step by multiples of ``align = 2**depth``; ``smallest_tile`` is the smallest input side whose output
        spans one ``align`` period; ``tile_examples`` maps the first few tile sides to their output sides. A
        same-padded network discards ``same_padding_crop`` pixels per side instead of a margin.

    Raises
    ------
    ValueError
        If ``normalization`` is unknown, ``export_format`` is unknown, there is not one class name per class, or a
        voxel size is given for a 2D network or is not three positive lengths.
    """
    config = model.config
    volume = volume_contract(config, voxel_size_um) if config.dims == 3 or voxel_size_um is not None else {}
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {EXPORT_FORMATS}, got {export_format!r}")
    names = list(class_names) if class_names else [f"class{k}" for k in range(config.num_classes)]
    if len(names) != config.num_classes:
        raise ValueError(f"got {len(names)} class names for a network with {config.num_classes} classes")
    align = 2**config.depth
    first = smallest_input_size(config.depth, config.padding)
    smallest = smallest_tile(config)
    tiles = [smallest + k * align for k in range(4)]
    layout = "NCHW" if config.dims == 2 else "NCZYX"
    return {
        "export_format_version": EXPORT_FORMAT_VERSION,
        "biounet_version": __version__,
        "format": export_format,
        "dims": config.dims,
        "model_config": config.to_dict(),
        "in_channels": config.in_channels,
        "num_classes": config.num_classes,
        "class_names": names,
        "normalization": normalization,
        "pixel_size_um": None if pixel_size_um is None else [float(v) for v in pixel_size_um],
        "depth": config.depth,
        "padding": config.padding,
        "align": align,
        "margin": context_margin(config.depth, config.padding),
        "smallest_input_size": first,
        "smallest_tile": smallest,
        "valid_tile_sizes": f"in_tile = {first} + {align} * k for k >= 0, and in_tile >= smallest_tile to tile",
        "tile_examples": {str(t): geometry_sizes(t, config.depth, config.padding)[0] for t in tiles},
        "same_padding_crop": ("each tile discards ceil(in_tile / 8 / align) * align px per side"
                              if config.padding == "same" else None),
        "input": {"name": INPUT_NAME, "layout": layout, "dtype": "float32", "values": f"{normalization}-normalised"},
        "output": {"name": OUTPUT_NAME, "layout": layout, "dtype": "float32",
                   "values": "logits; softmax over axis 1 gives class probabilities"},
        **volume,
    }


def smallest_tile_shape(config: ModelConfig) -> tuple[int, ...]:
    """Per axis, the smallest input size whose output spans one pooling period of that axis (as :func:`smallest_tile`
    in-plane); in z a 3D U-Net with ``flat_levels`` pools ``depth - flat_levels`` times.

    >>> smallest_tile_shape(ModelConfig(dims=3, depth=2, flat_levels=1)), smallest_tile_shape(ModelConfig())
    ((18, 44, 44), (204, 204))
    """
    shape = []
    for depth in axis_depths(config):
        align, size = 2**depth, smallest_input_size(depth, config.padding)
        while geometry_sizes(size, depth, config.padding)[0] < align:
            size += align
        shape.append(size)
    return tuple(shape)


def volume_contract(config: ModelConfig, voxel_size_um: Sequence[float] | None) -> dict[str, Any]:
    """The per-axis ``(z, y, x)`` tiling contract of a 3D U-Net (Cicek et al. 2016), added to its export metadata.

    ``flat_levels`` top levels convolve and pool in-plane only; ``align_shape`` is the pooling factor per axis (tile
    origins step by its multiples); ``margins`` the context per side; valid input sizes per axis are
    ``smallest_input_shape + k * align_shape``; ``voxel_size_um`` the training voxel size (None where unknown).

    Raises
    ------
    ValueError
        If ``config`` is a 2D network or ``voxel_size_um`` is not three positive lengths.
    """
    if config.dims != 3:
        raise ValueError(f"a voxel size (z, y, x) is for 3D U-Nets; this network has dims={config.dims} (use "
                         "pixel_size_um)")
    if voxel_size_um is not None and (len(voxel_size_um) != 3 or not all(float(v) > 0 for v in voxel_size_um)):
        raise ValueError(f"voxel size must be three positive lengths (z, y, x) in µm, got {tuple(voxel_size_um)}")
    first, align, smallest = smallest_input_shape(config), align_shape(config), smallest_tile_shape(config)
    examples = [tuple(s + k * a for s, a in zip(smallest, align)) for k in range(4)]
    return {
        "flat_levels": config.flat_levels,
        "axes": "zyx",
        "voxel_size_um": None if voxel_size_um is None else [float(v) for v in voxel_size_um],
        "align_shape": list(align),
        "margins": list(context_margins(config, smallest)),
        "smallest_input_shape": list(first),
        "smallest_tile_shape": list(smallest),
        "valid_tile_shapes": (f"per axis (z, y, x): in = {list(first)} + {list(align)} * k for k >= 0, and "
                              f"in >= smallest_tile_shape to tile"),
        "tile_shape_examples": {"x".join(map(str, t)): list(output_shape(t, config)) for t in examples},
    }


def export_model(
    model: UNet,
    path: str | os.PathLike[str],
    *,
    export_format: str,
    normalization: str,
    class_names: Sequence[str] | None = None,
    opset: int = ONNX_OPSET,
    pixel_size_um: Sequence[float] | None = None,
    voxel_size_um: Sequence[float] | None = None,
) -> Path:
    """Write ``model`` with its tiling contract to ``path`` as ONNX or TorchScript, atomically.

    Parameters
    ----------
    model : UNet
        The network; exported in eval mode on the CPU (a copy is made, ``model`` is not changed).
    path : path-like
        File to write. ONNX files must end in ``.onnx`` (``biounet predict`` recognises them by the suffix).
    export_format : str
        ``"onnx"`` (dynamic batch and spatial axes, opset ``opset``) or ``"torchscript"`` (traced).
    normalization, class_names, pixel_size_um, voxel_size_um
        The input contract; see :func:`export_metadata`.
    opset : int
        ONNX opset version, at least 17.

    Returns
    -------
    path : Path
        The file written. A failure leaves no partial file behind.

    Raises
    ------
    ValueError
        For an unknown format, an ONNX path without the ``.onnx`` suffix, an opset below 17, or invalid metadata.
    """
    path = Path(path)
    metadata = export_metadata(model, normalization=normalization, class_names=class_names,
                               export_format=export_format, pixel_size_um=pixel_size_um, voxel_size_um=voxel_size_um)
    if export_format == "onnx" and path.suffix.lower() != ".onnx":
        raise ValueError(f"{path}: an ONNX export must have the suffix .onnx, got {path.suffix or 'none'!r}")
    if export_format == "torchscript" and path.suffix.lower() == ".onnx":
        raise ValueError(f"{path}: a TorchScript export must not have the suffix .onnx (use .pt or .ts)")
    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; give a file name")
    network = copy.deepcopy(model).cpu().eval()
    example = example_input(model.config)
    if export_format == "onnx":
        data = _onnx_bytes(network, example, metadata, opset)
    else:
        data = _torchscript_bytes(network, example, metadata)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(path, err) from err
    return write_bytes(path, data)  # atomic: a full disk leaves neither a partial file nor a temporary one


def export_checkpoint(
    checkpoint: str | os.PathLike[str], path: str | os.PathLike[str], *, export_format: str, opset: int = ONNX_OPSET
) -> Path:
    """Export the network of a biounet checkpoint with its normalisation and class names (see :func:`export_model`;
    a bioimage.io package is :func:`biounet.integrations.bioimageio.export_checkpoint_package`, which builds on this module)."""
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {EXPORT_FORMATS}, got {export_format!r}")
    payload = load_checkpoint(checkpoint)
    return export_model(
        model_from_payload(payload, checkpoint), path, export_format=export_format,
        normalization=str(payload["normalization"]), class_names=payload.get("class_names"), opset=opset,
        pixel_size_um=payload.get("pixel_size_um"), voxel_size_um=checkpoint_voxel_size(payload),
    )


def checkpoint_voxel_size(payload: dict[str, Any]) -> tuple[float, float, float] | None:
    """A 3D checkpoint's training voxel size ``(z, y, x)`` in µm: its ``voxel_size_um``, else its run's
    ``train_config.voxel_size`` (what ``biounet train`` on volumes records); None for 2D networks and where unknown."""
    if int(payload["model_config"].get("dims", 2)) != 3:
        return None
    size = payload.get("voxel_size_um") or (payload.get("train_config") or {}).get("voxel_size")
    return None if size is None else (float(size[0]), float(size[1]), float(size[2]))


def example_input(config: ModelConfig) -> torch.Tensor:
    """The zero batch an export is traced with: one smallest tile, ``(1, C, S, S)`` or a 3D U-Net's
    ``(1, C, Z, Y, X)`` (:func:`smallest_tile_shape`); the traced sizes stay shape operations, so any valid size runs."""
    shape = (smallest_tile(config),) * 2 if config.dims == 2 else smallest_tile_shape(config)
    return torch.zeros(1, config.in_channels, *shape)


def dynamic_axes(input_name: str, output_name: str, dims: int) -> dict[str, dict[int, str]]:
    """ONNX dynamic axes: batch and every spatial axis, ``(N, C, H, W)`` or ``(N, C, Z, Y, X)``."""
    names = ("y", "x") if dims == 2 else ("z", "y", "x")
    return {input_name: {0: "batch", **{2 + i: name for i, name in enumerate(names)}},
            output_name: {0: "batch", **{2 + i: f"out_{name}" for i, name in enumerate(names)}}}


def _onnx_bytes(network: UNet, example: torch.Tensor, metadata: dict[str, Any], opset: int) -> bytes:
    onnx = require("onnx", "ONNX export", extra=EXTRA)

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        ignore_tracer_warnings()
        # The TorchScript-based exporter (dynamo=False): the torch.export-based default needs onnxscript, which
        # biounet does not depend on. Its trace keeps center_crop's sizes as shape operations, so any valid tile
        # size runs (the tests check sizes other than the example's).
        torch.onnx.export(
            network, (example,), buffer, dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes=(dynamic_axes(INPUT_NAME, OUTPUT_NAME, 3) if metadata["dims"] == 3 else
                          {INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                           OUTPUT_NAME: {0: "batch", 2: "out_height", 3: "out_width"}}),
        )
    proto = onnx.load_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    proto.doc_string = (f"biounet {metadata['dims']}D U-Net ({metadata['padding']} convolutions, depth "
                        f"{metadata['depth']}); tiling "
                        f"contract as JSON in metadata_props[{METADATA_KEY!r}]")
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())


def _torchscript_bytes(network: UNet, example: torch.Tensor, metadata: dict[str, Any]) -> bytes:
    with warnings.catch_warnings():
        ignore_tracer_warnings()
        # Traced, not scripted: the sizes of center_crop are recorded as shape operations, so the trace accepts
        # any valid tile size (the tests check this at sizes other than the example's, which is why the tracer's
        # own re-run check, a second slow trace, is off).
        traced = torch.jit.trace(network, example, check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_EXTRA_FILE: json.dumps(metadata)})
    return buffer.getvalue()


__all__ = ["EXPORT_FORMATS", "ONNX_OPSET", "OnnxPredictor", "checkpoint_voxel_size", "dynamic_axes", "example_input",
           "export_checkpoint", "export_metadata", "export_model", "read_metadata", "smallest_tile_shape",
           "volume_contract"]
