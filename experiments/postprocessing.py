"""What the instance post-processing does on held-out frames: pooled SEG for each setting of the grid that the
training run searches on its validation images (biounet.evaluation.validation.choose_instance_params), and the setting the
run chose. Needs no training: it reads the class labels (and probabilities) that ``biounet predict`` wrote.

    python experiments/postprocessing.py --pred runs/dic_hela/pred/plain --model runs/dic_hela/run/model.pt

The truth is the DIC-HeLa gold truth of sequence 01 (``man_segNNN.tif`` for each ``tNNN.tif`` predicted).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile
from _common import SHARED_DATA, emit

from biounet.data.checkpoint import load_checkpoint
from biounet.evaluation import metrics
from biounet.evaluation.validation import instance_param_grid
from biounet.inference.instances import InstanceParams, instances_from_labels, instances_from_probabilities


def pooled_seg(pred_dir: Path, truth_dir: Path, target: str, params: InstanceParams) -> float:
    """SEG over every gold-truth cell of the predicted frames, for one post-processing setting."""
    jaccard, cells = 0.0, 0
    for labels_path in sorted(pred_dir.glob("t[0-9][0-9][0-9].tif")):
        truth = tifffile.imread(truth_dir / f"man_seg{labels_path.stem[1:]}.tif").astype(np.int64)
        if target == "distance":
            probs = tifffile.imread(labels_path.with_name(f"{labels_path.stem}_prob.tif")).astype(np.float32)
            instances = instances_from_probabilities(probs, target=target, params=params)
        else:
            instances = instances_from_labels(tifffile.imread(labels_path), target=target, params=params)
        seg = metrics.seg_score(instances.astype(np.int64), truth)
        jaccard, cells = jaccard + float(seg.per_object.sum()), cells + seg.n_objects
    return jaccard / cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pred", type=Path, required=True, help="folder with tNNN.tif (and tNNN_prob.tif)")
    parser.add_argument("--model", type=Path, required=True, help="the model.pt that predicted them")
    parser.add_argument("--truth", type=Path, default=SHARED_DATA / "DIC-C2DH-HeLa" / "01_GT" / "SEG")
    args = parser.parse_args()
    payload = load_checkpoint(args.model)
    target = payload.get("target") or "paper"
    chosen = InstanceParams(**(payload.get("instance_params") or {}))
    grid = instance_param_grid(target)  # the grid the training run chose from on its validation images
    rows = [{"target": target, **vars(params), "pooled_seg": pooled_seg(args.pred, args.truth, target, params)}
            for params in grid]
    for row in rows:
        emit(row)
    emit({"experiment": "postprocessing", "model": str(args.model), "chosen_on_validation": vars(chosen),
          "chosen_pooled_seg": pooled_seg(args.pred, args.truth, target, chosen),
          "best_on_held_out": max(rows, key=lambda r: r["pooled_seg"])})


if __name__ == "__main__":
    main()
