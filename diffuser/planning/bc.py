"""The behaviour-cloning policy behind the planner protocol (baselines/bc.py holds the network)."""

from __future__ import annotations

import numpy as np
import torch

from diffuser.baselines.bc import MLPPolicy
from diffuser.planning.plan import Plan


class BCPlanner:
    """The BC policy behind the planner interface: observations (N, observation_dim) → Plan."""

    def __init__(self, policy: MLPPolicy):
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
        """Act on N observations at once: plans of one step (goals, generator and env_ids are unused: the BC policy
        is deterministic)."""
        obs = torch.as_tensor(np.asarray(observations), dtype=torch.float32, device=self.device)
        actions = self.policy.act(obs).cpu().numpy()
        return Plan(actions[:, None], np.asarray(observations)[:, None], values=np.zeros(len(actions)))
