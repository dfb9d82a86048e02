"""Distributed data-parallel training with PyTorch's own engine: two CPU processes over gloo."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from biounet.data.datasets import load_dataset
from biounet.training.config import TrainConfig
from biounet.training.events import StepEvent, ValidationEvent
from biounet.training.train import TileSampler, fit, prepare_samples

CONFIG = TrainConfig(data="synthetic:cells,n=4,size=96x96,seed=0", base_channels=4, depth=2, tile=92,
                     batch_size=1, iterations=4, val_every=2, workers=0, lr=3e-3, warmup_steps=1, target="paper")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rank_main(rank: int, world_size: int, port: int, run_dir: str, out_dir: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    events: list[object] = []
    result = fit(CONFIG, run_dir, device="cpu", progress=events.append)
    # only rank 0 reports; its events are typed
    assert (not events) if rank else {type(e) for e in events} == {StepEvent, ValidationEvent}
    assert result.model is not None
    torch.save(result.model.state_dict(), f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.numerics
@pytest.mark.slow
def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    port = _free_port()
    mp.spawn(_rank_main, args=(2, port, str(tmp_path / "run"), str(tmp_path)), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(first[k], second[k]) for k in first)
    # only rank 0 wrote the run directory, and it is complete
    assert {"last.pt", "model.pt", "config.toml", "metrics.csv"} <= {p.name for p in (tmp_path / "run").iterdir()}
    # and the model moved away from its initialisation
    torch.manual_seed(CONFIG.seed)
    from biounet.core.model import UNet

    initial = UNet(CONFIG.model_config(1, 2)).state_dict()
    assert any(not torch.equal(initial[k], first[k]) for k in first)


def test_ranks_sample_different_tiles():
    samples = prepare_samples(load_dataset(CONFIG.data), CONFIG, 2)
    rank0 = TileSampler(samples, CONFIG, rank=0, length=2)[0][0]
    rank1 = TileSampler(samples, CONFIG, rank=1, length=2)[0][0]
    assert not torch.equal(rank0, rank1)
    assert torch.equal(rank0, TileSampler(samples, replace(CONFIG), rank=0, length=2)[0][0])
