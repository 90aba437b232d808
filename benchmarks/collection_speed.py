"""Time locomotion data collection: hopper-medium (rl-zoo SAC, sampled actions) with several ``n_envs`` in one process.

Usage: ``python benchmarks/collection_speed.py [--steps 20000] [--dataset hopper-medium-v2] [--n-envs 1 8 16 32]``.
The target is 3,000 env steps/s on a 2-core CPU machine. Env steps count every simulated step, including the
episodes that are still running when the dataset is full; dataset steps/s also counts the HDF5 write. Not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from diffuser.envs.locomotion import DIMS, parse_locomotion_name
from diffuser.tools.collect import recipe_policies, rollout, write_rollouts
from diffuser.tools.policies import load_policy

TARGET_STEPS_PER_SECOND = 3_000.0


def main() -> None:
    """Collect once per n_envs setting; print env steps/s, dataset steps/s and PASS/FAIL against the target."""
    parser = argparse.ArgumentParser(description="Time locomotion data collection.")
    parser.add_argument("--steps", type=int, default=20_000, help="dataset steps to collect per setting")
    parser.add_argument("--dataset", default="hopper-medium-v2", help="D4RL locomotion name (its recipe's policy)")
    parser.add_argument("--n-envs", type=int, nargs="+", default=[1, 8, 16, 32], help="settings to time")
    parser.add_argument("--seed", type=int, default=0, help="collection seed")
    args = parser.parse_args()

    spec = recipe_policies(args.dataset)[0][1]  # medium-expert: its medium part
    policy = load_policy(spec, action_dim=DIMS[parse_locomotion_name(args.dataset).env][1])
    print(f"{args.dataset}: {args.steps:,} steps per setting with {policy}")
    print(f"{'n_envs':>6} {'env steps/s':>12} {'dataset steps/s':>16} {'episodes':>9} {'return':>16}  verdict")
    with tempfile.TemporaryDirectory() as tmp:
        for n_envs in args.n_envs:
            start = time.perf_counter()
            result = rollout(args.dataset, policy, args.steps, args.seed, n_envs=n_envs)
            write_rollouts(args.dataset, [result], args.seed, Path(tmp) / "data.hdf5", "v4", n_envs, args.steps, False)
            seconds = time.perf_counter() - start
            env_rate = result.env_steps / result.seconds
            verdict = "PASS" if env_rate >= TARGET_STEPS_PER_SECOND else "FAIL"
            r = result.episode_returns
            print(
                f"{n_envs:>6} {env_rate:>12,.0f} {result.n_steps / seconds:>16,.0f} {len(r):>9} "
                f"{r.mean():>8.0f} ± {r.std():<5.0f}  {verdict} vs {TARGET_STEPS_PER_SECOND:,.0f} env steps/s"
            )


if __name__ == "__main__":
    main()
