"""Maze2D planning (the original's ``maze2d`` branch): inpaint start and goal, plan once, track the plan.

The diffusion model's actions are not executed: a PD rule follows the planned states (REFERENCE §9).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diffuser.diffusion.gaussian import GaussianDiffusion


@dataclass
class Plan:
    """Unnormalized planned trajectories: actions (B, H, action_dim), observations (B, H, observation_dim)."""

    actions: np.ndarray
    observations: np.ndarray


class Maze2dPlanner:
    """Plans N episodes at once with conditions {0: s_0, H−1: [goal_xy, 0, 0]} and tracks each plan's waypoints."""

    def __init__(self, diffusion: GaussianDiffusion, horizon: int | None = None):
        self.diffusion = diffusion
        self.horizon = horizon or diffusion.horizon

    @torch.no_grad()
    def plan(self, observations: np.ndarray, goals: np.ndarray, generator: torch.Generator | None = None) -> Plan:
        """observations: (N, 4) current states; goals: (N, 2) target positions → Plan of N trajectories."""
        device = self.diffusion.schedule.betas.device
        observations = torch.as_tensor(np.asarray(observations), dtype=torch.float32, device=device)
        goal_states = torch.zeros_like(observations)
        goal_states[:, :2] = torch.as_tensor(np.asarray(goals), dtype=torch.float32, device=device)
        cond = {
            0: self.diffusion.normalize_observation(observations),
            self.horizon - 1: self.diffusion.normalize_observation(goal_states),
        }
        sample = self.diffusion.conditional_sample(cond, horizon=self.horizon, generator=generator)
        trajectories = self.diffusion.unnormalize(sample.trajectories).cpu().numpy()
        action_dim = self.diffusion.action_dim
        return Plan(trajectories[..., :action_dim], trajectories[..., action_dim:])


def track_waypoint(planned_observations: np.ndarray, t: int, state: np.ndarray) -> np.ndarray:
    """The original's tracking rule at env step t: a = (wp_xy − s_xy) + (wp_vel − s_vel).

    planned_observations: (H, 4); the waypoint is plan[t + 1], or the last planned position at rest once the plan
    is used up. state: (4,) = (qpos, qvel).
    """
    if t < len(planned_observations) - 1:
        waypoint = planned_observations[t + 1]
    else:
        waypoint = planned_observations[-1].copy()
        waypoint[2:] = 0
    return (waypoint[:2] - state[:2]) + (waypoint[2:] - state[2:])
