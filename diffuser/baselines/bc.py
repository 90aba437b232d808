"""Behaviour cloning: an MLP from normalized observation to normalized action, trained on the same windows.

It trains through the same Trainer and run folders as the diffusion model (``python train.py model=mlp_bc``), on
horizon-1 windows of the dataset, and plays through the same episode loop as the guided planner.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffuser.baselines.mlp import mlp
from diffuser.diffusion.conditioning import Batch
from diffuser.diffusion.normalization import Normalizer


class MLPPolicy(nn.Module):
    """a = MLP(s) on normalized data (ReLU hidden layers, linear output), with the dataset's normalizer inside."""

    def __init__(
        self, normalizer: Normalizer, *, observation_dim: int, action_dim: int, hidden_dim: int = 256, n_layers: int = 2
    ):
        super().__init__()
        self.normalizer = normalizer
        self.observation_dim, self.action_dim = observation_dim, action_dim
        self.net = mlp(observation_dim, action_dim, hidden_dim, n_layers)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """MSE between predicted and data actions of the first transition of each window (normalized)."""
        first = batch.trajectories[:, 0]
        loss = F.mse_loss(self.net(first[:, self.action_dim :]), first[:, : self.action_dim])
        return loss, {"loss": loss.detach()}

    @torch.no_grad()
    def act(self, observations: torch.Tensor) -> torch.Tensor:
        """Raw observations (N, observation_dim) → raw actions (N, action_dim)."""
        normed = self.normalizer.normalize(observations, slice(self.action_dim, None))
        return self.normalizer.unnormalize(self.net(normed), slice(0, self.action_dim))
