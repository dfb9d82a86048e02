"""Learned edge probabilities for the multicut (Beier et al. 2017, elf): a random forest on rich edge features
against the mean membrane probability that biounet.inference.segments uses.

Per slice and ``sigma_seeds``: the fragments of :func:`biounet.inference.segments.oversegment`, their RAG, edge features
(boundary statistics of the map, of filters of the raw image, region statistics of both), and edge labels
(1 where the fragments' largest-overlap ground-truth cells differ; the cells grown over the membrane first). A
forest trained on the validation slices only (its validation predictions leave one slice out) gives the cut
probability -> ``compute_edge_costs`` -> multicut -> :func:`biounet.inference.segments.separate`. Both methods choose
their setting on the validation slices by :func:`biounet.evaluation.validation.choose_segment_params`'s rule over
:data:`biounet.evaluation.validation.SEGMENT_GRID` and are scored on the test slices as ``segment_table`` scores them.

    python experiments/segment_edges.py runs/isbi2012_segments_30m/pred_all 2,3,11 16,17,18,19 \
        > experiments/results/segment_edges_30m.json
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import elf.segmentation as es
import numpy as np
import tifffile
from _common import SHARED_DATA, Timer, emit, hardware
from PIL import Image
from scipy import ndimage
from segment_rules import samples, truth
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score

from biounet.evaluation import metrics
from biounet.evaluation.validation import SEGMENT_GRID, choose_segment_params
from biounet.inference.segments import SegmentParams, oversegment, segments_from_membranes, separate

Graph = tuple[np.ndarray, object, np.ndarray, np.ndarray]  # fragments, rag, features, edge lengths
Table = list[tuple[SegmentParams, dict[str, float]]]
Key = tuple[str, float]  # slice, sigma_seeds


def image(name: str) -> np.ndarray:
    """The raw EM slice in [0, 1]."""
    return np.asarray(Image.open(SHARED_DATA / "isbi2012" / "train" / "image" / f"{name}.png"), np.float32) / 255


def graph(membrane: np.ndarray, raw: np.ndarray, sigma: float) -> Graph:
    """Fragments as segments.py makes them, and ~290 features per RAG edge."""
    fragments = oversegment(membrane, SegmentParams(sigma_seeds=sigma))
    rag = es.features.compute_rag(fragments, n_threads=1)
    features = np.concatenate([
        es.features.compute_boundary_features(rag, fragments, membrane, n_threads=1),
        es.features.compute_boundary_features_with_filters(rag, fragments, raw, n_threads=1),
        es.features.compute_region_features(rag.uv_ids(), membrane, fragments, n_threads=1),
        es.features.compute_region_features(rag.uv_ids(), raw, fragments, n_threads=1)], axis=1)
    lengths = es.features.compute_boundary_mean_and_length(rag, fragments, membrane, n_threads=1)[:, 1]
    return fragments, rag, features, lengths


def edge_labels(g: Graph, cells: np.ndarray) -> np.ndarray:
    """1 where an edge's two fragments overlap most with different true cells (cells grown over membrane)."""
    labelled = ndimage.label(cells)[0]
    nearest = ndimage.distance_transform_edt(labelled == 0, return_distances=False, return_indices=True)
    grown = labelled[tuple(nearest)].astype(np.uint32)
    return es.learning.compute_edge_labels(g[1], g[0], grown, n_threads=1)


def forest(data: list[tuple[Graph, np.ndarray]]) -> RandomForestClassifier:
    """A forest on the pooled edges of the (graph, edge labels) pairs; 1 = cut."""
    rf = RandomForestClassifier(n_estimators=200, min_samples_leaf=2, n_jobs=1, random_state=0)
    return rf.fit(np.concatenate([g[2] for g, _ in data]), np.concatenate([y for _, y in data]))


def segments(g: Graph, cut_prob: np.ndarray, membrane: np.ndarray, bias: float, level: float) -> np.ndarray:
    """agglomerate's multicut with costs from ``cut_prob``, then the same ``separate``."""
    costs = es.multicut.compute_edge_costs(cut_prob, edge_sizes=g[3], weighting_scheme="all", beta=bias)
    nodes = es.multicut.multicut_kernighan_lin(g[1], costs)
    merged = np.asarray(es.features.project_node_labels_to_pixels(g[1], g[0], nodes), np.uint32) + 1
    return separate(merged, membrane, threshold=level)


def score(seg: np.ndarray, cells: np.ndarray) -> tuple[float, float, float]:
    """Exactly biounet.evaluation.validation.segment_table's scores of one segment image."""
    boundary = (seg == 0).astype(np.float64)
    return (metrics.rand_scores(seg, ndimage.label(cells)[0]).error,
            metrics.warping_error(boundary, cells).error, metrics.pixel_error(boundary, cells).error)


