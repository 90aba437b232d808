"""Inverse dynamics a_t = f(s_t, s_{t+1}): an MLP on normalized states and actions (Decision Diffuser's way of
acting on planned states; not in Diffuser, which executes the planned action itself).

Trained like BC (``python train.py experiment=locomotion_invdyn``) on two-row windows [[a, s], [a', s']] of the same
data; the planner then executes f(s_0, ŝ_1) of its chosen plan (``planner.inverse_dynamics=true``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffuser.baselines.mlp import mlp
from diffuser.diffusion.conditioning import Batch
from diffuser.diffusion.normalization import Normalizer


class InverseDynamics(nn.Module):
    """a = MLP([s, s']) on normalized data (ReLU hidden layers, linear output), with the dataset's normalizer inside."""

    def __init__(
        self, normalizer: Normalizer, *, observation_dim: int, action_dim: int, hidden_dim: int = 256, n_layers: int = 2
    ):
        super().__init__()
        self.normalizer = normalizer
        self.observation_dim, self.action_dim = observation_dim, action_dim
        self.net = mlp(2 * observation_dim, action_dim, hidden_dim, n_layers)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """MSE between f(s_0, s_1) and the data's a_0 on two-row windows (normalized)."""
        x = batch.trajectories
        states = torch.cat([x[:, 0, self.action_dim :], x[:, 1, self.action_dim :]], dim=-1)
        loss = F.mse_loss(self.net(states), x[:, 0, : self.action_dim])
        return loss, {"loss": loss.detach()}

    def act_normalized(self, s: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
        """f on normalized states (..., observation_dim) → normalized actions (..., action_dim)."""
        return self.net(torch.cat([s, s_next], dim=-1))

    @torch.no_grad()
    def act(self, observations: torch.Tensor, next_observations: torch.Tensor) -> torch.Tensor:
        """Raw (s, s') (N, observation_dim) each → raw actions (N, action_dim)."""
        states = slice(self.action_dim, None)
        s, s_next = (self.normalizer.normalize(o, states) for o in (observations, next_observations))
        return self.normalizer.unnormalize(self.act_normalized(s, s_next), slice(0, self.action_dim))
