"""What every planner returns, and the protocol every planner follows (Maze2D, value-guided, BC).

A planner is reset at the start of the episodes, then asked for plans for N observations at once (each an env's
current state) and returns one :class:`Plan`: unnormalized numpy trajectories, actions first in the layout of the
model, split here into actions and observations. (``diffusion.gaussian.Sample`` is the sampler's output instead:
normalized torch trajectories, before a planner picks and unnormalizes them.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch


@dataclass
class Plan:
    """Unnormalized planned trajectories: actions (B, H, action_dim), observations (B, H, observation_dim).

    lengths (B,): the steps of each plan that count (plans of several horizons are padded with their last state).
    residuals (B,): each plan's dynamic_residual, where the planner measured it (None: the paper's planner).
    values (B,): the guide's value of each plan, where there is one (None: Maze2D; zeros: unguided or BC).
    """

    actions: np.ndarray
    observations: np.ndarray
    lengths: np.ndarray | None = None
    residuals: np.ndarray | None = None
    values: np.ndarray | None = None

    def __post_init__(self):
        if self.lengths is None:
            self.lengths = np.full(len(self.observations), self.observations.shape[1])

    @property
    def first_actions(self) -> np.ndarray:
        """The action each env executes now (receding horizon): (B, action_dim)."""
        return self.actions[:, 0]

    def path(self, i: int) -> np.ndarray:
        """The planned observations of plan i, (lengths[i], observation_dim)."""
        return self.observations[i, : self.lengths[i]]


class Planner(Protocol):
    """reset() before new episodes; plan(N observations) → Plan of N trajectories."""

    @property
    def device(self) -> torch.device: ...

    def reset(self) -> None: ...

    def plan(
        self,
        observations: np.ndarray,
        goals: np.ndarray | None = None,
        generator: torch.Generator | None = None,
        env_ids: Sequence[int] | None = None,
    ) -> Plan:
        """observations: (N, observation_dim) raw; goals: (N, 2) for goal-reaching families; env_ids name the envs
        across calls (a planner with memory, e.g. the warm start, needs them)."""
        ...
