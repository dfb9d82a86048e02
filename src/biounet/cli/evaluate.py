"""``biounet evaluate``: score predictions against ground truth."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from biounet.cli.common import subcommand

EVALUATION_KINDS = ("isbi2012", "ctc", "instances", "binary")
"""``evaluate --kind`` choices: :data:`biounet.evaluation.evaluate.KINDS`, restated so that building the parser does not
import the metrics (numba, scipy.optimize: 0.7 s of every command's start-up); a test keeps the two equal."""
EXAMPLE = "example:\n  biounet evaluate --pred results --truth cells/labels --label-kind instances --json"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The ``evaluate`` subcommand and its options."""
    evaluate = subcommand(subparsers, "evaluate",
                          "score predictions against ground truth (ISBI, CTC, instances, binary)", EXAMPLE)
    evaluate.add_argument("--pred", type=Path, required=True, metavar="DIR", help="folder of biounet predict outputs")
    evaluate.add_argument("--truth", type=Path, required=True, metavar="DIR", help="folder of ground-truth label images")
    evaluate.add_argument("--label-kind", "--kind", dest="kind", choices=EVALUATION_KINDS, default="binary",
                          help="what the truth labels are, and so what is measured (--kind is the old name): binary: foreground IoU/Dice; instances: object precision/recall/F1/AP at IoU "
                          "0.5..0.9 and SEG; ctc: SEG as the Cell Tracking Challenge pools it; isbi2012: pixel, "
                          "Rand and warping error")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate.add_argument("--allow-missing", action="store_true",
                          help="score a truth file without a prediction as an empty prediction (default: error)")
    return evaluate


def run(args: argparse.Namespace) -> int:
    """Print the scores (a table, or JSON with ``--json``); exit code 0."""
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
