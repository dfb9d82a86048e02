"""How a ``boundary`` model's seeds are grown into cells: the foreground they may fill (arg-max of the classes, or
``interior + boundary > 0.5``) and the order they flood the boundary band in (by the arg-max band, that is to the
geodesically nearest seed, or by rising boundary probability), each scored on a finished run's validation images
(where the choice is made) and on predicted held-out images (``<stem>_prob.tif``) with their truth.

    biounet predict RUN/model.pt TEST_IMAGES --out PRED --save-probabilities
    python experiments/boundary_flooding.py RUN --pred PRED --truth TRUTH_DIR --results OUT.json

The seeds are the run's: ``interior > seed_threshold``, cut at ``split_prominence``, at each seed threshold of the
validation grid; sizes at the model's scale (held-out images predicted at another scale keep ``min_size_px``).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from _common import emit, hardware
from scipy import ndimage

from biounet.evaluation import metrics
from biounet.inference.instances import InstanceParams, split_seeds

FOREGROUNDS = ("argmax", "sum")
FLOODS = ("band", "probability")


def grow(prob: np.ndarray, params: InstanceParams, foreground: str, flood: str) -> np.ndarray:
    """One variant of the boundary rule on ``(3, H, W)`` probabilities (background, interior, boundary)."""
    from skimage.segmentation import watershed

    seeds = ndimage.label(prob[1] > params.seed_threshold)[0].astype(np.int32)
    seeds = split_seeds(seeds, params.split_prominence)
    sizes = np.bincount(seeds.ravel())
    seeds[sizes[seeds] < params.min_size_px] = 0
    if not seeds.any():
        return np.zeros(prob.shape[1:], np.int64)
    classes = prob.argmax(0)
    mask = classes > 0 if foreground == "argmax" else prob[1] + prob[2] > 0.5
    elevation = (classes == 2).astype(np.float64) if flood == "band" else prob[2].astype(np.float64)
    return np.asarray(watershed(elevation, markers=seeds, mask=mask | (seeds > 0), connectivity=1), np.int64)


def scores(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Pooled accuracy and F1 at IoU 0.5, pooled SEG."""
    objects = metrics.dataset_object_scores(pairs, thresholds=(0.5,))[0]
    seg = [metrics.seg_score(pred, true) for pred, true in pairs]
    return {"accuracy": round(objects.average_precision, 4), "f1": round(objects.f1, 4),
            "seg": round(sum(float(s.per_object.sum()) for s in seg) / sum(s.n_objects for s in seg), 4)}


def table(items: list[tuple[np.ndarray, np.ndarray]], chosen: InstanceParams, thresholds: tuple[float, ...],
          ) -> list[dict[str, Any]]:
    rows = []
    for threshold, foreground, flood in product(thresholds, FOREGROUNDS, FLOODS):
        params = replace(chosen, seed_threshold=threshold)
        pairs = [(grow(prob, params, foreground, flood), truth) for prob, truth in items]
        rows.append({"seed_threshold": threshold, "foreground": foreground, "flood": flood, **scores(pairs)})
    return rows


def validation_items(run: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The run's validation images: probabilities as training predicts them, and their instance truth."""
    import torch

    from biounet.data.checkpoint import load_checkpoint, model_from_payload
    from biounet.evaluation.validation import predict_samples
    from biounet.training.config import read_config_toml
    from biounet.training.train import select_samples

    config = read_config_toml(run / "config.toml")
    split = select_samples(config, None)
    model = model_from_payload(load_checkpoint(run / "model.pt"), run / "model.pt")
    probs = predict_samples(model, split.validation, normalization=config.normalization,
                            precision=config.precision, device=torch.device("cpu"))
    return [(prob, np.asarray(s.instances, np.int64)) for prob, s in zip(probs, split.validation)]


def held_out_items(pred: Path, truth: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    stems = sorted(path.name.removesuffix("_prob.tif") for path in pred.glob("*_prob.tif"))
    return [(tifffile.imread(pred / f"{s}_prob.tif").astype(np.float32),
             tifffile.imread(truth / f"{s}.tif").astype(np.int64)) for s in stems]


def run_arguments(description: str) -> tuple[argparse.Namespace, InstanceParams]:
    """The arguments every experiment on a finished boundary run takes, and the run's stored settings."""
    from biounet.data.checkpoint import load_checkpoint

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("run", type=Path, help="a finished boundary run (config.toml, model.pt)")
    parser.add_argument("--pred", type=Path, required=True, help="folder with <stem>_prob.tif of held-out images")
    parser.add_argument("--truth", type=Path, required=True, help="folder with <stem>.tif instance masks")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args()
    return args, InstanceParams(**(load_checkpoint(args.run / "model.pt").get("instance_params") or {}))


def main() -> None:
    from biounet.evaluation.validation import SEED_THRESHOLDS

    args, chosen = run_arguments(__doc__.splitlines()[0])
    thresholds = tuple(sorted(set(SEED_THRESHOLDS) - {0.8}))
    record = {"experiment": "boundary_flooding", "run": str(args.run), "chosen": vars(chosen),
              "hardware": hardware(),
              "validation": table(validation_items(args.run), chosen, thresholds),
              "held_out": table(held_out_items(args.pred, args.truth), chosen, thresholds)}
    emit(record, args.results)


if __name__ == "__main__":
    main()
