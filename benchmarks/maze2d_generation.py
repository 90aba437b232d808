"""Time maze2d dataset generation: ``generate_maze2d("maze2d-umaze-v1", N)`` into a temporary directory.

Usage: ``python benchmarks/maze2d_generation.py [--num-samples 1000000] [--env maze2d-umaze-v1] [--seed 0]``.
The target is 1,000,000 U-Maze steps in under 120 s on a 2-core CPU machine. Not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from diffuser.data.maze2d_generation import generate_maze2d

TARGET_SECONDS = 120.0


def main() -> None:
    """Generate once, print steps, seconds, steps/s and PASS/FAIL against the target."""
    parser = argparse.ArgumentParser(description="Time maze2d dataset generation.")
    parser.add_argument("--num-samples", type=int, default=1_000_000, help="steps to generate")
    parser.add_argument("--env", default="maze2d-umaze-v1", help="D4RL maze2d id")
    parser.add_argument("--seed", type=int, default=0, help="generation seed")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_maze2d(args.env, args.num_samples, seed=args.seed, path=Path(tmp) / "maze2d.hdf5")
        seconds = time.perf_counter() - start
    # The target is stated for 1M steps; scale it for other sizes.
    budget = TARGET_SECONDS * args.num_samples / 1_000_000
    verdict = "PASS" if seconds < budget else "FAIL"
    print(
        f"{args.env}: {args.num_samples} steps in {seconds:.1f} s ({args.num_samples / seconds:,.0f} steps/s); "
        f"{verdict} vs {TARGET_SECONDS:.0f} s target per 1M steps"
    )


if __name__ == "__main__":
    main()
