"""Maze2D (U-Maze, Medium, Large): goal-conditioned plans between inpainted start and goal, tracked by a PD rule.

Data are generated with D4RL's procedure when missing; evaluation plans all episodes in one batched call and
tracks the plans (the paper's planner plans once; planner=maze2d_closed_loop replans episodes that fall behind).
"""

from __future__ import annotations

import time
from pathlib import Path

import gymnasium

from diffuser.config import EnvConfig, PlanConfig
from diffuser.data.sequence import SequenceDataset
from diffuser.diffusion.schedulers import make_scheduler
from diffuser.planning.maze2d import ClosedLoop, EpisodeResults, Maze2dPlanner, plan_lengths, run_maze2d_episodes
from diffuser.planning.report import write_maze2d_report
from diffuser.runs.load import Run
from diffuser.runs.logger import Logger
from diffuser.tasks.base import Evaluation, SampleFn, Task, sample_plans


def maze_array(name: str):
    """The maze of env ``name`` as the env holds it (walls, free cells, goal)."""
    from diffuser.envs.maze2d import MAZE2D_SPECS, parse_maze

    return parse_maze(MAZE2D_SPECS[name].layout)


class Maze2dTask(Task):
    """maze2d-{umaze,medium,large}-v1."""

    def check_training(self, env: EnvConfig, horizon: int) -> None:
        """A horizon and stride whose plans cannot reach the maze's goals within an episode: one error."""
        from diffuser.envs.maze2d import check_plan_span

        check_plan_span(self.name, horizon, env.stride)

    def how_to_make_dataset(self) -> str:
        return f"python -m diffuser.tools.maze2d_generate --env {self.name}  (or env.generate_if_missing=true)"

    def generate_dataset(self, env: EnvConfig) -> Path | None:
        if not (env.generate_if_missing and env.dataset is None):
            return None
        from diffuser.data.maze2d_generation import generate_maze2d

        print(f"dataset '{self.name}' not found: generating {env.generate_num_samples} steps with the D4RL procedure")
        return generate_maze2d(self.name, env.generate_num_samples, seed=0)

    def sample_fn(
        self, dataset: SequenceDataset, logger: Logger, run_dir: Path, *, gym_version: str, n_samples: int, seed: int
    ) -> SampleFn:
        """Every call samples plans between the start and end states of random windows and logs their picture."""
        from diffuser.utils.rendering import save_maze2d_figure

        maze_arr = maze_array(self.name)

        def sample(model, step: int) -> None:
            observations = sample_plans(model, dataset, n_samples, seed + step)
            path = Path(run_dir) / "media" / f"samples_{step:07d}.png"
            image = save_maze2d_figure(path, maze_arr, list(observations), list(observations[:, -1, :2]))
            logger.log_image("media/plan", image, step)

        return sample

    def make_envs(self, config: PlanConfig, gym_version: str) -> list[gymnasium.Env]:
        from diffuser.envs import make_env

        return [make_env(self.name) for _ in range(config.planner.n_episodes)]

    def build_planner(
        self, run: Run, value: Run | None, config: PlanConfig, critic: Run | None = None
    ) -> Maze2dPlanner:
        p = config.planner
        loop = ClosedLoop(
            horizons=plan_lengths(p.horizon_fractions, run.model), n_candidates=p.n_candidates,
            max_residual=p.max_residual,
            replan_lag=p.replan_lag, replan_every=p.replan_every, replan_check_every=p.replan_check_every,
            track_speed=p.track_speed, track_gains=(p.track_p_gain, p.track_d_gain),
        )
        return Maze2dPlanner(
            run.model, loop, scheduler=make_scheduler(p.scheduler, p.n_sample_steps, p.eta),
            stride=run.config["env"].get("stride", 1),  # runs written before env.stride plan every step
        )

    def run_episodes(self, evaluation: Evaluation, config: PlanConfig) -> EpisodeResults:
        tick = time.perf_counter()
        p = config.planner
        results = run_maze2d_episodes(evaluation.envs, evaluation.planner, seed=config.seed, multi_task=p.multi_task,
                                      max_episode_steps=p.max_episode_steps)
        results.seconds = time.perf_counter() - tick
        return results

    def write_report(
        self, out_dir: Path, results: EpisodeResults, evaluation: Evaluation, config: PlanConfig, logger: Logger
    ) -> dict[str, float]:
        return write_maze2d_report(
            out_dir, results, config, evaluation.run, maze_array(self.name), logger, results.seconds
        )
