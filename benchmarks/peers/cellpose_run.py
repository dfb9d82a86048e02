"""Cellpose 3 from scratch on a pairs folder within a time budget, then its instances for each test image.

Run by ``benchmarks/peers.py cellpose`` with the interpreter of ``benchmarks/peers/.venvs/cellpose``; not for the
project's environment. What it does is ``python -m cellpose --train --pretrained_model None`` with the CLI's
defaults, through the same calls:

- ``CellposeModel(pretrained_model=False, diam_mean=30, nchan=2)`` (random weights: nothing is downloaded),
  grayscale channels ``[0, 0]``, Cellpose's own normalisation (percentiles 1 and 99 of each image);
- ``train.train_seg`` with SGD, learning rate 0.2, weight decay 1e-5, momentum 0.9, batch 8, every training image
  once per epoch, images with fewer than 5 masks left out (``min_train_masks``), each image rescaled to
  diameter 30 from its masks' median diameter (``rescale``), random 224x224 crops with rotation and scaling;
- no validation images: the CLI validates only on a ``--test_dir`` and keeps the last epoch's weights either way,
  so the whole training folder trains;
- the instances of each test image with ``CellposeModel.eval`` at the diameter learned from the training masks
  (``net.diam_labels``, the mean of the images' median diameters, which ``train_seg`` stores in the model),
  flow threshold 0.4 and cell-probability threshold 0, as the CLI does.

Epochs: the CLI's ``n_epochs`` (500) is planned, so the learning rate follows its schedule (warm-up from 0 over 10
epochs, then constant until the last 100, which halve it ten times), and training stops by the clock at an epoch's
end: before an epoch starts, it is skipped when it would end after the budget, judged by the longest epoch so far
(``runkit.another_epoch_fits``). For the first 100 epochs the schedule does not depend on the planned number
(``train_seg`` decays only over the last 50 epochs of a plan above 100, the last 100 of one above 300), so a run
stopped after k <= 100 epochs is the run ``n_epochs=k`` would give; beyond 100, it is the default plan cut short,
without the decay a shorter plan would end with (the record's ``epochs`` says which). The stop is a wrapper around
the network's ``forward`` that raises ``BudgetSpent`` at the first training batch of an epoch that does not fit,
before anything of that batch changes the weights; ``train_seg`` has no callback. The budget's clock
(``runkit.Deadline``) starts when the images are in memory and covers the flows (Cellpose's training targets:
``dynamics.labels_to_flows``, computed once here and handed to ``train_seg``, which would otherwise compute them
itself) and the training.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import runkit

CHANNELS = [0, 0]  # grayscale: the CLI's --chan 0 --chan2 0
CLI_DEFAULTS = {"learning_rate": 0.2, "weight_decay": 1e-5, "SGD": True, "batch_size": 8, "min_train_masks": 5}
DIAM_MEAN, NCHAN, BSIZE = 30.0, 2, 224
N_EPOCHS = 500  # the CLI's --n_epochs


def count_masks(labels: np.ndarray) -> int:
    """Instances in a label image (0 is background)."""
    return int(np.count_nonzero(np.unique(labels)))


class BudgetSpent(Exception):
    """Raised by the network's wrapped ``forward`` when the next epoch would end after the budget."""


def stop_by_clock(net: Any, deadline: runkit.Deadline, batches_per_epoch: int, log: dict[str, Any]) -> None:
    """Wrap ``net.forward`` so that training batches are counted into ``log`` and :class:`BudgetSpent` is raised at
    the first batch of an epoch that would end after the budget; ``del net.forward`` removes the wrapper."""
    forward = net.forward

    def forward_within_budget(*args: Any, **kwargs: Any) -> Any:
        if net.training:
            if log["batches"] % batches_per_epoch == 0:  # an epoch begins
                now = time.perf_counter()
                if log["batches"]:
                    log["epoch_s"].append(round(now - log["epoch_start"], 2))
                if not runkit.another_epoch_fits(deadline.remaining(), log["epoch_s"]):
                    raise BudgetSpent
                log["epoch_start"] = now
            log["batches"] += 1
        return forward(*args, **kwargs)

    net.forward = forward_within_budget


