"""``biounet predict``: segment images with the overlap-tile strategy. Parsing and printing; the outputs are made
by :mod:`biounet.inference.predict` and :mod:`biounet.inference.outputs`."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from biounet.cli.common import DEVICES, CliError, diameter, memory, pixel_size, positive_int, subcommand, tile

EXAMPLE = ("examples:\n  biounet predict runs/cells/model.pt cells/images --out results --instances --save-rois\n"
           "  biounet predict model.pt a.tif b.png --out results --save-probabilities --tta")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The ``predict`` subcommand and its options."""
    from biounet.core.device import PRECISIONS

    predict = subcommand(subparsers, "predict", "segment images with the overlap-tile strategy", EXAMPLE)
    predict.add_argument("model", type=Path, help="biounet checkpoint (model.pt) or ONNX export (model.onnx)")
    predict.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                         help="PNG/TIFF/zarr/OME-Zarr images, HDF5 or TIFF volumes, or folders of them")
    predict.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (or a new .zarr)")
    predict.add_argument("--pattern", default=None, metavar="GLOB",
                         help="for folder inputs: file names to take, e.g. '*.tif' (default: every image file)")
    predict.add_argument("--tile", type=tile, default=None, metavar="PX|auto",
                         help="input tile side in px, a valid size; auto: the cheapest tiling that fits "
                         "--memory-budget (default: auto)")
    predict.add_argument("--batch-size", type=positive_int, default=1, metavar="N", help="tiles per forward pass")
    predict.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICES)
    predict.add_argument("--precision", choices=PRECISIONS, default="auto",
                         help="auto: bf16 on CUDA or a CPU with native bf16, else fp32; fp32 (tiling exact to "
                         "float rounding) or bf16")
    predict.add_argument("--save-probabilities", action="store_true", help="also write <stem>_prob.tif")
    predict.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                         help="average over the 8 rotations/flips (default: as the model's training run chose on its "
                         "validation images: on for membrane models where it lowered the Rand error, else off)")
    predict.add_argument("--compile", action="store_true",
                         help="torch.compile the network first (pays off on many tiles of one size)")
    _add_output_options(predict)
    predict.add_argument("--memory-budget", type=memory, default=None, metavar="SIZE",
                         help="e.g. 512M, 2G (default: measured: a quarter of the available memory, 256M to 8G)")
    predict.add_argument("--dask", metavar="ADDRESS",
                         help="predict zarr images block by block on this Dask scheduler, e.g. tcp://host:8786; "
                         "needs the dask extra, pip install -e '.[dask]' (default: none, one process)")
    predict.add_argument("--dask-workers", type=positive_int, metavar="N",
                         help="predict zarr images block by block on a local Dask cluster of N workers; needs the "
                         "dask extra (default: none)")
    return predict


def _add_output_options(predict: argparse.ArgumentParser) -> None:
    predict.add_argument("--instances", action="store_true",
                         help="also write <stem>_instances.tif, one id per cell, with the post-processing the model's "
                         "training chose: connected components with the gaps given back (paper target), a seeded "
                         "watershed (boundary and distance targets), polygons (stardist target), or segments "
                         "agglomerated from the membrane map (membrane models such as ISBI 2012; needs the segments "
                         "extra, pip install -e '.[segments]')")
    predict.add_argument("--post-processing", action="append", default=[], metavar="KEY=VALUE",
                         help="with --instances: replace one of the post-processing settings the model's training "
                         "chose (repeatable), e.g. seed_threshold=0.6, background_bias=2 (cell models) or "
                         "bias=0.4 (membrane models); an unknown key lists the model's (default: the stored ones)")
    predict.add_argument("--watershed", action="store_true", help="with --instances, paper-target models: also split "
                         "merged cells by a seeded watershed on the distance transform")
    predict.add_argument("--save-overlays", action="store_true",
                         help="also write <stem>_overlay.png: outlines of the cells (or classes) over the image")
    predict.add_argument("--save-rois", action="store_true",
                         help="also write <stem>_rois.zip, one ImageJ polygon ROI per cell (implies --instances; needs "
                         "roifile, the fiji extra: pip install -e '.[fiji]')")
    predict.add_argument("--pixel-size", type=pixel_size, default=None, metavar="UM",
                         help="the images' pixel size in micrometres, 0.19, or 0.19,0.2 for y,x; images of another "
                         "pixel size than the model's are resampled to it and back (default: from OME-TIFF/OME-Zarr "
                         "metadata)")
    predict.add_argument("--diameter", type=diameter, default=None, metavar="PX",
                         help="the cells' diameter in these images, in px, for a model trained at a common diameter "
                         "(train --diameter): images are resampled so their cells have the model's (default: "
                         "estimated by a first prediction of each 2-D image; blockwise, Dask and OME-Zarr outputs "
                         "are predicted at the image's own scale)")
    predict.add_argument("--no-rescale", dest="rescale", action="store_false",
                         help="predict every image at its own scale, whatever its pixel size or cell diameter "
                         "(default: off: images are resampled to the model's pixel size or cell diameter)")


