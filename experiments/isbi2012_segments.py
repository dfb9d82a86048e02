"""ISBI 2012 segments against the probability map, on slices the training never sees.

``biounet train`` with its defaults on the training slices less ``--test`` (it holds 20 % of the rest back for
validation, where it also chooses the segment settings), then ``biounet predict --instances --save-probabilities``
of the test slices and ``biounet evaluate --kind isbi2012``: the map at its best thresholds beside the segments as
they are (pixel, Rand, warping error, V_rand, V_info), and the post-processing's own time per slice. Prints JSON.

    python experiments/isbi2012_segments.py --time-budget 30m
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import SHARED_DATA, Timer, biounet, emit, hardware

MEASURES = ("pixel_error", "rand_error", "warping_error", "v_rand", "v_info")


def post_processing_seconds(pred: Path, model: Path) -> list[float]:
    """Seconds of the segments of each predicted map (:func:`biounet.inference.instances.instances_from_probabilities`:
    the multicut's, or the mutex watershed's for an affinities model), with the model's settings (the second call
    of each, so that no compilation or import is counted)."""
    import tifffile

    from biounet.inference.instances import MEMBRANES, instances_from_probabilities
    from biounet.inference.settings import instance_settings

    _, params = instance_settings(model)
    seconds = []
    for path in sorted(pred.glob("*_prob.tif")):
        probs = tifffile.imread(path)
        instances_from_probabilities(probs, target=MEMBRANES, params=params)
        start = time.perf_counter()
        instances_from_probabilities(probs, target=MEMBRANES, params=params)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "isbi2012")
    parser.add_argument("--out", type=Path, default=Path("runs/isbi2012_segments"))
    parser.add_argument("--time-budget", default="30m")
    parser.add_argument("--test", default="16,17,18,19", help="slices left out of training, scored")
    parser.add_argument("--extra", default="", help="more biounet train flags, space separated")
    parser.add_argument("--skip-training", action="store_true", help="score the model already in --out")
    parser.add_argument("--rechoose", action="store_true",
                        help="choose the run's segment settings again first (biounet.training.train.rechoose_post_processing)")
    args = parser.parse_args()
    run, test = args.out / "run", args.test.split(",")
    train_args = ["train", "--data", str(args.data), "--out", str(run), "--time-budget", args.time_budget,
                  "--exclude", args.test, *args.extra.split()]
    training_seconds = None
    if not args.skip_training:
        if run.exists():
            shutil.rmtree(run)
        with Timer() as timer:
            biounet(*train_args)
        training_seconds = timer.seconds
    if args.rechoose:
        from biounet.training.train import rechoose_post_processing

        print(f"segment settings chosen again: {rechoose_post_processing(run)}", file=sys.stderr)
    pred = args.out / "pred"
    if pred.exists():
        shutil.rmtree(pred)
    images = [str(args.data / "train" / "image" / f"{index}.png") for index in test]
    biounet("predict", str(run / "model.pt"), *images, "--out", str(pred), "--instances", "--save-probabilities",
            "-q")
    with tempfile.TemporaryDirectory() as truth:  # only the test slices' labels
        for index in test:
            shutil.copy(args.data / "train" / "label" / f"{index}.png", Path(truth) / f"{index}.png")
        scores = json.loads(biounet("evaluate", "--pred", str(pred), "--truth", truth, "--kind", "isbi2012",
                                    "--json").stdout)
    mean = scores["mean"]
    seconds = post_processing_seconds(pred, run / "model.pt")
    from biounet.data.checkpoint import load_checkpoint

    model = load_checkpoint(run / "model.pt")
    emit({"experiment": "isbi2012_segments", "test_slices": test,
          "train_command": None if args.skip_training else "biounet " + " ".join(train_args),
          "training_seconds": training_seconds, "steps": model.get("step"), "hardware": hardware(),
          "map": {key: mean.get(key) for key in MEASURES},
          "segments": {key: mean.get(f"segments_{key}") for key in MEASURES},
          "segments_per_slice": float(np.mean([row["segments"] for row in scores["images"]])),
          "segment_params": model.get("segment_params"), "validation_scores": model.get("segment_scores"),
          "tta": model.get("tta", False),
          "post_processing_seconds_per_slice": seconds, "per_slice": scores["images"],
          "config": (run / "config.toml").read_text()})


if __name__ == "__main__":
    main()
