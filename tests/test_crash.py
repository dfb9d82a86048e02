"""Nothing lost: training killed with SIGKILL at random moments (also inside the save sequence) resumes, and ends
with the weights of a run that was never killed; an interrupted train exits 130/143 and says how to resume."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from biounet.data.checkpoint import load_checkpoint

TRAIN = ["train", "--data", "synthetic:cells,n=4,size=96x96,seed=0", "--base-channels", "4", "--depth", "2",
         "--tile", "92", "--iterations", "100", "--val-every", "2", "--precision", "fp32", "--workers", "0",
         "--target", "paper", "-q"]


def _train(out: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "biounet", *TRAIN, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _kill_after_a_save(process: subprocess.Popen[bytes], run: Path, rng: np.random.Generator) -> bool:
    """Wait for the run to save ``last.pt`` once more, then SIGKILL it a random 0-200 ms later (inside the next
    steps, validation and save sequence); False if it finished first."""
    last = run / "last.pt"
    before = last.stat().st_mtime_ns if last.exists() else 0
    deadline = time.time() + 120
    while process.poll() is None and time.time() < deadline:
        if last.exists() and last.stat().st_mtime_ns > before:
            time.sleep(float(rng.uniform(0.0, 0.2)))
            break
        time.sleep(0.005)
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    return True


def _steps(run: Path) -> list[int]:
    with (run / "metrics.csv").open() as handle:
        return [int(float(row["step"])) for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    whole = tmp_path / "whole"
    assert _train(whole).wait(timeout=300) == 0
    rng = np.random.default_rng(0)
    run, kills = tmp_path / "killed", 0
    for _ in range(60):  # at most: each attempt makes progress or is killed
        resume = ["--resume"] if (run / "last.pt").exists() else []
        process = _train(run, *resume)
        if kills < 20 and _kill_after_a_save(process, run, rng):
            kills += 1
        code = process.wait(timeout=300)
        stderr = process.stderr.read().decode() if process.stderr else ""
        assert code in (0, -signal.SIGKILL), stderr  # every resume succeeds (or is the one we killed)
        if code == 0:
            break
    else:
        pytest.fail("training never finished")
    assert kills >= 10  # the kills hit a running training (each after a save)
    steps = _steps(run)
    assert steps == sorted(set(steps)) and steps[-1] == 100  # no duplicate row
    assert not list(run.glob(".*.tmp"))  # no orphan temporary file
    final, expected = load_checkpoint(run / "last.pt")["model_state"], load_checkpoint(whole / "last.pt")["model_state"]
    assert all(np.array_equal(final[k].numpy(), expected[k].numpy()) for k in expected)


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_interrupted_train_exits_with_the_signal_code(tmp_path, sig, code):
    process = _train(tmp_path / "run", "--iterations", "100000")
    deadline = time.time() + 120
    while not (tmp_path / "run" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(sig)
    assert process.wait(timeout=120) == code
    stderr = process.stderr.read().decode() if process.stderr else ""
    assert "--resume" in stderr and "interrupted at step" in stderr
    assert not (tmp_path / "run" / "model.pt").exists()
