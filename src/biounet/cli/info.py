"""``biounet info``: describe a model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from biounet.cli.common import describe, subcommand

EXAMPLE = "example:\n  biounet info runs/cells/model.pt --json"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """The ``info`` subcommand and its options."""
    info = subcommand(subparsers, "info", "describe a model", EXAMPLE)
    info.add_argument("model", type=Path, help="biounet checkpoint (model.pt)")
    info.add_argument("--json", action="store_true", help="print JSON")
    return info


def run(args: argparse.Namespace) -> int:
    """Print the model's description (a table, or JSON with ``--json``); exit code 0."""
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
    print(f"{args.model}: {describe(model)}")
    print(f"  normalization: {info['normalization']}; classes: {', '.join(info['class_names'] or [])}")
    print(f"  context margin: {info['margin_px']} px per side; tiles step by multiples of {2**c.depth} px")
    print("  smallest valid tiles (input -> output): "
          + ", ".join(f"{k} -> {v}" for k, v in info["smallest_valid_tiles"].items()))
    if info["step"]:
        print(f"  trained for {info['step']} steps")
    return 0
