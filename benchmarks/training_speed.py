"""Time training steps of the CPU presets' networks with and without bf16 autocast (``trainer.bf16``), side by side.

Usage: ``python benchmarks/training_speed.py [--repeats 15] [--threads 2] [--presets umaze medium large ...]``.
Each preset's network and loss (x0 prediction, batch 32 × 2) trains on random windows: the Maze2D presets (dim 16,
dim_mults (1, 4, 8), N 64), the hopper/walker2d network (H 32, dim_mults (1, 2, 4, 8), N 20) at the CPU preset's
dim 16 and the paper's dim 32, and the halfcheetah CPU network (H 4, dim 16, (1, 4, 8), attention). float32 and bf16
steps alternate in one process so machine noise hits both alike, and medians are quoted. The bf16 / fp32 ratio says
how many more steps bf16 buys in the same wall time; "vs first" compares each row's faster mode with the first row
timed. Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from dataclasses import dataclass

import torch

from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.diffusion.normalization import IdentityNormalizer
from diffuser.models import TemporalUnet



@dataclass(frozen=True)
class Preset:
    horizon: int  # states per window
    observation_dim: int
    action_dim: int
    dim: int
    dim_mults: tuple[int, ...]
    n_diffusion_steps: int
    attention: bool = False


PRESETS = {
    "umaze": Preset(128, 4, 2, 16, (1, 4, 8), 64),  # experiment=maze2d_umaze_cpu
    "medium": Preset(64, 4, 2, 16, (1, 4, 8), 64),  # experiment=maze2d_medium_cpu
    "large": Preset(96, 4, 2, 16, (1, 4, 8), 64),  # experiment=maze2d_large_cpu
    "hopper16": Preset(32, 11, 3, 16, (1, 2, 4, 8), 20),  # experiment=locomotion_cpu on hopper-medium-v2
    "hopper32": Preset(32, 11, 3, 32, (1, 2, 4, 8), 20),  # the same at the paper's width (experiment=locomotion)
    "halfcheetah16": Preset(4, 17, 6, 16, (1, 4, 8), 20, attention=True),  # experiment=halfcheetah_cpu
}


def make_model(preset: Preset) -> GaussianDiffusion:
    transition_dim = preset.observation_dim + preset.action_dim
    net = TemporalUnet(horizon=preset.horizon, transition_dim=transition_dim, dim=preset.dim,
                       dim_mults=preset.dim_mults, attention=preset.attention)
    return GaussianDiffusion(net, IdentityNormalizer(transition_dim), horizon=preset.horizon,
                             observation_dim=preset.observation_dim, action_dim=preset.action_dim,
                             n_diffusion_steps=preset.n_diffusion_steps)


def timed_step(model: GaussianDiffusion, optimizer: torch.optim.Optimizer, batch: torch.Tensor, bf16: bool) -> float:
    """One optimizer step of two micro-batches (the presets' gradient_accumulate_every), in seconds."""
    start = time.perf_counter()
    for micro in batch.chunk(2):
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss, _ = model.loss(micro, {0: micro[:, 0, model.action_dim:]})
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
    print(f"{'preset':>13} {'fp32 steps/s':>13} {'bf16 steps/s':>13} {'bf16 / fp32':>12} {'vs first':>9}   "
          f"({args.threads} threads, median of {args.repeats})")
    first = None
    for name in args.presets:
        preset = PRESETS[name]
        torch.manual_seed(0)
        model = make_model(preset)
        optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
        batch = torch.rand(64, preset.horizon, preset.observation_dim + preset.action_dim) * 2 - 1
        times: dict[bool, list[float]] = {False: [], True: []}
        for repeat in range(args.repeats + 2):  # two warm-up rounds
            for bf16 in (False, True):
                seconds = timed_step(model, optimizer, batch, bf16)
                if repeat >= 2:
                    times[bf16].append(seconds)
        fp32, bf16 = (statistics.median(times[k]) for k in (False, True))
        first = first or min(fp32, bf16)
        print(f"{name:>13} {1 / fp32:>13.2f} {1 / bf16:>13.2f} {fp32 / bf16:>11.2f}x {first / min(fp32, bf16):>8.2f}x")


if __name__ == "__main__":
    main()
