"""Write what plan.py measured: results.json, the plan config, pictures of each planned path, W&B scalars."""

from __future__ import annotations

import dataclasses
import json
import textwrap
import time
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from diffuser.planning.episodes import LocomotionResults
from diffuser.planning.maze2d import EpisodeResults
from diffuser.runs.checkpoint import write_config
from diffuser.runs.load import Run
from diffuser.runs.logger import Logger
from diffuser.utils.files import atomic_write_text
from diffuser.utils.rendering import (
    LocomotionRenderer,
    draw_maze2d,
    maze2d_video_frames,
    save_image,
    save_maze2d_figure,
    save_video,
    stack_images,
)


def new_plan_folder(run_path: str | Path, seed: int) -> Path:
    """Create <run>/plans/<time>_s<seed>, appending "_" while the name is taken (mkdir is atomic, so evaluations
    started in the same second, e.g. by a parallel multirun, never share a folder)."""
    path = Path(run_path) / "plans" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_s{seed}"
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            path = path.with_name(path.name + "_")


def open_plan_run(run: Run, config) -> tuple[Path, Logger]:
    """A new plan folder in the evaluated run and the evaluation's logger (config: the PlanConfig)."""
    name = config.env.name
    if run.config["env"]["name"] != name:
        print(f"warning: {run.path} was trained on {run.config['env']['name']}, evaluating on {name}")
    out_dir = new_plan_folder(run.path, config.seed)
    logger = Logger(
        out_dir, **dataclasses.asdict(config.logger), job_type="plan", config=dataclasses.asdict(config),
        group=f"{name}-{run.config['exp_name']}", name=f"{name}__plan__s{config.seed}__{out_dir.name}",
    )
    return out_dir, logger


def log_eval(logger: Logger, results, train_step: int) -> dict:
    """Per-episode scalars (W&B step = episode index), then the eval/ means at step n_episodes, put in the run
    summary with the train step of the evaluated checkpoint; returns the summary dict."""
    summary = results.summary()
    for i, (r, s, n) in enumerate(zip(results.returns, results.normalized_scores, results.lengths)):
        logger.log(
            {"eval/episode_return": r, "eval/episode_normalized_score": s, "eval/episode_length": n}, step=i
        )
    means = {
        "eval/normalized_score": summary["normalized_score_mean"],
        "eval/normalized_score_se": summary["normalized_score_se"],
        "eval/return": summary["return_mean"],
        "eval/return_se": summary["return_se"],
        "eval/episode_length": summary["episode_length_mean"],
    }
    if "seconds_per_step" in summary:
        means["plan/seconds_per_step"] = summary["seconds_per_step"]
        means["plan/value_mean"] = results.value_mean
    logger.log(means, step=len(results.returns))
    logger.summary({**means, "eval/n_episodes": len(results.returns), "train_step": train_step})
    return summary


def write_maze2d_report(
    out_dir: Path, results: EpisodeResults, config, run: Run, maze_arr: np.ndarray, logger: Logger, seconds: float,
    fps: int = 20,
) -> dict:
    """results.json (per-episode and mean ± s.e.), config.yaml, media/plans/episode_XXX.png, media/plans.png (first
    plans), media/failures.png (the worst episodes with all their plans) and media/rollout.mp4 (the first episode,
    every 4th step); returns the summary."""
    out_dir = Path(out_dir)
    summary = log_eval(logger, results, run.step)
    record = {
        "summary": summary,
        "episodes": [
            {
                "seed": seed,
                "return": float(r),
                "normalized_score": float(s),
                "length": int(n),
                "start": results.starts[i].tolist(),
                "goal": results.goals[i].tolist(),
                "plan_lengths": [len(plan) for plan in results.plans[i]],  # the first plan's, then each replan's
            }
            for i, (seed, r, s, n) in enumerate(
                zip(results.seeds, results.returns, results.normalized_scores, results.lengths)
            )
        ],
        "diffusion_run": str(run.path),
        "checkpoint": str(run.checkpoint),
        "train_step": run.step,
        "seconds": seconds,
        "config": dataclasses.asdict(config),
    }
    atomic_write_text(out_dir / "results.json", json.dumps(record, indent=2))
    write_config(out_dir, {**dataclasses.asdict(config), "diffusion_run": str(run.path)})

    n = len(results.returns)
    title = (f"{run.path.name}, training seed {run.config.get('seed', '?')}, step {run.step}: "
             f"the {min(n, 6)} lowest of {n} episodes (episode seed: score)")
    failures = save_failures_figure(out_dir / "media" / "failures.png", results, maze_arr, title)
    logger.log_image("media/failures", failures, step=n)
    for i in range(n):
        save_maze2d_figure(
            out_dir / "media" / "plans" / f"episode_{i:03d}.png", maze_arr, [results.plan.path(i)],
            [results.goals[i]], [results.trajectories[i]],
            [f"seed {results.seeds[i]}: {results.normalized_scores[i]:.1f}"],
        )
    k = min(n, config.planner.n_images)
    image = save_maze2d_figure(
        out_dir / "media" / "plans.png", maze_arr, [results.plan.path(i) for i in range(k)], list(results.goals[:k]),
        results.trajectories[:k], [f"{s:.1f}" for s in results.normalized_scores[:k]],
    )
    logger.log_image("media/plan", image, step=n)
    if config.planner.video:
        frames = maze2d_video_frames(maze_arr, results.plan.path(0), results.trajectories[0], results.goals[0])
        video = save_video(out_dir / "media" / "rollout.mp4", frames, fps=fps)
        logger.log_video("media/rollout", video, fps=fps, step=n)
    logger.log_table(
        "eval/episodes",
        ["seed", "return", "normalized_score", "length"],
        [[e["seed"], e["return"], e["normalized_score"], e["length"]] for e in record["episodes"]],
        step=n,
    )
    return summary


