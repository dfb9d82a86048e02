"""Which graph agglomeration turns an ISBI 2012 membrane map into segments best: measured, not assumed.

On the maps of one model (``biounet predict --save-probabilities`` of training slices), each method's settings are
chosen on the ``--choose`` slices by the rule ``biounet train`` uses (lowest Rand error among settings whose pixel
error is within 5 % of the best) and scored on the ``--score`` slices, with its time per slice:

- ``map``: the probability map thresholded at its best level (no segments; the baseline);
- ``fragments``: the distance-transform watershed alone (:func:`biounet.inference.segments.oversegment`);
- ``skimage_merge``: its fragments merged by mean boundary probability (scikit-image ``rag_boundary`` and
  ``merge_hierarchical``, thresholds 0.3-0.7);
- ``gasp_mean``: elf's GASP, average linkage of signed edge weights ``0.5 - p`` (bias as the multicut's);
- ``multicut``: what biounet uses (:func:`biounet.inference.segments.agglomerate`).

    python experiments/segment_methods.py --pred runs/isbi2012_segments/pred_all --choose 2,3,11 --score 16,17,18,19
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
from _common import SHARED_DATA, emit, hardware
from PIL import Image
from scipy import ndimage

from biounet.evaluation import metrics
from biounet.inference.segments import SegmentParams, agglomerate, oversegment, require_elf, separate

LEVELS = (0.5, 0.7, 0.8, 0.9, 0.95)  # membrane_threshold of separate()


def _skimage_merge(fragments: np.ndarray, prob: np.ndarray, threshold: float) -> np.ndarray:
    from skimage import graph

    rag = graph.rag_boundary(fragments.astype(np.int64), prob.astype(np.float64))

    def weight(g, src, dst, n):
        default = {"weight": 1.0, "count": 0}
        a, b = g[src].get(n, default), g[dst].get(n, default)
        count = a["count"] + b["count"]
        return {"count": count, "weight": (a["weight"] * a["count"] + b["weight"] * b["count"]) / max(count, 1)}

    def merge(g, src, dst):
        pass

    return graph.merge_hierarchical(fragments.astype(np.int64), rag, thresh=threshold, rag_copy=False,
                                    in_place_merge=True, merge_func=merge, weight_func=weight) + 1


def _gasp(fragments: np.ndarray, prob: np.ndarray, bias: float) -> np.ndarray:
    segmentation = require_elf()
    from elf.segmentation.gasp import run_GASP

    fragments = fragments.astype(np.uint32)
    rag = segmentation.features.compute_rag(fragments, n_threads=1)
    features = segmentation.features.compute_boundary_mean_and_length(rag, fragments, prob, n_threads=1)
    nodes, _ = run_GASP(rag, bias - features[:, 0], linkage_criteria="mean", edge_sizes=features[:, 1])
    return segmentation.features.project_node_labels_to_pixels(rag, fragments, nodes).astype(np.uint32) + 1


Grid = list[tuple[dict[str, float], float]]  # (method settings, membrane_threshold)


def methods() -> dict[str, tuple[Grid, Callable[..., np.ndarray]]]:
    """Each method's settings grid and its ``(membrane map, settings) -> partition`` (None: the map itself)."""
    sigmas, biases = (1.0, 2.0, 3.0), (0.3, 0.4, 0.5, 0.6)

    def grid(**axes: tuple[float, ...]) -> Grid:
        return [(dict(zip(axes, values[:-1])), values[-1]) for values in itertools.product(*axes.values(), LEVELS)]

    def fragments(prob: np.ndarray, s: dict[str, float]) -> np.ndarray:
        return oversegment(prob, SegmentParams(sigma_seeds=s["sigma"]))

    return {
        "fragments": (grid(sigma=sigmas), fragments),
        "skimage_merge": (grid(sigma=sigmas, threshold=(0.3, 0.4, 0.5, 0.6, 0.7)),
                          lambda p, s: _skimage_merge(fragments(p, s), p, s["threshold"])),
        "gasp_mean": (grid(sigma=sigmas, bias=biases), lambda p, s: _gasp(fragments(p, s), p, s["bias"])),
        "multicut": (grid(sigma=sigmas, bias=biases),
                     lambda p, s: agglomerate(fragments(p, s), p, SegmentParams(bias=s["bias"]))),
    }


def score(segments: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    boundary = (segments == 0).astype(np.float64)
    return (metrics.rand_scores(segments, ndimage.label(truth)[0]).error,
            metrics.warping_error(boundary, truth).error, metrics.pixel_error(boundary, truth).error)


def evaluate(method: Callable[..., np.ndarray], settings: dict[str, float], level: float,
             maps: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    rows, seconds = [], []
    for name, prob in maps.items():
        start = time.perf_counter()
        segments = separate(method(prob, settings), prob, threshold=level)
        seconds.append(time.perf_counter() - start)
        rows.append(score(segments, truth[name]))
    return np.mean(rows, axis=0), float(np.mean(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pred", type=Path, required=True, help="folder with <slice>_prob.tif")
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "isbi2012")
    parser.add_argument("--choose", default="2,3,11")
    parser.add_argument("--score", default="16,17,18,19")
    args = parser.parse_args()
    load = {name: tifffile.imread(args.pred / f"{name}_prob.tif")[1] for name in
            args.choose.split(",") + args.score.split(",")}
    truth = {name: np.asarray(Image.open(args.data / "train" / "label" / f"{name}.png")) > 0 for name in load}
    choose = {name: load[name] for name in args.choose.split(",")}
    test = {name: load[name] for name in args.score.split(",")}
    result: dict[str, object] = {"map": {key: float(np.mean([fn(test[n].astype(np.float64), truth[n]).error for n in test])) for key, fn in
        (("rand_error", metrics.rand_error), ("warping_error", metrics.warping_error),
         ("pixel_error", metrics.pixel_error))}}
    for name, (grid, method) in methods().items():
        table = [(s, level, evaluate(method, s, level, choose, truth)[0]) for s, level in grid]
        best_pixel = min(row[2][2] for row in table)
        settings, level, chosen = min((row for row in table if row[2][2] <= 1.05 * best_pixel),
                                      key=lambda row: row[2][0])
        scores, seconds = evaluate(method, settings, level, test, truth)
        result[name] = {"settings": {**settings, "membrane_threshold": level},
                        "rand_error": scores[0], "warping_error": scores[1], "pixel_error": scores[2],
                        "seconds_per_slice": seconds, "chosen_on": dict(zip(("rand_error", "warping_error",
                                                                              "pixel_error"), chosen.tolist()))}
    emit({"experiment": "segment_methods", "pred": str(args.pred), "choose": args.choose, "score": args.score,
          "hardware": hardware(), "results": result})


if __name__ == "__main__":
    main()
