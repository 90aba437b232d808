"""Critics that rank (and may guide) a diffusion model's candidate plans.

A critic is J(τ, t) → (B, 1) on plans in the diffusion run's normalized ``[a, s]`` layout, the signature of the
value UNet, so ``ValueGuide`` wraps any of them for the guided step (its gradient) and for selection (its value):

- ``value``: the paper's value UNet, trained on noised windows against Monte-Carlo returns (``ValueFunction``);
- ``iql_v``: an IQL run's V summed over the plan's states, Σ_h V(s_h) (Diffusion Veteran's rule);
- ``iql_q``: an IQL run's min_i Q_i(s_0, a_0) of the plan's first action (IDQL's rule).

IQL learned on clean transitions, so its critics ignore t: on noisy plans (guidance at t > 0) they score the noisy
rows as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from diffuser.baselines.iql import IQL
from diffuser.diffusion.normalization import Normalizer

CRITICS = ("value", "iql_v", "iql_q")
IQL_RULES = ("iql_v", "iql_q")


def check_critic(name: str, option: str) -> None:
    """One clear error for a critic name that is not one of CRITICS (``option`` names the config key)."""
    if name not in CRITICS:
        raise ValueError(f"{option}={name!r} is not a critic; valid: {list(CRITICS)} (value: the value UNet; "
                         "iql_v: Σ_h V(s_h) of an IQL run; iql_q: Q(s_0, a_0) of an IQL run)")


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
