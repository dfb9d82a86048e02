"""Checkpoints: one versioned, self-describing file, written atomically and loaded with ``weights_only=True``.

A checkpoint is a plain dict:
``{"format", "kind", "model_config", "normalization", "class_names", "train_config", "step", "model_state", ...}``
plus, for the training checkpoint ``last.pt``, what resuming exactly needs: the optimizer and random-number-generator
states, the elapsed time and the best validation score. No scheduler state is stored: the learning rate is a function
of the step and the elapsed time. Prediction rebuilds the network from ``model_config``, so nothing has to be
retyped.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from biounet.core.model import ModelConfig, UNet
from biounet.data.files import OutputError, write_bytes

CHECKPOINT_FORMAT = 1
CHECKPOINT_KIND = "biounet-checkpoint"
CHECKSUM_KEY = "model_state_sha256"
"""Key of the SHA-256 of the weights (:func:`weights_checksum`), written by :func:`save_checkpoint` and checked by
:func:`load_checkpoint`; checkpoints written before it existed load without the check."""


def weights_checksum(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the tensors of a state dict, in key order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"model_state[{name!r}] is a {type(tensor).__name__}, not a tensor")
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy() if flat.numel() else b"")  # the buffer itself, not a copy
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` (with ``format``, ``kind`` and the weights' checksum added) to ``path`` atomically:
    temporary file, then rename. An ``OSError`` (full disk, read-only file system) is raised as an
    :class:`~biounet.data.files.OutputError` naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(path, err) from err
    extra = {CHECKSUM_KEY: weights_checksum(payload["model_state"])} if "model_state" in payload else {}
    buffer = io.BytesIO()  # serialised in memory, so a full disk is a plain OSError of the write below
    torch.save({"format": CHECKPOINT_FORMAT, "kind": CHECKPOINT_KIND, **payload, **extra}, buffer)
    return write_bytes(path, buffer.getvalue())  # atomic: never a half-written checkpoint


def model_payload(
    model: UNet, *, normalization: str, class_names: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    """The part of a checkpoint that prediction needs: architecture, weights and the input contract."""
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    names = class_names or [f"class{k}" for k in range(model.config.num_classes)]
    return {
        "model_config": model.config.to_dict(),
        "normalization": normalization,
        "class_names": list(names),
        "model_state": state,
        **extra,
    }


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint dict.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a biounet checkpoint, is of another format version, its weights do not match the
        checksum stored with them (a damaged file), or any weight is NaN or infinite.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if not _is_zip(path):  # torch.save writes a zip archive; anything else is not ours
        raise ValueError(f"{path}: not a biounet checkpoint (not a PyTorch zip archive)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError,
            IndexError) as err:  # a damaged archive fails in many ways; each is reported with the file's name
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a biounet checkpoint (cannot be loaded: {first_line})") from err
    if not isinstance(payload, dict) or payload.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{path}: not a biounet checkpoint (no '{CHECKPOINT_KIND}' marker)")
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path}: checkpoint format {payload.get('format')!r} is not supported; this biounet reads format "
            f"{CHECKPOINT_FORMAT}"
        )
    for key in ("model_config", "model_state", "normalization"):
        if key not in payload:
            raise ValueError(f"{path}: corrupt biounet checkpoint, missing {key!r}")
    _check_weights(path, payload)
    return payload


def _check_weights(path: Path, payload: dict[str, Any]) -> None:
    state = payload["model_state"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: corrupt biounet checkpoint, model_state is a {type(state).__name__}, not a dict")
    try:
        checksum = weights_checksum(state)
    except TypeError as err:
        raise ValueError(f"{path}: corrupt biounet checkpoint, {err}") from err
    stored = payload.get(CHECKSUM_KEY)
    if stored is not None and stored != checksum:
        raise ValueError(f"{path}: corrupt biounet checkpoint, the weights do not match their checksum (the file "
                         f"was damaged after it was written)")
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"{path}: checkpoint has {bad} NaN or infinite value(s) in its weights ({name}); "
                             f"the training run diverged or the file is damaged")


def _is_zip(path: Path) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except zipfile.BadZipFile:  # raised for some damaged archives instead of answering False
        return False


def model_from_payload(payload: dict[str, Any], path: str | os.PathLike[str] = "<checkpoint>") -> UNet:
    """Rebuild the network of a loaded checkpoint, in eval mode."""
    try:
        config = ModelConfig(**payload["model_config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: corrupt model_config in checkpoint ({err})") from err
    model = UNet(config, initialize=False)
    try:
        model.load_state_dict(payload["model_state"])
    except (RuntimeError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: weights do not match the model config ({str(err).splitlines()[0]})") from err
    return model.eval()


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> UNet:
    """Load the network stored in a biounet checkpoint (``model.pt``, ``best.pt``, ``last.pt``), in eval mode."""
    payload = load_checkpoint(path)
    return model_from_payload(payload, path).to(device)
