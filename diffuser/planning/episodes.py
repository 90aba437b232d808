"""The locomotion episode loop (replan every step, N episodes per planning call) and the summary every family's
results share (the Maze2D loop lives with its planner in ``maze2d.py``)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from diffuser.planning.plan import Plan, Planner


def episode_summary(returns: np.ndarray, normalized_scores: np.ndarray, lengths: np.ndarray) -> dict[str, float]:
    """Mean ± standard error over episodes, the standard error being std (ddof 0) / √n as in the original."""
    n = len(returns)
    return {
        "normalized_score_mean": float(normalized_scores.mean()),
        "normalized_score_se": float(normalized_scores.std() / np.sqrt(n)),
        "return_mean": float(returns.mean()),
        "return_se": float(returns.std() / np.sqrt(n)),
        "episode_length_mean": float(lengths.mean()),
        "n_episodes": n,
    }


@dataclass
class LocomotionResults:
    """Per-episode outcomes of receding-horizon control; normalized scores are D4RL fractions ×100."""

    returns: np.ndarray
    normalized_scores: np.ndarray
    lengths: np.ndarray
    terminals: np.ndarray
    seeds: list[int]
    seconds_per_step: float  # planning seconds per env step (all envs of a step share one call)
    value_mean: float  # mean value of the executed plans (0 without a guide)
    first_plans: np.ndarray  # (N, horizon, observation_dim): each episode's plan from its first state (BC: horizon 1)
    frames: np.ndarray | None = None  # (T, H, W, 3) uint8 of the first episode

    def summary(self) -> dict[str, float]:
        """Mean ± standard error of scores and returns (see episode_summary), how many episodes ended in a fall
        (termination) and the median step of those falls, plus planning latency."""
        summary = episode_summary(self.returns, self.normalized_scores, self.lengths)
        falls = self.lengths[self.terminals]
        fall_step = float(np.median(falls)) if len(falls) else None
        return {**summary, "falls": int(len(falls)), "fall_step_median": fall_step,
                "seconds_per_step": self.seconds_per_step}


def run_locomotion_episodes(
    envs: list,
    policy: Planner,
    normalized_score,
    *,
    seed: int,
    max_episode_steps: int = 1000,
    render_first: bool = False,
) -> LocomotionResults:
    """Replan every step for every running episode (one policy call per step), act, repeat.

    envs: gymnasium envs, stepped unwrapped (no TimeLimit): episodes end on termination or after
    max_episode_steps. policy.plan(observations (M, obs_dim), generator=, env_ids=(M,)) → Plan, with a ``device``
    for the generator and ``reset()`` called before the episodes start. normalized_score(R) → fraction.
    """
    n = len(envs)
    observations = np.stack([np.asarray(env.reset(seed=seed + i)[0], dtype=np.float64) for i, env in enumerate(envs)])
    running = np.ones(n, dtype=bool)
    returns, lengths, terminals = np.zeros(n), np.zeros(n, dtype=int), np.zeros(n, dtype=bool)
    frames = [envs[0].unwrapped.render()] if render_first else None
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    policy.reset()
    planning_seconds, steps, values = 0.0, 0, []
    first_plans = np.zeros((n, 0, observations.shape[1]))
    for _ in range(max_episode_steps):
        active = np.flatnonzero(running)
        if len(active) == 0:
            break
        tick = time.perf_counter()
        step = policy.plan(observations[active], generator=generator, env_ids=active)
        planning_seconds += time.perf_counter() - tick
        if steps == 0:
            first_plans = step.observations
        steps += 1
        values.append(float(np.mean(step.values)))
        for k, i in enumerate(active):
            obs, reward, terminated, _, _ = envs[i].unwrapped.step(step.first_actions[k])
            observations[i] = obs
            returns[i] += float(reward)
            lengths[i] += 1
            if i == 0 and frames is not None:
                frames.append(envs[0].unwrapped.render())
            if terminated:
                running[i], terminals[i] = False, True
    scores = np.array([100 * normalized_score(r) for r in returns])
    return LocomotionResults(
        returns, scores, lengths, terminals, [seed + i for i in range(n)], planning_seconds / max(steps, 1),
        float(np.mean(values)) if values else 0.0, first_plans, np.stack(frames) if frames is not None else None,
    )
