"""The ``biounet`` command line: thin handlers that build configs and call the library.

Every handler returns an exit code; bad input becomes a one-line ``biounet <command>: error: ...`` on stderr and
exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("biounet")

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # like a shell's Ctrl-C: `train && predict` does not go on


class CliError(ValueError):
    """An error in the command line's use, reported as one line with exit code 2."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _tile(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        return _positive_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a positive integer, got {text!r}") from None


def _memory(text: str) -> int:
    """Parse ``512M``, ``2G``, ``1.5GiB`` or a byte count."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    cleaned = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        if cleaned and cleaned[-1] in units:
            value = float(cleaned[:-1]) * units[cleaned[-1]]
        else:
            value = float(cleaned)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a size such as 512M or 2G, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return int(value)


# --- init / info --------------------------------------------------------------------------------------------------


def _cmd_init(args: argparse.Namespace) -> int:
    import torch

    from biounet.checkpoint import model_payload, save_checkpoint
    from biounet.io import NORMALIZATIONS
    from biounet.model import ModelConfig, UNet

    if args.normalization not in NORMALIZATIONS:
        raise CliError(f"--normalization must be one of {NORMALIZATIONS}")
    config = ModelConfig(
        in_channels=args.in_channels, num_classes=args.num_classes, depth=args.depth,
        base_channels=args.base_channels, padding=args.padding, batch_norm=args.batch_norm, variant=args.variant,
    )
    torch.manual_seed(args.seed)
    model = UNet(config)
    _check_output_file(args.out)
    save_checkpoint(args.out, model_payload(model, normalization=args.normalization, step=0))
    print(f"wrote {args.out}: randomly initialised U-Net ({_describe(model)})")
    return 0


def _check_output_file(path: Path) -> None:
    from biounet.io import check_writable_dir

    if path.is_dir():
        raise CliError(f"{path}: is a directory; give a file name such as model.pt")
    check_writable_dir(path.parent if str(path.parent) else Path("."))


def _describe(model: Any) -> str:
    from biounet.model import count_parameters

    c = model.config
    return (f"{c.variant} variant, depth {c.depth}, base {c.base_channels}, {c.in_channels} channel(s) in, "
            f"{c.num_classes} classes, {c.padding} convolutions, {count_parameters(model):,} parameters")


def _cmd_info(args: argparse.Namespace) -> int:
    import json

    from biounet.checkpoint import load_checkpoint, model_from_payload
    from biounet.model import count_parameters, output_size, smallest_tile, valid_input_sizes
    from biounet.predict import TorchPredictor

    payload = load_checkpoint(args.model)
    model = model_from_payload(payload, args.model)
    predictor = TorchPredictor(model, channels_last=False)
    c = model.config
    tiles = [t for t in valid_input_sizes(c.depth, c.padding, up_to=1100) if t >= smallest_tile(predictor)]
    info = {
        "model": str(args.model),
        "config": c.to_dict(),
        "parameters": count_parameters(model),
        "normalization": payload["normalization"],
        "class_names": payload.get("class_names"),
        "margin_px": model.margin,
        "smallest_valid_tiles": {t: output_size(t, c.depth, c.padding) for t in tiles[:6]},
        "step": payload.get("step"),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{args.model}: {_describe(model)}")
    print(f"  normalization: {info['normalization']}; classes: {', '.join(info['class_names'] or [])}")
    print(f"  context margin: {info['margin_px']} px per side; tiles step by multiples of {2**c.depth} px")
    print("  smallest valid tiles (input -> output): "
          + ", ".join(f"{k} -> {v}" for k, v in info["smallest_valid_tiles"].items()))
    if info["step"]:
        print(f"  trained for {info['step']} steps")
    return 0


# --- predict ------------------------------------------------------------------------------------------------------


def _cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from biounet.io import check_writable_dir
    from biounet.omezarr import is_omezarr
    from biounet.predict import PredictOptions, load_predictor, predict_file
    from biounet.predict_omezarr import predict_to_omezarr

    missing = [str(p) for p in args.inputs if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: no such file" + (f" (and {len(missing) - 1} more)" if missing[1:]
                                                                   else ""))
    predictor = load_predictor(args.model, device=args.device, precision=args.precision, tta=args.tta,
                               compile=args.compile)
    zarr_out = args.out.suffix.lower() == ".zarr"  # one OME-Zarr holding the labels (biounet.predict_omezarr)
    if zarr_out and len(args.inputs) > 1:
        raise ValueError(f"--out {args.out} is one OME-Zarr image; give one input, or an output folder")
    if not zarr_out:
        check_writable_dir(args.out)
    options = PredictOptions(
        tile=args.tile, batch_size=args.batch_size, save_probabilities=args.save_probabilities,
        memory_budget=args.memory_budget,
    )
    for path in args.inputs:
        bars: list[Any] = []  # created on the first tile, so an input error prints no empty bar

        def progress(done: int, total: int, bars: list[Any] = bars, name: str = Path(path).name) -> None:
            if not bars:
                bars.append(tqdm(total=total, desc=name, unit="tile", file=sys.stderr, disable=args.quiet,
                                 leave=False))
            bars[0].update(done - bars[0].n)

        try:
            if zarr_out or is_omezarr(path):  # OME-Zarr input: labels go into its labels/ group
                result = predict_to_omezarr(predictor, path, args.out if zarr_out else None, options, progress=progress,
                                            instances=_instance_settings(args.model) if args.instances else None)
            else:
                result = predict_file(predictor, path, args.out, options, progress=progress)
        finally:
            for bar in bars:
                bar.close()
        extra = f" and {result.probabilities_path}" if result.probabilities_path else ""
        if args.instances and result.labels_path.suffix.lower() == ".tif":
            extra += f" and {_write_instances(result.labels_path, args.model, args.watershed)}"
        if not args.quiet:
            print(f"{path}: wrote {result.labels_path}{extra} ({result.tiles} tiles of {result.in_tile} px)")
    return 0


# --- train --------------------------------------------------------------------------------------------------------


def _duration(text: str) -> float:
    """Parse ``90``, ``90s``, ``15m``, ``1.5h`` or ``1h30m`` to seconds."""
    import re

    cleaned = text.strip().lower()
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", cleaned)
    if not cleaned or parts is None:
        raise argparse.ArgumentTypeError(f"must be a duration such as 90s, 15m or 1h, got {text!r}")
    hours, minutes, seconds = (float(p) if p else 0.0 for p in parts.groups())
    value = hours * 3600 + minutes * 60 + seconds
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive duration, got {text!r}")
    return value


def _cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from biounet.autoconfig import resolve_train_config

    import os

    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, only rank 0 reports
    config, notes = resolve_train_config(args)
    for note in notes if main_rank else []:
        print(f"biounet train: {note}", file=sys.stderr)
    bar = tqdm(total=config.iterations, unit="step", file=sys.stderr, disable=args.quiet or not main_rank,
               dynamic_ncols=True)
    from biounet.train import fit

    try:
        result = fit(config, args.out, resume=args.resume, device=args.device, progress=_train_progress(bar),
                     stop_after=args.stop_after, notes=notes)
    finally:
        bar.close()
    if not main_rank:
        return 0
    if result.interrupted and args.stop_after is None:
        print(f"biounet train: interrupted at step {result.steps}; last.pt saved, continue with --resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    best = "no validation images" if result.best_score is None else f"best validation {_score_text(result)}"
    model_line = f"model: {Path(args.out) / 'model.pt'}" if not result.interrupted else "stopped early"
    print(f"trained {result.steps} steps in {result.elapsed_s:.0f} s; {best}; {model_line}")
    return 0


def _score_text(result: Any) -> str:
    rows = [r for r in result.history if "score" in r]
    name = next((k for k in ("seg", "rand_error", "mean_iou", "pixel_error", "foreground_iou")
                 if rows and k in rows[-1] and rows[-1][k] == rows[-1]["score"]), "score")
    from biounet.validation import HIGHER_IS_BETTER

    direction = "higher is better" if HIGHER_IS_BETTER.get(name, False) else "lower is better"
    return f"{name} {result.best_score:.4f} ({direction})"


def _train_progress(bar: Any) -> Callable[[Any], None]:
    """A progress callback that draws typed training events on a tqdm bar."""
    from biounet.events import StepEvent, ValidationEvent

    def progress(event: StepEvent | ValidationEvent) -> None:
        if isinstance(event, ValidationEvent):
            shown = ", ".join(f"{k} {v:.4f}" for k, v in event.scores.items())
            mark = " (best so far)" if event.best else ""
            bar.write(f"step {event.step}: validation {shown or 'skipped (no validation images)'}{mark}")
            return
        bar.update(event.step - bar.n)
        bar.set_postfix(loss=f"{event.loss:.4f}", steps_per_s=f"{event.steps_per_s:.2f}",
                        elapsed=f"{event.elapsed_s:.0f}s")

    return progress


# --- export -------------------------------------------------------------------------------------------------------


def _cmd_export(args: argparse.Namespace) -> int:
    from biounet.export import export_checkpoint

    if args.format != "bioimageio":  # a bioimage.io package may be a folder
        _check_output_file(args.out)
    try:
        path = export_checkpoint(args.model, args.out, export_format=args.format, opset=args.opset)
    except ModuleNotFoundError as err:
        raise CliError(str(err)) from err
    if not args.quiet:
        print(f"wrote {path}: {args.format} export of {args.model}, with its tiling contract as metadata")
    return 0


def _write_instances(labels_path: Path, model_path: Path, watershed: bool) -> Path:
    """``<stem>_instances.tif`` from the class labels just written, made the way the model's target asks for
    (:func:`biounet.instances.instances_from_labels`) with the post-processing its training run chose."""
    import numpy as np

    from biounet.instances import InstanceParams, instances_from_labels
    from biounet.io import output_stem, read_labels, write_tiff

    target, params = _instance_settings(model_path)
    if watershed:
        params = InstanceParams(min_size_px=params.min_size_px, seed_threshold=params.seed_threshold, watershed=True)
    labels = read_labels(labels_path)
    planes = [instances_from_labels(plane, target=target, params=params) for plane in labels]
    out = labels_path.with_name(output_stem(labels_path) + "_instances.tif")
    stack = np.stack(planes)
    dtype = np.uint16 if stack.max(initial=0) < 2**16 else np.uint32
    write_tiff(out, (stack[0] if len(planes) == 1 else stack).astype(dtype))
    return out


def _instance_settings(model_path: Path) -> tuple[str | None, Any]:
    """The target and instance post-processing stored in a checkpoint (None and defaults for ONNX models)."""
    from biounet.checkpoint import load_checkpoint
    from biounet.instances import InstanceParams

    if model_path.suffix.lower() == ".onnx":
        return None, InstanceParams()
    payload = load_checkpoint(model_path)
    return payload.get("target"), InstanceParams(**(payload.get("instance_params") or {}))


# --- evaluate -----------------------------------------------------------------------------------------------------


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from biounet.evaluate import evaluate_folders, format_table

    result = evaluate_folders(args.pred, args.truth, kind=args.kind)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
        for row in result["images"]:
            if "note" in row:
                print(f"note: {row['image']}: {row['note']}", file=sys.stderr)
    return 0


# --- demo ---------------------------------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    import json

    from tqdm import tqdm

    from biounet.demo import run_demo

    print(f"biounet demo: synthetic touching cells, training a base-16 U-Net for {args.time_budget:.0f} s, "
          f"outputs in {args.out}", file=sys.stderr)
    bar = tqdm(unit="step", file=sys.stderr, disable=args.quiet, dynamic_ncols=True)
    progress = _train_progress(bar)

    try:
        summary = run_demo(args.out, time_budget_s=args.time_budget, device=args.device, progress=progress)
    finally:
        bar.close()
    print(json.dumps(summary, indent=2))
    print(f"look at: {', '.join(summary['pictures'])}", file=sys.stderr)
    return 0


# --- parser -------------------------------------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    from biounet.config import SELECT_BY, TRAIN_TARGETS

    parser = argparse.ArgumentParser(
        prog="biounet", description="U-Net as Ronneberger, Fischer & Brox (2015) describe it."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init", help="write a randomly initialised model")
    init.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    init.add_argument("--base-channels", type=_positive_int, default=64)
    init.add_argument("--depth", type=_positive_int, default=4)
    init.add_argument("--in-channels", type=_positive_int, default=1)
    init.add_argument("--num-classes", type=_positive_int, default=2)
    init.add_argument("--variant", choices=("paper", "release"), default="paper")
    init.add_argument("--padding", choices=("valid", "same"), default="valid")
    init.add_argument("--batch-norm", action="store_true")
    init.add_argument("--normalization", default="percentile",
                      help="input intensity normalisation: percentile (default), range, minmax, zscore")
    init.add_argument("--seed", type=int, default=0)

    info = sub.add_parser("info", help="describe a model")
    info.add_argument("model", type=Path)
    info.add_argument("--json", action="store_true")

    predict = sub.add_parser("predict", help="segment images with the overlap-tile strategy")
    predict.add_argument("model", type=Path, help="biounet checkpoint (model.pt) or ONNX export (model.onnx)")
    predict.add_argument("inputs", nargs="+", type=Path, help="PNG/TIFF/zarr images")
    predict.add_argument("--out", type=Path, required=True, help="output directory")
    predict.add_argument("--tile", type=_tile, default=None, help="input tile side, or auto (default)")
    predict.add_argument("--batch-size", type=_positive_int, default=1)
    predict.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    predict.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="fp32",
                         help="fp32 (default: tiling is exact), bf16, or auto (bf16 where native)")
    predict.add_argument("--save-probabilities", action="store_true", help="also write <stem>_prob.tif")
    predict.add_argument("--tta", action="store_true", help="average over the 8 rotations/flips")
    predict.add_argument("--compile", action="store_true",
                         help="torch.compile the network first (pays off on many tiles of one size)")
    predict.add_argument("--instances", action="store_true",
                         help="also write <stem>_instances.tif: touching cells separated (connected components)")
    predict.add_argument("--watershed", action="store_true", help="with --instances: split merged cells by a "
                         "seeded watershed on the distance transform")
    predict.add_argument("--memory-budget", type=_memory, default="1G", help="e.g. 512M, 2G (default 1G)")
    predict.add_argument("-q", "--quiet", action="store_true")

    export = sub.add_parser("export", help="export a model to ONNX or TorchScript, with its tiling contract")
    export.add_argument("model", type=Path, help="biounet checkpoint (model.pt)")
    export.add_argument("--format", choices=("onnx", "torchscript", "bioimageio"), required=True)
    export.add_argument("--out", type=Path, required=True, help="model.onnx, model.ts, or a bioimageio folder or .zip")
    export.add_argument("--opset", type=_positive_int, default=17, help="ONNX opset version (>= 17, default 17)")
    export.add_argument("-q", "--quiet", action="store_true")
    demo = sub.add_parser("demo", help="the main job: train on synthetic cells, segment, write pictures")
    demo.add_argument("--out", type=Path, default=Path("demo_out"))
    demo.add_argument("--time-budget", type=_duration, default=240.0, help="training time (default 4m)")
    demo.add_argument("--device", default="auto")
    demo.add_argument("-q", "--quiet", action="store_true")

    evaluate = sub.add_parser("evaluate", help="score predictions against ground truth (ISBI, CTC, binary)")
    evaluate.add_argument("--pred", type=Path, required=True, help="folder of biounet predict outputs")
    evaluate.add_argument("--truth", type=Path, required=True, help="folder of ground-truth label images")
    evaluate.add_argument("--kind", choices=("isbi2012", "ctc", "binary"), default="binary")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")

    train = sub.add_parser("train", help="train a U-Net (paper or fast recipe), resumable")
    train.add_argument("--data", required=True, help="dataset folder, or synthetic:KIND[,n=N,size=HxW,seed=S]")
    train.add_argument("--out", type=Path, required=True, help="run directory")
    train.add_argument("--config", type=Path, help="config.toml to start from (flags override it)")
    train.add_argument("--layout", choices=("pairs", "isbi2012", "ctc", "synthetic"))
    train.add_argument("--label-kind", choices=("classes", "instances"),
                       help="pairs layout: label files hold class ids (default) or one id per cell")
    train.add_argument("--silver", action="store_true", default=None,
                       help="ctc layout: also train on the silver-truth frames")
    train.add_argument("--exclude", type=lambda text: tuple(t for t in text.split(",") if t),
                       help="comma-separated image names to hold out of training and validation")
    train.add_argument("--recipe", choices=("fast", "paper"))
    train.add_argument("--base-channels", type=_positive_int)
    train.add_argument("--depth", type=_positive_int)
    train.add_argument("--variant", choices=("paper", "release"))
    train.add_argument("--tile", type=_positive_int, help="input tile side (572 in the paper)")
    train.add_argument("--batch-size", type=_positive_int)
    budget = train.add_mutually_exclusive_group()
    budget.add_argument("--iterations", type=_positive_int)
    budget.add_argument("--time-budget", type=_duration, help="e.g. 15m, 1h, 600s")
    train.add_argument("--precision", choices=("auto", "fp32", "bf16"))
    train.add_argument("--lr", type=float)
    train.add_argument("--val-every", type=_positive_int)
    train.add_argument("--validation-fraction", type=float)
    train.add_argument("--normalization", choices=("percentile", "range", "minmax", "zscore"))
    train.add_argument("--workers", type=int, help="data-loading worker processes (default 1)")
    train.add_argument("--target", choices=TRAIN_TARGETS,
                       help="what cells are taught as: paper (background gaps between touching cells, the "
                       "default), boundary (interior + boundary band), distance (paper + distance map)")
    train.add_argument("--boundary-px", type=_positive_int, help="boundary target: band width in px (default 2)")
    train.add_argument("--w0", type=float, help="border weight w0 (paper: 10; 0 switches the border term off)")
    train.add_argument("--no-class-balance", dest="class_balance", action="store_false", default=None,
                       help="w_c = 1 instead of the inverse class frequency (the border term stays)")
    train.add_argument("--select-by", choices=SELECT_BY,
                       help="validation measure that picks model.pt (auto: SEG for cells, Rand error for "
                       "membranes, mean IoU otherwise)")
    train.add_argument("--sigma", type=float, dest="sigma_px", help="border width sigma in px (paper: ~5)")
    train.add_argument("--seed", type=int)
    train.add_argument("--device", default="auto")
    train.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    train.add_argument("--stop-after", type=_positive_int, help=argparse.SUPPRESS)
    train.add_argument("-q", "--quiet", action="store_true")
    return parser


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "init": _cmd_init,
    "info": _cmd_info,
    "predict": _cmd_predict,
    "export": _cmd_export,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``biounet``."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return _COMMANDS[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError, FloatingPointError) as err:
        print(f"biounet {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
