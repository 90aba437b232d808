"""A learned forward model (s, a) → (s', r): the piece that lets a critic play a plan's actions forward.

The value_check measurements say what decides a candidate plan's return is how its actions play out in the
simulator; the planned states need not follow from the planned actions, and a critic that reads them (value UNet,
IQL's Σ V) cannot see it. This model is trained on the dataset's transitions (``python train.py
experiment=locomotion_dynamics``, the two-row windows IQL trains on) and predicts, on normalized states and actions,

    ŝ' = s + Δ(s, a),   r̂ = ρ(s, a)          (one MLP with observation_dim + 1 outputs)

with the loss  E[‖Δ(s, a) − (s' − s)‖² · (1 − d)] / observation_dim + E[(ρ(s, a) − r)²], where d = 1 marks a
transition into a terminal state, whose s' the data do not hold (its Δ term is dropped; its reward is kept). Rewards
are the TransitionDataset's scaled ones, the units an IQL run of the same data learned its V in, so the two can be
added (planning/critics.py: the ``rollout`` critic).
"""

from __future__ import annotations

import torch
from torch import nn

from diffuser.baselines.mlp import mlp
from diffuser.diffusion.conditioning import Batch
from diffuser.diffusion.normalization import Normalizer


class ForwardDynamics(nn.Module):
    """ŝ' = s + Δ(s, a) and r̂ = ρ(s, a) by one MLP on normalized [a, s] rows, with the dataset's normalizer inside."""

    def __init__(
        self, normalizer: Normalizer, *, observation_dim: int, action_dim: int, hidden_dim: int = 256, n_layers: int = 3
    ):
        super().__init__()
        self.normalizer = normalizer
        self.observation_dim, self.action_dim = observation_dim, action_dim
        self.net = mlp(observation_dim + action_dim, observation_dim + 1, hidden_dim, n_layers)

    def step(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized (s, a) (..., obs), (..., act) → normalized ŝ' (..., obs) and scaled reward r̂ (...)."""
        out = self.net(torch.cat([s, a], dim=-1))
        return s + out[..., : self.observation_dim], out[..., self.observation_dim]

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The state and reward losses on two-row windows [[a, s], [a', s']] with rewards and terminals."""
        x = batch.trajectories
        a, s, s_next = x[:, 0, : self.action_dim], x[:, 0, self.action_dim :], x[:, 1, self.action_dim :]
        predicted, reward = self.step(s, a)
        alive = 1.0 - batch.terminals
        state_loss = ((predicted - s_next).square().mean(dim=-1) * alive).mean()
        reward_loss = (reward - batch.rewards).square().mean()
        loss = state_loss + reward_loss
        return loss, {"loss": loss.detach(), "state_loss": state_loss.detach(), "reward_loss": reward_loss.detach()}
