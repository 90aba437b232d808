"""A policy network behind the planner protocol: BC (baselines/bc.py) or IQL's policy (baselines/iql.py)."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from diffuser.planning.plan import Plan


class Policy(Protocol):
    def act(self, observations: torch.Tensor) -> torch.Tensor:
        """Raw observations (N, observation_dim) → raw actions (N, action_dim)."""
        ...

    def parameters(self): ...


class PolicyPlanner:
    """A memoryless policy behind the planner interface: observations (N, observation_dim) → Plan of one step."""

    def __init__(self, policy: Policy):
        self.policy = policy

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    def reset(self) -> None:
        """Nothing to forget: the policy is memoryless."""

    def plan(
        self, observations: np.ndarray, goals: np.ndarray | None = None, generator: torch.Generator | None = None,
        env_ids: list[int] | None = None,
    ) -> Plan:
        """Act on N observations at once: plans of one step (goals, generator and env_ids are unused: the policy
        acts deterministically)."""
        obs = torch.as_tensor(np.asarray(observations), dtype=torch.float32, device=self.device)
        actions = self.policy.act(obs).cpu().numpy()
        return Plan(actions[:, None], np.asarray(observations)[:, None], values=np.zeros(len(actions)))
