"""Time value-guided planning under each scheduler: actions/s, side by side in one process, medians.

Usage: ``python benchmarks/schedulers.py [--preset cpu|paper] [--threads 1] [--repeats 7] [--n-envs 1 50]
[--run DIFFUSION_RUN --value-run VALUE_RUN]``. Not a test.

The planners are ``GuidedPlanner``s at the Hopper settings of ``planning_speed.py`` (random weights, or a trained
pair with ``--run``), identical but for the scheduler (``diffuser/diffusion/schedulers.py``) and, for the warm-start
rows, the warm start: 4 steps, the first two guided (the CPU preset), or 2, both below t_stopgrad (selection only).
Each row plans N envs per call (N × candidates plans); env steps/s = N / median seconds per call; the ratio is to
the paper's DDPM over all 20 steps at the same N. Calls are timed round-robin after a warm-up, so machine noise hits
every row alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from diffuser.diffusion.guidance import ValueGuide
from diffuser.diffusion.schedulers import DDIMScheduler, DDPMScheduler
from diffuser.planning.guided import GuidedPlanner
from planning_speed import PRESETS, build_ours

# name → (scheduler, warm_start_steps)
ROWS = {
    "DDPM 20 (paper)": (DDPMScheduler(), 0),
    "DDPM 20, warm start 4 (CPU preset)": (DDPMScheduler(), 4),
    "DDPM 20, warm start 2 (selection)": (DDPMScheduler(), 2),
    "strided DDPM 10": (DDPMScheduler(10), 0),
    "strided DDPM 5": (DDPMScheduler(5), 0),
    "DDIM η=0, 10": (DDIMScheduler(10), 0),
    "DDIM η=0, 5": (DDIMScheduler(5), 0),
    "DDIM η=0, 3": (DDIMScheduler(3), 0),
    "DDIM η=0.5, 5": (DDIMScheduler(5, eta=0.5), 0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=list(PRESETS), default="cpu", help="width and candidates per env")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per row (round-robin)")
    parser.add_argument("--n-envs", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--run", default=None, help="a trained diffusion run (default: random weights)")
    parser.add_argument("--value-run", default=None, help="its value run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    batch_size = PRESETS[args.preset]["batch_size"]
    if args.run:
        from diffuser.runs.load import load_run

        diffusion, value = load_run(args.run).model, load_run(args.value_run).model
        observation_dim = diffusion.observation_dim
    else:
        diffusion, value = build_ours(args.seed, PRESETS[args.preset]["dim"])
        observation_dim = diffusion.observation_dim
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; preset {args.preset}: {batch_size} "
          f"candidates per env, {diffusion.n_diffusion_steps} training steps, horizon {diffusion.horizon}; "
          f"{'weights of ' + args.run if args.run else 'random weights'}")

    rng = np.random.default_rng(args.seed)
    rows = []  # (name, n, call, seconds)
    for name in args.rows:
        scheduler, warm = ROWS[name]
        for n in args.n_envs:
            planner = GuidedPlanner(diffusion, ValueGuide(value.model), batch_size=batch_size, scale=0.1,
                                    n_guide_steps=2, t_stopgrad=2, scheduler=scheduler, warm_start_steps=warm)
            observations = rng.standard_normal((n, observation_dim)).astype(np.float32)
            generator = torch.Generator().manual_seed(args.seed)
            ids = list(range(n))  # the same envs every call: the warm start has previous plans after the first
            rows.append((name, n, lambda p=planner, o=observations, g=generator, i=ids: p.plan(o, generator=g,
                                                                                               env_ids=i), []))
    for _, _, call, _ in rows:  # warm-up (and the warm start's first, cold call)
        call()
        call()
    print(f"timing {len(rows)} rows × {args.repeats} calls, round-robin ...", flush=True)
    for _ in range(args.repeats):
        for _, _, call, seconds in rows:
            start = time.perf_counter()
            call()
            seconds.append(time.perf_counter() - start)

    reference = {n: statistics.median(s) for name, n, _, s in rows if name == "DDPM 20 (paper)"}
    print(f"\n{'scheduler':<36} {'N':>3} {'s/call':>8} {'spread':>7} {'env steps/s':>12} {'× paper DDPM':>13}")
    for name, n, _, seconds in rows:
        median = statistics.median(seconds)
        spread = (max(seconds) - min(seconds)) / median
        ratio = f"{reference[n] / median:.2f}" if n in reference else "–"
        print(f"{name:<36} {n:>3} {median:>8.3f} {spread:>6.0%} {n / median:>12.1f} {ratio:>13}")
    print(f"\ns/call: median of {args.repeats}; spread: (max − min) / median; × paper DDPM: its s/call ÷ this row's "
          "at the same N.")


if __name__ == "__main__":
    main()
