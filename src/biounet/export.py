"""Export a trained U-Net to ONNX or TorchScript with its tiling contract, and predict with an ONNX export.

An exported file holds the network (input ``image`` ``(N, in_channels, H, W)`` float32, already normalised;
output ``logits`` ``(N, num_classes, H', W')``, softmax over axis 1 gives probabilities) with dynamic batch and
spatial axes, plus everything needed to tile an image of any size as :mod:`biounet.tiling` does: the context
margin, the pooling alignment, the rule for valid tile sizes, the smallest tile, the intensity normalisation, the
class names and the full ``model_config``. The contract is a JSON object stored under the key ``"biounet"`` in
the ONNX ``metadata_props``, or as the extra file ``biounet.json`` of a TorchScript archive; :func:`read_metadata`
reads either. :class:`OnnxPredictor` runs an ONNX export through onnxruntime; like
:class:`biounet.predict.TorchPredictor` it is a :class:`biounet.predictor.Predictor`, so
``biounet predict model.onnx ...`` tiles exactly like a checkpoint.
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import biounet
from biounet.checkpoint import load_checkpoint, model_from_payload
from biounet.io import NORMALIZATIONS, OutputError, write_bytes
from biounet.model import (
    ModelConfig, UNet, context_margin, geometry_sizes, output_probabilities, smallest_input_size, smallest_tile,
)
from biounet.predictor import Predictor

EXPORT_FORMATS: tuple[str, ...] = ("onnx", "torchscript")
EXPORT_FORMAT_VERSION = 1
METADATA_KEY = "biounet"  # key in the ONNX model's metadata_props
TORCHSCRIPT_EXTRA_FILE = "biounet.json"  # name of the extra file in a TorchScript archive
ONNX_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "image", "logits"


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
        Intensity normalisation the network was trained with, one of :data:`biounet.io.NORMALIZATIONS`.
    class_names : sequence of str, optional
        One name per class; ``class0, class1, ...`` when omitted.
    export_format : str
        ``"onnx"`` or ``"torchscript"``; recorded in the metadata.
    pixel_size_um : (float, float), optional
        Pixel size ``(y, x)`` in micrometres of the training images (:mod:`biounet.scale`).

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
        "biounet_version": biounet.__version__,
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
    a bioimage.io package is :func:`biounet.bioimageio.export_checkpoint_package`, which builds on this module)."""
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {EXPORT_FORMATS}, got {export_format!r}")
    payload = load_checkpoint(checkpoint)
    return export_model(
        model_from_payload(payload, checkpoint), path, export_format=export_format,
        normalization=str(payload["normalization"]), class_names=payload.get("class_names"), opset=opset,
        pixel_size_um=payload.get("pixel_size_um"),
    )


def _onnx_bytes(network: UNet, example: torch.Tensor, metadata: dict[str, Any], opset: int) -> bytes:
    onnx = _require("onnx")

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        _ignore_tracer_warnings()
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
        _ignore_tracer_warnings()
        # Traced, not scripted: the sizes of center_crop are recorded as shape operations, so the trace accepts
        # any valid tile size (the tests check this at sizes other than the example's, which is why the tracer's
        # own re-run check, a second slow trace, is off).
        traced = torch.jit.trace(network, example, check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_EXTRA_FILE: json.dumps(metadata)})
    return buffer.getvalue()


def _ignore_tracer_warnings() -> None:
    """Inside ``warnings.catch_warnings()``: hide the tracer's notices. ``center_crop``'s check for a crop larger
    than the map becomes a constant (it never fires for valid sizes); the rest are deprecation notices of the
    TorchScript-based tracer that both formats use."""
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
    warnings.filterwarnings("ignore", message=".*feature will be removed.*")


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The tiling contract stored in an ONNX or TorchScript export (see :func:`export_metadata`).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a biounet export, or of another export format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    if zipfile.is_zipfile(path):  # a TorchScript archive
        extra = {TORCHSCRIPT_EXTRA_FILE: ""}
        try:
            with warnings.catch_warnings():
                _ignore_tracer_warnings()
                torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except RuntimeError as err:
            raise ValueError(f"{path}: not a TorchScript model ({str(err).strip().splitlines()[0]})") from err
        return _parse_metadata(extra[TORCHSCRIPT_EXTRA_FILE], path)
    onnx = _require("onnx")
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except DecodeError as err:
        raise ValueError(f"{path}: neither an ONNX nor a TorchScript model ({err})") from err
    props = {entry.key: entry.value for entry in proto.metadata_props}
    return _parse_metadata(props.get(METADATA_KEY, ""), path)


