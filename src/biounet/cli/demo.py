"""``biounet demo``: the main job on synthetic cells: train, segment, write pictures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from biounet.cli.common import DEVICES, duration, subcommand, train_progress

EXAMPLE = "example:\n  biounet demo --out demo_out --time-budget 4m"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The ``demo`` subcommand and its options."""
    demo = subcommand(subparsers, "demo", "the main job: train on synthetic cells, segment, write pictures",
                      EXAMPLE)
    demo.add_argument("--out", type=Path, default=Path("demo_out"), metavar="DIR", help="output folder")
    demo.add_argument("--time-budget", type=duration, default=240.0, metavar="DURATION", help="training time (default: 4m)")
    demo.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICES)
    return demo


def run(args: argparse.Namespace) -> int:
    """Run the demo, print its summary (JSON) and the pictures to look at; exit code 0."""
    import json

    from tqdm import tqdm

    from biounet.integrations.demo import run_demo

    print(f"biounet demo: synthetic touching cells, training a base-16 U-Net for {args.time_budget:.0f} s, "
          f"outputs in {args.out}", file=sys.stderr)
    bar = tqdm(unit="step", file=sys.stderr, disable=args.quiet, dynamic_ncols=True)
    try:
        summary = run_demo(args.out, time_budget_s=args.time_budget, device=args.device,
                           progress=train_progress(bar))
    finally:
        bar.close()
    print(json.dumps(summary, indent=2))
    print(f"look at: {', '.join(summary['pictures'])}", file=sys.stderr)
    return 0
