"""Export a trained U-Net to ONNX or TorchScript with its tiling contract, and predict with an ONNX export.

An exported file holds the network (input ``image`` ``(N, in_channels, H, W)`` float32, already normalised;
output ``logits`` ``(N, num_classes, H', W')``, softmax over axis 1 gives probabilities) with dynamic batch and
spatial axes, plus everything needed to tile an image of any size as :mod:`biounet.inference.tiling` does: the context
margin, the pooling alignment, the rule for valid tile sizes, the smallest tile, the intensity normalisation, the
class names and the full ``model_config``. The contract is a JSON object stored under the key ``"biounet"`` in
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
    UNet,
    context_margin,
    geometry_sizes,
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
    pixel_size_um: Sequence[float] | None = None,
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

    Returns
    -------
    metadata : dict
        JSON-serialisable. ``margin`` is the context in pixels per side (``in_tile - 2 * margin = out_tile`` for
        valid convolutions); valid tile sides are ``smallest_input_size + k * align`` for ``k >= 0``; tile origins
        must step by multiples of ``align = 2**depth``; ``smallest_tile`` is the smallest input side whose output
        spans one ``align`` period; ``tile_examples`` maps the first few tile sides to their output sides. A
        same-padded network discards ``same_padding_crop`` pixels per side instead of a margin.

    Raises
    ------
    ValueError
        If ``normalization`` is unknown, ``export_format`` is unknown, or there is not one class name per class.
    """
    config = model.config
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
    return {
        "export_format_version": EXPORT_FORMAT_VERSION,
        "biounet_version": __version__,
        "format": export_format,
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
        "input": {"name": INPUT_NAME, "layout": "NCHW", "dtype": "float32", "values": f"{normalization}-normalised"},
        "output": {"name": OUTPUT_NAME, "layout": "NCHW", "dtype": "float32",
                   "values": "logits; softmax over axis 1 gives class probabilities"},
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
    normalization, class_names, pixel_size_um
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
                               export_format=export_format, pixel_size_um=pixel_size_um)
    if export_format == "onnx" and path.suffix.lower() != ".onnx":
        raise ValueError(f"{path}: an ONNX export must have the suffix .onnx, got {path.suffix or 'none'!r}")
    if export_format == "torchscript" and path.suffix.lower() == ".onnx":
        raise ValueError(f"{path}: a TorchScript export must not have the suffix .onnx (use .pt or .ts)")
    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; give a file name")
    network = copy.deepcopy(model).cpu().eval()
    example = torch.zeros(1, model.config.in_channels, metadata["smallest_tile"], metadata["smallest_tile"])
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
        pixel_size_um=payload.get("pixel_size_um"),
    )


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
            dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                          OUTPUT_NAME: {0: "batch", 2: "out_height", 3: "out_width"}},
        )
    proto = onnx.load_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    proto.doc_string = (f"biounet U-Net ({metadata['padding']} convolutions, depth {metadata['depth']}); tiling "
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


__all__ = ["EXPORT_FORMATS", "ONNX_OPSET", "OnnxPredictor", "export_checkpoint", "export_metadata", "export_model",
           "read_metadata"]
