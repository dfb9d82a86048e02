"""The paper's third experiment on the data developers have: DIC-HeLa (Cell Tracking Challenge, sequence 01).

Holds back some gold-truth frames, trains on the silver truth of the other frames plus the remaining gold-truth
frames (``--silver --exclude``), predicts the held-back frames with instance separation, and scores them with the
challenge's SEG measure pooled over every held-back cell (``biounet evaluate --kind ctc``). Prints JSON.

    python experiments/dic_hela.py --time-budget 10m
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from _common import SHARED_DATA, Timer, biounet, emit, hardware

HELD_OUT = ("002", "021", "034", "054", "067")  # of the gold-truth frames 002 005 021 031 033 034 039 054 067


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "DIC-C2DH-HeLa")
    parser.add_argument("--out", type=Path, default=Path("runs/dic_hela"))
    parser.add_argument("--time-budget", default="10m")
    parser.add_argument("--base-channels", default="16")
    parser.add_argument("--held-out", default=",".join(HELD_OUT))
    parser.add_argument("--extra", default="", help="more biounet train flags, space separated")
    parser.add_argument("--evaluate-only", action="store_true", help="score the model already in OUT/run")
    args = parser.parse_args()
    frames = [f for f in args.held_out.split(",") if f]
    run = args.out / "run"
    if run.exists() and not args.evaluate_only:
        shutil.rmtree(run)
    train_args = ["train", "--data", str(args.data), "--layout", "ctc", "--silver", "--out", str(run),
                  "--exclude", ",".join(f"01/t{f}" for f in frames), "--base-channels", args.base_channels,
                  "--time-budget", args.time_budget, *args.extra.split()]
    with Timer() as timer:
        if not args.evaluate_only:
            biounet(*train_args)
    pred = args.out / "pred"
    if pred.exists():
        shutil.rmtree(pred)
    images = [str(args.data / "01" / f"t{f}.tif") for f in frames]
    truth = args.out / "truth"  # the held-out frames' gold truth only (evaluate wants a prediction for each)
    if truth.exists():
        shutil.rmtree(truth)
    truth.mkdir(parents=True)
    for frame in frames:
        shutil.copy(args.data / "01_GT" / "SEG" / f"man_seg{frame}.tif", truth)
    results = {}
    for tta in (False, True):
        out = pred / ("tta" if tta else "plain")
        biounet("predict", str(run / "model.pt"), *images, "--out", str(out), "--instances", "-q",
                *(["--tta"] if tta else []))
        scores = json.loads(biounet("evaluate", "--pred", str(out), "--truth", str(truth),
                                    "--kind", "ctc", "--json").stdout)
        results["tta" if tta else "plain"] = {"pooled_seg": scores["pooled"]["seg"], "mean": scores["mean"],
                                               "images": scores["images"]}
    emit({"experiment": "dic_hela", "held_out_frames": frames, "train_command": "biounet " + " ".join(train_args),
          "training_seconds": timer.seconds, "hardware": hardware(), "scores": results})


if __name__ == "__main__":
    main()
