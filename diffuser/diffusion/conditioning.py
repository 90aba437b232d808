"""Trajectory layout and conditioning by inpainting.

A trajectory is a tensor (B, H, transition_dim) whose row h is ``[a_h, s_h]``: the ``action_dim`` action entries
first, then the ``observation_dim`` observation entries (the original's layout). Conditions are a dict
``{time index: normalized state (B, observation_dim)}``; conditioning overwrites the observation slice of those rows
and never touches actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

Conditions = Mapping[int, torch.Tensor]


@dataclass
class Batch:
    """A training batch. trajectories: (B, H, D) normalized, actions first; conditions: {k: (B, observation_dim)};
    values: (B,) value targets (ValueDataset only); rewards and terminals: (B,) of each window's first transition
    (TransitionDataset only: r and d of (s, a, r, s', d))."""

    trajectories: torch.Tensor
    conditions: dict[int, torch.Tensor]
    values: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    terminals: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "Batch":
        """Move every tensor to ``device``."""
        return Batch(
            self.trajectories.to(device),
            {k: v.to(device) for k, v in self.conditions.items()},
            *(None if t is None else t.to(device) for t in (self.values, self.rewards, self.terminals)),
        )


def apply_conditioning(x: torch.Tensor, cond: Conditions, action_dim: int) -> torch.Tensor:
    """Overwrite x[:, k, action_dim:] with cond[k] for every k, in place; returns x.

    x: (B, H, transition_dim); cond[k]: (B, observation_dim) or (observation_dim,).
    """
    for k, state in cond.items():
        x[:, k, action_dim:] = state
    return x
