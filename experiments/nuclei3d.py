"""3D nuclei: ``biounet train`` with defaults on part of a PlantSeg nuclei stack, scored on the part it never sees.

The 100^3 crop ``plantseg-3d/1135_mini.h5`` (anisotropic voxels, 54 labelled nuclei) is cut along y: the first
``--train-rows`` rows are the training volume (``biounet train`` holds 20 % of it back for validation by itself),
the rest is the test volume. Trains with defaults for ``--time-budget``, predicts the test volume with
``--instances``, scores it with ``biounet evaluate --kind instances`` (object accuracy TP / (TP + FP + FN) at IoU 0.5,
F1, SEG), and beside it the classic pipeline of the issue (gaussian, Otsu threshold, distance-transform watershed)
with its two settings chosen on the test truth itself (an optimistic reference). Also scored: the test part
segmented inside the whole stack (its raw voxels only, no labels, as the context a bigger crop of the same stack
would give), since a 30-row test volume is mostly mirrored context at the network's 44-voxel margin. Prints JSON.

    python experiments/nuclei3d.py --time-budget 30m
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from _common import SHARED_DATA, Timer, biounet, emit, hardware


def write_volume(path: Path, raw: np.ndarray, label: np.ndarray | None, voxel: np.ndarray) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("raw", data=raw).attrs["element_size_um"] = voxel
        if label is not None:
            handle.create_dataset("label", data=label)


def classic_pipeline(raw: np.ndarray, voxel: np.ndarray, sigma: float, min_distance: int) -> np.ndarray:
    """Gaussian smoothing, Otsu's threshold, a watershed of the (physical) distance transform from its maxima."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    smooth = ndimage.gaussian_filter(raw.astype(np.float32), sigma=sigma * voxel[-1] / voxel)
    mask = smooth > threshold_otsu(smooth)
    distance = ndimage.distance_transform_edt(mask, sampling=voxel / voxel[-1])
    peaks = peak_local_max(distance, min_distance=min_distance, labels=ndimage.label(mask)[0], exclude_border=False)
    markers = np.zeros(raw.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return np.asarray(watershed(-distance, markers, mask=mask), dtype=np.int32)


def scores_of(labels: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Accuracy TP / (TP + FP + FN), F1 at IoU 0.5 and SEG of instances against the truth."""
    from skimage.segmentation import relabel_sequential

    from biounet.evaluation.metrics import object_scores, seg_score

    labels = relabel_sequential(labels)[0]
    half = object_scores(labels, truth)[0]
    return {"accuracy": half.tp / max(half.tp + half.fp + half.fn, 1), "f1": half.f1,
            "seg": seg_score(labels, truth).mean_jaccard, "tp": half.tp, "fp": half.fp, "fn": half.fn}


def classic_best(raw: np.ndarray, truth: np.ndarray, voxel: np.ndarray) -> dict[str, Any]:
    """The classic pipeline at the settings that score best on ``truth`` (accuracy at IoU 0.5)."""
    best: dict[str, Any] = {"accuracy": -1.0}
    for sigma in (1.0, 2.0, 3.0):
        for min_distance in (2, 3, 4, 6, 8):
            scores = scores_of(classic_pipeline(raw, voxel, sigma, min_distance), truth)
            if scores["accuracy"] > best["accuracy"]:
                best = {**scores, "sigma": sigma, "min_distance": min_distance}
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "plantseg-3d" / "1135_mini.h5")
    parser.add_argument("--out", type=Path, default=Path("runs/nuclei3d"))
    parser.add_argument("--time-budget", default="30m")
    parser.add_argument("--train-rows", type=int, default=70, help="rows (y) of the training volume; the rest is test")
    parser.add_argument("--extra", default="", help="more biounet train flags, space separated")
    parser.add_argument("--skip-training", action="store_true", help="score the model already in --out")
    args = parser.parse_args()
    import h5py
    import tifffile

    with h5py.File(args.data, "r") as handle:
        raw, label = handle["raw"][:], handle["label"][:].astype(np.int32)
        voxel = np.asarray(handle["raw"].attrs["element_size_um"], dtype=np.float64)
    rows = args.train_rows
    data, test, truth = args.out / "data", args.out / "test", args.out / "truth"
    write_volume(data / "train.h5", raw[:, :rows], label[:, :rows], voxel)
    write_volume(test / "test.h5", raw[:, rows:], None, voxel)
    write_volume(args.out / "stack" / "stack.h5", raw, None, voxel)
    truth.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(truth / "test.tif", label[:, rows:])
    run, pred = args.out / "run", args.out / "pred"
    train_args = ["train", "--data", str(data), "--out", str(run), "--time-budget", args.time_budget,
                  *args.extra.split()]
    seconds = None
    if not args.skip_training:
        shutil.rmtree(run, ignore_errors=True)
        with Timer() as timer:
            biounet(*train_args)
        seconds = timer.seconds
    shutil.rmtree(pred, ignore_errors=True)
    with Timer() as predict_timer:
        biounet("predict", str(run / "model.pt"), str(test / "test.h5"), "--out", str(pred), "--instances", "-q")
    biounet("predict", str(run / "model.pt"), str(args.out / "stack" / "stack.h5"), "--out", str(pred / "stack"),
            "--instances", "-q")
    in_context = scores_of(tifffile.imread(pred / "stack" / "stack_instances.tif")[:, rows:], label[:, rows:])
    scores = json.loads(biounet("evaluate", "--pred", str(pred), "--truth", str(truth), "--kind", "instances",
                                "--json").stdout)
    half = scores["images"][0]["objects"][0]
    from biounet.data.checkpoint import load_checkpoint

    model = load_checkpoint(run / "model.pt")
    emit({"experiment": "nuclei3d", "data": str(args.data), "test": f"y >= {rows} of {raw.shape} (z, y, x)",
          "train_command": None if args.skip_training else "biounet " + " ".join(train_args),
          "training_seconds": seconds, "steps": model.get("step"), "prediction_seconds": predict_timer.seconds,
          "hardware": hardware(),
          "biounet": {"accuracy": half["tp"] / max(half["tp"] + half["fp"] + half["fn"], 1), "f1": half["f1"],
                      "seg": scores["images"][0].get("seg"), "tp": half["tp"], "fp": half["fp"], "fn": half["fn"],
                      "errors": {k: scores["images"][0].get(k) for k in ("merged", "split", "missed", "spurious")}},
          "in_stack_context": in_context,
          "classic_tuned_on_test": classic_best(raw[:, rows:], label[:, rows:], voxel),
          "instance_params": model.get("instance_params"), "config": (run / "config.toml").read_text()})


if __name__ == "__main__":
    main()
