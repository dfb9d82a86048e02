"""Fluorescence nuclei (DSB2018, ``../shared/data/dsb2018-fluo``): each target trained for a CPU budget, scored on
held-back images by ``biounet evaluate --kind instances`` (the evaluator the peers' table uses).

The split is fixed by name: every fifth image in sorted order (40 of 200) is held back for testing and never
seen in training; the other 160 form the training folder that ``biounet train --data`` reads (pairs layout,
label kind found by itself), which keeps its own validation images for choosing the post-processing. The same
two folders (``--out``/``dsb_train``, ``--out``/``dsb_test``) serve ``benchmarks/peers.py``, so StarDist and
Cellpose train and are scored on exactly these images. Prints one JSON line per run, then a summary, and writes
it to ``--results``.

    python experiments/nuclei.py --time-budget 10m --targets auto,stardist
    python experiments/nuclei.py --iterations 20 --targets stardist --limit-test 4    # a smoke run
    python experiments/nuclei.py --time-budget 10m --targets stardist --extra "--ray-weight 0.05"
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from _common import SHARED_DATA, Timer, biounet, emit, hardware

DATA = SHARED_DATA / "dsb2018-fluo"
HELD_OUT_EVERY = 5


def split_folders(out: Path, *, limit_test: int | None = None) -> tuple[Path, Path]:
    """``out/dsb_train`` (images/, labels/) and ``out/dsb_test`` (images/, labels/) as symbolic links: every
    :data:`HELD_OUT_EVERY`-th image by sorted name is a test image."""
    names = sorted(path.name for path in (DATA / "images").iterdir())
    test = set(names[::HELD_OUT_EVERY][:limit_test])
    folders = (out / "dsb_train", out / "dsb_test")
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
        for kind in ("images", "labels"):
            (folder / kind).mkdir(parents=True)
    for name in names:
        folder = folders[1] if name in test else folders[0]
        for kind in ("images", "labels"):
            (folder / kind / name).symlink_to(DATA / kind / name)
    return folders


def run_target(target: str, train: Path, test: Path, run: Path, limit: list[str],
               extra: list[str]) -> dict[str, Any]:
    """Train one target, predict the test images with ``--instances``, evaluate; the pooled scores."""
    shutil.rmtree(run, ignore_errors=True)
    with Timer() as timer:
        biounet("train", "--data", str(train), "--out", str(run), "--target", target, *limit, *extra, "-q")
    pred = run / "pred"
    images = sorted(str(path) for path in (test / "images").iterdir())
    biounet("predict", str(run / "model.pt"), *images, "--out", str(pred), "--instances", "-q")
    scores = json.loads(biounet("evaluate", "--pred", str(pred), "--truth", str(test / "labels"), "--kind",
                                "instances", "--json").stdout)
    pooled = scores["pooled"]
    keep = ("average_precision", "f1", "seg", "average_precision_50_95", "merged", "split", "missed", "spurious",
            "cells", "predicted_cells")
    return {"target": target, "training_seconds": timer.seconds, **{key: pooled[key] for key in keep},
            "accuracy_iou70": next(o["average_precision"] for o in pooled["objects"] if abs(o["threshold"] - 0.7) < 1e-9)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--time-budget", default=None, help="training time per run, e.g. 10m")
    budget.add_argument("--iterations", default=None, help="training steps per run instead of a time budget")
    parser.add_argument("--targets", default="auto,stardist", help="comma-separated --target values")
    parser.add_argument("--out", type=Path, default=Path("runs/nuclei"))
    parser.add_argument("--limit-test", type=int, default=None, help="score only this many test images (smoke)")
    parser.add_argument("--results", type=Path, default=None, help="also write the summary JSON here")
    parser.add_argument("--extra", default="", help="more biounet train flags, space separated")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: the DSB2018 nuclei are not here (see ../shared/data/README.md)")
    limit = ["--iterations", args.iterations] if args.iterations else ["--time-budget", args.time_budget or "10m"]
    train, test = split_folders(args.out, limit_test=args.limit_test)
    rows = []
    for target in args.targets.split(","):
        row = {"limit": " ".join(limit), "extra": args.extra,
               **run_target(target, train, test, args.out / f"dsb_{target}", limit, args.extra.split())}
        emit(row)
        rows.append(row)
    summary = {"experiment": "nuclei", "data": "dsb2018-fluo, every 5th image held back", "hardware": hardware(),
               "runs": rows}
    emit(summary, args.results)


if __name__ == "__main__":
    main()
