"""Maze2D planning (the original's ``maze2d`` branch): inpaint start and goal, plan, track the plan.

The diffusion model's actions are not executed: a PD rule follows the planned states, as the original does.

Paper mode (the defaults): one plan of the training horizon per episode, made once. Closed-loop options:
- ``horizons``: plan with several lengths (the goal always inpainted at the last step, where training put the
  window's end) and keep, per episode, the shortest plan that is dynamically consistent: its positions move as its
  own velocities say (``dynamic_residual`` ≤ ``max_residual``). A plan too short for the distance jumps, through
  walls if need be, and fails the test; no map or simulator is consulted.
- replanning (``run_maze2d_episodes``): from the current state, for every episode whose tracker fell behind its plan;
  a new plan replaces the current one only if it is consistent or less inconsistent than the current one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.diffusion.schedulers import DDPMScheduler
from diffuser.models.temporal_unet import check_horizon, horizon_multiple
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


def plan_lengths(fractions: Sequence[float] | None, diffusion: GaussianDiffusion) -> list[int] | None:
    """Fractions of the run's horizon → plan lengths the network takes (rounded to its multiple), or None."""
    if fractions is None:
        return None
    if any(not 0 < f <= 4 for f in fractions):
        raise ValueError(f"planner.horizon_fractions: {list(fractions)} must lie in (0, 4] (1.0: the run's horizon)")
    multiple = horizon_multiple(getattr(diffusion.model, "dim_mults", (1,)))
    return sorted({max(multiple, multiple * round(f * diffusion.horizon / multiple)) for f in fractions})


class Maze2dPlanner:
    """Plans N episodes at once with conditions {0: s_0, h−1: [goal_xy, 0, 0]} for each candidate horizon h.

    horizons: candidate plan lengths, each a valid horizon of the network (None: the training horizon only, the
    paper's planner). n_candidates: samples per horizon and episode. Each episode keeps the shortest horizon with a
    sample whose dynamic_residual ≤ max_residual (its most consistent sample there), or else its most consistent
    sample overall. n_sample_steps: a strided sampler over that many of the N training steps (None: all N).
    stride: the run's env.stride; a plan of h states is upsampled to (h − 1)·stride + 1 env steps before it is
    judged and tracked.
    """

    def __init__(
        self,
        diffusion: GaussianDiffusion,
        horizon: int | None = None,
        *,
        horizons: Sequence[int] | None = None,
        n_candidates: int = 1,
        max_residual: float = float("inf"),
        n_sample_steps: int | None = None,
        scheduler: DDPMScheduler | None = None,
        stride: int = 1,
    ):
        self.diffusion = diffusion
        if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
            raise ValueError(f"stride: {stride} must be an integer ≥ 1 (the run's env.stride)")
        self.stride = int(stride)
        self.horizon = horizon or diffusion.horizon
        self.horizons = sorted(set(horizons)) if horizons else [self.horizon]
        if any(isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 2 for h in self.horizons):
            raise ValueError(f"planner.horizons: {list(horizons)} must be integers ≥ 2 (plan lengths in env steps)")
        dim_mults = getattr(diffusion.model, "dim_mults", None)  # a TemporalUnet takes multiples of 2^levels
        for h in self.horizons if dim_mults is not None else ():
            try:
                check_horizon(h, dim_mults)
            except ValueError as error:
                raise ValueError(f"planner.horizons: {error}") from None
        if n_candidates < 1:
            raise ValueError(f"planner.n_candidates: {n_candidates} must be ≥ 1")
        if not max_residual > 0:
            raise ValueError(f"planner.max_residual: {max_residual} must be > 0 (velocity units; data give ≈ 0)")
        self.n_candidates = n_candidates
        self.max_residual = max_residual
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
        """observations: (N, 4) current states; goals: (N, 2) target positions → Plan of N trajectories (env_ids are
        unused: plans depend on the current state and goal only)."""
        n, k, a = len(observations), self.n_candidates, self.diffusion.action_dim
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
            take = ~settled & ((residual <= self.max_residual) | (residual < best_residual))
            for i in np.flatnonzero(take):
                best[i, :h] = samples[i, pick[i]]
                best[i, h:] = samples[i, pick[i], -1]
                lengths[i], best_residual[i] = h, residual[i]
            settled |= residual <= self.max_residual
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
