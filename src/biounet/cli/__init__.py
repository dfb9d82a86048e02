"""The ``biounet`` command line: thin handlers that build configs and call the library.

Every handler returns an exit code; bad input becomes a one-line ``biounet <command>: error: ...`` on stderr and
exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

logger = logging.getLogger("biounet")

EXIT_USAGE = 2
EVALUATION_KINDS = ("isbi2012", "ctc", "instances", "binary")
"""``evaluate --kind`` choices: :data:`biounet.evaluation.evaluate.KINDS`, restated so that building the parser does not
import the metrics (numba, scipy.optimize: 0.7 s of every command's start-up); a test keeps the two equal."""


class CliError(ValueError):
    """An error in the command line's use, reported as one line with exit code 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _tile(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a positive integer, got {text!r}") from None


def _pixel_size(text: str) -> tuple[float, float]:
    """Parse a pixel size in micrometres: ``0.19`` or ``0.19,0.2`` (y, x)."""
    from biounet.data.scale import parse_pixel_size

    try:
        return parse_pixel_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _memory(text: str) -> int:
    """Parse ``512M``, ``2G``, ``1.5GiB`` or a byte count (finite and at least one byte)."""
    import math

    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    cleaned = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        if cleaned and cleaned[-1] in units:
            value = float(cleaned[:-1]) * units[cleaned[-1]]
        else:
            value = float(cleaned)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a size such as 512M or 2G, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite size such as 512M or 2G, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least one byte, got {text!r}")
    return int(value)


# --- init / info --------------------------------------------------------------------------------------------------


def _cmd_init(args: argparse.Namespace) -> int:
    import torch

    from biounet.core.model import ModelConfig, UNet
    from biounet.data.checkpoint import model_payload, save_checkpoint
    from biounet.data.io import NORMALIZATIONS

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
    """Check, creating nothing, that the file ``path`` can be written (its folder exists or can be made)."""
    from biounet.data.io import check_creatable_dir

    if path.is_dir():
        raise CliError(f"{path}: is a directory; give a file name such as model.pt")
    try:
        check_creatable_dir(path.parent if str(path.parent) else Path("."))
    except ValueError as err:
        raise CliError(f"{path}: cannot be written ({err})") from None


def _describe(model: Any) -> str:
    from biounet.core.model import count_parameters

    c = model.config
    return (f"{c.variant} variant, depth {c.depth}, base {c.base_channels}, {c.in_channels} channel(s) in, "
            f"{c.num_classes} classes, {c.padding} convolutions, {count_parameters(model):,} parameters")


def _cmd_info(args: argparse.Namespace) -> int:
    import json

    from biounet.core.model import count_parameters, output_size, smallest_tile, valid_input_sizes
    from biounet.data.checkpoint import load_checkpoint, model_from_payload
    from biounet.inference.predict import TorchPredictor

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

    from biounet.inference.instances import needs_probabilities
    from biounet.inference.predict import PredictOptions, load_predictor, predict_files, resolve_memory_budget
    from biounet.inference.settings import instance_settings

    inputs = _expand_inputs(args.inputs, args.pattern)
    _check_not_overwriting(inputs, args.out)
    instances = args.instances or args.save_rois
    if args.save_rois:
        _require_roifile()
    predictor = load_predictor(args.model, device=args.device, precision=args.precision, tta=args.tta,
                               compile=args.compile)
    target, params = instance_settings(args.model) if instances else (None, None)
    _check_segments(target, args)
    needs_probs = needs_probabilities(target)  # its instances are made from the probability file
    budget = resolve_memory_budget(args.memory_budget)
    if not args.quiet:
        print(f"biounet predict: precision {predictor.precision} ({args.precision}); memory budget {budget.note}",
              file=sys.stderr)
    options = PredictOptions(
        tile=args.tile, batch_size=args.batch_size, save_probabilities=args.save_probabilities or needs_probs,
        memory_budget=budget.bytes, pixel_size_um=args.pixel_size, rescale=args.rescale,
    )
    if args.dask is not None or args.dask_workers is not None:
        return _predict_blockwise(args, options)
    inputs = _predict_omezarr(args, predictor, inputs, options)
    if not inputs:
        return 0
    bars: list[Any] = []  # one bar per input, created on its first tile, so an input error prints no empty bar

    def progress(path: Path) -> Callable[[int, int], None]:
        def update(done: int, total: int) -> None:
            if not bars or bars[-1][0] != path:
                if bars:
                    bars[-1][1].close()
                bars.append((path, tqdm(total=total, desc=path.name, unit="tile", file=sys.stderr,
                                        disable=args.quiet, leave=False)))
            bars[-1][1].update(done - bars[-1][1].n)

        return update

    extras: list[tuple[list[Path], int | None]] = []  # per input: files written beside the labels, cell count

    def after_each(result: Any) -> None:
        path = inputs[len(extras)]
        written: list[Path] = []
        cells, instances_path = None, result.labels_path
        if instances:
            instances_path, cells = _write_instances(result.labels_path, result.probabilities_path, target,
                                                     _at_image_scale(params, result.zoom), args.watershed)
            written.append(instances_path)
            if needs_probs and not args.save_probabilities and result.probabilities_path is not None:
                result.probabilities_path.unlink()
        if args.save_rois:
            written.append(_write_rois(instances_path, cells))
        if args.save_overlays:
            written += _write_overlays(path, instances_path)
        extras.append((written, None if cells is None else _count_cells(cells)))

    try:
        results = predict_files(predictor, inputs, args.out, options, progress=progress, after_each=after_each,
                                instances=instances)
    finally:
        for _, bar in bars:
            bar.close()
    for path, result, (extra, cells) in zip(inputs, results, extras):
        written = [result.labels_path] + ([result.probabilities_path] if args.save_probabilities else [])
        written += [Path(args.out) / p.name for p in extra]
        if not args.quiet:
            counted = f"; {cells} cells" if cells is not None else ""
            print(f"{path}: wrote {', '.join(str(p) for p in written)} ({result.tiles} tiles of {result.in_tile} px"
                  f"{counted})")
        if result.zoom is not None and not args.quiet:
            print(f"{path}: {_scale_note(result.pixel_size_um, predictor.pixel_size_um, result.zoom)}",
                  file=sys.stderr)
    return 0


def _check_segments(target: str | None, args: argparse.Namespace) -> None:
    """Before any pixel is predicted: a membrane model's segments need python-elf and take no ``--watershed``."""
    from biounet.inference.instances import MEMBRANES

    if target != MEMBRANES:
        return
    if args.dask is not None or args.dask_workers is not None:
        raise CliError("--dask: the segments of a membrane model are agglomerated over the whole map, not block by "
                       "block; predict this model without --dask")
    if args.watershed:
        raise CliError("--watershed splits the cells of a cell model; a membrane model's segments are agglomerated "
                       "from its membrane map (leave --watershed out)")
    from biounet.inference.segments import require_elf

    try:
        require_elf()
    except ModuleNotFoundError as err:
        raise CliError(str(err)) from err


def _at_image_scale(params: Any, zoom: tuple[float, float] | None) -> Any:
    """Post-processing settings chosen at the model's pixel size, for an image predicted resampled by ``zoom``."""
    if params is None or zoom is None:
        return params
    import dataclasses

    return dataclasses.replace(params, min_size_px=round(params.min_size_px / (zoom[0] * zoom[1])))


def _scale_note(image_um: tuple[float, float], model_um: tuple[float, float], zoom: tuple[float, float]) -> str:
    return (f"pixel size {image_um[0]:.4g} x {image_um[1]:.4g} µm, the model's {model_um[0]:.4g} x "
            f"{model_um[1]:.4g} µm: predicted resampled x{zoom[0]:.3g} x {zoom[1]:.3g} to the model's scale, "
            "outputs resampled back to the image's size")


def _predict_blockwise(args: argparse.Namespace, options: Any) -> int:
    """``predict --dask ADDRESS`` / ``--dask-workers N``: zarr images block by block (:mod:`biounet.inference.blockwise`)."""
    import dataclasses

    from biounet.inference.blockwise import open_client, predict_blockwise
    from biounet.inference.settings import instance_settings

    if args.compile:
        raise CliError("--compile is not supported with --dask")
    target, params = instance_settings(args.model) if args.instances else (None, None)
    if params is not None and args.watershed:
        params = dataclasses.replace(params, watershed=True)
    with contextlib.ExitStack() as stack:
        try:
            client = stack.enter_context(open_client(args.dask, workers=args.dask_workers))
        except ModuleNotFoundError as err:
            raise CliError(str(err)) from err
        for path in args.inputs:
            result = predict_blockwise(args.model, path, args.out, client, options, device=args.device,
                                       precision=args.precision, tta=args.tta, instances=params, target=target)
            if not args.quiet:
                written = [p for p in (result.labels_path, result.probabilities_path, result.instances_path) if p]
                print(f"{path}: wrote {', '.join(map(str, written))} ({len(result.computed)} blocks of "
                      f"{result.block} px predicted, {len(result.skipped)} already done; "
                      f"tiles of {result.in_tile} px)")
    return 0


def _predict_omezarr(args: argparse.Namespace, predictor: Any, inputs: list[Path], options: Any) -> list[Path]:
    """OME-Zarr inputs (labels into the image's ``labels/`` group) and ``--out x.zarr`` (a new OME-Zarr) go
    through :mod:`biounet.inference.predict_omezarr`; returns the other inputs, for the output folder."""
    from biounet.data.omezarr import is_omezarr
    from biounet.inference.settings import instance_settings

    zarr_out = args.out.suffix.lower() == ".zarr"
    if zarr_out and len(inputs) > 1:
        raise ValueError(f"--out {args.out} is one OME-Zarr image; give one input, or an output folder")
    ome = [p for p in inputs if zarr_out or is_omezarr(p)]
    if ome:
        from biounet.data.io import check_writable_dir
        from biounet.inference.predict_omezarr import predict_to_omezarr

        if not zarr_out:
            check_writable_dir(args.out)  # created, as for any predict, though the labels go into the image

    for path in ome:
        result = predict_to_omezarr(predictor, path, args.out if zarr_out else None, options,
                                    instances=instance_settings(args.model) if args.instances else None)
        if not args.quiet:
            print(f"{path}: wrote {result.labels_path} ({result.tiles} tiles of {result.in_tile} px)")
    return [p for p in inputs if p not in ome]


def _expand_inputs(inputs: Sequence[Path], pattern: str | None) -> list[Path]:
    """The input images: files as given, folders replaced by their image files (or those matching ``pattern``),
    in natural order; a ``.zarr`` folder is one image. Raises on missing paths, empty folders and shared stems."""
    from biounet.data.datasets import natural_key
    from biounet.data.io import IMAGE_SUFFIXES
    from biounet.inference.predict import check_output_stems

    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: no such file" + (f" (and {len(missing) - 1} more)" if missing[1:]
                                                                   else ""))
    expanded: list[Path] = []
    for path in inputs:
        if not path.is_dir() or path.suffix.lower() == ".zarr":
            expanded.append(path)
            continue
        found = [p for p in (path.glob(pattern) if pattern else path.iterdir())
                 if not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
                 and (p.is_file() or p.suffix.lower() == ".zarr")]
        if not found:
            wanted = f"matching {pattern!r}" if pattern else f"({', '.join(IMAGE_SUFFIXES)})"
            raise FileNotFoundError(f"{path}: no image files {wanted} in this folder")
        expanded += sorted(found, key=lambda p: natural_key(p.name))
    check_output_stems(expanded)
    return expanded


