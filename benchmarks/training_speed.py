"""Time the trainer's step on the presets' networks, against its own forward + backward passes, side by side.

Usage: ``python benchmarks/training_speed.py [--repeats 30] [--threads 1] [--presets tiny hopper16 ...] [--bf16]
[--compile reduce-overhead] [--one-batch] [--device cuda]``.

For each preset, one process times, in turn (round-robin, so machine noise hits every mode alike; medians quoted):
- **step**: ``Trainer.train_step()`` of the real trainer on a synthetic window dataset (batch 32 × 2: gather the
  batch, two micro-batches of forward + backward, gradient norm, divergence guard, Adam);
- **passes**: the same two micro-batches of forward + backward alone, then zeroing the gradients: the arithmetic a
  step cannot avoid;
- **step bf16** (with ``--bf16``): the step under bfloat16 autocast (``trainer.bf16``);
- **step compiled** (with ``--compile MODE``): the step with ``trainer.compile=MODE`` (its compilation happens in
  the warm-up rounds and is reported apart);
- **step 64 x 1** (with ``--one-batch``): the same 64 windows as one micro-batch (``trainer.batch_size=64
  trainer.gradient_accumulate_every=1``): the same gradient (the mean loss over 64 windows), one pass instead of two.

"fixed cost" = step / passes: what the step costs beyond its passes (1.00 = none). steps/s and samples/s (64 windows
per step) are the step's. Presets: the tiny test network (dim 8, H 16), the Maze2D CPU presets (dim 16, dim_mults
(1, 4, 8), N 64), hopper/walker2d at the CPU preset's dim 16 and the paper's dim 32 (H 32, (1, 2, 4, 8), N 20), the
halfcheetah CPU network (H 4, dim 16, (1, 4, 8), attention), the paper U-Maze and Large networks (dim 32, H 128
and 384), and the transformer option at the earlier Medium (H 64) and the Large CPU presets (``--presets medium_h64
medium_transformer large large_transformer`` compares them side by side). ``--device cuda`` times the same on a GPU (synchronised):
benchmarks/device_check.sh. Not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from diffuser.diffusion.conditioning import Batch
from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.diffusion.normalization import IdentityNormalizer
from diffuser.models import TemporalTransformer, TemporalUnet
from diffuser.runs.logger import Logger
from diffuser.training.trainer import Trainer


@dataclass(frozen=True)
class Preset:
    horizon: int  # states per window
    observation_dim: int
    action_dim: int
    dim: int
    dim_mults: tuple[int, ...]
    n_diffusion_steps: int
    attention: bool = False
    network: str = "unet"  # unet | transformer (model.network); a transformer reads width, depth and heads, not dim
    width: int = 0
    depth: int = 0
    heads: int = 0


PRESETS = {
    "tiny": Preset(16, 4, 2, 8, (1, 2, 4), 20),  # the test suite's size
    "umaze": Preset(128, 4, 2, 16, (1, 4, 8), 64),  # experiment=maze2d_umaze_cpu
    "medium": Preset(16, 4, 2, 16, (1, 4, 8), 64),  # experiment=maze2d_medium_cpu (16 states, env.stride 15)
    "medium_h64": Preset(64, 4, 2, 16, (1, 4, 8), 64),  # the earlier Medium preset: 64 states, env.stride 4
    "large": Preset(96, 4, 2, 16, (1, 4, 8), 64),  # experiment=maze2d_large_cpu
    # jumpy plans at the Maze2D CPU network: fewer states farther apart (env.stride 8 or 15)
    "maze_h32": Preset(32, 4, 2, 16, (1, 4, 8), 64),  # e.g. maze2d_medium_cpu horizon=32 env.stride=8
    # experiment=maze2d_{medium,large}_cpu model=temporal_transformer (width 64, 4 DiT blocks, 4 heads)
    "medium_transformer": Preset(64, 4, 2, 0, (), 64, network="transformer", width=64, depth=4, heads=4),  # H 64
    "large_transformer": Preset(96, 4, 2, 0, (), 64, network="transformer", width=64, depth=4, heads=4),
    "hopper16": Preset(32, 11, 3, 16, (1, 2, 4, 8), 20),  # experiment=locomotion_cpu on hopper-medium-v2
    "hopper32": Preset(32, 11, 3, 32, (1, 2, 4, 8), 20),  # the paper's hopper preset (experiment=locomotion)
    "halfcheetah16": Preset(4, 17, 6, 16, (1, 4, 8), 20, attention=True),  # experiment=halfcheetah_cpu
    "umaze_paper": Preset(128, 4, 2, 32, (1, 4, 8), 64),  # experiment=maze2d_umaze (the paper's)
    "large_paper": Preset(384, 4, 2, 32, (1, 4, 8), 256),  # experiment=maze2d_large (the paper's)
}


class RandomWindows:
    """A window dataset of random [a, s] rows held on ``device`` (what the trainer gathers batches from)."""

    def __init__(self, preset: Preset, n: int, device: torch.device):
        generator = torch.Generator().manual_seed(0)
        shape = (n, preset.horizon, preset.observation_dim + preset.action_dim)
        self.windows = (torch.rand(shape, generator=generator) * 2 - 1).to(device)
        self.action_dim = preset.action_dim

    def __len__(self) -> int:
        return len(self.windows)

    def get_batch(self, idx) -> Batch:
        x = self.windows[torch.as_tensor(idx, device=self.windows.device)]
        return Batch(x, {0: x[:, 0, self.action_dim :]})


def make_model(preset: Preset) -> GaussianDiffusion:
    transition_dim = preset.observation_dim + preset.action_dim
    if preset.network == "transformer":
        net = TemporalTransformer(horizon=preset.horizon, transition_dim=transition_dim, width=preset.width,
                                  depth=preset.depth, heads=preset.heads)
    else:
        net = TemporalUnet(horizon=preset.horizon, transition_dim=transition_dim, dim=preset.dim,
                           dim_mults=preset.dim_mults, attention=preset.attention)
    return GaussianDiffusion(net, IdentityNormalizer(transition_dim), horizon=preset.horizon,
                             observation_dim=preset.observation_dim, action_dim=preset.action_dim,
                             n_diffusion_steps=preset.n_diffusion_steps)


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def bench(preset: Preset, device: torch.device, repeats: int, bf16: bool, compile: str | None, one_batch: bool,
          run_dir: str) -> dict[str, float]:
    """Median seconds of a step, of its passes, of a bf16 step, of a compiled step and of a 64 x 1 step; and the
    compilation's."""
    torch.manual_seed(0)
    dataset = RandomWindows(preset, 512, device)
    options = {"step": {}}
    if bf16:
        options["step bf16"] = {"bf16": True}
    if compile:
        options["step compiled"] = {"compile": compile}
    if one_batch:
        options["step 64 x 1"] = {"batch_size": 64, "gradient_accumulate_every": 1}
    trainers = {name: Trainer(make_model(preset), dataset, Logger(run_dir, backend="disabled"), run_dir,
                              n_train_steps=10**9, device=device, progress=False, **kwargs)
                for name, kwargs in options.items()}
    compile_seconds = timed(trainers["step compiled"].train_step, device) if compile else 0.0
    plain = trainers["step"].model
    batch = dataset.get_batch(torch.arange(64) % len(dataset))

    def passes() -> None:
        for micro in (batch.trajectories[:32], batch.trajectories[32:]):
            loss, _ = plain.loss(micro, {0: micro[:, 0, preset.action_dim :]})
            (loss / 2).backward()
        plain.zero_grad(set_to_none=True)

    modes = {name: trainer.train_step for name, trainer in trainers.items()}
    modes["passes"] = passes
    times: dict[str, list[float]] = {name: [] for name in modes}
    for repeat in range(repeats + 3):  # three warm-up rounds
        for name, fn in modes.items():
            seconds = timed(fn, device)
            if repeat >= 3:
                times[name].append(seconds)
    return {**{name: statistics.median(t) for name, t in times.items()}, "compilation": compile_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description="Trainer step against its forward + backward passes.")
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds per preset")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--presets", nargs="+", default=["tiny", "hopper16"], choices=list(PRESETS))
    parser.add_argument("--bf16", action="store_true", help="also time the step under bf16 autocast")
    parser.add_argument("--compile", default=None, help="also time the step with trainer.compile=MODE")
    parser.add_argument("--one-batch", action="store_true", help="also time the step as one micro-batch of 64")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--run-dir", default="/tmp/diffuser_training_speed", help="scratch folder (nothing saved)")
    parser.add_argument("--json", default=None, help="also write the medians (seconds) per preset to this file")
    args = parser.parse_args()
    results = {}
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"{name}, torch {torch.__version__}, batch 32 x 2, median of {args.repeats} rounds")
    print(f"{'preset':>18} {'steps/s':>9} {'samples/s':>10} {'passes/s':>9} {'fixed cost':>11}"
          + (f" {'bf16 steps/s':>13} {'bf16 / fp32':>12}" if args.bf16 else "")
          + (f" {'compiled steps/s':>17} {'compiled / eager':>17} {'compile s':>10}" if args.compile else "")
          + (f" {'64x1 steps/s':>13} {'64x1 / 32x2':>12}" if args.one_batch else ""))
    for preset_name in args.presets:
        t = results[preset_name] = bench(PRESETS[preset_name], device, args.repeats, args.bf16, args.compile,
                                         args.one_batch, args.run_dir)
        line = (f"{preset_name:>18} {1 / t['step']:>9.2f} {64 / t['step']:>10.0f} {1 / t['passes']:>9.2f} "
                f"{t['step'] / t['passes']:>10.3f}x")
        if args.bf16:
            line += f" {1 / t['step bf16']:>13.2f} {t['step'] / t['step bf16']:>11.2f}x"
        if args.compile:
            line += (f" {1 / t['step compiled']:>17.2f} {t['step'] / t['step compiled']:>16.2f}x"
                     f" {t['compilation']:>10.0f}")
        if args.one_batch:
            line += f" {1 / t['step 64 x 1']:>13.2f} {t['step'] / t['step 64 x 1']:>11.2f}x"
        print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "seconds": results}, indent=2))


if __name__ == "__main__":
    main()
