"""3D inference throughput: biounet's overlap-tile for volumes against MONAI's sliding window, same network.

The network is the project's default 3D U-Net (``ModelConfig(dims=3, depth=3, variant="cicek", base_channels=16,
batch_norm=True, flat_levels=1)``: Cicek et al. 2016 at base 16, valid convolutions, the top level in-plane only),
random weights (seed 0), eval mode, on a ``--shape`` volume (default 64 x 256 x 256) of smooth random intensities.

* biounet: :func:`biounet.inference.predict_volume.segment_volume` with a
  :class:`~biounet.inference.predict.TorchPredictor`: the tile shape :func:`~biounet.inference.volumes.choose_volume_tile`
  picks within ``--budget-mib`` (the 1 GiB default budget of ``predict_image``), tiles mirrored at the borders,
  outputs ``(K, Z, Y, X)`` probabilities and ``(Z, Y, X)`` labels.
* MONAI: ``monai.inferers.sliding_window_inference`` with the same network and the same valid outputs. Fairness
  choice (equal work): MONAI gets the volume mirror-padded exactly as biounet's tiles see it (the context margins
  before, the margins plus the last tile's overhang after; the padding is timed as part of MONAI's run),
  ``roi_size`` = biounet's input tile and an ``overlap`` per axis that makes MONAI's scan interval biounet's tile
  step, so its windows are biounet's tiles: the same number, at the same places. The predictor wrapper returns the
  network's softmax padded back to the window with zeros, and ``roi_weight_map`` is 1 on the valid centre and 0 on
  the margins, so every voxel is the (weighted) mean of the valid outputs that cover it: the same values as
  biounet's to float rounding (reported as ``max_abs_diff``), not a same-padded approximation.

Both run in fp32 and, where the CPU has native bf16 (``biounet.core.device.resolve_precision``), in bf16 autocast;
batch size 1 each; one warm-up window/tile first (kernel selection). Reports output voxels/s, seconds, windows,
the ratio biounet / MONAI of voxels/s, and the agreement of the two (max abs probability difference, fraction of
voxels with the same arg-max).

Usage: ``python benchmarks/volume_inference.py [--shape 64 256 256] [--device cpu|cuda] [--budget-mib 1024]``;
prints JSON lines (the environment, then one line per precision).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from common import emit, environment, peak_rss_mb, reset_peak_rss, synchronize
from scipy import ndimage

from biounet.core.device import autocast, resolve_precision
from biounet.core.model import ModelConfig, UNet, output_probabilities
from biounet.inference.predict import TorchPredictor
from biounet.inference.predict_volume import segment_volume, volume_tile
from biounet.inference.tiling import tile_starts
from biounet.inference.volumes import VolumeGeometry, count_volume_tiles, volume_geometry

CONFIG = ModelConfig(dims=3, depth=3, variant="cicek", base_channels=16, batch_norm=True, flat_levels=1)


def test_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """``(Z, Y, X, 1)`` float32: smoothed noise scaled to about [0, 1], like a normalised stack."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random(shape, dtype=np.float32), sigma=(1, 3, 3))
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return smooth[..., None].astype(np.float32)


def bench_biounet(model: UNet, volume: np.ndarray, precision: str, device: torch.device, budget: int,
                  ) -> tuple[np.ndarray, float, tuple[int, int, int]]:
    """``(probabilities (K, Z, Y, X), seconds, in_shape)`` of biounet's 3D overlap-tile prediction."""
    predictor = TorchPredictor(model, device=device, precision=precision)
    in_shape = volume_tile(predictor, volume.shape[:3], budget)  # what segment_volume chooses
    predictor(np.zeros((1, CONFIG.in_channels, *in_shape), np.float32))  # warm-up: kernel selection
    synchronize(device)
    start = time.perf_counter()
    result = segment_volume(predictor, volume, memory_budget=budget)
    synchronize(device)
    return result.probabilities, time.perf_counter() - start, result.in_shape


def monai_inputs(volume: np.ndarray, geometry: VolumeGeometry) -> tuple[np.ndarray, tuple[float, ...]]:
    """The volume mirror-padded as biounet's tiles see it, ``(1, C, Z', Y', X')``, and the per-axis overlap that
    makes MONAI's scan interval ``int(roi * (1 - overlap))`` equal to biounet's tile step."""
    pads, overlaps = [], []
    for length, size, out, margin, step in zip(volume.shape[:3], geometry.in_shape, geometry.out_shape,
                                               geometry.margins, geometry.step):
        last = tile_starts(length, out, step)[-1]
        pads.append((margin, last + size - margin - length))
        overlaps.append((size - step - 0.5) / size)  # interval = int(step + 0.5) = step
    padded = np.pad(volume, [*pads, (0, 0)], mode="symmetric")
    return np.ascontiguousarray(np.moveaxis(padded, -1, 0)[None]), tuple(overlaps)


