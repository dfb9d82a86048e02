"""Train a peer (StarDist or Cellpose) from scratch on a pairs folder within a time budget and predict test images.

    python benchmarks/peers.py stardist|cellpose --data DIR --test IMAGE|FOLDER... --time-budget 10m --out DIR

``DIR`` is a pairs folder as ``biounet train`` reads it: ``images/<stem>.*`` with ``labels/<stem>.*`` instance
masks (0 = background). For each test image the peer writes ``OUT/<stem>_instances.tif`` (int32, 0 =
background), which ``biounet evaluate --pred OUT --truth TRUTH --kind instances`` scores. It prints one JSON line
(also written to ``OUT/peer_run.json``): the peer's version and packages, its settings, the epochs and steps it
trained, where its clock stopped and why, the seconds of each part and of the whole run, and this command.

Each peer runs in its own virtual environment, ``benchmarks/peers/.venvs/PEER`` (git-ignored), never in the
project's: the first run makes it with ``benchmarks/peers/setup.sh PEER`` (from the package index; its seconds
are in the record as ``setup_s``). The peers' own scripts (``benchmarks/peers/stardist_run.py``,
``cellpose_run.py``) say which of their documented defaults they use and how the epochs are chosen to fill the
budget. Nothing is downloaded at run time: no pretrained weights, no sample data.

The budget is counted as ``biounet train --time-budget`` counts it: from when the training images are in memory
through target preparation, training and validation during training; the choices made afterwards on validation
images (StarDist's ``optimize_thresholds``, as biounet's choice of post-processing) and the prediction of the test
images are timed separately. ``wall_s`` is the whole run, interpreter start-up included.

This script needs only the standard library, so any Python 3.10+ runs it (the project's ``.venv`` or not).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PEERS: tuple[str, ...] = ("stardist", "cellpose")
PEER_DIR = Path(__file__).resolve().parent / "peers"
VENVS = PEER_DIR / ".venvs"
RECORD_NAME = "peer_run.json"
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")  # what the peers' scripts read (runkit)


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``15m``, ``1.5h`` or ``1h30m`` (the grammar of ``biounet train --time-budget``).

    >>> parse_duration("1h30m"), parse_duration("2m"), parse_duration("90")
    (5400.0, 120.0, 90.0)

    Raises
    ------
    ValueError
        If ``text`` is not such a duration, or is zero.
    """
    cleaned = text.strip().lower()
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", cleaned)
    if not cleaned or parts is None:
        raise ValueError(f"must be a duration such as 90s, 15m or 1h, got {text!r}")
    hours, minutes, seconds = (float(p) if p else 0.0 for p in parts.groups())
    value = hours * 3600 + minutes * 60 + seconds
    if value <= 0:
        raise ValueError(f"must be a positive duration, got {text!r}")
    return value


def venv_python(peer: str, venvs: Path = VENVS) -> Path:
    """The interpreter of ``peer``'s environment.

    Raises
    ------
    ValueError
        If ``peer`` is not one of :data:`PEERS`.
    """
    if peer not in PEERS:
        raise ValueError(f"peer must be one of {PEERS}, got {peer!r}")
    return venvs / peer / "bin" / "python"


def environment_ready(peer: str, venvs: Path = VENVS) -> bool:
    """Whether ``setup.sh`` finished making ``peer``'s environment (it writes ``ready`` last)."""
    return venv_python(peer, venvs).exists() and (venvs / peer / "ready").is_file()


def ensure_environment(peer: str) -> float | None:
    """Make ``peer``'s environment where it is not ready; the seconds that took, or None where it was ready.

    Raises
    ------
    RuntimeError
        If ``setup.sh`` fails (its output is on stderr).
    """
    if environment_ready(peer):
        return None
    start = time.perf_counter()
    print(f"peers.py: making the {peer} environment with benchmarks/peers/setup.sh {peer}", file=sys.stderr)
    result = subprocess.run(["bash", str(PEER_DIR / "setup.sh"), peer], stdout=sys.stderr, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"benchmarks/peers/setup.sh {peer} failed with exit code {result.returncode}")
    return time.perf_counter() - start


