"""Time to quality: ISBI 2012 validation pixel error after 5, 10 and 20 minutes of ``biounet train``.

One run of ``biounet train --data ../shared/data/isbi2012 --time-budget 20m`` (in a subprocess, so that its
memory and threads are its own) instead of three: its ``RUN/metrics.csv`` has a row per validation with the
training time ``elapsed_s`` and the validation ``pixel_error`` (and ``rand_error``), so the quality after T
minutes is read off the last validation at or before T. ``elapsed_s`` is the run's clock, validations
included (as for ``--time-budget``), so give ``--val-every`` small enough for the rows to fall near the
checkpoints, but not so small that validating dominates. The learning-rate schedule follows the 20-minute
budget, so the 5- and 10-minute readings are of a run whose learning rate has not decayed yet; a run given only 5
or 10 minutes, with its own schedule, may do better.

Prints JSON lines: the environment, then one record per checkpoint T with the last validation at or before T
(``pixel_error``, ``rand_error``, ``step``, ``elapsed_s``) and the best pixel error seen up to T.

Usage: ``python benchmarks/time_to_quality.py [--data ../shared/data/isbi2012] [--out runs/ttq] [--minutes 5 10
20] [--val-every 100] [--reuse] [-- extra biounet train flags]``. ``--reuse`` only reads an existing run's
``metrics.csv``.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import emit, environment


def train(data: Path, out: Path, minutes: float, val_every: int | None, extra: list[str]) -> float:
    """Run ``biounet train`` for ``minutes``; return the wall-clock seconds it took (start-up included)."""
    command = [sys.executable, "-m", "biounet", "train", "--data", str(data), "--out", str(out),
               "--time-budget", f"{minutes:g}m", "-q", *extra]
    if val_every is not None:
        command += ["--val-every", str(val_every)]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def read_validations(path: Path) -> list[dict[str, float]]:
    """Rows of ``metrics.csv`` that carry a validation pixel error, as floats, in order of ``elapsed_s``."""
    with path.open() as handle:
        rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]
    return sorted((r for r in rows if "pixel_error" in r and "elapsed_s" in r), key=lambda r: r["elapsed_s"])


def quality_at(rows: list[dict[str, float]], minutes: float) -> dict[str, Any]:
    """The last validation at or before ``minutes`` of training, and the best pixel error up to then."""
    seen = [r for r in rows if r["elapsed_s"] <= minutes * 60]
    record: dict[str, Any] = {"benchmark": "time_to_quality", "minutes": minutes}
    if not seen:
        return {**record, "note": "no validation before this time"}
    last = seen[-1]
    return {
        **record, "step": int(last["step"]), "elapsed_s": last["elapsed_s"], "pixel_error": last["pixel_error"],
        "rand_error": last.get("rand_error"), "best_pixel_error_so_far": min(r["pixel_error"] for r in seen),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/isbi2012"))
    parser.add_argument("--out", type=Path, default=Path("runs/time_to_quality"))
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 10.0, 20.0])
    parser.add_argument("--val-every", type=int, default=None, help="validation interval in steps (train default)")
    parser.add_argument("--reuse", action="store_true", help="read an existing run's metrics.csv, do not train")
    parser.add_argument("extra", nargs="*", help="further biounet train flags, after --")
    args = parser.parse_args()
    emit({"benchmark": "time_to_quality", "environment": environment(), "data": str(args.data),
          "run": str(args.out)})
    if not args.reuse:
        wall_s = train(args.data, args.out, max(args.minutes), args.val_every, args.extra)
        emit({"benchmark": "time_to_quality", "train_wall_s": round(wall_s, 1)})
    rows = read_validations(args.out / "metrics.csv")
    for minutes in args.minutes:
        emit(quality_at(rows, minutes))


if __name__ == "__main__":
    main()