def main() -> None:
    args = runkit.parse_run_args(__doc__.splitlines()[0])
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")  # train_seg's progress, to stderr
    started = time.perf_counter()

    import torch
    from cellpose import dynamics, models, train
    from cellpose.version import version as cellpose_version

    stems, images, labels = runkit.read_pairs(args.data)
    tests = [runkit.read_image(path) for path in args.test]
    deadline = runkit.Deadline(args.budget_s)
    torch.manual_seed(args.seed)
    model = models.CellposeModel(gpu=False, pretrained_model=False, diam_mean=DIAM_MEAN, nchan=NCHAN)
    flows = dynamics.labels_to_flows([y.copy() for y in labels], device=model.device)
    flows_s = deadline.elapsed()

    kept = [i for i, y in enumerate(labels) if count_masks(y) >= CLI_DEFAULTS["min_train_masks"]]
    if not kept:
        raise ValueError(f"{args.data}: no training image has {CLI_DEFAULTS['min_train_masks']} masks or more")
    batches_per_epoch = -(-len(kept) // CLI_DEFAULTS["batch_size"])
    log: dict[str, Any] = {"batches": 0, "epoch_s": [], "stopped": None}
    save_path = args.out / "model"
    (save_path / "models").mkdir(parents=True, exist_ok=True)
    stop_by_clock(model.net, deadline, batches_per_epoch, log)
    try:
        train.train_seg(
            model.net, train_data=[x.astype(np.float32) for x in images], train_labels=flows, channels=CHANNELS,
            normalize=True, learning_rate=CLI_DEFAULTS["learning_rate"], weight_decay=CLI_DEFAULTS["weight_decay"],
            SGD=CLI_DEFAULTS["SGD"], batch_size=CLI_DEFAULTS["batch_size"], n_epochs=N_EPOCHS,
            min_train_masks=CLI_DEFAULTS["min_train_masks"], save_path=str(save_path), model_name="cellpose_scratch")
    except BudgetSpent:
        log["stopped"] = "another epoch would end after the budget"
    finally:
        del model.net.forward
    train_s = deadline.elapsed()
    epochs = log["batches"] // batches_per_epoch
    model.net.save_model(str(save_path / "models" / "cellpose_scratch"))
    diameter = float(model.net.diam_labels.item())

    predict_start = time.perf_counter()
    outputs = []
    for path, image in zip(args.test, tests):
        masks = model.eval(image.astype(np.float32), channels=CHANNELS, diameter=diameter)[0]
        target = runkit.instances_path(args.out, path)
        runkit.write_instances(target, masks)
        outputs.append({"image": str(path), "output": str(target), "instances": count_masks(masks)})
    predict_s = time.perf_counter() - predict_start

    record = {
        "peer": "cellpose", "version": cellpose_version,
        "packages": {"torch": torch.__version__, "numpy": np.__version__},
        "settings": {**CLI_DEFAULTS, "momentum": 0.9, "diam_mean": DIAM_MEAN, "nchan": NCHAN, "channels": CHANNELS,
                     "bsize": BSIZE, "n_epochs_planned": N_EPOCHS, "diameter": round(diameter, 2),
                     "flow_threshold": 0.4, "cellprob_threshold": 0.0, "seed": args.seed, "torch_threads":
                     torch.get_num_threads()},
        "train_images": [stems[i] for i in kept], "left_out_images": [s for i, s in enumerate(stems) if i not in kept],
        "budget_s": args.budget_s, "epochs": epochs, "steps": epochs * batches_per_epoch, "epoch_s": log["epoch_s"],
        "stopped": log["stopped"], "flows_s": round(flows_s, 1),
        "model_file": str(save_path / "models" / "cellpose_scratch"),
        "train_s": round(train_s, 1), "predict_s": round(predict_s, 1),
        "run_s": round(time.perf_counter() - started, 1), "test": outputs,
    }
    runkit.write_record(args.record, record)


if __name__ == "__main__":
    main()
