"""``biounet train``: train a U-Net (paper or fast recipe), resumable."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from biounet.cli.common import DEVICES, duration, pixel_size, positive_int, subcommand, train_diameter, train_progress

EXAMPLE = ("examples:\n  biounet train --data cells --out runs/cells --time-budget 30m\n"
           "  biounet train --data isbi2012 --out runs/em --recipe paper --iterations 20000")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The ``train`` subcommand and its options.

    argparse defaults stay None so that config.toml and the measured choices can fill them; the help shows
    TrainConfig's default, or says how it is measured."""
    from biounet.training.config import TrainConfig

    d = {f.name: f.default for f in fields(TrainConfig)}
    train = subcommand(subparsers, "train", "train a U-Net (paper or fast recipe), resumable", EXAMPLE)
    _add_data_options(train, d)
    _add_network_options(train, d)
    _add_schedule_options(train, d)
    _add_target_options(train, d)
    train.add_argument("--seed", type=int, metavar="N", help=f"random seed (default: {d['seed']})")
    train.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICES)
    train.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    train.add_argument("--stop-after", type=positive_int, help=argparse.SUPPRESS)
    return train


def _add_data_options(train: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    from biounet.data.datasets import ALL_LAYOUTS
    from biounet.training.config import LABEL_KINDS

    train.add_argument("--data", required=True, metavar="FOLDER",
                       help="dataset folder (images/ + labels/, ISBI 2012, Cell Tracking Challenge, HDF5 or TIFF "
                       "volumes), or synthetic:KIND[,n=N,size=HxW,seed=S]")
    train.add_argument("--out", type=Path, required=True, metavar="DIR",
                       help="run folder: model.pt, report.html, config.toml, checkpoints")
    train.add_argument("--config", type=Path, metavar="FILE", help="config.toml to start from; flags override it (default: none)")
    train.add_argument("--layout", choices=ALL_LAYOUTS, help="dataset layout (default: detected from the folder)")
    train.add_argument("--label-kind", choices=LABEL_KINDS,
                       help="pairs layout: label files hold class ids (0/1, 0/255 masks), or one id per cell "
                       f"(instances), or auto: decided from the files (default: {d['label_kind']})")
    train.add_argument("--silver", action="store_true", default=None,
                       help="ctc layout: also train on the silver-truth frames (default: off)")
    train.add_argument("--diameter", type=train_diameter, metavar="auto|off|PX",
                       help="instance-labelled cells: resample each training image so that its median cell is this "
                       "many px across, and store it with the model, which then resamples new images the same way "
                       "(their cells' size estimated by a first prediction, or predict --diameter); auto: the "
                       f"training images' median; off: each image at its own scale (default: {d['diameter']})")
    train.add_argument("--exclude", type=lambda text: tuple(t for t in text.split(",") if t), metavar="NAMES",
                       help="comma-separated image names to hold out of training and validation (default: none)")


def _add_network_options(train: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    from biounet.core.model import VARIANTS
    from biounet.training.config import RECIPES

    train.add_argument("--recipe", choices=RECIPES, help=f"training recipe (default: {d['recipe']})")
    train.add_argument("--base-channels", type=positive_int, metavar="N",
                       help="network width (default: measured: the widest of 16, 32, 64 with >= 800 steps in "
                       "--time-budget; 64 with --iterations)")
    train.add_argument("--depth", type=positive_int, metavar="N", help=f"number of poolings (default: {d['depth']})")
    train.add_argument("--variant", choices=VARIANTS, help=f"network variant (default: {d['variant']})")
    train.add_argument("--pixel-size", type=pixel_size, metavar="UM",
                       help="pixel size of the training images in micrometres (0.19, or 0.19,0.2 for y,x), recorded "
                       "in the model so predict resamples other pixel sizes to it (default: from OME-TIFF/OME-Zarr "
                       "metadata when all images agree, else none)")
    train.add_argument("--dims", type=int, choices=(2, 3),
                       help="3: a 3D U-Net (Cicek et al. 2016) on volumes; 2: the 2D network, on a volume's z planes "
                       "(default: 3 for volumes (HDF5, TIFF stacks with a z axis), 2 for images)")
    train.add_argument("--voxel-size", type=float, nargs=3, metavar=("Z", "Y", "X"),
                       help="voxel size of the training volumes in micrometres (default: from their metadata)")
    train.add_argument("--tile-z", type=positive_int, metavar="VOXELS",
                       help="3D: input window depth in voxels (default: a valid depth near a physically cubic window)")
    train.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None,
                       help="batch normalisation after each convolution, not in the paper (default: on with the "
                       "fast recipe, off with --recipe paper)")


def _add_schedule_options(train: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    from biounet.data.normalization import NORMALIZATIONS
    from biounet.training.config import PRECISIONS

    train.add_argument("--tile", type=positive_int, metavar="PX", help=f"input tile side in px, a valid size (default: {d['tile']}, the paper's)")
    train.add_argument("--batch-size", type=positive_int, metavar="N", help=f"tiles per step (default: {d['batch_size']})")
    budget = train.add_mutually_exclusive_group()
    budget.add_argument("--iterations", type=positive_int, metavar="N", help="training steps (default: none; give this or "
                        "--time-budget)")
    budget.add_argument("--time-budget", type=duration, metavar="DURATION", help="e.g. 15m, 1h, 600s (default: none; give this or "
                        "--iterations)")
    train.add_argument("--precision", choices=("auto", *PRECISIONS),
                       help="bf16 autocast or fp32 (default: measured: bf16 where native and >= 15%% faster, "
                       "else fp32; fp32 for --recipe paper)")
    train.add_argument("--lr", type=float, metavar="LR", help="learning rate (default: 0.001 fast recipe, 0.01 paper)")
    train.add_argument("--val-every", type=positive_int, metavar="N", help=f"validate every N steps (default: {d['val_every']})")
    train.add_argument("--validation-fraction", type=float, metavar="FRACTION",
                       help=f"images held back for validation (default: {d['validation_fraction']})")
    train.add_argument("--normalization", choices=NORMALIZATIONS,
                       help=f"input intensity normalisation (default: {d['normalization']})")
    train.add_argument("--workers", type=int, metavar="N",
                       help="data-loading worker processes (default: measured: 0 on <= 2 cores, else cores/4, "
                       "at most 4)")
    train.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="run the training steps through torch.compile: faster steps after a one-off "
                       "compilation; needs a C++ compiler on the CPU "
                       "(default: auto: compiled for single-process CPU runs of 10 minutes or more, eager steps "
                       "where compilation fails)")
    train.add_argument("--init", metavar="MODEL", help="fine-tune: start from this trained model.pt; its network and normalisation "
                       "are kept, another class count replaces only the 1x1 head (default: none)")
    train.add_argument("--ignore-label", type=int, metavar="VALUE", help="pairs layout: label value of unannotated pixels (paint a "
                       "few cells, leave the rest as this value); they do not count in the loss (default: none)")


def _add_target_options(train: argparse.ArgumentParser, d: dict[str, Any]) -> None:
    from biounet.training.config import SELECT_BY, TRAIN_TARGETS

    train.add_argument("--target", choices=TRAIN_TARGETS,
                       help="what cells are taught as: paper (background gaps between touching cells), boundary "
                       "(interior + boundary band), distance (paper + a regressed distance map), stardist "
                       "(boundary + object probability and radial distances, polygons kept by suppression); for "
                       "membranes, affinities (membrane map + same-cell affinities at near and far offsets, segments "
                       "by the mutex watershed); auto: "
                       "for instance labels the target that scored best in the measurement nearest the run's "
                       "budget (biounet.training.config.CELL_TARGET_SCORES), paper for class labels and membranes "
                       f"(default: {d['target']})")
    train.add_argument("--rays", type=positive_int, dest="n_rays", metavar="N",
                       help=f"stardist target: radial distances per pixel (default: {d['n_rays']})")
    train.add_argument("--ray-weight", type=float, metavar="WEIGHT",
                       help=f"stardist target: weight of the rays' error beside the probability's (default: "
                       f"{d['ray_weight']}, StarDist's)")
    train.add_argument("--boundary-px", type=positive_int, metavar="PX",
                       help=f"boundary target: band width in px (default: {d['boundary_px']})")
    train.add_argument("--w0", type=float, metavar="WEIGHT",
                       help=f"border weight w0; 0 switches the border term off (default: {d['w0']}, the paper's)")
    train.add_argument("--no-class-balance", dest="class_balance", action="store_false", default=None,
                       help="w_c = 1 instead of the inverse class frequency; the border term stays (default: off)")
    train.add_argument("--select-by", choices=SELECT_BY,
                       help="validation measure that picks model.pt; auto: SEG for cells, Rand error for "
                       f"membranes, mean IoU otherwise (default: {d['select_by']})")
    train.add_argument("--sigma", type=float, dest="sigma_px", metavar="PX",
                       help=f"border width sigma in px (default: {d['sigma_px']}, the paper's)")


def train_request(args: argparse.Namespace) -> Any:
    """The :class:`~biounet.training.autoconfig.TrainRequest` of the parsed flags: every TrainConfig setting given
    (flags left out are None: not given), ``--time-budget`` as ``time_budget_s``."""
    from biounet.training.autoconfig import SETTINGS, TrainRequest

    settings = {name: getattr(args, name) for name in sorted(SETTINGS) if getattr(args, name, None) is not None}
    if settings.get("voxel_size") is not None:
        settings["voxel_size"] = tuple(settings["voxel_size"])
    if args.time_budget is not None:
        settings["time_budget_s"] = args.time_budget
    return TrainRequest(data=args.data, out=args.out, settings=settings, config=args.config, device=args.device,
                        resume=args.resume)


def run(args: argparse.Namespace) -> int:
    """Train; exit code 0, or 128 + the signal's number when interrupted (130 for Ctrl-C, 143 for SIGTERM)."""
    from tqdm import tqdm

    from biounet.data.files import check_creatable_dir
    from biounet.training.autoconfig import resolve_train_config
    from biounet.training.train import fit

    check_creatable_dir(args.out)  # before any data is loaded: the run folder is a folder, or creatable, writable
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, only rank 0 reports
    config, notes = resolve_train_config(train_request(args))
    for note in notes if main_rank else []:
        print(f"biounet train: {note}", file=sys.stderr)
    bar = tqdm(total=config.iterations, unit="step", file=sys.stderr, disable=args.quiet or not main_rank,
               dynamic_ncols=True)
    try:
        result = fit(config, args.out, resume=args.resume, device=args.device, progress=train_progress(bar),
                     stop_after=args.stop_after, notes=notes)
    finally:
        bar.close()
    if not main_rank:
        return 0
    if result.interrupted and args.stop_after is None:
        print(f"biounet train: interrupted at step {result.steps}; last.pt saved, continue with --resume",
              file=sys.stderr)
        return 128 + (result.signal or 2)  # 130 for SIGINT (Ctrl-C), 143 for SIGTERM
    best = "no validation images" if result.best_score is None else f"best validation {_score_text(result)}"
    model_line = f"model: {Path(args.out) / 'model.pt'}" if not result.interrupted else "stopped early"
    print(f"trained {result.steps} steps in {result.elapsed_s:.0f} s; {best}; {model_line}")
    return 0


def _score_text(result: Any) -> str:
    """The best validation score, named, with its direction."""
    from biounet.evaluation.validation import HIGHER_IS_BETTER

    rows = [r for r in result.history if "score" in r]
    name = next((k for k in ("seg", "rand_error", "mean_iou", "pixel_error", "foreground_iou")
                 if rows and k in rows[-1] and rows[-1][k] == rows[-1]["score"]), "score")
    direction = "higher is better" if HIGHER_IS_BETTER.get(name, False) else "lower is better"
    return f"{name} {result.best_score:.4f} ({direction})"
