"""Segmenting an in-memory image as the command line segments a file: :func:`predict_image`.

With ``biounet.train(...)`` (:func:`biounet.training.train.train_dataset`) and ``biounet.evaluate(...)``
(:func:`biounet.evaluation.evaluate.evaluate_folders`) it makes the Python API that mirrors the command line, re-exported
lazily by :mod:`biounet`, so ``import biounet`` stays light::

    import biounet
    run = biounet.train("cells", "runs/cells", time_budget="30m")     # cells/images + cells/labels
    labels = biounet.predict_image(run.run_dir / "model.pt", image, output="instances")
    scores = biounet.evaluate("results", "cells/labels", kind="instances")
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from biounet.inference.settings import instance_settings
from biounet.training.config import parse_duration

if TYPE_CHECKING:
    from biounet.core.model import UNet
    from biounet.inference.predictor import Predictor

OUTPUTS: tuple[str, ...] = ("probabilities", "labels", "instances")


def predict_image(
    model: str | os.PathLike[str] | UNet | Predictor,
    image: npt.NDArray[Any],
    *,
    output: str = "probabilities",
    device: str = "auto",
    precision: str = "auto",
    tta: bool | None = None,
    tile: int | None = None,
    watershed: bool = False,
) -> npt.NDArray[Any]:
    """Segment one in-memory image with the overlap-tile strategy, as ``biounet predict`` does a file.

    Parameters
    ----------
    model : path, UNet or Predictor
        A checkpoint (``model.pt``) or ONNX export, or a loaded network (a bare :class:`~biounet.core.model.UNet`
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
        ``probabilities``: float32 ``(K, H, W)``, summing to 1 over K (a ``distance`` model adds its distance map as
        a last channel). ``labels``: ``(H, W)`` class ids (the arg-max over the classes). ``instances``:
        ``(H, W)`` int32, one id per cell, made as ``biounet predict --instances`` makes
        them (the post-processing stored in the checkpoint).

    Raises
    ------
    ValueError
        On an unknown ``output``, an image that is not 2-D/3-D, a channel count the model does not take, NaN/Inf.
    """
    from biounet.inference.instances import InstanceParams, instances_from_outputs
    from biounet.inference.predict import PredictOptions, segment_image

    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    predictor = _as_predictor(model, device=device, precision=precision, tta=tta)
    result = segment_image(predictor, np.asarray(image), raw=True, options=PredictOptions(tile=tile))
    if output == "probabilities":
        return result.probabilities
    if output == "labels":
        return result.labels
    target, params = instance_settings(model) if isinstance(model, (str, os.PathLike)) else (None, InstanceParams())
    return instances_from_outputs(result.labels, result.probabilities, target=target, params=params,
                                  watershed=watershed)


def _as_predictor(model: Any, *, device: str, precision: str, tta: bool | None) -> Predictor:
    from biounet.core.device import resolve_device, resolve_precision
    from biounet.core.model import UNet
    from biounet.inference.predict import TorchPredictor, load_predictor
    from biounet.inference.predictor import Predictor

    if isinstance(model, Predictor):
        return model
    if isinstance(model, UNet):
        torch_device = resolve_device(device)
        return TorchPredictor(model, device=torch_device, precision=resolve_precision(precision, torch_device),
                              tta=bool(tta))
    if isinstance(model, (str, os.PathLike)):
        return load_predictor(model, device=device, precision=precision, tta=tta)
    raise TypeError(f"model must be a checkpoint path, a UNet or a Predictor, got {type(model).__name__}")


__all__ = ["OUTPUTS", "instance_settings", "parse_duration", "predict_image"]
