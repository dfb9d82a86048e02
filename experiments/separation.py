"""Which target separates touching cells within a CPU budget: paper, boundary or distance (biounet.core.targets).

For each data set and target: ``biounet train`` for the budget (``--target T``), ``biounet predict --instances``
on held-out images (the post-processing the run chose on its validation images), then the scores:

- ``dic``: DIC-HeLa sequence 01, gold-truth frames 002, 021, 034, 054, 067 held back (as ``dic_hela.py``);
  training on the silver truth of the other frames plus the remaining gold frames.
- ``nuclei``: touching nuclei-like cells of the synthetic ``cells`` generator: 16 training images of 256x256
  (seed 0), 8 held-out images (seed 1).

Scores: SEG pooled over every held-out ground-truth cell (the Cell Tracking Challenge's measure), object
precision/recall/F1 and accuracy ``TP / (TP + FP + FN)`` at IoU 0.5 (Hungarian matching, pooled counts; the
StarDist convention), and foreground IoU of the network's labels. DIC-HeLa frame 067's gold truth labels only 3
of its cells, so it counts for SEG but not for the object scores and IoU (every other cell found there would be a
false positive). Prints one JSON line per run, then a summary.

    python experiments/separation.py --time-budget 10m
    python experiments/separation.py --iterations 2600     # the steps an undisturbed 10-min run makes here

``--iterations`` gives results that do not depend on what else the machine is doing; ``--time-budget`` is what a
user types. ``--reuse --rechoose`` scores models already trained into ``--out`` after choosing their
post-processing again with the current rule (``biounet.training.train.rechoose_post_processing``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _common import SHARED_DATA, Timer, biounet, emit, hardware, instance_scores

DIC_HELD_OUT = ("002", "021", "034", "054", "067")
DIC_PARTIAL = frozenset({"t067"})  # its gold truth labels 3 of the cells (../shared/data/README.md)
TARGETS = ("paper", "boundary", "distance")


REUSE = False  # --reuse: score the models already in --out instead of training them again
RECHOOSE = False  # --rechoose: first choose their post-processing again on their validation images


def _train(data: list[str], run: Path, target: str, budget: list[str], extra: list[str]) -> float | None:
    if REUSE and (run / "model.pt").exists():
        if RECHOOSE:
            from biounet.training.train import rechoose_post_processing

            print(f"{run}: post-processing chosen again: {rechoose_post_processing(run)}", file=sys.stderr)
        return None
    if run.exists():
        shutil.rmtree(run)
    with Timer() as timer:
        biounet("train", *data, "--out", str(run), "--target", target, *budget, *extra, "-q")
    return timer.seconds


def _dic(out: Path, target: str, budget: list[str], extra: list[str]) -> dict[str, Any]:
    import tifffile

    data = SHARED_DATA / "DIC-C2DH-HeLa"
    run = out / f"dic_{target}"
    seconds = _train(["--data", str(data), "--layout", "ctc", "--silver", "--exclude",
                      ",".join(f"01/t{f}" for f in DIC_HELD_OUT)], run, target, budget, extra)
    pred = run / "pred"
    biounet("predict", str(run / "model.pt"), *(str(data / "01" / f"t{f}.tif") for f in DIC_HELD_OUT),
            "--out", str(pred), "--instances", "-q")
    truth = {f"t{f}": tifffile.imread(data / "01_GT" / "SEG" / f"man_seg{f}.tif").astype(np.int64)
             for f in DIC_HELD_OUT}
    return {"training_seconds": seconds, **instance_scores(pred, truth, DIC_PARTIAL)}


def _nuclei(out: Path, target: str, budget: list[str], extra: list[str]) -> dict[str, Any]:
    from biounet.data.synthetic import make_dataset, write_dataset

    run = out / f"nuclei_{target}"
    seconds = _train(["--data", "synthetic:cells,n=16,size=256x256,seed=0"], run, target, budget, extra)
    test = make_dataset("cells", 8, size=(256, 256), rng=1)
    folder = write_dataset(test, out / "nuclei_test")
    images = sorted((folder / "images").glob("*.tif"))
    pred = run / "pred"
    biounet("predict", str(run / "model.pt"), *map(str, images), "--out", str(pred), "--instances", "-q")
    truth = {path.stem: sample.instances.astype(np.int64) for path, sample in zip(images, sorted(
        test, key=lambda s: s.name.replace("/", "_")))}
    return {"training_seconds": seconds, **instance_scores(pred, truth)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--time-budget", default=None, help="training time per run, e.g. 10m")
    budget.add_argument("--iterations", default=None, help="training steps per run instead of a time budget")
    parser.add_argument("--datasets", default="dic,nuclei")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--out", type=Path, default=Path("runs/separation"))
    parser.add_argument("--extra", default="--base-channels 16 --precision auto",
                        help="more biounet train flags, space separated")
    parser.add_argument("--reuse", action="store_true", help="score the models already in --out (no training)")
    parser.add_argument("--rechoose", action="store_true",
                        help="with --reuse: choose their post-processing again (biounet.training.train.rechoose_post_processing)")
    args = parser.parse_args()
    global REUSE, RECHOOSE
    REUSE, RECHOOSE = args.reuse, args.rechoose
    limit = ["--iterations", args.iterations] if args.iterations else ["--time-budget", args.time_budget or "10m"]
    runners = {"dic": _dic, "nuclei": _nuclei}
    rows = []
    for dataset in args.datasets.split(","):
        for target in args.targets.split(","):
            row = {"dataset": dataset, "target": target, "limit": " ".join(limit),
                   **runners[dataset](args.out, target, limit, args.extra.split())}
            emit(row)
            rows.append(row)
    emit({"experiment": "separation", "hardware": hardware(), "runs": rows})


if __name__ == "__main__":
    main()
