"""Implicit Q-learning (Kostrikov, Nair, Levine, ICLR 2022): an offline-RL baseline, and the critic that ranks plans.

Three losses on transitions (s, a, r, s', d) of the dataset, each on its own networks (one Adam over all of them is
three Adams with the same learning rate, since every loss reaches only its own parameters):

    V:  L_V = E[ |τ − 1(u < 0)| · u² ],   u = min_i Q̄_i(s, a) − V(s)          (expectile τ of the in-sample Q)
    Q:  L_Q = ½ Σ_i E[ (Q_i(s, a) − r − γ(1 − d)·V(s'))² ]                    (twin Q, TD target from V: no max over a)
    π:  L_π = −E[ min(exp(β·(min_i Q̄_i(s, a) − V(s))), 100) · log π(a | s) ]   (advantage-weighted regression)

Q̄ are the target networks, Q̄ ← (1 − α)·Q̄ + α·Q after every optimizer step (``update_targets``, which the trainer
calls). Defaults are CORL's for D4RL locomotion: τ 0.7, β 3.0, γ 0.99, α 0.005, 2 × 256 ReLU networks.

Everything here works on normalized states and actions (the dataset's normalizer, saved inside the model, as for
BC); ``act`` and the critics take and return raw values. CORL's policy is a Gaussian with a tanh-squashed mean over
raw actions; ours has a linear mean over normalized actions, the same space the diffusion model plans in.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from diffuser.baselines.mlp import mlp
from diffuser.diffusion.conditioning import Batch
from diffuser.diffusion.normalization import Normalizer

LOG_STD_RANGE = (-20.0, 2.0)  # CORL's clamp of the policy's log standard deviation
MAX_ADVANTAGE_WEIGHT = 100.0  # CORL's clamp of exp(β·A)


def expectile_loss(u: torch.Tensor, expectile: float) -> torch.Tensor:
    """E[|τ − 1(u < 0)|·u²]: squared errors weighted τ where u ≥ 0 and 1 − τ where u < 0."""
    weight = torch.where(u < 0, 1.0 - expectile, expectile)
    return (weight * u.square()).mean()


class IQL(nn.Module):
    """V(s), twin Q(s, a) with targets, and a Gaussian policy π(a | s), all on normalized [a, s] rows."""

    def __init__(
        self,
        normalizer: Normalizer,
        *,
        observation_dim: int,
        action_dim: int,
        hidden_dim: int = 256,
        n_layers: int = 2,
        discount: float = 0.99,
        expectile: float = 0.7,
        beta: float = 3.0,
        target_update: float = 0.005,
    ):
        super().__init__()
        if not 0 < expectile < 1:
            raise ValueError(f"iql.expectile={expectile} must lie strictly between 0 and 1 (CORL: 0.7)")
        if not 0 < target_update <= 1:
            raise ValueError(f"iql.target_update={target_update} must lie in (0, 1] (CORL: 0.005)")
        if not 0 <= discount < 1:
            raise ValueError(f"env.discount={discount} must lie in [0, 1) for a TD critic (CORL: 0.99)")
        self.normalizer = normalizer
        self.observation_dim, self.action_dim = observation_dim, action_dim
        self.discount, self.expectile, self.beta, self.target_update = discount, expectile, beta, target_update
        self.v = mlp(observation_dim, 1, hidden_dim, n_layers)
        self.q1 = mlp(observation_dim + action_dim, 1, hidden_dim, n_layers)
        self.q2 = mlp(observation_dim + action_dim, 1, hidden_dim, n_layers)
        self.target_q1 = copy.deepcopy(self.q1).requires_grad_(False)
        self.target_q2 = copy.deepcopy(self.q2).requires_grad_(False)
        self.policy = mlp(observation_dim, action_dim, hidden_dim, n_layers)
        self.log_std = nn.Parameter(torch.zeros(action_dim))

    # ------------------------------------------------------------------ networks on normalized inputs
    def value(self, s: torch.Tensor) -> torch.Tensor:
        """V(s): (..., observation_dim) → (...)."""
        return self.v(s).squeeze(-1)

    def q(self, s: torch.Tensor, a: torch.Tensor, target: bool = False) -> torch.Tensor:
        """min_i Q_i(s, a) (target networks with ``target``): (..., obs), (..., act) → (...)."""
        sa = torch.cat([s, a], dim=-1)
        q1, q2 = (self.target_q1, self.target_q2) if target else (self.q1, self.q2)
        return torch.minimum(q1(sa), q2(sa)).squeeze(-1)

    def log_prob(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """log π(a | s) of the diagonal Gaussian N(policy(s), exp(log_std)²), summed over action dims."""
        log_std = self.log_std.clamp(*LOG_STD_RANGE)
        z = (a - self.policy(s)) / log_std.exp()
        return (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    # ------------------------------------------------------------------ training
    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_V + L_Q + L_π on a batch of two-row windows [[a, s], [a', s']] with rewards and terminals."""
        a, s = batch.trajectories[:, 0, : self.action_dim], batch.trajectories[:, 0, self.action_dim :]
        s_next = batch.trajectories[:, 1, self.action_dim :]
        with torch.no_grad():
            target_q = self.q(s, a, target=True)
            td_target = batch.rewards + self.discount * (1.0 - batch.terminals) * self.value(s_next)
        v = self.value(s)
        advantage = (target_q - v).detach()
        v_loss = expectile_loss(target_q - v, self.expectile)
        sa = torch.cat([s, a], dim=-1)
        q_loss = 0.5 * (F.mse_loss(self.q1(sa).squeeze(-1), td_target) + F.mse_loss(self.q2(sa).squeeze(-1), td_target))
        weights = torch.exp(self.beta * advantage).clamp(max=MAX_ADVANTAGE_WEIGHT)
        policy_loss = -(weights * self.log_prob(s, a)).mean()
        loss = v_loss + q_loss + policy_loss
        return loss, {"loss": loss.detach(), "v_loss": v_loss.detach(), "q_loss": q_loss.detach(),
                      "policy_loss": policy_loss.detach(), "v": v.detach().mean(), "advantage": advantage.mean()}

    @torch.no_grad()
    def update_targets(self) -> None:
        """Q̄ ← (1 − α)·Q̄ + α·Q (the trainer calls this after every optimizer step)."""
        targets = [*self.target_q1.parameters(), *self.target_q2.parameters()]
        torch._foreach_lerp_(targets, [*self.q1.parameters(), *self.q2.parameters()], self.target_update)

    # ------------------------------------------------------------------ raw-valued interface
    @torch.no_grad()
    def act(self, observations: torch.Tensor) -> torch.Tensor:
        """Raw observations (N, observation_dim) → raw actions (N, action_dim): the policy's mean."""
        s = self.normalizer.normalize(observations, slice(self.action_dim, None))
        return self.normalizer.unnormalize(self.policy(s), slice(0, self.action_dim))
