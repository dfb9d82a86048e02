"""biounet: U-Net as Ronneberger, Fischer & Brox (2015) describe it.

The package is cut by stage, each importing only the ones listed before it (``tests/test_imports.py`` checks):

- :mod:`biounet.core`: the network (:mod:`~biounet.core.model`), the weight map (:mod:`~biounet.core.weights`),
  training targets, topology, devices;
- :mod:`biounet.data`: images and labels on disk (TIFF, PNG, zarr, OME-Zarr), dataset layouts, checkpoints;
- :mod:`biounet.inference`: the overlap-tile strategy (:mod:`~biounet.inference.tiling`), prediction, instances
  and segments;
- :mod:`biounet.evaluation`: the challenges' measures (:mod:`~biounet.evaluation.metrics`), evaluation, reports;
- :mod:`biounet.training`: elastic deformation (:mod:`~biounet.training.augment`), the loss, the training loop;
- :mod:`biounet.integrations`: ONNX / TorchScript, bioimage.io, napari, the demo;
- :mod:`biounet.api` and :mod:`biounet.cli`: the jobs from Python and from the shell.

The command line's jobs from Python: ``biounet.train(data, out, time_budget=...)`` (the module
:mod:`biounet.training.train` is callable: :func:`biounet.training.train.train_dataset`), ``biounet.predict_image(model, image)``
(:func:`biounet.api.predict_image`) and ``biounet.evaluate(pred_dir, truth_dir, kind=...)``
(:func:`biounet.evaluation.evaluate.evaluate_folders`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from biounet._version import __version__

__all__ = ["ModelConfig", "UNet", "__version__", "evaluate", "load_model", "predict_image", "train"]

if TYPE_CHECKING:
    from biounet.api import predict_image
    from biounet.core.model import ModelConfig, UNet
    from biounet.data.checkpoint import load_model
    from biounet.evaluation import evaluate
    from biounet.training import train


def __getattr__(name: str) -> Any:
    # Lazy re-exports: importing biounet stays cheap (no torch import until a model is needed).
    if name in ("ModelConfig", "UNet"):
        from biounet.core import model

        return getattr(model, name)
    if name == "load_model":
        from biounet.data.checkpoint import load_model

        return load_model
    if name == "predict_image":
        from biounet.api import predict_image

        return predict_image
    if name in ("evaluate", "train"):  # callable modules (biounet.core.callable_module)
        import importlib

        package = {"evaluate": "evaluation", "train": "training"}[name]
        return importlib.import_module(f"biounet.{package}.{name}")
    raise AttributeError(f"module 'biounet' has no attribute {name!r}")
