"""Typed progress events of a training run, for progress bars and logs (the library itself never prints)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class StepEvent:
    """After every training step."""

    step: int
    loss: float
    lr: float
    elapsed_s: float
    steps_per_s: float


@dataclass(frozen=True)
class ValidationEvent:
    """After each validation (every ``val_every`` steps and at the end); only rank 0 sends it.

    ``scores`` holds the measures of the task (e.g. ``seg`` and ``foreground_iou`` for cells); ``score_name``
    names the one ``best.pt`` is chosen by, and ``higher_is_better`` its direction. Without validation images
    ``scores`` is empty and ``score`` None.
    """

    step: int
    elapsed_s: float
    train_loss: float
    scores: dict[str, float] = field(default_factory=dict)
    score_name: str = ""
    score: float | None = None
    higher_is_better: bool = False
    best: bool = False


Progress = Callable[[StepEvent | ValidationEvent], None]

__all__ = ["Progress", "StepEvent", "ValidationEvent"]