def _output_names(stem: str) -> tuple[str, ...]:
    """Every file name predict may write for an input of this stem."""
    return (f"{stem}.tif", f"{stem}_prob.tif", f"{stem}_instances.tif", f"{stem}_rois.zip", f"{stem}_overlay.png")


def _check_not_overwriting(inputs: Sequence[Path], out_dir: Path) -> None:
    """Refuse an output folder where an output would replace one of the inputs (``--out`` = the image folder)."""
    from biounet.data.io import open_image, output_stem

    sources = {p.resolve() for p in inputs}
    for path in inputs:
        for name in _output_names(output_stem(path)):
            target = (out_dir / name).resolve()
            if target in sources:
                open_image(target)  # an unreadable input is reported as that, the more basic problem
                raise CliError(f"{target}: is an input and would be overwritten by an output; give another --out")


def _require_roifile() -> None:
    from biounet.core.extras import available, missing_message

    if not available("roifile"):
        raise CliError(missing_message("roifile", "--save-rois", extra="fiji"))


def _count_cells(stack: Any) -> int:
    import numpy as np

    return int(sum(np.unique(plane[plane > 0]).size for plane in stack))


def _write_rois(instances_path: Path, cells: Any) -> Path:
    from biounet.data.io import output_stem
    from biounet.data.rois import write_roi_zip

    stem = output_stem(instances_path).removesuffix("_instances")
    out = instances_path.with_name(f"{stem}_rois.zip")
    write_roi_zip(out, cells[0] if len(cells) == 1 else cells)
    return out


