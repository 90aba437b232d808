"""Write what plan.py measured: results.json, the plan config, pictures of each planned path, W&B scalars."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from diffuser.planning.rollout import EpisodeResults
from diffuser.utils.checkpoint import Run, atomic_write_text, write_config
from diffuser.utils.logging import Logger
from diffuser.utils.rendering import save_maze2d_figure


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


def log_eval(logger: Logger, summary: dict, step: int) -> None:
    """The eval/ scalars of a summary, logged and put in the run summary."""
    logger.log(
        {
            "eval/normalized_score": summary["normalized_score_mean"],
            "eval/normalized_score_se": summary["normalized_score_se"],
            "eval/return": summary["return_mean"],
            "eval/episode_length": summary["episode_length_mean"],
        },
        step=step,
    )
    logger.summary({"eval/normalized_score": summary["normalized_score_mean"],
                    "eval/normalized_score_se": summary["normalized_score_se"]})


def write_maze2d_report(
    out_dir: Path, results: EpisodeResults, config, run: Run, maze_arr: np.ndarray, logger: Logger, seconds: float
) -> dict:
    """results.json (per-episode and mean ± s.e.), config.yaml, media/plans/episode_XXX.png; returns the summary."""
    out_dir = Path(out_dir)
    summary = results.summary()
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
    for i in range(n):
        save_maze2d_figure(
            out_dir / "media" / "plans" / f"episode_{i:03d}.png", maze_arr, [results.plan.observations[i]],
            [results.goals[i]], [results.trajectories[i]],
            [f"seed {results.seeds[i]}: {results.normalized_scores[i]:.1f}"],
        )
    k = min(n, config.planner.n_images)
    image = save_maze2d_figure(
        out_dir / "media" / "plans.png", maze_arr, list(results.plan.observations[:k]), list(results.goals[:k]),
        results.trajectories[:k], [f"{s:.1f}" for s in results.normalized_scores[:k]],
    )
    log_eval(logger, summary, run.step)
    logger.log_image("media/plan", image, step=run.step)
    logger.log_table(
        "eval/episodes",
        ["seed", "return", "normalized_score", "length"],
        [[e["seed"], e["return"], e["normalized_score"], e["length"]] for e in record["episodes"]],
        step=run.step,
    )
    return summary


def write_locomotion_report(
    out_dir: Path, results, config, run: Run, value_run: Run | None, logger: Logger, fps: int = 30
) -> dict:
    """results.json (per-episode and mean ± s.e.), config.yaml and media/rollout.mp4; returns the summary."""
    out_dir = Path(out_dir)
    summary = results.summary()
    record = {
        "summary": summary,
        "episodes": [
            {"seed": seed, "return": float(r), "normalized_score": float(s), "length": int(n), "terminal": bool(d)}
            for seed, r, s, n, d in zip(
                results.seeds, results.returns, results.normalized_scores, results.lengths, results.terminals
            )
        ],
        "diffusion_run": str(run.path),
        "value_run": str(value_run.path) if value_run is not None else None,
        "checkpoint": str(run.checkpoint),
        "train_step": run.step,
        "config": dataclasses.asdict(config),
    }
    atomic_write_text(out_dir / "results.json", json.dumps(record, indent=2))
    write_config(out_dir, record["config"])
    log_eval(logger, summary, run.step)
    logger.log({"plan/seconds_per_step": summary["seconds_per_step"], "plan/value_mean": results.value_mean},
               step=run.step)
    logger.log_table(
        "eval/episodes",
        ["seed", "return", "normalized_score", "length", "terminal"],
        [[e["seed"], e["return"], e["normalized_score"], e["length"], e["terminal"]] for e in record["episodes"]],
        step=run.step,
    )
    if results.frames is not None:
        import imageio.v2 as imageio

        path = out_dir / "media" / "rollout.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(".rollout.tmp.mp4")
        imageio.mimwrite(tmp, list(results.frames), fps=fps, macro_block_size=1)
        tmp.replace(path)
        logger.log_video("media/rollout", results.frames, fps=fps, step=run.step)
    return summary
