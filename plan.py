"""Evaluate a Maze2D diffusion run. `python plan.py` evaluates the newest default run; see configs/plan.yaml."""

import dataclasses
import json
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from diffuser.config import PlanConfig, check_overrides, register_configs

register_configs()


@hydra.main(config_path="configs", config_name="plan", version_base=None)
def main(cfg: DictConfig) -> None:
    from diffuser.envs import make_env
    from diffuser.planning.maze2d import Maze2dPlanner
    from diffuser.planning.report import write_maze2d_report
    from diffuser.planning.rollout import run_maze2d_episodes
    from diffuser.utils.checkpoint import check_env_dims, find_latest_run, load_run
    from diffuser.utils.cli import user_errors
    from diffuser.utils.logging import Logger
    from diffuser.utils.seeding import resolve_device, seed_everything

    config: PlanConfig = OmegaConf.to_object(cfg)
    seed_everything(config.seed)
    with user_errors():  # bad input (no run, unreadable weights, wrong dims) → one line, not a traceback
        run_path = config.diffusion_run or find_latest_run(config.runs_root, config.env.name, config.exp_name)
        run = load_run(run_path, resolve_device(config.device), config.checkpoint)
        envs = [make_env(config.env.name) for _ in range(config.planner.n_episodes)]
        check_env_dims(envs[0], run.config["dims"], run_path)
    if run.config["env"]["name"] != config.env.name:
        print(f"warning: {run_path} was trained on {run.config['env']['name']}, evaluating on {config.env.name}")
    out_dir = Path(run_path) / "plans" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_s{config.seed}"
    logger = Logger(
        out_dir, **dataclasses.asdict(config.logger), job_type="plan", config=dataclasses.asdict(config),
        group=f"{config.env.name}-{run.config['exp_name']}",
        name=f"{config.env.name}__plan__s{config.seed}__{out_dir.name}",
    )
    tick = time.perf_counter()
    results = run_maze2d_episodes(
        envs, Maze2dPlanner(run.model), seed=config.seed, multi_task=config.planner.multi_task,
        max_episode_steps=config.planner.max_episode_steps,
    )
    seconds = time.perf_counter() - tick
    summary = write_maze2d_report(out_dir, results, config, run, envs[0].unwrapped.maze_arr, logger, seconds)
    logger.finish()
    print(json.dumps(summary, indent=2))
    print(f"results: {out_dir / 'results.json'}")

if __name__ == "__main__":
    check_overrides([a for a in sys.argv[1:] if not a.startswith("-")], PlanConfig)
    main()
