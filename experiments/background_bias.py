"""How wide a ``boundary`` model draws its cells: the predicted objects' diameter against the truth's, and the
instance scores, at each background bias (:attr:`biounet.inference.instances.InstanceParams.background_bias`; 1 is
the arg-max of the class-balanced network), the run's other settings kept. Scored on the run's validation images
(where the choice is made) and on predicted held-out images (``<stem>_prob.tif``) with their truth.

    biounet predict RUN/model.pt TEST_IMAGES --out PRED --save-probabilities
    python experiments/background_bias.py RUN --pred PRED --truth TRUTH_DIR --results OUT.json

Validation images are predicted without test-time augmentation; held-out ones as ``PRED`` holds them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from _common import emit, hardware
from boundary_flooding import held_out_items, run_arguments, scores, validation_items

from biounet.data.diameter import median_diameter
from biounet.evaluation.validation import BACKGROUND_BIASES
from biounet.inference.instances import InstanceParams, instances_from_probabilities


def table(items: list[tuple[np.ndarray, np.ndarray]], chosen: InstanceParams) -> list[dict[str, Any]]:
    """Per bias: pooled accuracy, F1, SEG and the median over images of predicted / true median diameter."""
    rows = []
    for bias in (1.0, *BACKGROUND_BIASES):
        params = replace(chosen, background_bias=bias)
        pairs = [(instances_from_probabilities(prob, target="boundary", params=params).astype(np.int64), truth)
                 for prob, truth in items]
        ratios = [median_diameter(pred) / median_diameter(truth) for pred, truth in pairs
                  if pred.any() and truth.any()]
        rows.append({"background_bias": bias, **scores(pairs), "diameter_ratio": round(float(np.median(ratios)), 3)})
    return rows


def main() -> None:
    args, stored = run_arguments(__doc__.splitlines()[0])
    chosen = replace(stored, background_bias=1.0)
    record = {"experiment": "background_bias", "run": str(args.run), "chosen": vars(chosen), "hardware": hardware(),
              "validation": table(validation_items(args.run), chosen),
              "held_out": table(held_out_items(args.pred, args.truth), chosen)}
    emit(record, args.results)


if __name__ == "__main__":
    main()
