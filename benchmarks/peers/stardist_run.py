"""StarDist 2D from scratch on a pairs folder within a time budget, then its instances for each test image.

Run by ``benchmarks/peers.py stardist`` with the interpreter of ``benchmarks/peers/.venvs/stardist``; not for the
project's environment. What it does is StarDist's own training notebook (examples/2D/2_training.ipynb):

- images normalised to their percentiles 1 and 99.8 (``csbdeep.utils.normalize``), label holes filled
  (``fill_label_holes``);
- 15 % of the training folder held back for validation (seeded permutation, ``runkit.validation_split``): Keras
  validates on it after every epoch, the best epoch's weights are kept (``weights_best``), and
  ``optimize_thresholds`` chooses the probability and NMS thresholds on it;
- ``Config2D(n_rays=32, grid=(2, 2), n_channel_in=1)``, every other setting its default (U-Net depth 3, batch of
  4 patches of 256x256, Adam at 3e-4, 100 steps per epoch, learning rate halved on a 40-epoch plateau), and the
  notebook's augmenter (random flips and 90-degree rotations, intensity scaled by U(0.6, 2) and shifted by
  U(-0.2, 0.2), Gaussian noise of sigma U(0, 0.02)). Where the smallest training image is below 256 px, the patch
  is the largest multiple of 16 that fits (``settings.train_patch_size`` says so).

Epochs: the notebook's ``train_epochs`` (400) is far beyond a CPU budget, so training stops by the clock. A
callback ends it after the epoch when another epoch as long as the longest one so far (validation included) would
not end within the budget; within the first epoch, at the step where the budget runs out. No learning-rate
schedule depends on the planned number of epochs (only the plateau rule, which looks back), so stopping after
epoch k is the run ``train(epochs=k)`` would give. The budget's clock (``runkit.Deadline``) starts when the images
are in memory; ``optimize_thresholds`` runs after it, as ``biounet train`` chooses its post-processing after its
budget, and its time is in the record (``threshold_s``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import runkit

N_RAYS, GRID = 32, (2, 2)
VALIDATION_FRACTION = 0.15
NORMALIZE_PERCENTILES = (1.0, 99.8)


def augmenter(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training notebook's augmenter: random flips and axis permutation, intensity change, Gaussian noise."""
    perm = tuple(np.random.permutation(y.ndim))
    x, y = x.transpose(perm + tuple(range(y.ndim, x.ndim))), y.transpose(perm)
    for axis in range(y.ndim):
        if np.random.rand() > 0.5:
            x, y = np.flip(x, axis=axis), np.flip(y, axis=axis)
    x = x * np.random.uniform(0.6, 2) + np.random.uniform(-0.2, 0.2)
    sigma = 0.02 * np.random.uniform(0, 1)
    return x + sigma * np.random.normal(0, 1, x.shape), y