def run_command(peer: str, *, data: Path, test: Sequence[Path], budget_s: float, out: Path, seed: int,
                python: Path | None = None) -> list[str]:
    """The command that runs ``peer``'s script in its environment, writing its record to ``OUT/peer_run.json``.

    >>> run_command("cellpose", data=Path("d"), test=[Path("a.tif")], budget_s=120.0, out=Path("o"), seed=1,
    ...             python=Path("py"))[2:]
    ['--data', 'd', '--test', 'a.tif', '--budget-s', '120', '--out', 'o', '--record', 'o/peer_run.json', '--seed', '1']
    """
    python = venv_python(peer) if python is None else python
    return [str(python), str(PEER_DIR / f"{peer}_run.py"), "--data", str(data), "--test", *map(str, test),
            "--budget-s", f"{budget_s:g}", "--out", str(out), "--record", str(out / RECORD_NAME), "--seed", str(seed)]


def read_record(path: Path) -> dict[str, Any]:
    """The JSON line a peer's script wrote: its last non-empty line, which must be a JSON object.

    Raises
    ------
    FileNotFoundError
        If the script wrote none (it failed before the end).
    ValueError
        If the last line is not a JSON object.
    """
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path}: empty; expected one JSON line")
    try:
        record = json.loads(lines[-1])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: last line is not JSON ({err})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: last line is {type(record).__name__}, expected a JSON object")
    return record


def expand_test_images(paths: Sequence[Path]) -> list[Path]:
    """The images to predict: files as given, folders as their image files (``IMAGE_SUFFIXES``) sorted by name.

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    ValueError
        If a folder holds no image file.
    """
    images: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            if not found:
                raise ValueError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)})")
            images += found
        elif path.is_file():
            images.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return images


def _check_data(data: Path) -> None:
    for folder in (data / "images", data / "labels"):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such directory (--data must be a pairs folder)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("peer", choices=PEERS)
    parser.add_argument("--data", type=Path, required=True, help="pairs folder: images/ and labels/")
    parser.add_argument("--test", type=Path, nargs="+", required=True, help="images to predict, or folders of them")
    parser.add_argument("--time-budget", required=True, help="training time, e.g. 10m, 600s, 1h")
    parser.add_argument("--out", type=Path, required=True, help="folder for <stem>_instances.tif and the record")
    parser.add_argument("--seed", type=int, default=42, help="seed of the split and the weights (default: 42)")
    args = parser.parse_args(argv)
    try:
        budget_s = parse_duration(args.time_budget)
        _check_data(args.data)
        test = expand_test_images(args.test)
        setup_s = ensure_environment(args.peer)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"peers.py: error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    record_path = args.out / RECORD_NAME
    record_path.unlink(missing_ok=True)
    command = run_command(args.peer, data=args.data, test=test, budget_s=budget_s, out=args.out, seed=args.seed)
    start = time.perf_counter()
    # the peer's own output (Keras progress bars, Cellpose's log) goes to stderr: stdout is the record alone
    result = subprocess.run(command, stdout=sys.stderr, check=False, env={**os.environ, "PYTHONNOUSERSITE": "1"})
    wall_s = time.perf_counter() - start
    if result.returncode != 0:
        print(f"peers.py: error: the {args.peer} run failed with exit code {result.returncode}", file=sys.stderr)
        return 1
    typed = sys.argv[1:] if argv is None else list(argv)
    record = {**read_record(record_path), "wall_s": round(wall_s, 1),
              "setup_s": None if setup_s is None else round(setup_s, 1),
              "command": shlex.join(["python", "benchmarks/peers.py", *typed])}
    record_path.write_text(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
