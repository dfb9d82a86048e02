"""The MONAI side of ``benchmarks/inference.py --processes``: one whole process that segments a TIFF the way a
MONAI user would, with the same network as the biounet checkpoint made same-padded (identical layers).

Reads the image, normalises it as biounet does (percentile), runs ``monai.inferers.sliding_window_inference``
(roi 512, overlap 0.25, gaussian blending) in the given precision (bf16 autocast or fp32), takes the arg-max and
writes the labels as a TIFF. Prints one JSON line with its own timings.

    python benchmarks/monai_predict.py MODEL.pt IMAGE.tif OUT.tif --precision bf16
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import tifffile
import torch

from biounet.core.device import autocast
from biounet.core.model import ModelConfig, UNet
from biounet.data.checkpoint import load_checkpoint
from biounet.data.normalization import normalize

ROI, OVERLAP = 512, 0.25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("image")
    parser.add_argument("out")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--mode", choices=("gaussian", "constant"), default="gaussian")
    args = parser.parse_args()
    from monai.inferers import sliding_window_inference

    start = time.perf_counter()
    payload = load_checkpoint(args.model)
    config = ModelConfig(**{**payload["model_config"], "padding": "same"})
    network = UNet(config)
    network.load_state_dict(payload["model_state"])
    network = network.eval().to(memory_format=torch.channels_last)
    image = normalize(tifffile.imread(args.image), "percentile")
    x = torch.from_numpy(np.ascontiguousarray(image[None, None])).contiguous(memory_format=torch.channels_last)
    device = torch.device("cpu")
    compute = time.perf_counter()
    with torch.inference_mode(), autocast(device, args.precision):
        logits = sliding_window_inference(x, roi_size=(ROI, ROI), sw_batch_size=1, predictor=network,
                                          overlap=OVERLAP, mode=args.mode)
    labels = torch.softmax(logits.float(), dim=1).argmax(1)[0].numpy().astype(np.uint8)
    compute = time.perf_counter() - compute
    tifffile.imwrite(args.out, labels, compression="zlib")
    print(json.dumps({"impl": "monai.sliding_window_inference", "precision": args.precision, "mode": args.mode,
                      "compute_seconds": round(compute, 3),
                      "in_process_seconds": round(time.perf_counter() - start, 3)}))


if __name__ == "__main__":
    main()
