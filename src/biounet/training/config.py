"""What determines a training run: :class:`TrainConfig`, the recipes, and its ``config.toml`` form.

Recipes:

- ``paper``: SGD with momentum 0.99, one large tile (572 px) per step, base 64, fp32, constant learning rate, no
  normalisation layers (the paper's network).
- ``fast``: Adam, learning rate warmed up for ``warmup_steps`` then cosine-decayed to 5 % over the run (by step
  count, or by elapsed time under a time budget), bf16 autocast where the hardware runs it natively, and batch
  normalisation after every convolution (its statistics recomputed before each validation,
  :func:`biounet.training.train.recalibrate_batch_norm`): on held-out DIC-HeLa it turned 1,000 steps from no separated
  cell into pooled SEG 0.80 (docs/results.md, "Batch normalisation").
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from biounet.core.device import COMPUTE_PRECISIONS as PRECISIONS
from biounet.core.model import (
    ModelConfig,
    anisotropic_levels,
    nearest_valid_shape,
    nearest_valid_sizes,
    output_shape,
    output_size,
)
from biounet.data.datasets import LABEL_KINDS
from biounet.data.diameter import check_diameter
from biounet.data.files import write_text
from biounet.data.normalization import NORMALIZATIONS
from biounet.data.scale import PixelSizeUm, common_pixel_size, micrometres
from biounet.training.augment import AugmentConfig

RECIPES: tuple[str, ...] = ("fast", "paper")
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
SCHEDULES: tuple[str, ...] = ("cosine", "constant")
TRAIN_TARGETS: tuple[str, ...] = ("auto", "paper", "boundary", "distance", "stardist", "affinities")
"""Target representations training supports (:mod:`biounet.core.targets`); ``auto`` is resolved by
:func:`resolve_target` once the data are loaded."""
CELL_TARGET_SCORES: dict[float, dict[str, float]] = {
    600.0: {"paper": 0.788, "boundary": 0.830, "distance": 0.799},  # DIC 0.822/0.834/0.838, nuclei 0.755/0.825/0.760
}
"""Held-out score of each target after that many seconds of ``biounet train`` (fast recipe, base 16) on 2 CPU
cores: the mean of the pooled SEG on DIC-HeLa (held-out gold frames) and on synthetic touching nuclei, printed by
``python experiments/separation.py --time-budget 10m`` (docs/results.md, "Cell Tracking Challenge, DIC-HeLa" and
"Touching nuclei").
:func:`cell_target_for` picks from it; a new column (5 or 30 minutes) extends the choice to that budget."""
SELECT_BY: tuple[str, ...] = ("auto", "seg", "object_f1", "foreground_iou", "pixel_error", "rand_error", "mean_iou")
"""Validation measures a run can keep its best checkpoint by; ``auto``: SEG for cells, Rand error for membranes,
mean IoU otherwise (see :func:`biounet.evaluation.validation.score_name`)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run; written to ``config.toml`` and stored in checkpoints."""

    data: str
    layout: str | None = None
    label_kind: str = "auto"  # pairs layout: "classes", "instances" (one id per cell), or "auto" (guessed)
    silver: bool = False  # ctc layout: also train on the silver-truth frames
    exclude: tuple[str, ...] = ()  # sample names left out of training and validation (held out for testing)
    ignore_label: int | None = None  # pairs layout: label value of unannotated pixels (sparse annotation)
    init: str | None = None  # start from this trained model (fine-tuning); a new class count replaces its head
    pixel_size: tuple[float, float] | None = None  # µm (y, x) of the training images; None: from their metadata
    recipe: str = "fast"
    base_channels: int = 16
    depth: int = 4
    variant: str = "paper"
    batch_norm: bool = False
    tile: int = 572  # input tile side; labels and weights are cut at the network's output size
    batch_size: int = 1
    iterations: int | None = None
    time_budget_s: float | None = None
    precision: str = "fp32"
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.99
    weight_decay: float = 0.0
    warmup_steps: int = 20
    schedule: str = "cosine"  # or "constant"
    target: str = "auto"  # auto | paper | boundary | distance | stardist | affinities (biounet.core.targets)
    boundary_px: int = 2  # width of the boundary target's band
    distance_weight: float = 1.0  # distance target: weight of the distance map's squared error beside the CE
    n_rays: int = 32  # stardist target: radial distances per pixel (StarDist's default)
    ray_weight: float = 0.2  # stardist target: weight of the distances' error beside the probabilities' (StarDist's)
    w0: float = 10.0  # border term of eq. 2; 0 switches it off
    sigma_px: float = 5.0
    class_balance: bool = True  # w_c = 1 / (K' f_c); independent of the border term
    select_by: str = "auto"  # the validation measure that picks best.pt
    validation_fraction: float = 0.2
    val_every: int = 200
    seed: int = 0
    normalization: str = "percentile"
    workers: int = 0  # data-loading processes; 0 = in the training process (best on 2 cores)
    compile: bool | str = "auto"  # training steps through torch.compile: True, False or "auto" (resolve_compile)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    dims: int = 2  # 2: images (slice-wise for volumes); 3: volumes train a 3D U-Net (Cicek et al. 2016)
    tile_z: int | None = None  # 3D: input window depth; None: from the in-plane tile and the voxel size
    flat_levels: int = 0  # 3D: in-plane-only levels for anisotropic voxels (core.model.anisotropic_levels)
    voxel_size: tuple[float, float, float] | None = None  # µm (z, y, x) of training volumes; None: their metadata
    diameter: float | str = "auto"  # cells: px the median object is resampled to (data.diameter); auto | off | px

    def __post_init__(self) -> None:
        for name, allowed in (("target", TRAIN_TARGETS), ("select_by", SELECT_BY), ("label_kind", LABEL_KINDS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not (isinstance(self.compile, bool) or self.compile == "auto"):
            raise ValueError(f"compile must be True, False or 'auto', got {self.compile!r}")
        if self.pixel_size is not None:
            micrometres(*self.pixel_size)  # checks it
        if self.diameter not in ("auto", "off"):
            check_diameter(self.diameter)  # names the bad value
        if self.boundary_px < 1 or self.w0 < 0 or self.sigma_px <= 0:
            raise ValueError(f"boundary_px must be >= 1, w0 >= 0 and sigma_px > 0; got {self.boundary_px}, "
                             f"{self.w0}, {self.sigma_px}")
        if self.n_rays < 3 or self.ray_weight < 0:
            raise ValueError(f"n_rays must be >= 3 and ray_weight >= 0, got {self.n_rays} and {self.ray_weight}")
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be fp32 or bf16 (resolve 'auto' first), got {self.precision!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be cosine or constant, got {self.schedule!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.iterations is None and self.time_budget_s is None:
            raise ValueError("give iterations or a time budget")
        if self.iterations is not None and self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"time budget must be > 0 seconds, got {self.time_budget_s}")
        for name in ("batch_size", "val_every", "base_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.workers < 0:
            raise ValueError(f"lr must be > 0, warmup_steps and workers >= 0; got {self.lr}, "
                             f"{self.warmup_steps}, {self.workers}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        self._check_volume_settings()
        try:
            output_size(self.tile, self.depth, "valid")
        except ValueError:
            below, above = nearest_valid_sizes(self.tile, self.depth)
            raise ValueError(f"tile size {self.tile} is not valid for a U-Net of depth {self.depth}; nearest valid "
                             f"tile sizes: {below} or {above}") from None

    def _check_volume_settings(self) -> None:
        if self.dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {self.dims!r}")
        if self.dims == 2 and (self.flat_levels or self.tile_z is not None):
            raise ValueError("tile_z and flat_levels are settings of 3D training (dims 3)")
        if self.voxel_size is not None and (len(self.voxel_size) != 3 or min(self.voxel_size) <= 0):
            raise ValueError(f"voxel size must be three positive lengths (z, y, x) in µm, got {self.voxel_size}")
        if self.dims == 3 and self.tile_z is not None and self.voxel_size is not None:
            # the valid depths depend on the in-plane-only levels, which the voxel size decides: checked here when
            # it is given, else by resolve_volume once the volumes tell it
            flat = self.flat_levels or anisotropic_levels(self.voxel_size, self.depth)
            output_shape(self.window_shape, replace(self.model_config(1, 2), flat_levels=flat))  # names valid sizes

    @property
    def window_shape(self) -> tuple[int, ...]:
        """The training window the network sees: ``(tile, tile)``, or ``(tile_z, tile, tile)`` in 3D (``tile_z``
        is resolved with the voxel size, :func:`resolve_volume`)."""
        if self.dims == 2:
            return (self.tile, self.tile)
        return (self.tile_z if self.tile_z is not None else self.tile, self.tile, self.tile)

    def model_config(self, in_channels: int, num_classes: int, *, distance: bool = False,
                     rays: int = 0, affinities: int = 0) -> ModelConfig:
        return ModelConfig(in_channels=in_channels, num_classes=num_classes, depth=self.depth,
                           base_channels=self.base_channels, variant=self.variant, batch_norm=self.batch_norm,
                           distance_channels=int(distance), ray_channels=rays, affinity_channels=affinities,
                           dims=self.dims,
                           flat_levels=self.flat_levels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        values = dict(values)
        for name in ("exclude", "pixel_size", "voxel_size"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        augment = values.pop("augment", {}) or {}
        augment = {k: tuple(v) if isinstance(v, list) else v for k, v in augment.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(unknown)}")
        return cls(**values, augment=AugmentConfig(**augment))


def recipe_defaults(recipe: str) -> dict[str, Any]:
    """Settings that define a recipe (see the module docstring)."""
    if recipe == "paper":
        return dict(recipe="paper", optimizer="sgd", lr=0.01, momentum=0.99, batch_size=1, base_channels=64,
                    tile=572, precision="fp32", schedule="constant", warmup_steps=0, target="paper", batch_norm=False)
    if recipe == "fast":
        return dict(recipe="fast", optimizer="adam", lr=1e-3, batch_size=1, tile=572, schedule="cosine",
                    warmup_steps=20, batch_norm=True)
    raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")


def resolve_target(config: TrainConfig, task: str) -> tuple[TrainConfig, str | None]:
    """``target="auto"`` made concrete for a task: for instance-labelled cells the target that won the measurement
    nearest the run's budget (:func:`cell_target_for`), ``paper`` for everything else (where the targets
    coincide). Returns the config and a note saying why (None if given).

    Raises
    ------
    ValueError
        For ``stardist`` on labels that are not instance-labelled cells (its polygons outline single objects).
    """
    if config.target == "stardist" and task != "cells":
        raise ValueError(f"--target stardist needs instance labels (one id per cell), but these labels are {task}"
                         f"{' (a cell / membrane map)' if task == 'membranes' else ''}: give --label-kind "
                         "instances for instance masks, or another --target")
    if config.target == "affinities" and (task != "membranes" or config.dims != 2):
        raise ValueError(f"--target affinities needs 2D membrane labels (cells between membranes, as ISBI 2012's), "
                         f"but these labels are {task}{' volumes' if config.dims == 3 else ''}: use another --target")
    if config.target != "auto":
        return config, None
    if task == "cells":
        target, budget_s, scores = cell_target_for(config.time_budget_s)
        shown = ", ".join(f"{name} {score:.2f}" for name, score in scores.items())
        return replace(config, target=target), (
            f"target {target}: for instance-labelled cells it scored best of the targets measured for "
            f"{budget_s / 60:.0f} min on 2 CPU cores, the measurement nearest this run's budget (held-out pooled SEG, "
            f"mean of DIC-HeLa and synthetic nuclei: {shown}); --target paper|boundary|distance|stardist to choose")
    return replace(config, target="paper"), None


def cell_target_for(budget_s: float | None) -> tuple[str, float, dict[str, float]]:
    """The target with the best score in :data:`CELL_TARGET_SCORES` at the measured budget nearest ``budget_s``
    (nearest in ratio; the longest measured for a run given iterations), with that budget and its scores.

    >>> cell_target_for(600.0)[0] in ("paper", "boundary", "distance")
    True
    """
    budgets = sorted(CELL_TARGET_SCORES)
    measured = budgets[-1] if budget_s is None else min(budgets, key=lambda b: abs(math.log(b / budget_s)))
    scores = CELL_TARGET_SCORES[measured]
    return max(scores, key=lambda name: scores[name]), measured, scores


COMPILE_AUTO_MIN_BUDGET_S = 600.0
"""``compile="auto"`` compiles the training steps of a single-process CPU run with a time budget of at least this
(seconds), where it measured faster (docs/performance.md, "Training", 2 CPU cores, bf16, batch norm): base 16 ran 4.73
instead of 4.04 steps/s after 46 s of compilation, and a 10-minute ISBI 2012 run trained 1,075 steps against 957
(1.12x, the compilation included). Shorter runs, runs given iterations, 3D runs, GPUs and DDP were not measured:
eager."""


def resolve_compile(config: TrainConfig, device_type: str, *, world_size: int = 1) -> tuple[bool, str | None]:
    """Whether the training steps run through ``torch.compile``: ``config.compile`` where it is True or False;
    for ``"auto"`` where it measured faster (:data:`COMPILE_AUTO_MIN_BUDGET_S`). Returns the choice and, where
    ``auto`` chose to compile, a note saying why.

    >>> resolve_compile(TrainConfig(data="x", time_budget_s=1200.0), "cpu")[0]
    True
    >>> resolve_compile(TrainConfig(data="x", time_budget_s=300.0), "cpu"), resolve_compile(
    ...     TrainConfig(data="x", time_budget_s=1200.0), "cuda")
    ((False, None), (False, None))
    """
    if isinstance(config.compile, bool):
        return config.compile, None
    budget = config.time_budget_s
    if (device_type != "cpu" or world_size != 1 or budget is None or budget < COMPILE_AUTO_MIN_BUDGET_S
            or config.dims != 2):
        return False, None
    return True, (f"compile auto: training steps through torch.compile (a CPU run of {budget / 60:.0f} min; it "
                  f"measured faster on CPU for budgets of {COMPILE_AUTO_MIN_BUDGET_S / 60:.0f} min and more); eager "
                  "steps if compilation fails")


def resolve_pixel_size(config: TrainConfig, sizes: list[PixelSizeUm | None]) -> tuple[TrainConfig, str | None]:
    """``config.pixel_size``, or the one all training images record in their metadata (:mod:`biounet.data.scale`).
    Returns the config and a note saying what is recorded (None where nothing is to say)."""
    if config.pixel_size is not None:
        return config, None
    common = common_pixel_size(sizes)
    if common is None:
        if any(size is not None for size in sizes):
            return config, ("pixel size: the training images record different or no pixel sizes; none is recorded in "
                            "the model (give --pixel-size for predict to resample other pixel sizes)")
        return config, None
    return replace(config, pixel_size=common), (
        f"pixel size {common[0]:.4g} x {common[1]:.4g} µm (the images' metadata), recorded in the model: predict "
        "resamples images of other pixel sizes to it")


VOLUME_GRAY_VALUES: dict[str, tuple[float, float]] = dict(
    contrast_range=(0.65, 1.5), brightness_range=(-0.15, 0.15), gamma_range=(0.7, 1.5), scale_range=(0.6, 1.6))
"""Gray-value augmentation of volumes, wider than for images (near nnU-Net's ranges, Isensee et al. 2021:
contrast and multiplicative brightness 0.75-1.25, gamma 0.7-1.5). A training set of volumes is often one stack,
whose percentile normalisation fixes one intensity scale: another crop of the same nuclei stack, normalised alike,
came out 0.71x as bright, and a network trained with the 2D ranges called its nuclei background; the wider
contrast and brightness ranges alone left it so (its foreground halved at 0.8x), hence the scale factor
(``python experiments/nuclei3d.py``)."""

VOLUME_DEFAULTS: dict[str, Any] = dict(dims=3, depth=3, variant="cicek", base_channels=16, batch_norm=True, tile=132,
                                       augment=VOLUME_GRAY_VALUES)
"""What volumes train by default: Cicek et al.'s 3D U-Net (depth 3, the first convolution of each level at half its
width, batch norm) at a quarter of its width for CPU budgets (base 16 instead of 32), 132-px in-plane windows (the
paper's 132 x 132 x 116 input, whose output is 44 x 44 x 28), wider gray-value augmentation
(:data:`VOLUME_GRAY_VALUES`); the window depth follows the voxel size (:func:`resolve_volume`)."""


def resolve_volume(config: TrainConfig, sizes: list[tuple[float, ...] | None]) -> tuple[TrainConfig, str | None]:
    """A 3D run's voxel size (given, else the one all training volumes record), the in-plane-only levels it asks
    for (nnU-Net's rule, :func:`biounet.core.model.anisotropic_levels`) and the window depth (``tile_z``: the valid
    depth nearest a physically cubic window). Returns the config and a note (None for 2D runs)."""
    if config.dims != 3:
        return config, None
    voxel = config.voxel_size
    if voxel is None:
        known = {tuple(round(float(v), 6) for v in size) for size in sizes if size is not None and len(size) == 3}
        voxel = known.pop() if len(known) == 1 and len(sizes) == sum(s is not None for s in sizes) else None
    flat = anisotropic_levels(voxel, config.depth) if voxel is not None else 0
    config = replace(config, voxel_size=None if voxel is None else tuple(voxel), flat_levels=flat)
    tile_z = config.tile_z
    if tile_z is None:
        ratio = 1.0 if voxel is None else voxel[-1] / voxel[0]
        wanted = max(1, round(config.tile * ratio))
        tile_z = nearest_valid_shape((wanted, config.tile, config.tile), config.model_config(1, 2))[0]
    config = replace(config, tile_z=tile_z)
    output_shape(config.window_shape, config.model_config(1, 2))  # a given depth, now that the levels are known
    where = ("voxel size unknown: taken as isotropic (give --voxel-size Z Y X)" if voxel is None else
             f"voxel size {voxel[0]:.4g} x {voxel[1]:.4g} x {voxel[2]:.4g} µm (z, y, x)")
    return config, (f"3D U-Net: {where}; {flat} in-plane-only level(s); training windows {tile_z} x {config.tile} x "
                    f"{config.tile} voxels (z, y, x)")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_toml(config: TrainConfig) -> str:
    """The resolved config as TOML (``None`` values are omitted)."""
    values = config.to_dict()
    augment = values.pop("augment")
    lines = [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    lines += ["", "[augment]"] + [f"{k} = {_toml_value(v)}" for k, v in augment.items() if v is not None]
    return "\n".join(lines) + "\n"


def write_config_toml(path: Path, config: TrainConfig, comments: list[str] | None = None) -> None:
    header = "".join(f"# {line}\n" for line in (comments or []))
    write_text(path, header + config_toml(config))


def read_config_toml(path: str | os.PathLike[str]) -> TrainConfig:
    """Read a ``config.toml`` written by :func:`write_config_toml` (or by hand)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    with open(path, "rb") as handle:
        return TrainConfig.from_dict(tomllib.load(handle))


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


__all__ = [
    "CELL_TARGET_SCORES", "COMPILE_AUTO_MIN_BUDGET_S", "LABEL_KINDS", "OPTIMIZERS", "PRECISIONS", "RECIPES",
    "SCHEDULES", "SELECT_BY", "TRAIN_TARGETS", "TrainConfig", "VOLUME_DEFAULTS", "VOLUME_GRAY_VALUES", "resolve_volume", "cell_target_for",
    "config_toml", "parse_duration",
    "read_config_toml", "recipe_defaults", "resolve_compile", "resolve_pixel_size", "resolve_target", "write_config_toml",
]