def _write_overlays(image_path: Path, labels_path: Path) -> list[Path]:
    """``<stem>_overlay.png`` (``<stem>_z<N>_overlay.png`` per plane of a stack): outlines over the image."""
    from biounet.data.io import open_image, output_stem, read_labels
    from biounet.evaluation.report import save_outlines

    source = open_image(image_path)
    labels = read_labels(labels_path)
    stem = output_stem(image_path)
    written = []
    for plane in range(source.planes):
        name = f"{stem}_overlay.png" if source.planes == 1 else f"{stem}_z{plane + 1:04d}_overlay.png"
        written.append(save_outlines(labels_path.with_name(name), source.read(plane), labels[plane]))
    return written


# --- train --------------------------------------------------------------------------------------------------------


def _duration(text: str) -> float:
    """Parse ``90``, ``90s``, ``15m``, ``1.5h`` or ``1h30m`` to seconds (:func:`biounet.api.parse_duration`)."""
    from biounet.training.config import parse_duration

    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    from tqdm import tqdm

    from biounet.training.autoconfig import resolve_train_config

    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, only rank 0 reports
    config, notes = resolve_train_config(args)
    for note in notes if main_rank else []:
        print(f"biounet train: {note}", file=sys.stderr)
    bar = tqdm(total=config.iterations, unit="step", file=sys.stderr, disable=args.quiet or not main_rank,
               dynamic_ncols=True)
    from biounet.training.train import fit

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
        return 128 + (result.signal or 2)  # 130 for SIGINT (Ctrl-C), 143 for SIGTERM
    best = "no validation images" if result.best_score is None else f"best validation {_score_text(result)}"
    model_line = f"model: {Path(args.out) / 'model.pt'}" if not result.interrupted else "stopped early"
    print(f"trained {result.steps} steps in {result.elapsed_s:.0f} s; {best}; {model_line}")
    return 0