def forest_table(graphs: dict[Key, Graph], probs: dict[Key, np.ndarray], membranes: dict[str, np.ndarray],
                 names: list[str]) -> Table:
    """segment_table's grid, costs from the forest's (held-out) cut probabilities."""
    rows: dict[SegmentParams, list[tuple[float, float, float]]] = {}
    for name, sigma, bias in itertools.product(names, SEGMENT_GRID["sigma_seeds"], SEGMENT_GRID["bias"]):
        for level in SEGMENT_GRID["membrane_threshold"]:
            seg = segments(graphs[name, sigma], probs[name, sigma], membranes[name], bias, level)
            params = SegmentParams(sigma_seeds=sigma, bias=bias, membrane_threshold=level)
            rows.setdefault(params, []).append(score(seg, truth(name)))
    return [(p, dict(zip(("rand_error", "warping_error", "pixel_error"), np.mean(r, axis=0).tolist())))
            for p, r in rows.items()]


def choose(table: Table) -> tuple[SegmentParams, dict[str, float]]:
    """choose_segment_params's rule: lowest Rand among settings within 5 % of the best pixel error."""
    best_pixel = min(s["pixel_error"] for _, s in table)
    return min([r for r in table if r[1]["pixel_error"] <= 1.05 * best_pixel], key=lambda r: r[1]["rand_error"])


def test_scores(names: list[str], run: Callable[[str], np.ndarray]) -> dict[str, object]:
    """Mean scores of ``run(name)`` on the slices, Rand per slice, mean post-processing seconds per slice."""
    rows, seconds = [], []
    for name in names:
        with Timer() as timer:
            seg = run(name)
        rows.append(score(seg, truth(name)))
        seconds.append(timer.seconds)
    mean = np.mean(rows, axis=0).tolist()
    return {"rand_error": mean[0], "warping_error": mean[1], "pixel_error": mean[2],
            "rand_error_per_slice": dict(zip(names, [r[0] for r in rows])),
            "seconds_per_slice": float(np.mean(seconds))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pred", type=Path, help="folder with <slice>_prob.tif")
    parser.add_argument("validation", help="slices to train the forest and choose on, e.g. 2,3,11")
    parser.add_argument("test", help="slices to score on, e.g. 16,17,18,19")
    args = parser.parse_args()
    val, test = args.validation.split(","), args.test.split(",")
    maps = {n: tifffile.imread(args.pred / f"{n}_prob.tif") for n in val + test}
    membranes = {n: maps[n][1].astype(np.float32) for n in maps}
    sigmas = SEGMENT_GRID["sigma_seeds"]
    graphs = {(n, s): graph(membranes[n], image(n), s) for n in maps for s in sigmas}
    labels = {key: edge_labels(g, truth(key[0])) for key, g in graphs.items()}
    held_out = {}  # each validation slice's cut probabilities from a forest trained on the other ones
    for name in val:
        fold = forest([(graphs[k], labels[k]) for k in graphs if k[0] in val and k[0] != name])
        held_out.update({(name, s): fold.predict_proba(graphs[name, s][2])[:, 1] for s in sigmas})
    rf = forest([(graphs[k], labels[k]) for k in graphs if k[0] in val])
    rf_params, rf_val = choose(forest_table(graphs, held_out, membranes, val))
    mean_params, mean_val = choose_segment_params([maps[n] for n in val], samples(val))

    def run_forest(name: str) -> np.ndarray:
        g = graph(membranes[name], image(name), rf_params.sigma_seeds)
        return segments(g, rf.predict_proba(g[2])[:, 1], membranes[name], rf_params.bias,
                        rf_params.membrane_threshold)

    def auc(keys: list[Key], probs: Callable[[Key], np.ndarray]) -> dict[str, float]:
        y = np.concatenate([labels[k] for k in keys])
        return {"forest": roc_auc_score(y, np.concatenate([probs(k) for k in keys])),
                "mean_probability": roc_auc_score(y, np.concatenate([graphs[k][2][:, 0] for k in keys]))}

    emit({"experiment": "segment_edges", "pred": str(args.pred), "slices": {"validation": val, "test": test},
          "hardware": hardware(), "forest_features": int(rf.n_features_in_),
          "forest_training_edges": int(sum(len(labels[k]) for k in labels if k[0] in val)),
          "edge_auc": {"validation_held_out": auc([k for k in graphs if k[0] in val], held_out.__getitem__),
                       "test": auc([k for k in graphs if k[0] in test],
                                   lambda k: rf.predict_proba(graphs[k][2])[:, 1])},
          "forest": {"settings": asdict(rf_params), "validation": rf_val, "test": test_scores(test, run_forest)},
          "mean_probability": {"settings": asdict(mean_params), "validation": mean_val, "test": test_scores(
              test, lambda n: segments_from_membranes(membranes[n], mean_params))}})


if __name__ == "__main__":
    main()