def bench_monai(model: UNet, volume: np.ndarray, geometry: VolumeGeometry, precision: str, device: torch.device,
                ) -> tuple[np.ndarray, float, int]:
    """``(probabilities (K, Z, Y, X), seconds, windows)`` of MONAI's sliding window over the same tiles."""
    from monai.inferers import sliding_window_inference

    margins = geometry.margins
    weights = torch.zeros(geometry.in_shape, device=device)
    weights[tuple(slice(m, m + o) for m, o in zip(margins, geometry.out_shape))] = 1.0
    windows = 0

    def predictor(window: torch.Tensor) -> torch.Tensor:
        nonlocal windows
        windows += window.shape[0]
        with autocast(device, precision):
            logits = model(window)
        probs = output_probabilities(logits.float(), CONFIG.num_classes, CONFIG.ray_channels)
        return F.pad(probs, [p for m in reversed(margins) for p in (m, m)])  # zeros on the margins (weight 0)

    def run(array: np.ndarray) -> np.ndarray:
        padded, overlap = monai_inputs(array, geometry)
        inputs = torch.from_numpy(padded).to(device)
        with torch.inference_mode():
            out = sliding_window_inference(inputs, roi_size=geometry.in_shape, sw_batch_size=1, predictor=predictor,
                                           overlap=overlap, mode="constant", roi_weight_map=weights)
        crop = tuple(slice(m, m + n) for m, n in zip(margins, array.shape[:3]))
        return out[(0, slice(None), *crop)].float().cpu().numpy()

    run(volume[: geometry.in_shape[0] // 4 + 1, :8, :8])  # warm-up: one window
    windows = 0
    synchronize(device)
    start = time.perf_counter()
    probabilities = run(volume)
    synchronize(device)
    return probabilities, time.perf_counter() - start, windows


def compare(precision: str, model: UNet, volume: np.ndarray, device: torch.device, budget: int) -> dict[str, Any]:
    """One JSON record: both implementations in ``precision``, their speeds, ratio and agreement."""
    reset_peak_rss()
    ours, ours_s, in_shape = bench_biounet(model, volume, precision, device, budget)
    ours_rss = peak_rss_mb()
    geometry = volume_geometry(CONFIG, in_shape)
    reset_peak_rss()
    theirs, theirs_s, windows = bench_monai(model, volume, geometry, precision, device)
    theirs_rss = peak_rss_mb()
    voxels = math.prod(volume.shape[:3])
    tiles = count_volume_tiles(volume.shape[:3], geometry)
    return {
        "precision": precision, "shape": list(volume.shape[:3]), "in_shape": list(in_shape),
        "out_shape": list(geometry.out_shape), "tiles": tiles, "monai_windows": windows,
        "biounet_seconds": round(ours_s, 3), "monai_seconds": round(theirs_s, 3),
        "biounet_voxels_per_s": round(voxels / ours_s), "monai_voxels_per_s": round(voxels / theirs_s),
        "ratio_biounet_over_monai": round(theirs_s / ours_s, 3),
        "biounet_peak_rss_mib": round(ours_rss), "monai_peak_rss_mib": round(theirs_rss),
        "max_abs_diff": float(np.abs(ours - theirs).max()),
        "same_argmax": float(np.mean(ours.argmax(0) == theirs.argmax(0))),
        "loadavg_1min_after": os.getloadavg()[0],  # 2 = this benchmark's own two threads; more: something else ran
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 256, 256), metavar=("Z", "Y", "X"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budget-mib", type=int, default=1024, help="biounet's memory budget for the tile choice")
    args = parser.parse_args()
    import monai

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = UNet(CONFIG).to(device).eval()
    volume = test_volume(tuple(args.shape))
    precisions = ["fp32"] + (["bf16"] if resolve_precision("auto", device) == "bf16" else [])
    emit({"benchmark": "volume_inference", "config": CONFIG.to_dict(), "monai": monai.__version__,
          "budget_mib": args.budget_mib, "precisions": precisions, **environment()})
    for precision in precisions:
        emit(compare(precision, model, volume, device, args.budget_mib * 2**20))


if __name__ == "__main__":
    main()