def _score_text(result: Any) -> str:
    rows = [r for r in result.history if "score" in r]
    name = next((k for k in ("seg", "rand_error", "mean_iou", "pixel_error", "foreground_iou")
                 if rows and k in rows[-1] and rows[-1][k] == rows[-1]["score"]), "score")
    from biounet.evaluation.validation import HIGHER_IS_BETTER

    direction = "higher is better" if HIGHER_IS_BETTER.get(name, False) else "lower is better"
    return f"{name} {result.best_score:.4f} ({direction})"


def _train_progress(bar: Any) -> Callable[[Any], None]:
    """A progress callback that draws typed training events on a tqdm bar."""
    from biounet.training.events import StepEvent, ValidationEvent

    def progress(event: StepEvent | ValidationEvent) -> None:
        if isinstance(event, ValidationEvent):
            shown = ", ".join(f"{k} {v:.4f}" for k, v in event.scores.items())
            mark = " (best so far)" if event.best else ""
            if not bar.disable:  # -q: nothing but errors; never on stdout, which carries results (JSON)
                bar.write(f"step {event.step}: validation {shown or 'skipped (no validation images)'}{mark}",
                          file=sys.stderr)
            return
        bar.update(event.step - bar.n)
        bar.set_postfix(loss=f"{event.loss:.4f}", steps_per_s=f"{event.steps_per_s:.2f}",
                        elapsed=f"{event.elapsed_s:.0f}s")

    return progress


# --- export -------------------------------------------------------------------------------------------------------


def _cmd_export(args: argparse.Namespace) -> int:
    if args.format != "bioimageio":  # a bioimage.io package may be a folder
        _check_output_file(args.out)
    try:
        if args.format == "bioimageio":
            from biounet.integrations.bioimageio import export_checkpoint_package

            path = export_checkpoint_package(args.model, args.out, opset=args.opset)
        else:
            from biounet.integrations.export import export_checkpoint

            path = export_checkpoint(args.model, args.out, export_format=args.format, opset=args.opset)
    except ModuleNotFoundError as err:
        raise CliError(str(err)) from err
    if not args.quiet:
        print(f"wrote {path}: {args.format} export of {args.model}, with its tiling contract as metadata")
    return 0


