"""Episode loops: Maze2D (plan once, track) and locomotion (replan every step), N episodes per planning call."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from diffuser.planning.maze2d import Maze2dPlanner, plan_state, track_waypoint
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
class EpisodeResults:
    """Per-episode outcomes; normalized scores are D4RL fractions ×100."""

    returns: np.ndarray
    normalized_scores: np.ndarray
    lengths: np.ndarray
    seeds: list[int]
    starts: np.ndarray
    goals: np.ndarray
    plan: Plan  # each episode's first plan
    trajectories: list[np.ndarray] = field(default_factory=list)  # executed (T, 4) observations per episode
    plans: list[list[np.ndarray]] = field(default_factory=list)  # every plan of each episode, (length, 4) each
    n_replans: np.ndarray | None = None  # (N,) plans made after the first
    seconds: float = 0.0  # wall time of the episodes (set by the caller that timed them)

    def summary(self) -> dict[str, float]:
        """Mean ± standard error of scores and returns (see episode_summary), and replans per episode."""
        summary = episode_summary(self.returns, self.normalized_scores, self.lengths)
        if self.n_replans is not None:
            summary["replans_per_episode"] = float(self.n_replans.mean())
        return summary


def run_maze2d_episodes(
    envs: list,
    planner: Maze2dPlanner,
    *,
    seed: int,
    multi_task: bool = False,
    max_episode_steps: int | None = None,
    replan_lag: float = 0.0,
    replan_every: int = 0,
    replan_check_every: int = 10,
    track_speed: float = 1.0,
    track_gains: tuple[float, float] = (1.0, 1.0),
) -> EpisodeResults:
    """Reset env i with seed + i (Multi2D: also draw a random goal), plan all episodes in one call, then track.

    envs: gymnasium Maze2D envs (TimeLimit-wrapped or not); each runs one episode. The paper plans once
    (replan_lag = replan_every = 0). Closed loop: every ``replan_check_every`` steps, the episodes whose position is
    more than ``replan_lag`` from where their plan says they should be now, or whose plan is ``replan_every`` steps
    old, are replanned from their current state in one batched ``planner.plan`` call. A new plan replaces an
    episode's current plan unless the planner measured it inconsistent (residual > ``planner.max_residual``) and no
    less so than the current one: the episode then keeps its plan and is checked again later. ``track_speed`` > 1
    runs along each plan's path that many times faster than planned, and ``track_gains`` (k_p, k_d) weigh its
    position and velocity errors (``track_waypoint``; 1 and (1, 1): the original).
    """
    check_replanning(replan_lag, replan_every, replan_check_every, track_speed, track_gains)
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
    first = planner.plan(observations, goals, generator=generator)
    plans = [[first.path(i)] for i in range(n)]
    planned_at = np.zeros(n, dtype=int)
    max_residual = getattr(planner, "max_residual", np.inf)
    residuals = np.array(first.residuals if first.residuals is not None else np.full(n, np.inf), dtype=float)

    steps = max_episode_steps or envs[0].spec.max_episode_steps
    states = observations.copy()
    returns, lengths, running = np.zeros(n), np.zeros(n, dtype=int), np.ones(n, dtype=bool)
    executed = [[observations[i]] for i in range(n)]
    for t in range(steps):
        if t > 0 and (replan_lag > 0 or replan_every > 0) and t % replan_check_every == 0:
            stale = [i for i in np.flatnonzero(running) if needs_replan(
                plans[i][-1], t - planned_at[i], states[i], replan_lag, replan_every, track_speed)]
            if stale:
                plan = planner.plan(states[stale], goals[stale], generator=generator)
                for k, i in enumerate(stale):
                    new = plan.residuals[k] if plan.residuals is not None else -np.inf
                    if new > max_residual and new >= residuals[i]:
                        continue  # no better than the plan in hand: keep tracking it
                    plans[i].append(plan.path(k))
                    planned_at[i], residuals[i] = t, new
        for i in np.flatnonzero(running):
            action = track_waypoint(plans[i][-1], t - planned_at[i], states[i], track_speed, track_gains)
            state, reward, terminated, truncated, _ = envs[i].step(action)
            states[i] = state
            returns[i] += float(reward)
            executed[i].append(np.asarray(state, dtype=np.float64))
            lengths[i] = t + 1
            if terminated or (truncated and max_episode_steps is None):
                running[i] = False
    scores = np.array([100 * env.unwrapped.get_normalized_score(r) for env, r in zip(envs, returns)])
    return EpisodeResults(
        returns, scores, lengths, [seed + i for i in range(n)], observations, goals, first,
        [np.stack(path) for path in executed], plans, np.array([len(p) - 1 for p in plans]),
    )


def check_replanning(
    replan_lag: float, replan_every: int, replan_check_every: int, track_speed: float = 1.0,
    track_gains: tuple[float, float] = (1.0, 1.0),
) -> None:
    """One clear error for replanning and tracking options out of range."""
    if not replan_lag >= 0 or replan_every < 0 or replan_check_every < 1:
        raise ValueError(
            f"planner.replan_lag ({replan_lag}) and planner.replan_every ({replan_every}) must be ≥ 0 (0: off) and "
            f"planner.replan_check_every ({replan_check_every}) ≥ 1"
        )
    if not 0 < track_speed <= 4:
        raise ValueError(f"planner.track_speed ({track_speed}) must lie in (0, 4] (1: follow the plan as timed)")
    if not all(0 < k <= 20 for k in track_gains):
        raise ValueError(f"planner.track_p_gain and planner.track_d_gain ({track_gains[0]}, {track_gains[1]}) must lie "
                         "in (0, 20] (1 and 1: the original tracking rule)")


def needs_replan(
    plan: np.ndarray, k: int, state: np.ndarray, lag: float, every: int, speed: float = 1.0
) -> bool:
    """Whether an episode k steps into its plan (H, 4) should replan: its position is more than ``lag`` (> 0) from
    the plan's position at step speed·k (its last position once the plan is used up), or the plan is ``every``
    (> 0) steps old."""
    if every > 0 and k >= every:
        return True
    return lag > 0 and float(np.linalg.norm(plan_state(plan, speed * k)[:2] - state[:2])) > lag


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
