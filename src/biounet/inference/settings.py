"""The inference settings a checkpoint carries: one reader for every caller (CLI, API, napari, demo, blockwise)."""

from __future__ import annotations

import os
from pathlib import Path

from biounet.data.checkpoint import load_checkpoint
from biounet.inference.instances import InstanceParams, post_processing_of
from biounet.inference.segments import SegmentParams


def instance_settings(model_path: str | os.PathLike[str]) -> tuple[str | None, InstanceParams | SegmentParams]:
    """The post-processing stored in a checkpoint (:func:`biounet.inference.instances.post_processing_of`; None and
    defaults for ONNX models)."""
    if Path(model_path).suffix.lower() == ".onnx":
        return None, InstanceParams()
    return post_processing_of(load_checkpoint(Path(model_path)), str(model_path))