def _write_instances(labels_path: Path, probs_path: Path | None, target: str | None, params: Any,
                     watershed: bool) -> tuple[Path, Any]:
    """``<stem>_instances.tif`` from the outputs just written, made the way the model's target asks for
    (:mod:`biounet.inference.instances`) with the post-processing its training run chose; returns the file and the
    instances, ``(Z, H, W)``. A membrane model's ``<stem>.tif`` is rewritten to match its segments (class 1 on
    their 0-valued boundaries)."""
    import numpy as np
    import tifffile

    from biounet.data.io import output_stem, read_labels, write_tiff
    from biounet.inference.instances import MEMBRANES, instances_from_outputs, needs_probabilities

    labels = read_labels(labels_path)
    probs: Any = [None] * len(labels)
    if needs_probabilities(target) and probs_path is not None:  # only their instances need the probabilities
        probs = np.asarray(tifffile.imread(probs_path), dtype=np.float32)
        probs = probs[None] if probs.ndim == 3 else probs
    planes = [instances_from_outputs(plane, p, target=target, params=params, watershed=watershed)
              for plane, p in zip(labels, probs)]
    out = labels_path.with_name(output_stem(labels_path) + "_instances.tif")
    stack = np.stack(planes)
    dtype = np.uint16 if stack.max(initial=0) < 2**16 else np.uint32
    write_tiff(out, (stack[0] if len(planes) == 1 else stack).astype(dtype), labels=True)
    if target == MEMBRANES:
        boundaries = (stack == 0).astype(np.uint8)
        write_tiff(labels_path, boundaries[0] if len(planes) == 1 else boundaries, labels=True)
    return out, stack


# --- evaluate -----------------------------------------------------------------------------------------------------


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from biounet.evaluation.evaluate import evaluate_folders, format_table

    result = evaluate_folders(args.pred, args.truth, kind=args.kind, allow_missing=args.allow_missing)
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

    from biounet.integrations.demo import run_demo

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


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default: ``(default: X)`` appended unless the help already says it; on/off for flags,
    ``(required)`` for required options.

    Options whose default is decided at run time say ``(default: measured ...)`` in their own help text.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if action.required:
            return f"{text} (required)"
        if action.nargs == 0:  # store_true / store_false
            return f"{text} (default: {'on' if action.default else 'off'})"
        return f"{text} (default: %(default)s)"


_EXAMPLES = {
    "init": "example:\n  biounet init --out model.pt --base-channels 16",
    "info": "example:\n  biounet info runs/cells/model.pt --json",
    "predict": "examples:\n  biounet predict runs/cells/model.pt cells/images --out results --instances --save-rois\n"
               "  biounet predict model.pt a.tif b.png --out results --save-probabilities --tta",
    "export": "example:\n  biounet export runs/cells/model.pt --format onnx --out cells.onnx",
    "demo": "example:\n  biounet demo --out demo_out --time-budget 4m",
    "evaluate": "example:\n  biounet evaluate --pred results --truth cells/labels --kind instances --json",
    "train": "examples:\n  biounet train --data cells --out runs/cells --time-budget 30m\n"
             "  biounet train --data isbi2012 --out runs/em --recipe paper --iterations 20000",
}