def patch_size(shapes: list[tuple[int, ...]], default: tuple[int, int]) -> tuple[int, int]:
    """``default`` where every image holds it, else the largest multiple of 16 (2^depth x grid) that fits."""
    smallest = (min(s[0] for s in shapes), min(s[1] for s in shapes))
    return tuple(p if p <= s else s // 16 * 16 for p, s in zip(default, smallest))  # type: ignore[return-value]


def budget_callback(deadline: runkit.Deadline, log: dict[str, Any]) -> Any:
    """A Keras callback that stops training when the budget is spent (see the module docstring); counts steps and
    epochs into ``log``."""
    from csbdeep.utils.tf import keras_import

    Callback = keras_import("callbacks", "Callback")

    class Budget(Callback):  # type: ignore[misc, valid-type]
        def on_train_begin(self, logs: Any = None) -> None:
            log["fit_begin_s"] = round(deadline.elapsed(), 2)

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch_start = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            log["steps"] += 1
            if deadline.remaining() <= 0:
                log["stopped"] = "budget spent within an epoch"
                self.model.stop_training = True

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            log["epochs"] += 1
            log["epoch_s"].append(round(time.perf_counter() - self.epoch_start, 2))
            log["epoch_end_s"].append(round(deadline.elapsed(), 2))
            if logs and "val_loss" in logs:
                log["val_loss"].append(float(logs["val_loss"]))
            if not runkit.another_epoch_fits(deadline.remaining(), log["epoch_s"]) and not self.model.stop_training:
                log["stopped"] = "another epoch would end after the budget"
                self.model.stop_training = True

    return Budget()


def main() -> None:
    args = runkit.parse_run_args(__doc__.splitlines()[0])
    started = time.perf_counter()

    import keras
    import stardist
    import tensorflow as tf
    from csbdeep.utils import normalize
    from stardist import calculate_extents, fill_label_holes
    from stardist.models import Config2D, StarDist2D

    stems, images, labels = runkit.read_pairs(args.data)
    tests = [runkit.read_image(path) for path in args.test]
    low, high = NORMALIZE_PERCENTILES
    deadline = runkit.Deadline(args.budget_s)
    x_all = [normalize(x, low, high, axis=(0, 1)) for x in images]
    y_all = [fill_label_holes(y) for y in labels]
    train_idx, val_idx = runkit.validation_split(len(stems), fraction=VALIDATION_FRACTION, seed=args.seed)
    keras.utils.set_random_seed(args.seed)

    default = Config2D(n_rays=N_RAYS, grid=GRID, n_channel_in=1)
    patch = patch_size([x.shape for x in x_all], tuple(default.train_patch_size))
    config = Config2D(n_rays=N_RAYS, grid=GRID, n_channel_in=1, use_gpu=False, train_patch_size=patch)
    model = StarDist2D(config, name="stardist", basedir=str(args.out / "model"))
    median_extent = calculate_extents([y_all[i] for i in train_idx], np.median)
    field_of_view = np.array(model._axes_tile_overlap("YX"))  # the notebook's check of object size against it
    model.prepare_for_training()
    log: dict[str, Any] = {"steps": 0, "epochs": 0, "epoch_s": [], "epoch_end_s": [], "fit_begin_s": None,
                           "val_loss": [], "stopped": None}
    model.callbacks.append(budget_callback(deadline, log))
    model.train([x_all[i] for i in train_idx], [y_all[i] for i in train_idx],
                validation_data=([x_all[i] for i in val_idx], [y_all[i] for i in val_idx]),
                augmenter=augmenter, seed=args.seed)
    train_s = deadline.elapsed()

    thresholds_start = time.perf_counter()
    model.optimize_thresholds([x_all[i] for i in val_idx], [y_all[i] for i in val_idx])
    threshold_s = time.perf_counter() - thresholds_start

    predict_start = time.perf_counter()
    outputs = []
    args.out.mkdir(parents=True, exist_ok=True)
    for path, image in zip(args.test, tests):
        instances, _ = model.predict_instances(normalize(image, low, high, axis=(0, 1)))
        target = runkit.instances_path(args.out, path)
        runkit.write_instances(target, instances)
        outputs.append({"image": str(path), "output": str(target), "instances": int(len(np.unique(instances)) - 1)})
    predict_s = time.perf_counter() - predict_start

    import csbdeep

    record = {
        "peer": "stardist", "version": stardist.__version__,
        "packages": {"tensorflow": tf.__version__, "keras": keras.__version__, "csbdeep": csbdeep.__version__,
                     "numpy": np.__version__},
        "settings": {
            "n_rays": config.n_rays, "grid": list(config.grid), "unet_n_depth": config.unet_n_depth,
            "train_patch_size": list(config.train_patch_size), "train_batch_size": config.train_batch_size,
            "train_learning_rate": config.train_learning_rate, "train_steps_per_epoch": config.train_steps_per_epoch,
            "train_epochs_planned": config.train_epochs, "train_reduce_lr": config.train_reduce_lr,
            "normalize_percentiles": list(NORMALIZE_PERCENTILES), "augmenter": "notebook (fliprot, intensity, noise)",
            "validation_fraction": VALIDATION_FRACTION, "seed": args.seed,
            "thresholds": {"prob": float(model.thresholds.prob), "nms": float(model.thresholds.nms)},
        },
        "train_images": [stems[i] for i in train_idx], "validation_images": [stems[i] for i in val_idx],
        "median_object_extent_px": [float(v) for v in median_extent],
        "field_of_view_px": [int(v) for v in field_of_view],
        "budget_s": args.budget_s, "epochs": log["epochs"], "steps": log["steps"], "epoch_s": log["epoch_s"],
        "val_loss": log["val_loss"], "stopped": log["stopped"], "fit_begin_s": log["fit_begin_s"],
        "epoch_end_s": log["epoch_end_s"], "train_s": round(train_s, 1),
        "threshold_s": round(threshold_s, 1), "predict_s": round(predict_s, 1),
        "run_s": round(time.perf_counter() - started, 1), "test": outputs,
    }
    runkit.write_record(args.record, record)


if __name__ == "__main__":
    main()