def run(args: argparse.Namespace) -> int:
    """Predict every input; exit code 0."""
    from biounet.inference.instances import needs_probabilities
    from biounet.inference.predict import PredictOptions, load_predictor, resolve_memory_budget

    if args.post_processing and not (args.instances or args.save_rois):
        raise CliError("--post-processing sets how instances are made; give --instances too")
    inputs = _expand_inputs(args.inputs, args.pattern)
    _check_not_overwriting(inputs, args.out)
    if args.save_rois:
        _require_roifile()
    predictor = load_predictor(args.model, device=args.device, precision=args.precision, tta=args.tta,
                               compile=args.compile)
    target, params = _post_processing(args) if args.instances or args.save_rois else (None, None)
    _check_segments(target, args)
    budget = resolve_memory_budget(args.memory_budget)
    if not args.quiet:
        print(f"biounet predict: precision {predictor.precision} ({args.precision}); memory budget {budget.note}",
              file=sys.stderr)
    options = PredictOptions(  # a boundary, distance or membrane model's instances come from the probability file
        tile=args.tile, batch_size=args.batch_size,
        save_probabilities=args.save_probabilities or needs_probabilities(target),
        memory_budget=budget.bytes, pixel_size_um=args.pixel_size, rescale=args.rescale, diameter_px=args.diameter,
    )
    if args.dask is not None or args.dask_workers is not None:
        return _predict_blockwise(args, options)
    inputs = _predict_omezarr(args, predictor, inputs, options, (target, params) if args.instances else None)
    if inputs:
        _predict_files(args, predictor, inputs, options, target, params)
    return 0


class _Bars:
    """One tqdm bar per input, created on its first tile (so an input error prints no empty bar)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bars: list[tuple[Path, Any]] = []

    def __call__(self, path: Path) -> Callable[[int, int], None]:
        from tqdm import tqdm

        def update(done: int, total: int) -> None:
            if not self.bars or self.bars[-1][0] != path:
                if self.bars:
                    self.bars[-1][1].close()
                self.bars.append((path, tqdm(total=total, desc=path.name, unit="tile", file=sys.stderr,
                                             disable=self.quiet, leave=False)))
            self.bars[-1][1].update(done - self.bars[-1][1].n)

        return update

    def close(self) -> None:
        for _, bar in self.bars:
            bar.close()


def _predict_files(args: argparse.Namespace, predictor: Any, inputs: list[Path], options: Any,
                   target: str | None, params: Any) -> None:
    """Image files into the output folder, all or nothing, each with the extra outputs asked for; prints what
    was written."""
    from biounet.inference.predict import predict_files

    extras: list[tuple[list[Path], int | None]] = []  # per input: files written beside the labels, cell count
    bars = _Bars(args.quiet)
    try:
        results = predict_files(predictor, inputs, args.out, options, progress=bars,
                                after_each=_extra_outputs(args, inputs, target, params, extras),
                                instances=args.instances or args.save_rois)
    finally:
        bars.close()
    for path, result, (extra, cells) in zip(inputs, results, extras):
        written = [result.labels_path] + ([result.probabilities_path] if args.save_probabilities else [])
        written += [Path(args.out) / p.name for p in extra]
        if not args.quiet:
            counted = f"; {cells} cells" if cells is not None else ""
            tile = (f"{result.in_tile} px" if result.in_shape is None else
                    " x ".join(map(str, result.in_shape)) + " voxels (z, y, x)")
            print(f"{path}: wrote {', '.join(str(p) for p in written)} ({result.tiles} tiles of {tile}{counted})")
        if result.zoom is not None and not args.quiet:
            print(f"{path}: {_scale_note(result.pixel_size_um, predictor, result.zoom)}", file=sys.stderr)


def _extra_outputs(args: argparse.Namespace, inputs: list[Path], target: str | None, params: Any,
                   extras: list[tuple[list[Path], int | None]]) -> Callable[[Any], None]:
    """The ``after_each`` of :func:`~biounet.inference.predict.predict_files`: instances, ROIs and overlays beside
    each input's labels, appended to ``extras`` with the cell count."""
    from biounet.inference.instances import needs_probabilities
    from biounet.inference.outputs import at_image_scale, count_cells, write_instances, write_rois

    def after_each(result: Any) -> None:
        path = inputs[len(extras)]
        written: list[Path] = []
        cells, instances_path = None, result.labels_path
        if args.instances or args.save_rois:
            instances_path, cells = write_instances(result.labels_path, result.probabilities_path, target,
                                                    at_image_scale(params, result.zoom), args.watershed)
            written.append(instances_path)
            if needs_probabilities(target) and not args.save_probabilities and result.probabilities_path:
                result.probabilities_path.unlink()
        if args.save_rois:
            written.append(write_rois(instances_path, cells))
        if args.save_overlays:
            written += _write_overlays(path, instances_path)
        extras.append((written, None if cells is None else count_cells(cells)))

    return after_each


