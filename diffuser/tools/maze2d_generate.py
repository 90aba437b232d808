"""Generate a D4RL maze2d dataset with the waypoint controller, as a D4RL-layout HDF5 file (the procedure:
``diffuser/data/maze2d_generation.py``).

Usage: ``python -m diffuser.tools.maze2d_generate --env maze2d-umaze-v1 --num-samples 1000000 --seed 0``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from diffuser.data.maze2d_generation import generate_maze2d
from diffuser.envs.maze2d import MAZE2D_SPECS


def main(argv: list[str] | None = None) -> Path:
    """Command line: ``python -m diffuser.tools.maze2d_generate --env maze2d-umaze-v1``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="maze2d-umaze-v1", choices=sorted(MAZE2D_SPECS), help="D4RL maze2d id")
    parser.add_argument("--num-samples", type=int, default=1_000_000, help="number of steps to record")
    parser.add_argument("--seed", type=int, default=0, help="seed of the env, controller and action noise")
    parser.add_argument("--no-noise", action="store_true", help="do not add N(0, 0.5²) noise to the actions")
    parser.add_argument("--output", type=Path, default=None, help="output file (default: the D4RL dataset dir)")
    args = parser.parse_args(argv)
    return generate_maze2d(args.env, args.num_samples, seed=args.seed, noisy=not args.no_noise, path=args.output)


if __name__ == "__main__":
    main()
