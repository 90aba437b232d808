"""The value guide: J(x_t, t) and its gradient with respect to the noisy trajectory."""

from __future__ import annotations

import torch
from torch import nn


class ValueGuide(nn.Module):
    """Wraps a value network ``model(x, t) → (B, 1)``: value() and gradients() of Σ_b J(x_b, t_b)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """J(x_t, t): x (B, H, D) normalized, t (B,) → (B,)."""
        return self.model(x, t).squeeze(-1)

    def gradients(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Values (B,) and ∂(Σ_b J_b)/∂x (B, H, D), computed with gradients enabled whatever the caller's mode."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            y = self(x, t)
            (grad,) = torch.autograd.grad(y.sum(), x)
        return y.detach(), grad
