"""``biounet export``: a model as ONNX, TorchScript or a bioimage.io package, with its tiling contract."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from biounet.cli.common import CliError, check_output_file, positive_int, subcommand

EXAMPLE = "example:\n  biounet export runs/cells/model.pt --format onnx --out cells.onnx"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The ``export`` subcommand and its options."""
    from biounet.integrations.export import EXPORT_FORMATS

    export = subcommand(subparsers, "export",
                        "export a model to ONNX, TorchScript or a bioimage.io model package, with its tiling contract",
                        EXAMPLE)
    export.add_argument("model", type=Path, help="biounet checkpoint (model.pt)")
    export.add_argument("--format", choices=(*EXPORT_FORMATS, "bioimageio"), required=True,
                        help="onnx, torchscript, or bioimageio (a bioimage.io model package; needs the "
                        "bioimageio extra, pip install -e '.[bioimageio]')")
    export.add_argument("--out", type=Path, required=True, metavar="PATH", help="model.onnx, model.ts, or a bioimageio folder or .zip")
    export.add_argument("--opset", type=positive_int, default=17, metavar="N", help="ONNX opset version (>= 17)")
    return export


def run(args: argparse.Namespace) -> int:
    """Write the export; exit code 0 (2 when the format's optional dependency is missing)."""
    if args.format != "bioimageio":  # a bioimage.io package may be a folder
        check_output_file(args.out)
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
