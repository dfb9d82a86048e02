"""``biounet init``: write a randomly initialised model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from biounet.cli.common import CliError, check_output_file, describe, positive_int, subcommand

EXAMPLE = "example:\n  biounet init --out model.pt --base-channels 16"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The ``init`` subcommand and its options."""
    from biounet.core.model import PADDINGS, VARIANTS
    from biounet.data.normalization import NORMALIZATIONS

    init = subcommand(subparsers, "init", "write a randomly initialised model", EXAMPLE)
    init.add_argument("--out", type=Path, required=True, metavar="FILE", help="checkpoint file to write")
    init.add_argument("--base-channels", type=positive_int, default=64, metavar="N", help="channels of the first level")
    init.add_argument("--depth", type=positive_int, default=4, metavar="N", help="number of poolings")
    init.add_argument("--in-channels", type=positive_int, default=1, metavar="N", help="image channels")
    init.add_argument("--num-classes", type=positive_int, default=2, metavar="N", help="output classes")
    init.add_argument("--variant", choices=VARIANTS, default="paper", help="paper, release (the authors' Caffe model) or cicek (the 3D "
                      "U-Net's widths)")
    init.add_argument("--padding", choices=PADDINGS, default="valid", help="valid (the paper's) or same")
    init.add_argument("--batch-norm", action="store_true", help="batch normalisation after each convolution")
    init.add_argument("--normalization", choices=NORMALIZATIONS, default="percentile",
                      help="input intensity normalisation")
    init.add_argument("--seed", type=int, default=0, metavar="N", help="random seed of the weights")
    return init


def run(args: argparse.Namespace) -> int:
    """Write the model; exit code 0."""
    import torch

    from biounet.core.model import ModelConfig, UNet
    from biounet.data.checkpoint import model_payload, save_checkpoint
    from biounet.data.normalization import NORMALIZATIONS

    if args.normalization not in NORMALIZATIONS:
        raise CliError(f"--normalization must be one of {NORMALIZATIONS}")
    config = ModelConfig(
        in_channels=args.in_channels, num_classes=args.num_classes, depth=args.depth,
        base_channels=args.base_channels, padding=args.padding, batch_norm=args.batch_norm, variant=args.variant,
    )
    torch.manual_seed(args.seed)
    model = UNet(config)
    check_output_file(args.out)
    save_checkpoint(args.out, model_payload(model, normalization=args.normalization, step=0))
    print(f"wrote {args.out}: randomly initialised U-Net ({describe(model)})")
    return 0
