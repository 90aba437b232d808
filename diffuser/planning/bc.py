"""The behaviour-cloning policy behind the planner protocol (baselines/bc.py holds the network)."""

from __future__ import annotations

import numpy as np
import torch

from diffuser.baselines.bc import MLPPolicy
from diffuser.planning.guided import PlanStep


class BCPlanner:
    """The BC policy behind the planner interface: observations (N, observation_dim) → PlanStep."""

    def __init__(self, policy: MLPPolicy):
        self.policy = policy

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    def reset(self) -> None:
        """Nothing to forget: the policy is memoryless."""

    def __call__(
        self, observations: np.ndarray, generator: torch.Generator | None = None, env_ids: list[int] | None = None
    ) -> PlanStep:
        """Act on N observations at once (generator and env_ids are unused: the BC policy is deterministic)."""
        obs = torch.as_tensor(np.asarray(observations), dtype=torch.float32, device=self.device)
        actions = self.policy.act(obs).cpu().numpy()
        return PlanStep(actions, actions[:, None], np.asarray(observations)[:, None], np.zeros(len(actions)))
