"""Maze2D planning and its closed loop, in one place: the planner, the plan-acceptance rule, the tracker and the
episode loop, all set by one typed :class:`ClosedLoop` (its defaults are the paper's planner).

Inpaint start and goal, plan, track the plan: the diffusion model's actions are not executed; a PD rule follows the
planned states, as the original does.

Units: a plan's length counts *states*, the network's positions. A run trained with ``env.stride`` s keeps every
s-th state, so a plan of h states spans (h − 1)·s + 1 env steps; it is upsampled to every env step before it is
judged and tracked, and :class:`Plan` lengths, ``results.json``'s ``plan_lengths`` and the tracker count env steps.
At stride 1 the two agree.

Paper mode (the defaults): one plan of the training horizon per episode, made once. Closed-loop options:
- ``horizons``: plan with several lengths (the goal always inpainted at the last state, where training put the
  window's end) and keep, per episode, the shortest plan that is dynamically consistent: its positions move as its
  own velocities say (``dynamic_residual`` ≤ ``max_residual``). A plan too short for the distance jumps, through
  walls if need be, and fails the test; no map or simulator is consulted.
- replanning (``run_maze2d_episodes``): from the current state, for every episode whose tracker fell behind its plan
  (``replan_lag``) or whose plan is old (``replan_every``); a new plan replaces the current one only if
  :meth:`ClosedLoop.accepts` it: consistent, or less inconsistent than the current one.
- tracking (``track_waypoint``): ``track_speed`` and ``track_gains`` change the original rule's pace and gains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.diffusion.schedulers import DDPMScheduler
from diffuser.models.temporal_unet import check_horizon, horizon_multiple
from diffuser.planning.episodes import episode_summary
from diffuser.planning.plan import Plan

DT = 0.01  # seconds per env step of the point mass (timestep 0.01, frame_skip 1)


def dynamic_residual(observations: np.ndarray, window: int = 8, dt: float = DT) -> np.ndarray:
    """How far a plan's positions stray from its own velocities: the largest, over windows of ``window`` steps, of
    ‖p[t+w] − p[t] − dt Σ_{s=t+1}^{t+w} v[s]‖ / (w dt), in velocity units (the env's speed limit is 5).

    observations: (B, H, 4) rows (x, y, vx, vy) → (B,). The point mass integrates p[t+1] = p[t] + dt v[t+1]
    (semi-implicit Euler), so recorded data give ≈ 0 except at wall contacts; a jump of the plan through a wall
    gives about (jump length) / (w dt). Averaging over a window ignores the model's step-to-step jitter.
    """
    w = min(window, observations.shape[1] - 1)
    velocity_sums = np.cumsum(observations[:, :, 2:], axis=1)
    displacement = observations[:, w:, :2] - observations[:, :-w, :2]
    integrated = dt * (velocity_sums[:, w:] - velocity_sums[:, :-w])
    return (np.linalg.norm(displacement - integrated, axis=-1) / (w * dt)).max(axis=1)


def upsample(trajectories: np.ndarray, stride: int) -> np.ndarray:
    """States every ``stride`` env steps (B, H, D) → every step (B, (H − 1)·stride + 1, D), linear in between."""
    if stride == 1:
        return trajectories
    h = trajectories.shape[1]
    t = np.arange((h - 1) * stride + 1) / stride  # each env step's place on the plan's own time axis
    j = np.minimum(t.astype(int), h - 2)
    frac = (t - j)[None, :, None]
    return trajectories[:, j] * (1 - frac) + trajectories[:, j + 1] * frac


def plan_lengths(fractions: Sequence[float] | None, diffusion: GaussianDiffusion) -> tuple[int, ...] | None:
    """Fractions of the run's horizon → plan lengths in states that the network takes (rounded to its multiple), or
    None."""
    if fractions is None:
        return None
    if any(not 0 < f <= 4 for f in fractions):
        raise ValueError(f"planner.horizon_fractions: {list(fractions)} must lie in (0, 4] (1.0: the run's horizon)")
    multiple = horizon_multiple(getattr(diffusion.model, "dim_mults", (1,)))
    return tuple(sorted({max(multiple, 2, multiple * round(f * diffusion.horizon / multiple)) for f in fractions}))


@dataclass(frozen=True)
class ClosedLoop:
    """Every Maze2D planning and tracking option, checked once here; the defaults are the paper's planner (one plan of
    the training horizon per episode, tracked by the original rule). ``plan.py`` fills it from ``planner.*``.

    horizons: candidate plan lengths in states (None: the run's horizon only). n_candidates: samples per horizon and
    episode. max_residual: the dynamic consistency a plan must meet (velocity units; the env's speed limit is 5).
    replan_lag > 0: replan an episode whose position is this far from where its plan puts it now; replan_every > 0:
    replan an episode whose plan is this many env steps old; both checked every replan_check_every env steps.
    track_speed, track_gains: see :func:`track_waypoint`.
    """

    horizons: tuple[int, ...] | None = None
    n_candidates: int = 1
    max_residual: float = math.inf
    replan_lag: float = 0.0
    replan_every: int = 0
    replan_check_every: int = 10
    track_speed: float = 1.0
    track_gains: tuple[float, float] = field(default=(1.0, 1.0))

    def __post_init__(self):
        if self.horizons is not None:
            horizons = tuple(sorted(set(self.horizons)))
            if not horizons or any(isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 2
                                   for h in horizons):
                raise ValueError(f"planner.horizons: {list(self.horizons)} must be integers ≥ 2 (plan lengths in "
                                 "states, the network's positions)")
            object.__setattr__(self, "horizons", tuple(int(h) for h in horizons))
        if self.n_candidates < 1:
            raise ValueError(f"planner.n_candidates: {self.n_candidates} must be ≥ 1")
        if not self.max_residual > 0:
            raise ValueError(f"planner.max_residual: {self.max_residual} must be > 0 (velocity units; data give ≈ 0)")
        if not self.replan_lag >= 0 or self.replan_every < 0 or self.replan_check_every < 1:
            raise ValueError(
                f"planner.replan_lag ({self.replan_lag}) and planner.replan_every ({self.replan_every}) must be ≥ 0 "
                f"(0: off) and planner.replan_check_every ({self.replan_check_every}) ≥ 1"
            )
        if not 0 < self.track_speed <= 4:
            raise ValueError(f"planner.track_speed ({self.track_speed}) must lie in (0, 4] (1: follow the plan as "
                             "timed)")
        if len(self.track_gains) != 2 or not all(0 < k <= 20 for k in self.track_gains):
            raise ValueError(f"planner.track_p_gain and planner.track_d_gain ({', '.join(map(str, self.track_gains))})"
                             " must lie in (0, 20] (1 and 1: the original tracking rule)")

    @property
    def replans(self) -> bool:
        """Whether episodes are ever replanned (the paper's planner: never)."""
        return self.replan_lag > 0 or self.replan_every > 0

    def accepts(self, new_residual: float, current_residual: float) -> bool:
        """Whether a new plan replaces the one in hand: it is consistent (≤ max_residual), or less inconsistent than
        the current one. An episode that keeps its plan is checked again later."""
        return new_residual <= self.max_residual or new_residual < current_residual


class Maze2dPlanner:
    """Plans N episodes at once with conditions {0: s_0, h−1: [goal_xy, 0, 0]} for each candidate horizon h.

    loop: the options (:class:`ClosedLoop`). Each episode keeps the shortest horizon with a sample whose
    dynamic_residual ≤ max_residual (its most consistent sample there), or else its most consistent sample overall.
    horizon: the training horizon to plan with when loop.horizons is None (None: the run's). scheduler: the sampler
    (None: the paper's DDPM over all N steps, or a strided one over ``n_sample_steps``). stride: the run's
    env.stride; a plan of h states is upsampled to (h − 1)·stride + 1 env steps before it is judged and tracked.
    """

    def __init__(
        self,
        diffusion: GaussianDiffusion,
        loop: ClosedLoop | None = None,
        *,
        horizon: int | None = None,
        n_sample_steps: int | None = None,
        scheduler: DDPMScheduler | None = None,
        stride: int = 1,
    ):
        self.diffusion = diffusion
        self.loop = loop or ClosedLoop()
        if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
            raise ValueError(f"stride: {stride} must be an integer ≥ 1 (the run's env.stride)")
        self.stride = int(stride)
        self.horizon = horizon or diffusion.horizon
        self.horizons = list(self.loop.horizons or (self.horizon,))
        dim_mults = getattr(diffusion.model, "dim_mults", None)  # a TemporalUnet takes multiples of 2^levels
        for h in self.horizons if dim_mults is not None else ():
            try:
                check_horizon(h, dim_mults)
            except ValueError as error:
                raise ValueError(f"planner.horizons: {error}") from None
        if n_sample_steps is not None and not 1 <= n_sample_steps <= diffusion.n_diffusion_steps:
            raise ValueError(
                f"planner.n_sample_steps: {n_sample_steps} must be between 1 and the run's "
                f"{diffusion.n_diffusion_steps} diffusion steps, or null"
            )
        if scheduler is not None and n_sample_steps is not None:
            raise ValueError(f"n_sample_steps={n_sample_steps} and scheduler={scheduler!r}: give the steps to the "
                             "scheduler only")
        self.scheduler = scheduler or DDPMScheduler(n_sample_steps)
        self.sampler = self.scheduler.prepare(diffusion)
        # DDPM's step is p_sample_loop's own; any other scheduler replaces it.
        self.sample_fn = None if type(self.scheduler) is DDPMScheduler else self.scheduler.step

    def _sample(self, observations, goals, horizon, generator) -> np.ndarray:
        """(M, 4) starts, (M, 2) goals → (M, horizon, transition_dim) unnormalized samples."""
        diffusion = self.sampler
        device = diffusion.schedule.betas.device
        observations = torch.as_tensor(np.asarray(observations), dtype=torch.float32, device=device)
        goal_states = torch.zeros_like(observations)
        goal_states[:, :2] = torch.as_tensor(np.asarray(goals), dtype=torch.float32, device=device)
        cond = {
            0: diffusion.normalize_observation(observations),
            horizon - 1: diffusion.normalize_observation(goal_states),
        }
        sample = diffusion.conditional_sample(cond, horizon=horizon, generator=generator, sample_fn=self.sample_fn)
        return diffusion.unnormalize(sample.trajectories).cpu().numpy()

    @property
    def device(self) -> torch.device:
        return self.diffusion.schedule.betas.device

    def reset(self) -> None:
        """Nothing to forget: every plan starts from noise."""

    @torch.no_grad()
    def plan(
        self, observations: np.ndarray, goals: np.ndarray, generator: torch.Generator | None = None, env_ids=None
    ) -> Plan:
        """observations: (N, 4) current states; goals: (N, 2) target positions → Plan of N trajectories, every env
        step (env_ids are unused: plans depend on the current state and goal only)."""
        n, k, a = len(observations), self.loop.n_candidates, self.diffusion.action_dim
        if len(self.horizons) == 1 and k == 1:  # the paper's planner: one sample per episode
            trajectories = upsample(self._sample(observations, goals, self.horizons[0], generator), self.stride)
            return Plan(trajectories[..., :a], trajectories[..., a:])
        longest = (self.horizons[-1] - 1) * self.stride + 1
        best = np.zeros((n, longest, self.diffusion.transition_dim))
        lengths, best_residual = np.zeros(n, dtype=int), np.full(n, np.inf)
        settled = np.zeros(n, dtype=bool)  # a consistent plan was found at a shorter horizon
        for horizon in self.horizons:
            samples = self._sample(np.repeat(observations, k, 0), np.repeat(goals, k, 0), horizon, generator)
            samples = upsample(samples, self.stride)
            h = samples.shape[1]
            samples = samples.reshape(n, k, h, -1)
            residuals = dynamic_residual(samples[..., a:].reshape(n * k, h, -1)).reshape(n, k)
            pick = residuals.argmin(axis=1)
            residual = residuals[np.arange(n), pick]
            take = ~settled & ((residual <= self.loop.max_residual) | (residual < best_residual))
            for i in np.flatnonzero(take):
                best[i, :h] = samples[i, pick[i]]
                best[i, h:] = samples[i, pick[i], -1]
                lengths[i], best_residual[i] = h, residual[i]
            settled |= residual <= self.loop.max_residual
        return Plan(best[..., :a], best[..., a:], lengths, best_residual)


def plan_state(planned_observations: np.ndarray, tau: float) -> np.ndarray:
    """The plan (H, 4) at fractional step tau, linear between its steps; past its end, its last position at rest."""
    last = len(planned_observations) - 1
    if tau > last:
        state = planned_observations[-1].copy()
        state[2:] = 0
        return state
    j = min(int(tau), max(last - 1, 0))
    f = tau - j
    return planned_observations[j] * (1 - f) + planned_observations[min(j + 1, last)] * f


def track_waypoint(
    planned_observations: np.ndarray, t: int, state: np.ndarray, speed: float = 1.0, gains: tuple[float, float] = (1, 1)
) -> np.ndarray:
    """The original's tracking rule at env step t: a = (wp_xy − s_xy) + (wp_vel − s_vel).

    planned_observations: (H, 4); the waypoint is plan[t + 1], or the last planned position at rest once the plan
    is used up. state: (4,) = (qpos, qvel). speed > 1 (not in the original) runs along the plan's path ``speed``
    times faster than planned: the waypoint is the plan at step speed·(t + 1), its velocity times speed. gains
    (k_p, k_d) (not in the original, which has (1, 1)) weigh the two terms:
    a = k_p·(wp_xy − s_xy) + k_d·(wp_vel − s_vel).
    """
    waypoint = plan_state(planned_observations, speed * (t + 1))
    k_p, k_d = gains
    return k_p * (waypoint[:2] - state[:2]) + k_d * (speed * waypoint[2:] - state[2:])


def needs_replan(
    plan: np.ndarray, k: int, state: np.ndarray, lag: float, every: int, speed: float = 1.0
) -> bool:
    """Whether an episode k steps into its plan (T, 4), every env step, should replan: its position is more than
    ``lag`` (> 0) from the plan's position at step speed·k (its last position once the plan is used up), or the plan
    is ``every`` (> 0) steps old."""
    if every > 0 and k >= every:
        return True
    return lag > 0 and float(np.linalg.norm(plan_state(plan, speed * k)[:2] - state[:2])) > lag


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
    plans: list[list[np.ndarray]] = field(default_factory=list)  # every plan of each episode, (env steps, 4) each
    n_replans: np.ndarray | None = None  # (N,) plans made after the first
    seconds: float = 0.0  # wall time of the episodes (set by the caller that timed them)

    def summary(self) -> dict[str, float]:
        """Mean ± standard error of scores and returns (see episode_summary), and replans per episode."""
        summary = episode_summary(self.returns, self.normalized_scores, self.lengths)
        if self.n_replans is not None:
            summary["replans_per_episode"] = float(self.n_replans.mean())
        return summary


def run_maze2d_episodes(
    envs: list, planner: Maze2dPlanner, *, seed: int, multi_task: bool = False, max_episode_steps: int | None = None
) -> EpisodeResults:
    """Reset env i with seed + i (Multi2D: also draw a random goal), plan all episodes in one call, then track.

    envs: gymnasium Maze2D envs (TimeLimit-wrapped or not); each runs one episode, for max_episode_steps (None: the
    env's own limit). The planner's :class:`ClosedLoop` says the rest: the paper plans once; in closed loop, every
    ``replan_check_every`` steps the episodes that ``needs_replan`` are replanned from their current state in one
    batched ``planner.plan`` call, and a new plan replaces an episode's current one if ``loop.accepts`` it. Each
    step, every running episode acts by ``track_waypoint`` on its plan.
    """
    loop = planner.loop
    n = len(envs)
    observations, goals = [], []
    for i, env in enumerate(envs):
        obs, _ = env.reset(seed=seed + i)
        if multi_task:
            env.unwrapped.set_target()
        observations.append(np.asarray(obs, dtype=np.float64))
        goals.append(np.asarray(env.unwrapped.target, dtype=np.float64))
    observations, goals = np.stack(observations), np.stack(goals)
    generator = torch.Generator(device=planner.device).manual_seed(seed)
    first = planner.plan(observations, goals, generator=generator)
    plans = [[first.path(i)] for i in range(n)]
    planned_at = np.zeros(n, dtype=int)
    residuals = np.array(first.residuals if first.residuals is not None else np.full(n, np.inf), dtype=float)

    steps = max_episode_steps or envs[0].spec.max_episode_steps
    states = observations.copy()
    returns, lengths, running = np.zeros(n), np.zeros(n, dtype=int), np.ones(n, dtype=bool)
    executed = [[observations[i]] for i in range(n)]
    for t in range(steps):
        if t > 0 and loop.replans and t % loop.replan_check_every == 0:
            stale = [i for i in np.flatnonzero(running) if needs_replan(
                plans[i][-1], t - planned_at[i], states[i], loop.replan_lag, loop.replan_every, loop.track_speed)]
            if stale:
                plan = planner.plan(states[stale], goals[stale], generator=generator)
                for k, i in enumerate(stale):
                    new = plan.residuals[k] if plan.residuals is not None else -np.inf
                    if loop.accepts(new, residuals[i]):
                        plans[i].append(plan.path(k))
                        planned_at[i], residuals[i] = t, new
        for i in np.flatnonzero(running):
            action = track_waypoint(plans[i][-1], t - planned_at[i], states[i], loop.track_speed, loop.track_gains)
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
