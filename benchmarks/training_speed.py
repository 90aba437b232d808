"""Time training steps of the Maze2D CPU presets with and without bf16 autocast (``trainer.bf16``), side by side.

Usage: ``python benchmarks/training_speed.py [--repeats 15] [--threads 2] [--presets umaze medium large]``.
Each preset's network (dim 16, dim_mults (1, 4, 8)) and loss (x0 prediction, N 64, batch 32 × 2) trains on random
windows; float32 and bf16 steps alternate in one process so machine noise hits both alike, and medians are quoted.
The ratio says how many more steps bf16 buys in the same wall time. Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.diffusion.normalization import IdentityNormalizer
from diffuser.models import TemporalUnet

# preset: (horizon in states, observation dim, action dim): experiment=maze2d_{umaze,medium,large}_cpu
PRESETS = {"umaze": (128, 4, 2), "medium": (64, 4, 2), "large": (96, 4, 2)}


def make_model(horizon: int, observation_dim: int, action_dim: int) -> GaussianDiffusion:
    net = TemporalUnet(horizon=horizon, transition_dim=observation_dim + action_dim, dim=16, dim_mults=(1, 4, 8))
    return GaussianDiffusion(net, IdentityNormalizer(observation_dim + action_dim), horizon=horizon,
                             observation_dim=observation_dim, action_dim=action_dim, n_diffusion_steps=64,
                             clip_denoised=True)


def timed_step(model: GaussianDiffusion, optimizer: torch.optim.Optimizer, batch: torch.Tensor, bf16: bool) -> float:
    """One optimizer step of two micro-batches (the presets' gradient_accumulate_every), in seconds."""
    start = time.perf_counter()
    for micro in batch.chunk(2):
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss, _ = model.loss(micro, {0: micro[:, 0, 2:]})
        (loss / 2).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description="Training steps/s with and without bf16 autocast.")
    parser.add_argument("--repeats", type=int, default=15, help="timed steps of each kind per preset")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the machine's cores)")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'preset':>7} {'fp32 steps/s':>13} {'bf16 steps/s':>13} {'bf16 / fp32':>12}   ({args.threads} threads, "
          f"median of {args.repeats})")
    for name in args.presets:
        horizon, observation_dim, action_dim = PRESETS[name]
        torch.manual_seed(0)
        model = make_model(horizon, observation_dim, action_dim)
        optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
        batch = torch.rand(64, horizon, observation_dim + action_dim) * 2 - 1
        times: dict[bool, list[float]] = {False: [], True: []}
        for repeat in range(args.repeats + 2):  # two warm-up rounds
            for bf16 in (False, True):
                seconds = timed_step(model, optimizer, batch, bf16)
                if repeat >= 2:
                    times[bf16].append(seconds)
        fp32, bf16 = (statistics.median(times[k]) for k in (False, True))
        print(f"{name:>7} {1 / fp32:>13.2f} {1 / bf16:>13.2f} {fp32 / bf16:>11.2f}x")


if __name__ == "__main__":
    main()
