"""Data-parallel training: one process per device, started by torchrun (or as SLURM tasks by submitit).

`trainer.batch_size` stays the GLOBAL micro-batch: every rank draws the same BatchStream batch and keeps its own
contiguous slice, so data order and resume are those of one process with the same batch, whatever the number of
processes. DDP averages the shards' gradients, which is the gradient of the global batch's mean loss: a loss without
random draws (BC) follows the single-process curve up to float rounding. Each rank draws its own diffusion noise
(t and ε), so diffusion curves match one process in distribution, not bit for bit. Only rank 0 writes the run folder.
A single process gets ``Distributed()`` (world_size 1), for which the methods below change nothing, so single-process
training is unchanged bit for bit.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")


class PeerError(RuntimeError):
    """Another rank failed at a point where all ranks meet; that rank reports the cause."""

    every_rank = True  # ranks > 0 exit quietly: rank 0 prints the one error line


@dataclass
class Distributed:
    """This process's place in the process group; ``Distributed()`` is the single-process case."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ setup
    @classmethod
    def start(cls) -> Distributed:
        """Join the process group described by torchrun's RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT
        (or by SLURM tasks under submitit); one process without them.

        Backends: gloo for CPU tensors, plus nccl for CUDA tensors when CUDA is available. Ranks > 0 print nothing
        to stdout (their errors still reach stderr).
        """
        _export_submitit_environment()
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
        out = cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
        if not out.is_main:
            sys.stdout = open(os.devnull, "w")
        return out

    def device(self, device: torch.device) -> torch.device:
        """Each rank its own GPU (cuda:LOCAL_RANK) when training on CUDA; the given device otherwise."""
        if not self.enabled or device.type != "cuda":
            return device
        device = torch.device("cuda", self.local_rank)
        torch.cuda.set_device(device)
        return device

    def check_batch_size(self, batch_size: int) -> None:
        """The global micro-batch must split evenly over the ranks (equal shards keep the gradient mean exact)."""
        if batch_size % self.world_size:
            raise ValueError(
                f"trainer.batch_size={batch_size} (the global micro-batch) does not split evenly over "
                f"{self.world_size} processes; pass a multiple of {self.world_size}"
            )

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """DistributedDataParallel around the module whose forward returns the loss (the module itself if single).

        Wrapping broadcasts rank 0's weights and buffers.
        """
        if not self.enabled:
            return model
        device_ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def close(self, wait_for_peers: bool = False) -> None:
        """Leave the process group. After a clean finish (``wait_for_peers``) every rank first meets the others, so
        no rank tears down gloo's connections while a peer is still in its last collective (which can abort that
        peer at exit); after an error nobody waits for a rank that may never come."""
        if self.enabled and dist.is_initialized():
            if wait_for_peers:
                dist.barrier()
            dist.destroy_process_group()

    # ------------------------------------------------------------------ data and gradients
    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch of indices: (B,) → (B / world_size,)."""
        if not self.enabled:
            return indices
        size = len(indices) // self.world_size
        return indices[self.rank * size : (self.rank + 1) * size]

    def no_sync(self, net: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        """Skip DDP's gradient all-reduce on micro-batches before the last one of an optimizer step."""
        if self.enabled and not sync:
            return net.no_sync()
        return contextlib.nullcontext()

    def seed_rank(self, seed: int, step: int = 0) -> None:
        """Ranks > 0 reseed torch so each draws its own diffusion noise; rank 0 keeps the single-process stream."""
        if self.enabled and not self.is_main:
            torch.manual_seed(((seed * 1_000_003 + self.rank) * 1_000_033 + step) % 2**63)

    # ------------------------------------------------------------------ collectives (no-ops when single)
    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank."""
        if not self.enabled:
            return flag
        value = torch.tensor([float(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean over ranks of each value (every rank passes the same keys in the same order)."""
        if not self.enabled:
            return values
        tensor = torch.tensor(list(values.values()), dtype=torch.float64)
        dist.all_reduce(tensor)
        return dict(zip(values, (tensor / self.world_size).tolist()))

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's CPU ``tensor`` stacked in rank order: (...) → (world_size, ...)."""
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor)
        return torch.stack(parts)

    def broadcast_text(self, text: str) -> str:
        """Rank 0's string on every rank (e.g. a run folder named after rank 0's clock)."""
        if not self.enabled:
            return text
        data = torch.tensor(list(text.encode()), dtype=torch.uint8)
        size = torch.tensor([len(data)])
        dist.broadcast(size, src=0)
        if not self.is_main:
            data = torch.empty(int(size.item()), dtype=torch.uint8)
        dist.broadcast(data, src=0)
        return bytes(data.tolist()).decode()

    def on_main(self, fn: Callable[[], T], what: str) -> T | None:
        """Run ``fn`` on rank 0 while the other ranks wait; if it fails, every rank raises (nobody hangs).

        Rank 0 re-raises its own error; the others raise PeerError naming ``what``.
        """
        if not self.enabled:
            return fn()
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except Exception as e:  # reported below, after telling the other ranks
                error = e
        failed = torch.tensor([float(error is not None)])
        dist.broadcast(failed, src=0)
        if error is not None:
            raise error
        if failed.item():
            raise PeerError(f"rank 0 failed while {what}; its error is above")
        return result

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the body first (e.g. generating a missing dataset), then the others."""
        if self.enabled and not self.is_main:
            dist.barrier()
        yield
        if self.enabled and self.is_main:
            dist.barrier()


def _export_submitit_environment() -> None:
    """Under submitit with several tasks (hydra.launcher.tasks_per_node > 1): torchrun's variables from the job."""
    if "WORLD_SIZE" in os.environ or "SUBMITIT_EXECUTOR" not in os.environ:
        return
    from submitit import JobEnvironment
    from submitit.helpers import TorchDistributedEnvironment

    if JobEnvironment().num_tasks > 1:
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)  # each rank picks cuda:LOCAL_RANK
