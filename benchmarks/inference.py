"""Whole-image inference throughput: biounet's overlap-tile prediction against MONAI's sliding window.

For each width (the paper's base 64, and base 16) on a ``--size`` x ``--size`` image (default 2048):

* biounet: ``biounet.inference.predict.predict_image`` with a :class:`~biounet.inference.predict.TorchPredictor` (valid
  convolutions, seamless overlap-tile), fp32 and bf16. Reports output Mpx/s, the GFLOP/s of the convolutions run
  (analytic count ``biounet.core.flops.conv_flops`` per tile times tiles, over the time), that as a fraction of the
  matmul peak measured in the same process, the peak resident memory, and for bf16 its accuracy against fp32
  (max abs and relative probability error, fraction of pixels with the same arg-max class).
* MONAI: ``monai.inferers.sliding_window_inference`` (roi 512, overlap 0.25, gaussian and constant blending) with
  an equal-width same-padded U-Net: biounet's own ``UNet(ModelConfig(padding="same"))`` (identical layers, only
  the padding differs), and MONAI's ``BasicUNet`` with features (C, 2C, 4C, 8C, 16C, C) as a second peer.
  Reports Mpx/s and the ratio biounet / MONAI of output Mpx/s (fp32 against fp32).

Weights are random (He init), so bf16's arg-max agreement is that of an untrained network whose probabilities
sit near 0.5; a trained network's confident pixels agree more often.

Usage: ``python benchmarks/inference.py [--device cpu|cuda] [--size 2048] [--quick]``; prints JSON lines.
``--quick`` uses a 512 px image and skips BasicUNet.

``--processes``: the user's view instead, as whole processes one after the other, with the defaults: ``biounet
predict MODEL IMAGE.tif --out DIR`` (``--precision auto``, the default memory budget) against
``benchmarks/monai_predict.py`` (the same network same-padded, ``sliding_window_inference`` roi 512, overlap 0.25,
gaussian, in the precision biounet chose), each reading a ``--size``^2 uint8 TIFF and writing labels. Reports the
wall time of each process, their ratio, and biounet's convolution FLOPs over the whole-image limit (the FLOPs of
the network's valid convolutions per output pixel as the tile grows without bound, times the image's pixels).
With ``--repeats N`` the pair runs N times, alternating, and the ratio reported is the median of the N pairs'
ratios (this 2-core VM's whole-process times vary by 5-10 % from run to run).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import emit, environment, peak_gflops, peak_rss_mb, reset_peak_rss, synchronize

from biounet.core.flops import conv_flops
from biounet.core.model import ModelConfig, UNet
from biounet.inference.predict import TorchPredictor, choose_in_tile, predict_image
from biounet.inference.tiling import count_tiles

ROI, OVERLAP = 512, 0.25


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float, float]:
    """``(result, seconds, peak RSS MiB)`` of one call."""
    reset_peak_rss()
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start, peak_rss_mb()


def bench_biounet(base: int, image: np.ndarray, device: torch.device, peaks: dict[str, float],
                  tile: int | None) -> float:
    """Emit the fp32 and bf16 records of biounet's overlap-tile prediction; return the fp32 output Mpx/s."""
    torch.manual_seed(0)
    config = ModelConfig(base_channels=base)
    model = UNet(config)
    size = image.shape[0]
    reference: np.ndarray | None = None
    fp32_mpx_s = 0.0
    for precision in ("fp32", "bf16"):
        predictor = TorchPredictor(model, device=device, precision=precision)
        in_tile = tile or choose_in_tile(predictor, image.shape[:2])
        geometry = predictor.geometry(in_tile)
        tiles = count_tiles(image.shape[:2], geometry)
        predictor(np.zeros((1, 1, in_tile, in_tile), np.float32))  # warm-up: kernel selection for this shape
        probs, seconds, rss = timed(lambda: predict_image(predictor, image, tile=in_tile), device)
        flops = conv_flops(config, in_tile) * tiles
        record: dict[str, Any] = {
            "benchmark": "inference", "impl": "biounet", "base_channels": base, "precision": precision,
            "device": str(device), "image": size, "in_tile": in_tile, "out_tile": geometry.out_tile, "tiles": tiles,
            "tiling_efficiency": round(size * size / (tiles * geometry.out_tile**2), 3),
            "seconds": round(seconds, 3), "mpx_per_s": round(size * size / seconds / 1e6, 4),
            "gflop_per_tile": round(conv_flops(config, in_tile) / 1e9, 2),
            "gflop_per_s": round(flops / seconds / 1e9, 1),
            "fraction_of_peak": round(flops / seconds / 1e9 / peaks[precision], 3),
            "peak_rss_mb": round(rss),
        }
        if precision == "fp32":
            reference, fp32_mpx_s = probs, size * size / seconds / 1e6
        else:
            assert reference is not None
            winner = reference.max(axis=0)  # probability of the fp32 arg-max class, >= 1/K
            error = np.abs(probs - reference)
            record.update({
                "max_abs_prob_error": float(error.max()),
                "max_rel_prob_error": float((np.take_along_axis(error, reference.argmax(0)[None], 0)[0]
                                             / winner).max()),
                "argmax_agreement": float((probs.argmax(0) == reference.argmax(0)).mean()),
            })
        emit(record)
    return fp32_mpx_s


