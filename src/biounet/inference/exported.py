"""Exported U-Nets read back: the tiling contract stored in an ONNX or TorchScript export
(:func:`read_metadata`), and :class:`OnnxPredictor`, which runs an ONNX export through onnxruntime. Like
:class:`biounet.inference.predict.TorchPredictor` it is a :class:`biounet.inference.predictor.Predictor`, so
``biounet predict model.onnx ...`` tiles exactly like a checkpoint. :mod:`biounet.integrations.export` writes them.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biounet.core.extras import require
from biounet.core.model import ModelConfig, output_probabilities
from biounet.inference.predictor import Predictor

EXPORT_FORMAT_VERSION = 1
METADATA_KEY = "biounet"  # key in the ONNX model's metadata_props
TORCHSCRIPT_EXTRA_FILE = "biounet.json"  # name of the extra file in a TorchScript archive
INPUT_NAME, OUTPUT_NAME = "image", "logits"
EXTRA = "export"
"""The pip extra that installs onnx and onnxruntime."""


def ignore_tracer_warnings() -> None:
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
                ignore_tracer_warnings()
                torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except RuntimeError as err:
            raise ValueError(f"{path}: not a TorchScript model ({str(err).strip().splitlines()[0]})") from err
        return _parse_metadata(extra[TORCHSCRIPT_EXTRA_FILE], path)
    onnx = require("onnx", "reading an ONNX export", extra=EXTRA)
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
    """An exported ONNX U-Net run by onnxruntime: a :class:`~biounet.inference.predictor.Predictor` like
    :class:`biounet.inference.predict.TorchPredictor`.

    Call it on a float32 batch ``(N, C, in_tile, in_tile)`` to get class probabilities
    ``(N, K, out_tile, out_tile)`` as float32 numpy; the tiling contract comes from the file's metadata. The
    network is rebuilt as a :class:`~biounet.core.model.ModelConfig` from it, so an exported 3D U-Net has ``dims`` 3
    (batches ``(N, C, Z, Y, X)``) and ``biounet predict model.onnx volume.h5`` tiles it in 3D as a checkpoint would.

    Parameters
    ----------
    path : path-like
        An ``.onnx`` file written by :func:`biounet.integrations.export.export_model`.
    device : str
        ``"cpu"``, ``"cuda[:N]"`` (needs onnxruntime's CUDA execution provider) or ``"auto"`` (CUDA when that
        provider is available).
    precision : str
        ``"fp32"`` or ``"auto"`` (both run fp32; the export is an fp32 graph). ``"bf16"`` is rejected.
    tta : bool
        Average the probabilities over the 8 rotations/flips.

    Attributes
    ----------
    voxel_size_um : (float, float, float) or None
        A 3D U-Net's training voxel size ``(z, y, x)`` in micrometres, from the metadata; None for 2D networks and
        where unknown.

    Raises
    ------
    FileNotFoundError, ValueError
        If the file is missing or not a biounet ONNX export, or for an unsupported device or precision.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, device: str = "cpu", precision: str = "fp32", tta: bool = False
    ) -> None:
        onnxruntime = require("onnxruntime", "ONNX prediction", extra=EXTRA)
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
        voxel = self.metadata.get("voxel_size_um")
        self.voxel_size_um = None if voxel is None else (float(voxel[0]), float(voxel[1]), float(voxel[2]))
        self.tta = tta
        self.precision = "fp32"
        self.session = onnxruntime.InferenceSession(str(self.path), providers=_providers(device))

    @property
    def model_config(self) -> ModelConfig:
        return self._model_config

    def _probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        logits = self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch.numpy())})[0]
        return output_probabilities(torch.from_numpy(logits), self.num_classes, self.model_config.ray_channels)


def _providers(device: str) -> list[Any]:
    """onnxruntime execution providers for a device name: ``auto``, ``cpu`` or ``cuda[:N]``."""
    onnxruntime = require("onnxruntime", "ONNX prediction", extra=EXTRA)
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
