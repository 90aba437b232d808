"""Evaluate a run. `python plan.py` evaluates the newest default Maze2D run; see configs/plan.yaml.

Maze2D: inpaint start and goal, track the plan, replan when the agent falls behind (planner=maze2d: plan once, the
paper's). Locomotion: replan every step with value guidance (diffusion_run + value_run), or act with a BC run
(diffusion_run=<bc run> guide=none).
What differs between the two lives in diffuser/tasks/; launch and error handling in diffuser/launch.py.
"""

import json

import hydra
from omegaconf import DictConfig

from diffuser import launch
from diffuser.config import PlanConfig

launch.configure()


@hydra.main(config_path="configs", config_name="plan", version_base=None)
def main(cfg: DictConfig) -> None:
    from diffuser.planning.report import open_plan_run
    from diffuser.tasks import task_for
    from diffuser.utils.seeding import resolve_device, seed_everything

    config = launch.plan_config(cfg)  # unset guide scale / t_stopgrad: the original's; unset warm start: t_stopgrad + 2
    seed_everything(config.seed)
    with launch.user_errors():  # bad input (no run, unreadable weights, wrong dims, bad options) → one line
        task = task_for(config.env.name)
        evaluation = task.setup(config, resolve_device(config.device))  # runs, one env per episode, planner
    out_dir, logger = open_plan_run(evaluation.run, config)  # <run>/plans/<time>_s<seed>/
    results = task.run_episodes(evaluation, config)
    summary = task.write_report(out_dir, results, evaluation, config, logger)
    logger.finish()
    print(json.dumps(summary, indent=2))
    print(f"results: {out_dir / 'results.json'}")


if __name__ == "__main__":
    launch.cli(main, PlanConfig)
