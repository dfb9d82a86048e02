"""Segmenting an in-memory image as the command line segments a file: :func:`predict_image`.

With ``biounet.train(...)`` (:func:`biounet.train.train_dataset`) and ``biounet.evaluate(...)``
(:func:`biounet.evaluate.evaluate_folders`) it makes the Python API that mirrors the command line, re-exported
lazily by :mod:`biounet`, so ``import biounet`` stays light::

    import biounet
    run = biounet.train("cells", "runs/cells", time_budget="30m")     # cells/images + cells/labels
    labels = biounet.predict_image(run.run_dir / "model.pt", image, output="instances")
    scores = biounet.evaluate("results", "cells/labels", kind="instances")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from biounet.instances import InstanceParams
    from biounet.model import UNet
    from biounet.predictor import Predictor
    from biounet.segments import SegmentParams

OUTPUTS: tuple[str, ...] = ("probabilities", "labels", "instances")


def predict_image(
    model: str | os.PathLike[str] | UNet | Predictor,
    image: npt.NDArray[Any],
    *,
    output: str = "probabilities",
    device: str = "auto",
    precision: str = "auto",
    tta: bool = False,
    tile: int | None = None,
    watershed: bool = False,
) -> npt.NDArray[Any]:
    """Segment one in-memory image with the overlap-tile strategy, as ``biounet predict`` does a file.

    Parameters
    ----------
    model : path, UNet or Predictor
        A checkpoint (``model.pt``) or ONNX export, or a loaded network (a bare :class:`~biounet.model.UNet`
        is given ``percentile`` input normalisation).
    image : (H, W) or (H, W, C) ndarray
        Raw pixels, any numeric dtype; normalised as the model's checkpoint says.
    output : {"probabilities", "labels", "instances"}, optional
        What to return (see Returns).
    device, precision, tta, tile : optional
        As ``biounet predict``'s ``--device`` (auto, cpu, cuda[:N], mps), ``--precision``, ``--tta``, ``--tile``.
    watershed : bool, optional
        ``output="instances"``: also split merged cells by a seeded watershed.

    Returns
    -------
    ndarray
        ``probabilities``: float32 ``(K, H, W)``, summing to 1 over K. ``labels``: ``(H, W)`` class ids (the
        arg-max). ``instances``: ``(H, W)`` int32, one id per cell, made as ``biounet predict --instances`` makes
        them (the post-processing stored in the checkpoint).

    Raises
    ------
    ValueError
        On an unknown ``output``, an image that is not 2-D/3-D, a channel count the model does not take, NaN/Inf.
    """
    from biounet.instances import InstanceParams, instances_from_outputs
    from biounet.io import normalize
    from biounet.predict import predict_image as predict_probabilities

    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    predictor = _as_predictor(model, device=device, precision=precision, tta=tta)
    probabilities = predict_probabilities(predictor, normalize(np.asarray(image), predictor.normalization),
                                          tile=tile)
    if output == "probabilities":
        return probabilities
    classes = probabilities[: predictor.num_classes]  # a distance model's last channel is its distance map
    labels = classes.argmax(axis=0).astype(np.uint8 if classes.shape[0] <= 256 else np.uint16)
    if output == "labels":
        return labels
    target, params = instance_settings(model) if isinstance(model, (str, os.PathLike)) else (None, InstanceParams())
    return instances_from_outputs(labels, probabilities, target=target, params=params, watershed=watershed)


def _as_predictor(model: Any, *, device: str, precision: str, tta: bool) -> Predictor:
    from biounet.device import resolve_device, resolve_precision
    from biounet.model import UNet
    from biounet.predict import TorchPredictor, load_predictor
    from biounet.predictor import Predictor

    if isinstance(model, Predictor):
        return model
    if isinstance(model, UNet):
        torch_device = resolve_device(device)
        return TorchPredictor(model, device=torch_device, precision=resolve_precision(precision, torch_device),
                              tta=tta)
    if isinstance(model, (str, os.PathLike)):
        return load_predictor(model, device=device, precision=precision, tta=tta)
    raise TypeError(f"model must be a checkpoint path, a UNet or a Predictor, got {type(model).__name__}")


def instance_settings(model_path: str | os.PathLike[str]) -> tuple[str | None, InstanceParams | SegmentParams]:
    """The post-processing stored in a checkpoint (:func:`biounet.instances.post_processing_of`; None and
    defaults for ONNX models)."""
    from biounet.checkpoint import load_checkpoint
    from biounet.instances import InstanceParams, post_processing_of

    if Path(model_path).suffix.lower() == ".onnx":
        return None, InstanceParams()
    return post_processing_of(load_checkpoint(Path(model_path)), str(model_path))


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``15m``, ``1.5h`` or ``1h30m``.

    >>> parse_duration("1h30m"), parse_duration("90")
    (5400.0, 90.0)

    Raises
    ------
    ValueError
        If ``text`` is not such a duration, or is zero.
    """
    import re

    cleaned = text.strip().lower()
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", cleaned)
    if not cleaned or parts is None:
        raise ValueError(f"must be a duration such as 90s, 15m or 1h, got {text!r}")
    hours, minutes, seconds = (float(p) if p else 0.0 for p in parts.groups())
    value = hours * 3600 + minutes * 60 + seconds
    if value <= 0:
        raise ValueError(f"must be a positive duration, got {text!r}")
    return value