def _verbosity(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``-v``/``-q`` on the top-level parser and again on each subcommand (SUPPRESS keeps the top-level value)."""
    default = False if top else argparse.SUPPRESS
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="log progress details (default: off)")
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="print only errors and warnings (default: off)")


def _subcommand(sub: Any, name: str, text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=text, description=text, epilog=_EXAMPLES[name],
                            formatter_class=_HelpFormatter)
    _verbosity(parser)
    return parser


def _build_parser() -> argparse.ArgumentParser:
    from biounet import __version__
    from biounet.core.device import PRECISIONS as PREDICT_PRECISIONS
    from biounet.core.model import PADDINGS, VARIANTS
    from biounet.data.datasets import LAYOUTS
    from biounet.data.io import NORMALIZATIONS
    from biounet.integrations.export import EXPORT_FORMATS
    from biounet.training.config import LABEL_KINDS, PRECISIONS, RECIPES, SELECT_BY, TRAIN_TARGETS, TrainConfig

    parser = argparse.ArgumentParser(
        prog="biounet", description="U-Net as Ronneberger, Fischer & Brox (2015) describe it.",
        formatter_class=_HelpFormatter, epilog="run 'biounet COMMAND --help' for a command's options and an example",
    )
    parser.add_argument("--version", action="version", version=f"biounet {__version__}")
    _verbosity(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    devices = "auto (cuda if available, else cpu), cpu, cuda, cuda:N, or mps (Apple GPU, where torch has it)"

    init = _subcommand(sub, "init", "write a randomly initialised model")
    init.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    init.add_argument("--base-channels", type=_positive_int, default=64, help="channels of the first level")
    init.add_argument("--depth", type=_positive_int, default=4, help="number of poolings")
    init.add_argument("--in-channels", type=_positive_int, default=1, help="image channels")
    init.add_argument("--num-classes", type=_positive_int, default=2, help="output classes")
    init.add_argument("--variant", choices=VARIANTS, default="paper", help="paper, or the authors' Caffe release")
    init.add_argument("--padding", choices=PADDINGS, default="valid", help="valid (the paper's) or same")
    init.add_argument("--batch-norm", action="store_true", help="batch normalisation after each convolution")
    init.add_argument("--normalization", choices=NORMALIZATIONS, default="percentile",
                      help="input intensity normalisation")
    init.add_argument("--seed", type=int, default=0, help="random seed of the weights")

    info = _subcommand(sub, "info", "describe a model")
    info.add_argument("model", type=Path, help="biounet checkpoint (model.pt)")
    info.add_argument("--json", action="store_true", help="print JSON")

    predict = _subcommand(sub, "predict", "segment images with the overlap-tile strategy")
    predict.add_argument("model", type=Path, help="biounet checkpoint (model.pt) or ONNX export (model.onnx)")
    predict.add_argument("inputs", nargs="+", type=Path, help="PNG/TIFF/zarr images, or folders of them")
    predict.add_argument("--out", type=Path, required=True, help="output folder")
    predict.add_argument("--pattern", default=None,
                         help="for folder inputs: file names to take, e.g. '*.tif' (default: every image file)")
    predict.add_argument("--tile", type=_tile, default=None,
                         help="input tile side (a valid size) (default: auto, from --memory-budget)")
    predict.add_argument("--batch-size", type=_positive_int, default=1, help="tiles per forward pass")
    predict.add_argument("--device", default="auto", help=devices)
    predict.add_argument("--precision", choices=PREDICT_PRECISIONS, default="auto",
                         help="auto: bf16 on CUDA or a CPU with native bf16, else fp32; fp32 (tiling exact to "
                         "float rounding) or bf16")
    predict.add_argument("--save-probabilities", action="store_true", help="also write <stem>_prob.tif")
    predict.add_argument("--tta", action="store_true", help="average over the 8 rotations/flips")
    predict.add_argument("--compile", action="store_true",
                         help="torch.compile the network first (pays off on many tiles of one size)")
    predict.add_argument("--instances", action="store_true",
                         help="also write <stem>_instances.tif, one id per cell, made as the model's training "
                         "chose: touching cells separated (cell models), or segments agglomerated from the membrane "
                         "map (membrane models such as ISBI 2012; needs biounet[segments])")
    predict.add_argument("--watershed", action="store_true", help="with --instances: split merged cells by a "
                         "seeded watershed on the distance transform")
    predict.add_argument("--save-overlays", action="store_true",
                         help="also write <stem>_overlay.png: outlines of the cells (or classes) over the image")
    predict.add_argument("--save-rois", action="store_true",
                         help="also write <stem>_rois.zip, one ImageJ polygon ROI per cell (implies --instances)")
    predict.add_argument("--pixel-size", type=_pixel_size, default=None, metavar="UM",
                         help="the images' pixel size in micrometres (0.19, or 0.19,0.2 for y,x; default: from "
                         "OME-TIFF/OME-Zarr metadata). Images of another pixel size than the model's are resampled "
                         "to it and back")
    predict.add_argument("--no-rescale", dest="rescale", action="store_false",
                         help="predict every image at its own scale, whatever its pixel size")
    predict.add_argument("--memory-budget", type=_memory, default=None,
                         help="e.g. 512M, 2G (default: measured: a quarter of the available memory, 256M to 8G)")
    predict.add_argument("--dask", metavar="SCHEDULER_ADDRESS",
                         help="predict zarr images block by block on this Dask scheduler, e.g. tcp://host:8786 "
                         "(default: none, one process)")
    predict.add_argument("--dask-workers", type=_positive_int, metavar="N",
                         help="predict zarr images block by block on a local Dask cluster of N workers "
                         "(default: none)")

    export = _subcommand(sub, "export", "export a model to ONNX or TorchScript, with its tiling contract")
    export.add_argument("model", type=Path, help="biounet checkpoint (model.pt)")
    export.add_argument("--format", choices=(*EXPORT_FORMATS, "bioimageio"), required=True,
                        help="output format")
    export.add_argument("--out", type=Path, required=True, help="model.onnx, model.ts, or a bioimageio folder or .zip")
    export.add_argument("--opset", type=_positive_int, default=17, help="ONNX opset version (>= 17)")

    demo = _subcommand(sub, "demo", "the main job: train on synthetic cells, segment, write pictures")
    demo.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder")
    demo.add_argument("--time-budget", type=_duration, default=240.0, help="training time (default: 4m)")
    demo.add_argument("--device", default="auto", help=devices)

    evaluate = _subcommand(sub, "evaluate", "score predictions against ground truth (ISBI, CTC, instances, binary)")
    evaluate.add_argument("--pred", type=Path, required=True, help="folder of biounet predict outputs")
    evaluate.add_argument("--truth", type=Path, required=True, help="folder of ground-truth label images")
    evaluate.add_argument("--kind", choices=EVALUATION_KINDS, default="binary",
                          help="binary: foreground IoU/Dice; instances: object precision/recall/F1/AP at IoU "
                          "0.5..0.9 and SEG; ctc: SEG as the Cell Tracking Challenge pools it; isbi2012: pixel, "
                          "Rand and warping error")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate.add_argument("--allow-missing", action="store_true",
                          help="score a truth file without a prediction as an empty prediction (default: error)")

    # train: argparse defaults stay None so that config.toml and the measured choices can fill them; the help
    # shows TrainConfig's default, or says how it is measured
    d = {f.name: f.default for f in fields(TrainConfig)}
    train = _subcommand(sub, "train", "train a U-Net (paper or fast recipe), resumable")
    train.add_argument("--data", required=True, help="dataset folder, or synthetic:KIND[,n=N,size=HxW,seed=S]")
    train.add_argument("--out", type=Path, required=True, help="run directory")
    train.add_argument("--config", type=Path, help="config.toml to start from; flags override it (default: none)")
    train.add_argument("--layout", choices=LAYOUTS, help="dataset layout (default: detected from the folder)")
    train.add_argument("--label-kind", choices=LABEL_KINDS,
                       help="pairs layout: label files hold class ids (0/1, 0/255 masks), or one id per cell "
                       f"(instances), or auto: decided from the files (default: {d['label_kind']})")
    train.add_argument("--silver", action="store_true", default=None,
                       help="ctc layout: also train on the silver-truth frames (default: off)")
    train.add_argument("--exclude", type=lambda text: tuple(t for t in text.split(",") if t),
                       help="comma-separated image names to hold out of training and validation (default: none)")
    train.add_argument("--recipe", choices=RECIPES, help=f"training recipe (default: {d['recipe']})")
    train.add_argument("--base-channels", type=_positive_int,
                       help="network width (default: measured: the widest of 16, 32, 64 with >= 800 steps in "
                       "--time-budget; 64 with --iterations)")
    train.add_argument("--depth", type=_positive_int, help=f"number of poolings (default: {d['depth']})")
    train.add_argument("--variant", choices=VARIANTS, help=f"network variant (default: {d['variant']})")
    train.add_argument("--pixel-size", type=_pixel_size, metavar="UM",
                       help="pixel size of the training images in micrometres (0.19, or 0.19,0.2 for y,x), recorded "
                       "in the model so predict resamples other pixel sizes to it (default: from OME-TIFF/OME-Zarr "
                       "metadata when all images agree, else none)")
    train.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None,
                       help="batch normalisation after each convolution (not in the paper; default: on with the "
                       "fast recipe, off with --recipe paper)")
    train.add_argument("--tile", type=_positive_int, help=f"input tile side (default: {d['tile']}, the paper's)")
    train.add_argument("--batch-size", type=_positive_int, help=f"tiles per step (default: {d['batch_size']})")
    budget = train.add_mutually_exclusive_group()
    budget.add_argument("--iterations", type=_positive_int, help="training steps (default: none; give this or "
                        "--time-budget)")
    budget.add_argument("--time-budget", type=_duration, help="e.g. 15m, 1h, 600s (default: none; give this or "
                        "--iterations)")
    train.add_argument("--precision", choices=("auto", *PRECISIONS),
                       help="bf16 autocast or fp32 (default: measured: bf16 where native and >= 15%% faster, "
                       "else fp32; fp32 for --recipe paper)")
    train.add_argument("--lr", type=float, help="learning rate (default: 0.001 fast recipe, 0.01 paper)")
    train.add_argument("--val-every", type=_positive_int, help=f"validate every N steps (default: {d['val_every']})")
    train.add_argument("--validation-fraction", type=float,
                       help=f"images held back for validation (default: {d['validation_fraction']})")
    train.add_argument("--normalization", choices=NORMALIZATIONS,
                       help=f"input intensity normalisation (default: {d['normalization']})")
    train.add_argument("--workers", type=int,
                       help="data-loading worker processes (default: measured: 0 on <= 2 cores, else cores/4, "
                       "at most 4)")
    train.add_argument("--compile", action="store_true", default=None,
                       help="run the training steps through torch.compile: faster steps after a one-off "
                       "compilation (base 16 on the project's CPU: 1.17x after 46 s, so it pays for budgets over "
                       "about 10 minutes); needs a C++ compiler on the CPU (default: off)")
    train.add_argument("--init", help="fine-tune: start from this trained model.pt; its network and normalisation "
                       "are kept, another class count replaces only the 1x1 head (default: none)")
    train.add_argument("--ignore-label", type=int, help="pairs layout: label value of unannotated pixels (paint a "
                       "few cells, leave the rest as this value); they do not count in the loss (default: none)")
    train.add_argument("--target", choices=TRAIN_TARGETS,
                       help="what cells are taught as: paper (background gaps between touching cells), boundary "
                       f"(interior + boundary band) (default: {d['target']})")
    train.add_argument("--boundary-px", type=_positive_int,
                       help=f"boundary target: band width in px (default: {d['boundary_px']})")
    train.add_argument("--w0", type=float,
                       help=f"border weight w0; 0 switches the border term off (default: {d['w0']}, the paper's)")
    train.add_argument("--no-class-balance", dest="class_balance", action="store_false", default=None,
                       help="w_c = 1 instead of the inverse class frequency; the border term stays (default: off)")
    train.add_argument("--select-by", choices=SELECT_BY,
                       help="validation measure that picks model.pt; auto: SEG for cells, Rand error for "
                       f"membranes, mean IoU otherwise (default: {d['select_by']})")
    train.add_argument("--sigma", type=float, dest="sigma_px",
                       help=f"border width sigma in px (default: {d['sigma_px']}, the paper's)")
    train.add_argument("--seed", type=int, help=f"random seed (default: {d['seed']})")
    train.add_argument("--device", default="auto", help=devices)
    train.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    train.add_argument("--stop-after", type=_positive_int, help=argparse.SUPPRESS)
    return parser


def _warn_ineffective(args: argparse.Namespace) -> None:
    """Warn (stderr) about options given where they have no effect."""
    rules = {
        "predict": [("watershed", lambda a: not (a.instances or a.save_rois),
                     "--watershed has no effect without --instances (or --save-rois)"),
                    ("pattern", lambda a: not any(p.is_dir() and p.suffix.lower() != ".zarr" for p in a.inputs),
                     "--pattern has no effect: no input is a folder")],
        "train": [("boundary_px", lambda a: a.target not in (None, "boundary"),
                   "--boundary-px has no effect unless --target boundary")],
    }
    for name, useless, message in rules.get(args.command, []):
        if getattr(args, name, None) not in (None, False) and useless(args):
            print(f"biounet {args.command}: warning: {message}", file=sys.stderr)


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "init": _cmd_init,
    "info": _cmd_info,
    "predict": _cmd_predict,
    "export": _cmd_export,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "demo": _cmd_demo,
}


def _check_train_out(args: argparse.Namespace) -> None:
    """Before any data is loaded: the run folder must be a folder, or creatable, and writable."""
    from biounet.data.io import check_creatable_dir

    check_creatable_dir(args.out)


_PRECHECKS: dict[str, Callable[[argparse.Namespace], None]] = {"train": _check_train_out}


def _error_text(err: BaseException) -> str:
    """One line for an exception: an OS error as ``<file>: <reason>``, anything else as its message."""
    if isinstance(err, OSError) and type(err).__str__ is OSError.__str__ and err.strerror and err.filename:
        name = err.filename if isinstance(err.filename, (str, bytes, os.PathLike)) else str(err.filename)
        text = f"{os.fsdecode(name)}: {err.strerror}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())  # one line, however the message was wrapped


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``biounet``."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    _warn_ineffective(args)
    try:
        _PRECHECKS.get(args.command, lambda args: None)(args)
        return _COMMANDS[args.command](args)
    except (ValueError, TypeError, OSError, FloatingPointError) as err:
        # bad input is reported in one line; with -v the traceback too (a TypeError may also be a bug)
        if args.verbose:
            import traceback

            traceback.print_exc(file=sys.stderr)
        print(f"biounet {args.command}: error: {_error_text(err)}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError as err:
        print(f"biounet {args.command}: error: out of memory{f' ({_error_text(err)})' if str(err) else ''}",
              file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
