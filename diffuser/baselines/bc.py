"""Behaviour cloning: an MLP from normalized observation to normalized action, trained on the same windows.

It trains through the same Trainer and run folders as the diffusion model (``python train.py model=mlp_bc``), on
horizon-1 windows of the dataset, and plays through the same episode loop as the guided planner.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffuser.diffusion.conditioning import Batch
from diffuser.diffusion.normalization import Normalizer
from diffuser.planning.guided import PlanStep


class MLPPolicy(nn.Module):
    """a = MLP(s) on normalized data (ReLU hidden layers, linear output), with the dataset's normalizer inside."""

    def __init__(
        self, normalizer: Normalizer, *, observation_dim: int, action_dim: int, hidden_dim: int = 256, n_layers: int = 2
    ):
        super().__init__()
        self.normalizer = normalizer
        self.observation_dim, self.action_dim = observation_dim, action_dim
        layers, width = [], observation_dim
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden_dim), nn.ReLU()]
            width = hidden_dim
        self.net = nn.Sequential(*layers, nn.Linear(width, action_dim))

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """MSE between predicted and data actions of the first transition of each window (normalized)."""
        first = batch.trajectories[:, 0]
        loss = F.mse_loss(self.net(first[:, self.action_dim :]), first[:, : self.action_dim])
        return loss, {"loss": loss.item()}

    @torch.no_grad()
    def act(self, observations: torch.Tensor) -> torch.Tensor:
        """Raw observations (N, observation_dim) → raw actions (N, action_dim)."""
        normed = self.normalizer.normalize(observations, slice(self.action_dim, None))
        return self.normalizer.unnormalize(self.net(normed), slice(0, self.action_dim))


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
