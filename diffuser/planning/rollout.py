"""Evaluate a Maze2D planner on N episodes that share one batched planning call."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from diffuser.planning.maze2d import Maze2dPlanner, Plan, track_waypoint


@dataclass
class EpisodeResults:
    """Per-episode outcomes; normalized scores are D4RL fractions ×100."""

    returns: np.ndarray
    normalized_scores: np.ndarray
    lengths: np.ndarray
    seeds: list[int]
    starts: np.ndarray
    goals: np.ndarray
    plan: Plan
    trajectories: list[np.ndarray] = field(default_factory=list)  # executed (T, 4) observations per episode

    def summary(self) -> dict[str, float]:
        """Mean ± standard error (std with ddof 0 over √n, as the original) of scores and returns."""
        n = len(self.returns)
        return {
            "normalized_score_mean": float(self.normalized_scores.mean()),
            "normalized_score_se": float(self.normalized_scores.std() / np.sqrt(n)),
            "return_mean": float(self.returns.mean()),
            "return_se": float(self.returns.std() / np.sqrt(n)),
            "episode_length_mean": float(self.lengths.mean()),
            "n_episodes": n,
        }


def run_maze2d_episodes(
    envs: list,
    planner: Maze2dPlanner,
    *,
    seed: int,
    multi_task: bool = False,
    max_episode_steps: int | None = None,
) -> EpisodeResults:
    """Reset env i with seed + i (Multi2D: also draw a random goal), plan all episodes in one call, then track.

    envs: gymnasium Maze2D envs (TimeLimit-wrapped or not); each runs one episode.
    """
    n = len(envs)
    observations, goals = [], []
    for i, env in enumerate(envs):
        obs, _ = env.reset(seed=seed + i)
        if multi_task:
            env.unwrapped.set_target()
        observations.append(np.asarray(obs, dtype=np.float64))
        goals.append(np.asarray(env.unwrapped.target, dtype=np.float64))
    observations, goals = np.stack(observations), np.stack(goals)
    generator = torch.Generator(device=planner.diffusion.schedule.betas.device).manual_seed(seed)
    plan = planner.plan(observations, goals, generator=generator)

    steps = max_episode_steps or envs[0].spec.max_episode_steps
    returns, lengths, scores, executed = np.zeros(n), np.zeros(n, dtype=int), np.zeros(n), []
    for i, env in enumerate(envs):
        state, total, path = observations[i], 0.0, [observations[i]]
        for t in range(steps):
            action = track_waypoint(plan.observations[i], t, state)
            state, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            path.append(np.asarray(state, dtype=np.float64))
            lengths[i] = t + 1
            if terminated or (truncated and max_episode_steps is None):
                break
        returns[i] = total
        scores[i] = 100 * env.unwrapped.get_normalized_score(total)
        executed.append(np.stack(path))
    return EpisodeResults(returns, scores, lengths, [seed + i for i in range(n)], observations, goals, plan, executed)