def bench_monai(base: int, image: np.ndarray, device: torch.device, peaks: dict[str, float],
                biounet_mpx_s: float, *, basic_unet: bool = True) -> None:
    """Emit one record per peer network and blending mode of MONAI's sliding-window inference (fp32)."""
    try:
        from monai.inferers import sliding_window_inference
        from monai.networks.nets import BasicUNet
    except ImportError as err:  # an optional peer: report and go on
        emit({"benchmark": "inference", "impl": "monai", "error": f"cannot import monai: {err}",
              "hint": "pip install --no-deps monai"})
        return
    torch.manual_seed(0)
    same_config = ModelConfig(base_channels=base, padding="same")
    peers: dict[str, torch.nn.Module] = {"biounet-UNet-same-padded": UNet(same_config)}
    if basic_unet:
        peers["monai-BasicUNet"] = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2,
                                             features=(base, 2 * base, 4 * base, 8 * base, 16 * base, base))
    size = image.shape[0]
    x = torch.from_numpy(image[None, None, :, :, 0].copy()).to(device).contiguous(memory_format=torch.channels_last)
    for name, network in peers.items():
        network = network.to(device).eval().to(memory_format=torch.channels_last)
        with torch.inference_mode():
            network(x[..., :ROI, :ROI])  # warm-up
        for mode in ("gaussian", "constant"):
            def run() -> torch.Tensor:
                with torch.inference_mode():
                    logits = sliding_window_inference(x, roi_size=(ROI, ROI), sw_batch_size=1, predictor=network,
                                                      overlap=OVERLAP, mode=mode)
                    return torch.softmax(logits, dim=1)

            _, seconds, rss = timed(run, device)
            windows = _monai_windows(size)
            record: dict[str, Any] = {
                "benchmark": "inference", "impl": "monai.sliding_window_inference", "network": name,
                "base_channels": base, "precision": "fp32", "device": str(device), "image": size,
                "roi": ROI, "overlap": OVERLAP, "mode": mode, "windows": windows, "seconds": round(seconds, 3),
                "mpx_per_s": round(size * size / seconds / 1e6, 4), "peak_rss_mb": round(rss),
                "biounet_over_monai_mpx_s": round(biounet_mpx_s / (size * size / seconds / 1e6), 3),
            }
            if name.startswith("biounet"):
                flops = conv_flops(same_config, ROI) * windows
                record.update({"gflop_per_s": round(flops / seconds / 1e9, 1),
                               "fraction_of_peak": round(flops / seconds / 1e9 / peaks["fp32"], 3)})
            emit(record)


