"""Evaluate a run. `python plan.py` evaluates the newest default Maze2D run; see configs/plan.yaml.

Maze2D: plan once per episode (start and goal inpainted) and track the plan. Locomotion: replan every step with
value guidance (diffusion_run + value_run), or act with a BC run (diffusion_run=<bc run> guide=none).
"""

import dataclasses
import json
import os
import sys
import time
from functools import partial

import hydra
from omegaconf import DictConfig, OmegaConf

from diffuser.config import PlanConfig, check_overrides, register_configs, resolve_guide

register_configs()
if "DISPLAY" not in os.environ:  # offscreen MuJoCo rendering for the rollout video (read when mujoco is imported)
    os.environ.setdefault("MUJOCO_GL", "egl")


@hydra.main(config_path="configs", config_name="plan", version_base=None)
def main(cfg: DictConfig) -> None:
    from diffuser.planning.bc import BCPlanner
    from diffuser.diffusion.guidance import ValueGuide
    from diffuser.envs import evaluation_settings, make_env, normalized_score
    from diffuser.envs.locomotion import is_locomotion, make_locomotion_env
    from diffuser.planning.guided import GuidedPlanner
    from diffuser.planning.maze2d import Maze2dPlanner, plan_lengths
    from diffuser.planning.report import new_plan_folder, write_locomotion_report, write_maze2d_report
    from diffuser.planning.rollout import check_replanning, run_locomotion_episodes, run_maze2d_episodes
    from diffuser.runs.checkpoint import check_compatible, check_env_dims, find_latest_run, load_run
    from diffuser.utils.cli import user_errors
    from diffuser.runs.logger import Logger
    from diffuser.utils.seeding import resolve_device, seed_everything

    config: PlanConfig = OmegaConf.to_object(cfg)
    config.guide = resolve_guide(config.guide, config.env.name)  # unset scale, t_stopgrad: the original's for the data
    seed_everything(config.seed)
    name, device, locomotion = config.env.name, resolve_device(config.device), is_locomotion(config.env.name)
    with user_errors():  # bad input (no run, unreadable weights, wrong dims, mismatched runs) → one line
        run_path = config.diffusion_run or find_latest_run(config.runs_root, name, config.exp_name)
        run = load_run(run_path, device, config.checkpoint)
        print(f"run: {run_path}")
        value = None
        if locomotion and run.config["model"]["kind"] == "diffusion" and config.guide.kind == "value":
            # Default: the newest value run trained beside the default diffusion run (exp_name + "_value").
            value_path = config.value_run or find_latest_run(
                config.runs_root, name, f"{config.exp_name}_value", argument="value_run"
            )
            value = load_run(value_path, device)
            check_compatible(run, value, config.env.discount)
            print(f"value run: {value_path}")
            print(f"guide: scale {config.guide.scale}, t_stopgrad {config.guide.t_stopgrad}")
        # A run on non-D4RL data (Minari mujoco/*) brings its env version and reference scores (its config.yaml).
        gym_version, reference = evaluation_settings(run.config, name, config.env.gym_version)
        make = partial(make_locomotion_env, name, gym_version) if locomotion else partial(make_env, name)
        envs = [make(**({"render_mode": "rgb_array"} if i == 0 and locomotion and config.planner.video else {}))
                for i in range(config.planner.n_episodes)]
        check_env_dims(envs[0], run.config["dims"], run_path)
        if not locomotion:  # bad planner options (horizons, replanning) are refused before anything is written
            p = config.planner
            check_replanning(p.replan_lag, p.replan_every, p.replan_check_every)
            policy = Maze2dPlanner(
                run.model, horizons=plan_lengths(p.horizon_fractions, run.model), n_candidates=p.n_candidates,
                max_residual=p.max_residual,
                n_sample_steps=p.n_sample_steps,
            )
        elif run.config["model"]["kind"] == "bc":
            policy = BCPlanner(run.model)
        else:  # bad planner options (steps out of range) are refused before anything is written
            g = config.guide
            policy = GuidedPlanner(
                run.model, ValueGuide(value.model.model) if value is not None else None,
                batch_size=config.planner.batch_size, scale=g.scale, n_guide_steps=g.n_guide_steps,
                t_stopgrad=g.t_stopgrad, scale_grad_by_std=g.scale_grad_by_std,
                n_sample_steps=config.planner.n_sample_steps, warm_start_steps=config.planner.warm_start_steps,
                bf16=config.planner.bf16,
            )
    if run.config["env"]["name"] != name:
        print(f"warning: {run_path} was trained on {run.config['env']['name']}, evaluating on {name}")
    out_dir = new_plan_folder(run_path, config.seed)
    logger = Logger(
        out_dir, **dataclasses.asdict(config.logger), job_type="plan", config=dataclasses.asdict(config),
        group=f"{name}-{run.config['exp_name']}", name=f"{name}__plan__s{config.seed}__{out_dir.name}",
    )
    if locomotion:
        results = run_locomotion_episodes(
            envs, policy, partial(normalized_score, name, reference=reference), seed=config.seed,
            max_episode_steps=config.planner.max_episode_steps or 1000, render_first=config.planner.video,
        )
        summary = write_locomotion_report(out_dir, results, config, run, value, logger, gym_version=gym_version)
    else:
        tick = time.perf_counter()
        p = config.planner
        results = run_maze2d_episodes(
            envs, policy, seed=config.seed, multi_task=p.multi_task, max_episode_steps=p.max_episode_steps,
            replan_lag=p.replan_lag, replan_every=p.replan_every, replan_check_every=p.replan_check_every,
        )
        seconds = time.perf_counter() - tick
        summary = write_maze2d_report(out_dir, results, config, run, envs[0].unwrapped.maze_arr, logger, seconds)
    logger.finish()
    print(json.dumps(summary, indent=2))
    print(f"results: {out_dir / 'results.json'}")


if __name__ == "__main__":
    check_overrides([a for a in sys.argv[1:] if not a.startswith("-")], PlanConfig)
    main()
