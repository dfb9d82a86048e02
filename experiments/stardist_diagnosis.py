"""Where a ``--target stardist`` model loses: its test outputs scored under every post-processing setting, beside
the instances its boundary classes alone give. A diagnosis, not a result: the settings are scored on the test
images themselves (an oracle), so no number here may be reported as the model's.

    biounet predict RUN/model.pt TEST_IMAGES --out PRED --save-probabilities
    python experiments/stardist_diagnosis.py PRED TRUTH_DIR
"""

from __future__ import annotations

import argparse
from itertools import product
from pathlib import Path

import numpy as np
import tifffile
from _common import emit

from biounet.evaluation import metrics
from biounet.inference.instances import InstanceParams, instances_from_boundary, instances_from_probabilities


def scores(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Pooled accuracy at IoU 0.5 and pooled SEG."""
    seg = [metrics.seg_score(pred, true) for pred, true in pairs]
    return {"accuracy": metrics.dataset_object_scores(pairs, thresholds=(0.5,))[0].average_precision,
            "seg": sum(float(s.per_object.sum()) for s in seg) / sum(s.n_objects for s in seg)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pred", type=Path, help="folder with <stem>_prob.tif of a stardist model")
    parser.add_argument("truth", type=Path, help="folder with <stem>.tif instance masks")
    args = parser.parse_args()
    stems = sorted(path.name.removesuffix("_prob.tif") for path in args.pred.glob("*_prob.tif"))
    probs = {s: tifffile.imread(args.pred / f"{s}_prob.tif") for s in stems}
    truth = {s: tifffile.imread(args.truth / f"{s}.tif").astype(np.int64) for s in stems}
    for masks, prob, overlap in product(("watershed", "polygons"), (0.3, 0.4, 0.5, 0.6, 0.7), (0.3, 0.4, 0.5)):
        params = InstanceParams(min_size_px=16, seed_threshold=prob, overlap_threshold=overlap, masks=masks)
        pairs = [(instances_from_probabilities(probs[s], target="stardist", params=params), truth[s]) for s in stems]
        emit({"masks": masks, "prob_threshold": prob, "overlap_threshold": overlap, **scores(pairs)})
    pairs = [(instances_from_boundary(probs[s][1], probs[s][2], seed_threshold=0.5, min_size_px=16), truth[s])
             for s in stems]
    emit({"classes_only": "boundary rule, seed 0.5", **scores(pairs)})


if __name__ == "__main__":
    main()