def _parse_metadata(text: str | bytes, path: Path) -> dict[str, Any]:
    if not text:
        raise ValueError(f"{path}: not a biounet export (no {METADATA_KEY!r} metadata)")
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: corrupt biounet metadata ({err})") from err
    version = metadata.get("export_format_version") if isinstance(metadata, dict) else None
    if version != EXPORT_FORMAT_VERSION:
        raise ValueError(f"{path}: biounet export format {version!r} is not supported; this biounet reads format "
                         f"{EXPORT_FORMAT_VERSION}")
    return dict(metadata)


class OnnxPredictor(Predictor):
    """An exported ONNX U-Net run by onnxruntime: a :class:`~biounet.predictor.Predictor` like
    :class:`biounet.predict.TorchPredictor`.

    Call it on a float32 batch ``(N, C, in_tile, in_tile)`` to get class probabilities
    ``(N, K, out_tile, out_tile)`` as float32 numpy; the tiling contract comes from the file's metadata.

    Parameters
    ----------
    path : path-like
        An ``.onnx`` file written by :func:`export_model`.
    device : str
        ``"cpu"``, ``"cuda[:N]"`` (needs onnxruntime's CUDA execution provider) or ``"auto"`` (CUDA when that
        provider is available).
    precision : str
        ``"fp32"`` or ``"auto"`` (both run fp32; the export is an fp32 graph). ``"bf16"`` is rejected.
    tta : bool
        Average the probabilities over the 8 rotations/flips.

    Raises
    ------
    FileNotFoundError, ValueError
        If the file is missing or not a biounet ONNX export, or for an unsupported device or precision.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, device: str = "cpu", precision: str = "fp32", tta: bool = False
    ) -> None:
        onnxruntime = _require("onnxruntime")
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        if self.metadata.get("format") != "onnx":
            raise ValueError(f"{self.path}: a {self.metadata.get('format')} export, expected an ONNX export")
        if precision not in ("auto", "fp32"):
            raise ValueError(f"precision {precision!r} is not supported for ONNX models (an fp32 graph); use fp32")
        try:
            self._model_config = ModelConfig(**self.metadata["model_config"])
        except (TypeError, KeyError) as err:
            raise ValueError(f"{self.path}: corrupt model_config in biounet metadata ({err})") from err
        self.normalization = str(self.metadata["normalization"])
        self.class_names = list(self.metadata["class_names"])
        size = self.metadata.get("pixel_size_um")
        self.pixel_size_um = None if size is None else (float(size[0]), float(size[1]))
        self.tta = tta
        self.precision = "fp32"
        self.session = onnxruntime.InferenceSession(str(self.path), providers=_providers(device))

    @property
    def model_config(self) -> ModelConfig:
        return self._model_config

    def _probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        logits = self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch.numpy())})[0]
        return output_probabilities(torch.from_numpy(logits), self.num_classes)


def _providers(device: str) -> list[Any]:
    """onnxruntime execution providers for a device name: ``auto``, ``cpu`` or ``cuda[:N]``."""
    onnxruntime = _require("onnxruntime")
    has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    if device == "auto":
        device = "cuda" if has_cuda else "cpu"
    if device == "cpu":
        return ["CPUExecutionProvider"]
    index = device.removeprefix("cuda").removeprefix(":")
    if not device.startswith("cuda") or not (index == "" or index.isdigit()):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    if not has_cuda:
        raise ValueError(f"device {device!r} requested but onnxruntime has no CUDA execution provider; "
                         f"use --device cpu")
    return [("CUDAExecutionProvider", {"device_id": int(index or 0)})]


def _require(name: str) -> Any:
    """Import an optional dependency of ONNX export and prediction, saying how to install it when missing."""
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"{name} is needed for ONNX export and prediction; install it with: pip install 'biounet[export]'"
        ) from err