def save_failures_figure(
    path: Path, results: EpisodeResults, maze_arr: np.ndarray, title: str, n_worst: int = 6
) -> np.ndarray:
    """The n_worst lowest-scoring episodes under ``title`` (say which run and training seed): start (black dot),
    every plan (coloured by time), executed path (red). The layout engine keeps the titles inside the image."""
    worst = np.argsort(results.normalized_scores, kind="stable")[:n_worst]
    width = max(2.6 * len(worst), 4.0)  # inches
    fig = Figure(figsize=(width, 3.4), layout="constrained")
    canvas = FigureCanvasAgg(fig)
    fig.suptitle(textwrap.fill(title, int(11 * width)), fontsize=9)  # about 14 characters of 9 pt per inch
    for ax, i in zip(fig.subplots(1, len(worst), squeeze=False)[0], worst):
        draw_maze2d(ax, maze_arr, results.plans[i], results.goals[i], [results.trajectories[i]])
        ax.set_title(f"seed {results.seeds[i]}: {results.normalized_scores[i]:.1f}\n{len(results.plans[i])} plan(s)",
                     fontsize=8)
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    save_image(path, image)
    return image


def write_locomotion_report(
    out_dir: Path, results: LocomotionResults, config, run: Run, value_run: Run | None, logger: Logger, *,
    gym_version: str, fps: int = 30, critic_run: Run | None = None, dynamics_run: Path | None = None,
) -> dict:
    """results.json (per-episode and mean ± s.e.), config.yaml, media/rollout.mp4 (the first episode) and
    media/plans.png (MuJoCo composites of each episode's first plan); returns the summary."""
    out_dir = Path(out_dir)
    summary = log_eval(logger, results, run.step)
    n = len(results.returns)
    record = {
        "summary": summary,
        "episodes": [
            {"seed": seed, "return": float(r), "normalized_score": float(s), "length": int(k), "terminal": bool(d)}
            for seed, r, s, k, d in zip(
                results.seeds, results.returns, results.normalized_scores, results.lengths, results.terminals
            )
        ],
        "diffusion_run": str(run.path),
        "value_run": str(value_run.path) if value_run is not None else None,
        "critic": {  # what guided the candidates and what ranked them (planning/critics.py)
            "guide": config.guide.critic if config.guide.kind == "value" else None,
            "select": config.planner.select or (config.guide.critic if config.guide.kind == "value" else None),
            "fresh_candidates": config.planner.fresh_candidates,
            "run": str(critic_run.path) if critic_run is not None else None,
            "dynamics_run": str(dynamics_run) if dynamics_run is not None else None,  # the rollout critic's
        },
        "dataset_info": run.config.get("dataset_info"),  # Minari data: what it is, which reference scores were used
        "checkpoint": str(run.checkpoint),
        "train_step": run.step,
        "config": dataclasses.asdict(config),
    }
    atomic_write_text(out_dir / "results.json", json.dumps(record, indent=2))
    write_config(out_dir, record["config"])
    logger.log_table(
        "eval/episodes",
        ["seed", "return", "normalized_score", "length", "terminal"],
        [[e["seed"], e["return"], e["normalized_score"], e["length"], e["terminal"]] for e in record["episodes"]],
        step=n,
    )
    if results.frames is not None:
        video = save_video(out_dir / "media" / "rollout.mp4", results.frames, fps=fps)
        logger.log_video("media/rollout", video, fps=fps, step=n)
    plans = results.first_plans[: config.planner.n_images]
    if config.planner.video and len(plans) and plans.shape[1] > 1:  # BC has no plans to draw
        renderer = LocomotionRenderer.for_env(config.env.name, gym_version)
        image = stack_images([renderer.composite(p, every=max(1, len(p) // 8)) for p in plans], columns=2)
        renderer.close()
        save_image(out_dir / "media" / "plans.png", image)
        logger.log_image("media/plan", image, step=n)
    return summary
