"""biounet: U-Net as Ronneberger, Fischer & Brox (2015) describe it.

The modules are named after the paper's concepts: :mod:`biounet.model` (the network), :mod:`biounet.tiling`
(the overlap-tile strategy), :mod:`biounet.weights` (the weight map), :mod:`biounet.augment` (elastic
deformation), :mod:`biounet.loss`, :mod:`biounet.train`, :mod:`biounet.metrics` (the challenges' measures).

The command line's jobs from Python: ``biounet.train(data, out, time_budget=...)`` (the module
:mod:`biounet.train` is callable: :func:`biounet.train.train_dataset`), ``biounet.predict_image(model, image)``
(:func:`biounet.api.predict_image`) and ``biounet.evaluate(pred_dir, truth_dir, kind=...)``
(:func:`biounet.evaluate.evaluate_folders`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["ModelConfig", "UNet", "evaluate", "load_model", "predict_image", "train", "__version__"]

if TYPE_CHECKING:
    from biounet import evaluate, train
    from biounet.api import predict_image
    from biounet.checkpoint import load_model
    from biounet.model import ModelConfig, UNet


def __getattr__(name: str) -> Any:
    # Lazy re-exports: importing biounet stays cheap (no torch import until a model is needed).
    if name in ("ModelConfig", "UNet"):
        from biounet import model

        return getattr(model, name)
    if name == "load_model":
        from biounet.checkpoint import load_model

        return load_model
    if name == "predict_image":
        from biounet.api import predict_image

        return predict_image
    if name in ("evaluate", "train"):  # callable modules (biounet.callable_module)
        import importlib

        return importlib.import_module(f"biounet.{name}")
    raise AttributeError(f"module 'biounet' has no attribute {name!r}")
