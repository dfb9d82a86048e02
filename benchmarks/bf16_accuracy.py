"""bf16 against fp32 for a trained model on real images: probability error and arg-max agreement.

Usage: ``python benchmarks/bf16_accuracy.py MODEL IMAGE [IMAGE ...]``; prints one JSON line per image and a mean.
Random weights (``benchmarks/inference.py``) put most probabilities near 0.5, where any rounding flips the
arg-max; a trained model's agreement is the number that matters for users.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from biounet.data.images import open_image
from biounet.data.normalization import normalization_for
from biounet.inference.predict import load_predictor, predict_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("images", nargs="+")
    args = parser.parse_args()
    torch.manual_seed(0)
    fp32 = load_predictor(args.model, device="cpu", precision="fp32")
    bf16 = load_predictor(args.model, device="cpu", precision="bf16")
    agreements, errors = [], []
    for path in args.images:
        source = open_image(path)
        image = normalization_for(source, 0, fp32.normalization).apply(source.read_plane(0))
        reference, low = predict_image(fp32, image), predict_image(bf16, image)
        agreement = float(np.mean(reference.argmax(0) == low.argmax(0)))
        error = float(np.abs(reference - low).max())
        agreements.append(agreement)
        errors.append(error)
        print(json.dumps({"image": path, "argmax_agreement": agreement, "max_abs_prob_error": error,
                          "mean_abs_prob_error": float(np.abs(reference - low).mean())}))
    print(json.dumps({"images": len(args.images), "mean_argmax_agreement": float(np.mean(agreements)),
                      "max_abs_prob_error": float(np.max(errors))}))


if __name__ == "__main__":
    main()
