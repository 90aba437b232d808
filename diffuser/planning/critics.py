"""Critics that rank (and may guide) a diffusion model's candidate plans.

A critic is J(τ, t) → (B, 1) on plans in the diffusion run's normalized ``[a, s]`` layout, the signature of the
value UNet, so ``ValueGuide`` wraps any of them for the guided step (its gradient) and for selection (its value):

- ``value``: the paper's value UNet, trained on noised windows against Monte-Carlo returns (``ValueFunction``);
- ``iql_v``: an IQL run's V summed over the plan's states, Σ_h V(s_h) (Diffusion Veteran's rule);
- ``iql_q``: an IQL run's min_i Q_i(s_0, a_0) of the plan's first action (IDQL's rule);
- ``rollout``: the plan's actions played forward from s_0 through a learned dynamics model, scored by the predicted
  rewards and the IQL run's V at the last predicted state, Σ_{h<K} γ^h r̂_h + γ^K V(ŝ_K), cut at the first predicted
  state the env's own termination rule ends (model-based value expansion; it reads the plan's actions only, not its
  states, since the planned states need not follow from the planned actions).

IQL and the dynamics model learned on clean transitions, so these critics ignore t: on noisy plans (guidance at
t > 0) they score the noisy rows as they are.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from diffuser.baselines.dynamics import ForwardDynamics
from diffuser.baselines.iql import IQL
from diffuser.diffusion.normalization import Normalizer

CRITICS = ("value", "iql_v", "iql_q", "rollout")
IQL_RULES = ("iql_v", "iql_q")
NEEDS_IQL = (*IQL_RULES, "rollout")  # critics that read an IQL run


def check_critic(name: str, option: str) -> None:
    """One clear error for a critic name that is not one of CRITICS (``option`` names the config key)."""
    if name not in CRITICS:
        raise ValueError(f"{option}={name!r} is not a critic; valid: {list(CRITICS)} (value: the value UNet; "
                         "iql_v: Σ_h V(s_h) of an IQL run; iql_q: Q(s_0, a_0) of an IQL run; rollout: the plan's "
                         "actions through a dynamics run, then the IQL run's V)")


class IQLPlanCritic(nn.Module):
    """An IQL run's critic as J(τ): rule ``iql_v`` Σ_h V(s_h), rule ``iql_q`` min_i Q_i(s_0, a_0).

    ``plan_normalizer`` is the diffusion run's: plans are unnormalized with it and normalized with the IQL run's own
    (the same statistics when both were fitted on the same data; the maps are affine, so gradients pass).
    """

    def __init__(self, iql: IQL, plan_normalizer: Normalizer, rule: str):
        super().__init__()
        if rule not in IQL_RULES:
            raise ValueError(f"IQL critic rule {rule!r}; valid: {list(IQL_RULES)}")
        self.iql, self.plan_normalizer, self.rule = iql, plan_normalizer, rule

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B, H, D) normalized plans, t (B,) unused → (B, 1)."""
        rows = self.iql.normalizer.normalize(self.plan_normalizer.unnormalize(x))
        a, s = rows[..., : self.iql.action_dim], rows[..., self.iql.action_dim :]
        if self.rule == "iql_v":
            return self.iql.value(s).sum(dim=1, keepdim=True)
        return self.iql.q(s[:, 0], a[:, 0]).unsqueeze(-1)


class RolloutCritic(nn.Module):
    """J(τ) = Σ_{h<K} γ^h·alive_h·r̂_h + γ^K·alive_K·V(ŝ_K): the plan's first K actions (all H when ``steps`` is None)
    played from its first state s_0 through ``dynamics``; alive_h is 0 from the first predicted state that
    ``healthy`` (raw observations → booleans, the env's termination rule) refuses, so a predicted fall earns that
    step's reward and nothing after, as IQL's TD target treats a terminal. γ is the IQL run's discount; rewards and V
    are in the scaled units both runs trained on. ``plan_normalizer`` is the diffusion run's (see IQLPlanCritic).
    Differentiable in the plan's actions, so it can also guide."""

    def __init__(self, dynamics: ForwardDynamics, iql: IQL, plan_normalizer: Normalizer,
                 healthy: Callable[[torch.Tensor], torch.Tensor], steps: int | None = None):
        super().__init__()
        if steps is not None and steps < 1:
            raise ValueError(f"rollout critic steps={steps} must be at least 1 (None: the plan's horizon)")
        self.dynamics, self.iql, self.plan_normalizer, self.healthy, self.steps = (
            dynamics, iql, plan_normalizer, healthy, steps)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B, H, D) normalized plans, t (B,) unused → (B, 1)."""
        d = self.dynamics
        rows = d.normalizer.normalize(self.plan_normalizer.unnormalize(x))
        actions, s = rows[..., : d.action_dim], rows[:, 0, d.action_dim :]
        states = slice(d.action_dim, None)
        total = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        alive, weight = torch.ones_like(total), 1.0
        for h in range(min(self.steps or x.shape[1], x.shape[1])):
            s, reward = d.step(s, actions[:, h])
            total = total + weight * alive * reward
            weight *= self.iql.discount
            alive = alive * self.healthy(d.normalizer.unnormalize(s, states)).to(x.dtype)
        return (total + weight * alive * self.iql.value(s)).unsqueeze(-1)
