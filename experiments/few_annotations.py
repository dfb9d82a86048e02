"""Few annotations: two 256x256 crops of one DSB2018 nuclei image to train on, the rest of the image scored, biounet
(every default) beside StarDist (``benchmarks/peers.py``, its defaults) at the same CPU budget.

The image (``--image``, default ``0ea221716cf1``: 520x696 px, 369 nuclei) is cut at its middle column: the left
part gives the two training crops (rows 0-255 and 256-511, columns 0-255), the right part is the test image. Both
tools read the same pairs folder and are scored by ``biounet evaluate --kind instances`` (object accuracy and F1
at IoU 0.5, SEG; nuclei cut by the middle line are in the truth as they are cut). Prints one JSON line per tool,
then a summary, and writes it to ``--results``.

    python experiments/few_annotations.py --time-budget 10m --results experiments/results/few_annotations_10m.json
    python experiments/few_annotations.py --tools biounet --keep-from experiments/results/few_annotations_10m.json \
        --results experiments/results/few_annotations_10m.json     # biounet again, StarDist's row kept
    python experiments/few_annotations.py --tools biounet --rechoose \
        --keep-from experiments/results/few_annotations_10m.json \
        --results experiments/results/few_annotations_10m.json     # the same run, post-processing chosen again
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from _common import SHARED_DATA, Timer, biounet, emit, hardware

DATA = SHARED_DATA / "dsb2018-fluo"
REPO = Path(__file__).resolve().parents[1]
CROP = 256


def build_case(name: str, out: Path) -> tuple[Path, Path]:
    """``out/train`` (images/, labels/: two crops of the left part) and ``out/test`` (the right part)."""
    image = tifffile.imread(DATA / "images" / f"{name}.tif")
    labels = tifffile.imread(DATA / "labels" / f"{name}.tif")
    middle = image.shape[1] // 2
    if image.shape[0] < 2 * CROP or middle < CROP:
        raise SystemExit(f"{name}: {image.shape} is too small for two {CROP}x{CROP} crops beside a test half")
    train, test = out / "train", out / "test"
    for folder in (train, test):
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "images").mkdir(parents=True)
        (folder / "labels").mkdir()
    for index, top in enumerate((0, CROP)):
        crop = (slice(top, top + CROP), slice(0, CROP))
        tifffile.imwrite(train / "images" / f"crop{index}.tif", image[crop])
        tifffile.imwrite(train / "labels" / f"crop{index}.tif", _relabelled(labels[crop]))
    tifffile.imwrite(test / "images" / f"{name}_right.tif", image[:, middle:])
    tifffile.imwrite(test / "labels" / f"{name}_right.tif", _relabelled(labels[:, middle:]))
    return train, test


def _relabelled(labels: np.ndarray) -> np.ndarray:
    """Instance ids 1..n of a crop (the ids of the nuclei it keeps, renumbered)."""
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).astype(np.uint16)


def scores_of(pred: Path, truth: Path) -> dict[str, Any]:
    pooled = json.loads(biounet("evaluate", "--pred", str(pred), "--truth", str(truth), "--kind", "instances",
                                "--json").stdout)["pooled"]
    keep = ("average_precision", "f1", "seg", "merged", "split", "missed", "spurious", "cells", "predicted_cells")
    return {key: pooled[key] for key in keep}


def run_biounet(train: Path, test: Path, out: Path, budget: str, earlier: dict[str, Any] | None = None,
                ) -> dict[str, Any]:
    """biounet trained and scored; with ``earlier`` (its row from a summary), the run that row made is kept and only
    its post-processing chosen again (:func:`biounet.training.train.rechoose_post_processing`)."""
    from dataclasses import asdict

    from biounet.data.checkpoint import load_checkpoint
    from biounet.training.train import rechoose_post_processing

    run, pred = out / "biounet" / "run", out / "biounet" / "pred"
    command = ["train", "--data", str(train), "--out", str(run), "--time-budget", budget, "-q"]
    if earlier is None:
        shutil.rmtree(out / "biounet", ignore_errors=True)
        with Timer() as timer:
            biounet(*command)
        row = {"tool": "biounet", "command": "biounet " + " ".join(command), "training_seconds": timer.seconds}
    else:
        shutil.rmtree(pred, ignore_errors=True)
        params = rechoose_post_processing(run)
        row = {**{k: earlier[k] for k in ("tool", "command", "training_seconds")},
               "rechosen": {**asdict(params), "tta": bool(load_checkpoint(run / "model.pt").get("tta"))}}
    biounet("predict", str(run / "model.pt"), *map(str, sorted((test / "images").iterdir())), "--out", str(pred),
            "--instances", "-q")
    return {**row, **scores_of(pred, test / "labels")}


def run_stardist(train: Path, test: Path, out: Path, budget: str) -> dict[str, Any]:
    pred = out / "stardist" / "pred"
    shutil.rmtree(out / "stardist", ignore_errors=True)
    command = [sys.executable, str(REPO / "benchmarks" / "peers.py"), "stardist", "--data", str(train), "--test",
               *map(str, sorted((test / "images").iterdir())), "--time-budget", budget, "--out", str(pred)]
    with Timer() as timer:
        done = subprocess.run(command, check=True, capture_output=True, text=True)
    peer = json.loads(done.stdout.strip().splitlines()[-1])
    return {"tool": "stardist", "command": " ".join(command[1:]), "wall_seconds": timer.seconds, "peer": peer,
            **scores_of(pred, test / "labels")}


def kept_rows(summary: Path | None, image: str, budget: str, running: set[str]) -> list[dict[str, Any]]:
    """The rows of ``summary`` (an earlier run of this script on the same image and budget) for tools not run now."""
    if summary is None:
        return []
    earlier = json.loads(summary.read_text())
    if (earlier["image"], earlier["budget"]) != (image, budget):
        raise SystemExit(f"{summary}: image {earlier['image']}, budget {earlier['budget']}; not {image}, {budget}")
    return [row for row in earlier["runs"] if row["tool"] not in running]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="0ea221716cf1", help="a DSB2018 image id with room for the crops")
    parser.add_argument("--time-budget", default="10m")
    parser.add_argument("--tools", default="biounet,stardist")
    parser.add_argument("--out", type=Path, default=Path("runs/few_annotations"))
    parser.add_argument("--results", type=Path, default=None, help="also write the summary JSON here")
    parser.add_argument("--keep-from", type=Path, default=None,
                        help="a summary of the same image and budget whose rows of the tools not run now are kept")
    parser.add_argument("--rechoose", action="store_true", help="biounet: keep the run in --out that the --keep-from "
                        "summary's row made, choose its post-processing again with the current rules, score it")
    args = parser.parse_args()
    if args.rechoose and args.keep_from is None:
        parser.error("--rechoose needs --keep-from (the summary whose biounet row made the run)")
    train, test = build_case(args.image, args.out)
    runners = {"biounet": run_biounet, "stardist": run_stardist}
    rows = kept_rows(args.keep_from, args.image, args.time_budget, set(args.tools.split(",")))
    for tool in args.tools.split(","):
        if tool == "biounet" and args.rechoose:
            earlier = kept_rows(args.keep_from, args.image, args.time_budget, set(runners) - {"biounet"})
            rows.append(run_biounet(train, test, args.out, args.time_budget, earlier[0]))
        else:
            rows.append(runners[tool](train, test, args.out, args.time_budget))
        emit(rows[-1])
    summary = {"experiment": "few_annotations", "image": args.image, "budget": args.time_budget,
               "train": "two 256x256 crops of the left part", "test": "the right part", "hardware": hardware(),
               "runs": sorted(rows, key=lambda row: list(runners).index(row["tool"]))}
    emit(summary, args.results)


if __name__ == "__main__":
    main()