def _monai_windows(size: int) -> int:
    """Windows MONAI runs per image side squared: interval ``roi * (1 - overlap)``, last window flush."""
    if size <= ROI:
        return 1
    interval = int(ROI * (1 - OVERLAP))
    per_side = -(-(size - ROI) // interval) + 1
    return per_side * per_side


def whole_image_flops(config: ModelConfig, size: int) -> float:
    """FLOPs of a ``size``^2 image at the whole-image limit: per-output-pixel FLOPs of a very large tile."""
    from biounet.core.model import output_size

    tile = 16 * 1024 + 60  # a valid size: the limit to 0.3 %
    return conv_flops(config, tile) / output_size(tile, config.depth) ** 2 * size * size


def _run(command: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return done, time.perf_counter() - start


def bench_processes(base: int, size: int, repeats: int = 1) -> None:
    """Emit the whole-process comparison for one width (see the module docstring)."""
    import tifffile

    with tempfile.TemporaryDirectory(prefix="biounet-bench-") as tmp:
        folder = Path(tmp)
        image = (np.random.default_rng(0).random((size, size)) * 255).astype(np.uint8)
        tifffile.imwrite(folder / "image.tif", image)
        model = folder / "model.pt"
        subprocess.run([sys.executable, "-m", "biounet", "init", "--out", str(model), "--base-channels", str(base),
                        "-q"], check=True, capture_output=True)
        ours_times, peer_times, peers = [], [], []
        for _ in range(repeats):
            ours, ours_s = _run([sys.executable, "-m", "biounet", "predict", str(model), str(folder / "image.tif"),
                                 "--out", str(folder / "biounet")])
            precision = re.search(r"precision (\w+) \(auto\)", ours.stderr)
            tiles = re.search(r"\((\d+) tiles of (\d+) px", ours.stdout)
            if precision is None or tiles is None:
                raise RuntimeError(f"unexpected biounet predict output: {ours.stdout} {ours.stderr}")
            try:
                peer, peer_s = _run([sys.executable, str(Path(__file__).with_name("monai_predict.py")), str(model),
                                     str(folder / "image.tif"), str(folder / "monai.tif"), "--precision",
                                     precision.group(1)])
            except subprocess.CalledProcessError as err:
                emit({"benchmark": "inference_processes", "error": err.stderr[-500:],
                      "hint": "pip install --no-deps monai"})
                return
            ours_times.append(round(ours_s, 2))
            peer_times.append(round(peer_s, 2))
            peers.append(json.loads(peer.stdout.strip().splitlines()[-1]))
        config = ModelConfig(base_channels=base)
        count, in_tile = int(tiles.group(1)), int(tiles.group(2))
        emit({
            "benchmark": "inference_processes", "image": size, "base_channels": base, "precision": precision.group(1),
            "biounet_tiles": count, "biounet_in_tile": in_tile, "biounet_seconds": ours_times,
            "monai_seconds": peer_times, "monai_in_process": peers,
            "biounet_speedup_over_monai": round(float(np.median(np.divide(peer_times, ours_times))), 3),
            "flops_over_whole_image_limit": round(conv_flops(config, in_tile) * count / whole_image_flops(config, size),
                                                  3),
        })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--size", type=int, default=2048, help="image side in pixels")
    parser.add_argument("--bases", type=int, nargs="+", default=[64, 16], help="base channel counts")
    parser.add_argument("--tile", type=int, default=None, help="input tile side (default: choose_in_tile)")
    parser.add_argument("--quick", action="store_true", help="512 px image, no BasicUNet")
    parser.add_argument("--processes", action="store_true",
                        help="whole processes with the defaults: biounet predict against a MONAI script")
    parser.add_argument("--repeats", type=int, default=1, help="with --processes: pairs of runs (median ratio)")
    args = parser.parse_args()
    if args.processes:
        emit({"benchmark": "inference_processes", "environment": environment()})
        for base in args.bases:
            bench_processes(base, args.size, args.repeats)
        return
    device = torch.device(args.device)
    size = 512 if args.quick else args.size
    peaks = peak_gflops(quick=args.quick, device=args.device)
    emit({"benchmark": "inference", "environment": environment(), "peak_gflop_per_s": peaks})
    rng = np.random.default_rng(0)
    image = rng.random((size, size, 1), dtype=np.float32)  # already normalised; content does not change the cost
    for base in args.bases:
        biounet_mpx_s = bench_biounet(base, image, device, peaks, args.tile)
        bench_monai(base, image, device, peaks, biounet_mpx_s, basic_unet=not args.quick)


if __name__ == "__main__":
    main()
