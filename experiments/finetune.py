"""Fine-tuning against training from scratch: a few annotated DIC-HeLa frames, the same minutes for both.

1. A starting model: the ISBI 2012 EM model (``--init MODEL``), or one trained here on ISBI 2012 slices 0-19 for
   ``--isbi-budget`` (the paper's first experiment; EM membranes, a different modality and task).
2. Fine-tuning: ``biounet train --init MODEL`` on the gold truth of two DIC-HeLa frames (``--frames``, default
   005 and 031) for ``--time-budget``; its 1x1 head is replaced for the cell target's classes.
3. From scratch: the same command without ``--init``, same frames, same minutes, same width.
4. Both predict the held-back gold-truth frames 002, 021, 034, 054, 067 (49 cells) with ``--instances``; scores:
   pooled SEG (the Cell Tracking Challenge's measure), object F1/accuracy at IoU 0.5, foreground IoU.

Prints one JSON line per arm, then a summary. ``--validation-fraction 0``: with two frames, both arms keep
their final weights.

    python experiments/finetune.py --time-budget 5m
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from _common import SHARED_DATA, Timer, biounet, emit, hardware, instance_scores

GOLD = ("002", "005", "021", "031", "033", "034", "039", "054", "067")
HELD_OUT = ("002", "021", "034", "054", "067")


def _isbi_model(out: Path, budget: str, width: str) -> Path:
    run = out / "isbi"
    if run.exists():
        shutil.rmtree(run)
    biounet("train", "--data", str(SHARED_DATA / "isbi2012"), "--layout", "isbi2012", "--out", str(run),
            "--base-channels", width, "--time-budget", budget, "-q")
    return run / "model.pt"


def _arm(out: Path, name: str, frames: list[str], budget: str, width: str, init: Path | None) -> dict[str, object]:
    import tifffile

    data = SHARED_DATA / "DIC-C2DH-HeLa"
    run = out / name
    if run.exists():
        shutil.rmtree(run)
    excluded = [f for f in GOLD if f not in frames]
    start = ["--init", str(init)] if init is not None else ["--base-channels", width]
    with Timer() as timer:
        biounet("train", "--data", str(data), "--layout", "ctc", "--exclude", ",".join(f"01/t{f}" for f in excluded),
                "--out", str(run), "--time-budget", budget, "--validation-fraction", "0", *start, "-q")
    pred = run / "pred"
    biounet("predict", str(run / "model.pt"), *(str(data / "01" / f"t{f}.tif") for f in HELD_OUT),
            "--out", str(pred), "--instances", "-q")
    truth = {f"t{f}": tifffile.imread(data / "01_GT" / "SEG" / f"man_seg{f}.tif").astype(np.int64)
             for f in HELD_OUT}
    return {"arm": name, "training_seconds": timer.seconds, **instance_scores(pred, truth, frozenset({"t067"}))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", type=Path, help="the model to fine-tune (default: train one on ISBI 2012)")
    parser.add_argument("--isbi-budget", default="10m", help="training time of the ISBI 2012 model")
    parser.add_argument("--time-budget", default="5m", help="training time of each arm")
    parser.add_argument("--frames", default="005,031", help="the annotated DIC-HeLa frames to train on")
    parser.add_argument("--base-channels", default="16", help="width of the ISBI model and of the scratch arm")
    parser.add_argument("--out", type=Path, default=Path("runs/finetune"))
    args = parser.parse_args()
    frames = [f for f in args.frames.split(",") if f]
    if set(frames) & set(HELD_OUT) or not set(frames) <= set(GOLD):
        raise SystemExit(f"--frames must be gold-truth frames outside the held-out {HELD_OUT}")
    init = args.init or _isbi_model(args.out, args.isbi_budget, args.base_channels)
    rows = [_arm(args.out, "fine_tuned", frames, args.time_budget, args.base_channels, init),
            _arm(args.out, "from_scratch", frames, args.time_budget, args.base_channels, None)]
    for row in rows:
        emit(row)
    emit({"experiment": "finetune", "init": str(init), "frames": frames, "held_out": list(HELD_OUT),
          "time_budget": args.time_budget, "hardware": hardware(), "runs": rows})


if __name__ == "__main__":
    main()
