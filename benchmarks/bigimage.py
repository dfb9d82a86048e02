"""Large images through the CLI: time and peak memory of ``biounet predict`` as the image grows.

Writes synthetic uint8 TIFFs of 4096^2, 8192^2 and 16384^2 px (16384 is left out with ``--quick``), creates a
base-16 paper-depth model with ``biounet init``, and segments each image with ``biounet predict`` in a child
process. The child's own peak resident memory comes from ``os.wait4`` (its ``getrusage``), so each size is
measured separately. Time should grow about linearly with the pixel count and memory should stay flat: tiles are
read lazily and outputs larger than the memory budget are accumulated on disk.

Usage: ``python benchmarks/bigimage.py [--quick] [--sizes 4096 8192] [--precision fp32|bf16] [--workdir DIR]``;
prints JSON lines.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from common import emit, environment


def write_image(path: Path, size: int, rng: np.random.Generator) -> None:
    """A ``size`` x ``size`` uint8 TIFF of smooth blobs plus noise, written in 256 px tiles, row band by band."""
    band = 1024

    def tiles():
        for top in range(0, size, band):
            rows = np.arange(top, min(top + band, size))[:, None]
            cols = np.arange(size)[None, :]
            smooth = 96 + 64 * np.sin(rows / 37.0) * np.cos(cols / 53.0)
            block = np.clip(smooth + rng.normal(0, 12, (rows.shape[0], size)), 0, 255).astype(np.uint8)
            for tile_top in range(0, block.shape[0], 256):
                for left in range(0, size, 256):
                    yield block[tile_top : tile_top + 256, left : left + 256]

    tifffile.imwrite(path, tiles(), shape=(size, size), dtype=np.uint8, tile=(256, 256))


def run_child(argv: list[str]) -> tuple[int, float, float, str]:
    """``(exit code, seconds, peak RSS MiB of the child, stderr tail)``."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        err.seek(0)
        tail = err.read().decode(errors="replace")[-500:]
    return child.returncode, seconds, usage.ru_maxrss / 1024, tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4096 and 8192 only")
    parser.add_argument("--sizes", type=int, nargs="+", help="image sides (overrides the defaults)")
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"))
    parser.add_argument("--memory-budget", default="1G")
    parser.add_argument("--workdir", type=Path, help="where images and outputs go (default: a temporary folder)")
    args = parser.parse_args()
    sizes = args.sizes or ([4096, 8192] if args.quick else [4096, 8192, 16384])
    emit({"benchmark": "bigimage", "environment": environment(), "sizes": sizes})
    with tempfile.TemporaryDirectory(prefix="biounet-bigimage-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        biounet = [sys.executable, "-m", "biounet"]
        model = work / "model.pt"
        subprocess.run([*biounet, "init", "--out", str(model), "--base-channels", str(args.base_channels)],
                       check=True, stdout=subprocess.DEVNULL)
        rng = np.random.default_rng(0)
        first: tuple[int, float] | None = None
        for size in sizes:
            image = work / f"img{size}.tif"
            write_image(image, size, rng)
            out = work / f"out{size}"
            code, seconds, rss, tail = run_child(
                [*biounet, "predict", str(model), str(image), "--out", str(out), "--precision", args.precision,
                 "--memory-budget", args.memory_budget, "-q"])
            record = {"benchmark": "bigimage", "image": size, "mpx": round(size * size / 1e6, 1),
                      "base_channels": args.base_channels, "precision": args.precision, "exit_code": code,
                      "seconds": round(seconds, 2), "mpx_per_s": round(size * size / seconds / 1e6, 3),
                      "peak_rss_mb": round(rss)}
            if code != 0:
                record["stderr"] = tail
            if first is None:
                first = (size * size, seconds)
            else:
                record["time_ratio_vs_first"] = round(seconds / first[1], 2)
                record["pixel_ratio_vs_first"] = round(size * size / first[0], 2)
            emit(record)
            image.unlink()
            for path in sorted(out.glob("*")):
                path.unlink()


if __name__ == "__main__":
    main()
