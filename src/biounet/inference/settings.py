"""The inference settings a checkpoint carries: one reader for every caller (CLI, API, napari, demo, blockwise)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import TypeVar

from biounet.data.checkpoint import load_checkpoint
from biounet.inference.instances import InstanceParams, post_processing_of
from biounet.inference.segments import SegmentParams


def instance_settings(model_path: str | os.PathLike[str]) -> tuple[str | None, InstanceParams | SegmentParams]:
    """The post-processing stored in a checkpoint (:func:`biounet.inference.instances.post_processing_of`; None and
    defaults for ONNX models)."""
    if Path(model_path).suffix.lower() == ".onnx":
        return None, InstanceParams()
    return post_processing_of(load_checkpoint(Path(model_path)), str(model_path))


Params = TypeVar("Params", InstanceParams, SegmentParams)

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _parsed(name: str, text: str, current: object) -> object:
    """``text`` as the type of the field's ``current`` value (bool, int, float or str)."""
    if isinstance(current, bool):
        if text.lower() not in _TRUE + _FALSE:
            raise ValueError(f"post-processing {name}={text}: expected true or false")
        return text.lower() in _TRUE
    for kind, wanted in ((int, "an integer"), (float, "a number")):
        if isinstance(current, kind):
            try:
                return kind(text)
            except ValueError:
                raise ValueError(f"post-processing {name}={text}: expected {wanted}") from None
    return text


def with_overrides(params: Params, assignments: Sequence[str]) -> Params:
    """``params`` with each ``KEY=VALUE`` of ``assignments`` set (``predict --post-processing``), values read as the
    field's type; the settings' own checks apply.

    >>> with_overrides(InstanceParams(), ["seed_threshold=0.6", "background_bias=2"]).background_bias
    2.0

    Raises
    ------
    ValueError
        Naming the assignment: not ``KEY=VALUE``, a key the settings do not have (the valid ones listed), a value
        of the wrong type or out of range.
    """
    names = [f.name for f in fields(params)]
    changes: dict[str, object] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise ValueError(f"post-processing {assignment!r}: expected KEY=VALUE, e.g. {names[0]}=...")
        if name not in names:
            raise ValueError(f"post-processing {name!r}: not a setting of this model's post-processing "
                             f"({type(params).__name__}: {', '.join(names)})")
        changes[name] = _parsed(name, text.strip(), getattr(params, name))
    return replace(params, **changes)


__all__ = ["instance_settings", "with_overrides"]
