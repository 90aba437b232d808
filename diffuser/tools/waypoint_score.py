"""Score D4RL's waypoint controller, the map-using controller that made the Maze2D data, on the planner's episodes.

    python -m diffuser.tools.waypoint_score --env maze2d-large-v1 [--episodes 150] [--seed 0] [--multi-task]
        [--noise] [--output FILE.json]

Episode i is reset with seed + i, exactly as ``plan.py`` resets its episodes (Multi2D: then a random goal is drawn),
so its score and a planner's are on the same starts and goals. Each episode gets a fresh controller
(``diffuser/envs/waypoint_controller.py``, its jitter seeded with seed + i) that knows the maze's map and drives
along grid waypoints to the goal cell for the whole episode. The data were made with N(0, 0.5²) noise added to its
actions: ``--noise`` scores that behaviour instead. Prints mean ± standard error (std ddof 0 / √n, as everywhere
here) and writes per-episode returns with ``--output``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from diffuser.utils.files import atomic_write_text


def score_controller(
    env_name: str, n_episodes: int, seed: int, *, multi_task: bool = False, noise: float = 0.0
) -> dict:
    """Play n_episodes full episodes with a fresh controller each → {summary, episodes}."""
    from diffuser.envs import make_env
    from diffuser.envs.maze2d import MAZE2D_SPECS
    from diffuser.envs.waypoint_controller import WaypointController
    from diffuser.planning.episodes import episode_summary

    if env_name not in MAZE2D_SPECS:
        raise ValueError(f"--env {env_name}: not a Maze2D env; one of {sorted(MAZE2D_SPECS)}")
    if n_episodes < 1:
        raise ValueError(f"--episodes {n_episodes}: must be ≥ 1")
    env = make_env(env_name)
    returns, lengths, episodes = [], [], []
    for i in range(n_episodes):
        obs, _ = env.reset(seed=seed + i)
        if multi_task:
            env.unwrapped.set_target()
        goal = np.array(env.unwrapped.target, dtype=np.float64)
        controller = WaypointController(MAZE2D_SPECS[env_name].layout, rng=np.random.default_rng(seed + i))
        noise_rng = np.random.default_rng(10_000 + seed + i)
        total, steps, done = 0.0, 0, False
        while not done:
            action, _ = controller.get_action(obs[:2], obs[2:], goal)
            if noise > 0:
                action = action + noise * noise_rng.standard_normal(2)
            obs, reward, terminated, truncated, _ = env.step(action)
            total, steps, done = total + float(reward), steps + 1, terminated or truncated
        returns.append(total)
        lengths.append(steps)
        episodes.append({"seed": seed + i, "return": total, "length": steps, "goal": goal.tolist(),
                         "normalized_score": 100 * env.unwrapped.get_normalized_score(total)})
    scores = np.array([e["normalized_score"] for e in episodes])
    summary = episode_summary(np.array(returns), scores, np.array(lengths))
    return {"env": env_name, "multi_task": multi_task, "noise": noise, "summary": summary, "episodes": episodes}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="maze2d-umaze-v1", help="a Maze2D env id, e.g. maze2d-large-v1")
    parser.add_argument("--episodes", type=int, default=150, help="episodes, reset with seeds seed … seed + n − 1")
    parser.add_argument("--seed", type=int, default=0, help="the first episode seed (plan.py's seed)")
    parser.add_argument("--multi-task", action="store_true", help="Multi2D: a random goal per episode")
    parser.add_argument("--noise", action="store_true", help="add the data's N(0, 0.5²) action noise")
    parser.add_argument("--output", type=Path, default=None, help="write the per-episode results here (JSON)")
    args = parser.parse_args(argv)
    try:
        result = score_controller(args.env, args.episodes, args.seed, multi_task=args.multi_task,
                                  noise=0.5 if args.noise else 0.0)
    except ValueError as error:
        parser.exit(1, f"error: {error}\n")
    s = result["summary"]
    print(f"waypoint controller, {args.env}{' (Multi2D)' if args.multi_task else ''}, episode seeds {args.seed}-"
          f"{args.seed + args.episodes - 1}: {s['normalized_score_mean']:.1f} ± {s['normalized_score_se']:.1f}")
    if args.output is not None:
        atomic_write_text(args.output, json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