def _post_processing(args: argparse.Namespace) -> tuple[str | None, Any]:
    """The model's target and the post-processing its training chose, with ``--post-processing`` applied."""
    from biounet.inference.settings import instance_settings, with_overrides

    target, params = instance_settings(args.model)
    return target, with_overrides(params, args.post_processing)


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


def _scale_note(image_um: tuple[float, float] | None, predictor: Any, zoom: tuple[float, float]) -> str:
    model_um = predictor.pixel_size_um
    if image_um is None or model_um is None:
        why = f"its cells resampled to the model's diameter, {predictor.diameter_px:.3g} px"
    else:
        why = (f"pixel size {image_um[0]:.4g} x {image_um[1]:.4g} µm, the model's {model_um[0]:.4g} x "
               f"{model_um[1]:.4g} µm")
    return (f"{why}: predicted resampled x{zoom[0]:.3g} x {zoom[1]:.3g} to the model's scale, outputs resampled back "
            "to the image's size")
def _predict_blockwise(args: argparse.Namespace, options: Any) -> int:
    """``predict --dask ADDRESS`` / ``--dask-workers N``: zarr images block by block (:mod:`biounet.inference.blockwise`)."""
    import dataclasses

    from biounet.inference.blockwise import open_client, predict_blockwise

    if args.compile:
        raise CliError("--compile is not supported with --dask")
    target, params = _post_processing(args) if args.instances else (None, None)
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


def _predict_omezarr(args: argparse.Namespace, predictor: Any, inputs: list[Path], options: Any,
                     instances: tuple[str | None, Any] | None) -> list[Path]:
    """OME-Zarr inputs (labels into the image's ``labels/`` group) and ``--out x.zarr`` (a new OME-Zarr) go
    through :mod:`biounet.inference.predict_omezarr`, with ``instances`` (target and post-processing) where asked;
    returns the other inputs, for the output folder."""
    from biounet.data.omezarr import is_omezarr

    zarr_out = args.out.suffix.lower() == ".zarr"
    if zarr_out and len(inputs) > 1:
        raise ValueError(f"--out {args.out} is one OME-Zarr image; give one input, or an output folder")
    ome = [p for p in inputs if zarr_out or is_omezarr(p)]
    if ome:
        from biounet.data.files import check_writable_dir
        from biounet.inference.predict_omezarr import predict_to_omezarr

        if not zarr_out:
            check_writable_dir(args.out)  # created, as for any predict, though the labels go into the image

    for path in ome:
        result = predict_to_omezarr(predictor, path, args.out if zarr_out else None, options,
                                    instances=instances)
        if not args.quiet:
            print(f"{path}: wrote {result.labels_path} ({result.tiles} tiles of {result.in_tile} px)")
    return [p for p in inputs if p not in ome]


def _expand_inputs(inputs: Sequence[Path], pattern: str | None) -> list[Path]:
    """The input images: files as given, folders replaced by their image files (or those matching ``pattern``),
    in natural order; a ``.zarr`` folder is one image. Raises on missing paths, empty folders and shared stems."""
    from biounet.data.datasets import natural_key
    from biounet.data.files import IMAGE_SUFFIXES
    from biounet.data.images import HDF5_SUFFIXES
    from biounet.inference.predict import check_output_stems

    suffixes = IMAGE_SUFFIXES + HDF5_SUFFIXES
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
                 if not p.name.startswith(".") and p.suffix.lower() in suffixes
                 and (p.is_file() or p.suffix.lower() == ".zarr")]
        if not found:
            wanted = f"matching {pattern!r}" if pattern else f"({', '.join(suffixes)})"
            raise FileNotFoundError(f"{path}: no image files {wanted} in this folder")
        expanded += sorted(found, key=lambda p: natural_key(p.name))
    check_output_stems(expanded)
    return expanded


def _output_names(stem: str) -> tuple[str, ...]:
    """Every file name predict may write for an input of this stem."""
    return (f"{stem}.tif", f"{stem}_prob.tif", f"{stem}_instances.tif", f"{stem}_rois.zip", f"{stem}_overlay.png")


def _check_not_overwriting(inputs: Sequence[Path], out_dir: Path) -> None:
    """Refuse an output folder where an output would replace one of the inputs (``--out`` = the image folder)."""
    from biounet.data.files import output_stem
    from biounet.data.images import open_image

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


def _write_overlays(image_path: Path, labels_path: Path) -> list[Path]:
    """``<stem>_overlay.png`` (``<stem>_z<N>_overlay.png`` per plane of a stack): outlines over the image."""
    from biounet.data.files import output_stem
    from biounet.data.images import open_image, read_labels
    from biounet.evaluation.report import save_outlines

    source = open_image(image_path)
    labels = read_labels(labels_path)
    stem = output_stem(image_path)
    written = []
    for plane in range(source.planes):
        name = f"{stem}_overlay.png" if source.planes == 1 else f"{stem}_z{plane + 1:04d}_overlay.png"
        written.append(save_outlines(labels_path.with_name(name), source.read(plane), labels[plane]))
    return written
