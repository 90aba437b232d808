"""What a locomotion dataset holds and what its behaviour policy scores, to compare it with D4RL's file.

    python -m diffuser.tools.data_stats --dataset hopper-medium-v2 [--steps 20000] [--output stats.json]

1. **The recipe's policy** (``diffuser.tools.collect``'s behaviour policy for the dataset), run fresh with sampled
   actions, as the data were collected, and with deterministic actions (the policy's mean; ARS is deterministic
   either way): episodes, return mean ± std, normalized score. A learner that imitates the mean action (BC) is
   bounded by the deterministic score, not the sampled one.
2. **The dataset file** (found as ``train.py`` finds it), when present: steps, episodes, terminals, episode return
   mean / std / min / max and the normalized mean.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from diffuser.utils.files import atomic_write_text


def returns_summary(env_name: str, returns: np.ndarray) -> dict:
    from diffuser.envs import normalized_score

    return {"episodes": int(len(returns)), "return_mean": float(returns.mean()), "return_std": float(returns.std()),
            "return_min": float(returns.min()), "return_max": float(returns.max()),
            "normalized_mean": 100 * normalized_score(env_name, float(returns.mean()))}


def dataset_summary(env_name: str, path: Path) -> dict:
    """Episodes (ending at terminals or timeouts), terminals and episode returns of a D4RL-layout file."""
    from diffuser.data.d4rl import load_d4rl
    from diffuser.data.sequence import split_episodes

    data = load_d4rl(path)
    episodes = split_episodes(data)
    returns = np.add.reduceat(np.asarray(data["rewards"], dtype=np.float64), episodes.starts)
    return {"path": str(path), "steps": int(len(data["rewards"])), "terminals": int(np.sum(data["terminals"])),
            **returns_summary(env_name, returns)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="D4RL locomotion name, e.g. hopper-medium-v2")
    parser.add_argument("--steps", type=int, default=20_000, help="env steps of each fresh run (whole episodes)")
    parser.add_argument("--seed", type=int, default=1000, help="seed of the fresh runs (not the data's)")
    parser.add_argument("--output", default=None, help="write the statistics as JSON here")
    args = parser.parse_args(argv)

    from diffuser.data.d4rl import DatasetNotFoundError, find_dataset
    from diffuser.launch import user_errors
    from diffuser.tools.collect import recipe_policies, rollout
    from diffuser.tools.policies import load_policy

    with user_errors():  # an unknown dataset name or a missing policy folder: one line, exit 1
        parts = recipe_policies(args.dataset)
    report: dict = {"dataset": args.dataset, "policies": {}}
    for level, spec in parts:
        for mode, deterministic in (("sampled", False), ("deterministic", True)):
            with user_errors():
                policy = load_policy(spec, deterministic=deterministic)
            result = rollout(args.dataset, policy, args.steps, args.seed)
            stats = report["policies"].setdefault(level, {"policy": str(spec)})[mode] = returns_summary(
                args.dataset, result.episode_returns)
            print(f"{level} policy, {mode}: {stats['episodes']} episodes, return {stats['return_mean']:.0f} ± "
                  f"{stats['return_std']:.0f} (normalized {stats['normalized_mean']:.1f})")
    try:
        path = find_dataset(args.dataset, how_to_make=f"python -m diffuser.tools.collect --dataset {args.dataset}")
    except DatasetNotFoundError as error:
        print(f"dataset: not found ({str(error).splitlines()[0]})")
    else:
        stats = report["dataset"] = dataset_summary(args.dataset, Path(path))
        print(f"dataset {path}: {stats['steps']:,} steps, {stats['episodes']:,} episodes, {stats['terminals']:,} "
              f"terminals, return {stats['return_mean']:.1f} ± {stats['return_std']:.1f} (min "
              f"{stats['return_min']:.1f}, max {stats['return_max']:.1f}; normalized {stats['normalized_mean']:.1f})")
    if args.output:
        atomic_write_text(Path(args.output), json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
