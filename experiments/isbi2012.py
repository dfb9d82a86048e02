"""The paper's first experiment on the data developers have: ISBI 2012 EM segmentation.

Trains on part of training slices 0-19 (``biounet train`` holds 20 % back for validation and records which in
``split.json``), predicts the held-back slices with ``biounet predict``, and scores them with
``biounet evaluate --kind isbi2012`` (pixel, Rand and warping error: the challenge's definitions). Prints JSON.

    python experiments/isbi2012.py --time-budget 10m --base-channels 16
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from _common import SHARED_DATA, Timer, biounet, emit, hardware


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "isbi2012")
    parser.add_argument("--out", type=Path, default=Path("runs/isbi2012"))
    parser.add_argument("--time-budget", default="10m")
    parser.add_argument("--base-channels", default="16")
    parser.add_argument("--extra", default="", help="more biounet train flags, space separated")
    parser.add_argument("--skip-training", action="store_true", help="evaluate the model already in --out")
    args = parser.parse_args()
    run = args.out / "run"
    if not args.skip_training:
        if run.exists():
            shutil.rmtree(run)
        train_args = ["train", "--data", str(args.data), "--layout", "isbi2012", "--out", str(run),
                      "--base-channels", args.base_channels, "--time-budget", args.time_budget, *args.extra.split()]
        with Timer() as timer:
            biounet(*train_args)
        training_seconds = timer.seconds
    else:
        training_seconds = None
    held_out = json.loads((run / "split.json").read_text())["validation"]
    slices = [name.split("/")[-1] for name in held_out]
    images = [str(args.data / "train" / "image" / f"{index}.png") for index in slices]
    results = {}
    for tta in (False, True):
        pred = args.out / ("pred_tta" if tta else "pred")
        if pred.exists():
            shutil.rmtree(pred)
        biounet("predict", str(run / "model.pt"), *images, "--out", str(pred), "--save-probabilities", "-q",
                *(["--tta"] if tta else []))
        with tempfile.TemporaryDirectory() as truth:  # only the held-back slices' labels
            for index in slices:
                shutil.copy(args.data / "train" / "label" / f"{index}.png", Path(truth) / f"{index}.png")
            scores = json.loads(biounet("evaluate", "--pred", str(pred), "--truth", truth, "--kind", "isbi2012",
                                        "--json").stdout)
        results["tta" if tta else "plain"] = scores["mean"]
    emit({"experiment": "isbi2012", "held_out_slices": slices, "train_command": "biounet " + " ".join(
        train_args) if not args.skip_training else None, "training_seconds": training_seconds,
        "hardware": hardware(), "scores": results, "config": (run / "config.toml").read_text()})


if __name__ == "__main__":
    main()
