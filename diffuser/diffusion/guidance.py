"""Guidance (Algorithm 1 of the paper, in the original code's order): the value guide J and the guided reverse step
(the original's ``n_step_guided_p_sample``).

Order of operations, as in the original code (not Algorithm 1 of the paper, which computes μ first and then shifts
μ by αΣ∇J(μ)): starting from x_t, take ``n_guide_steps`` steps x ← x + scale·g with g = ∇ₓ Σ J(x, t) (times the
posterior variance σ_t² when ``scale_grad_by_std``; zero for t < t_stopgrad), re-applying the conditions after each,
then compute the posterior mean from the *shifted* x and add the usual noise (none at t = 0). Another sampler
(``schedulers.py``: strided DDPM, DDIM) replaces that last reverse step; the guide steps stay as they are.

Side by side, for one reverse step (conditions are re-applied by ``GaussianDiffusion.p_sample_loop`` after it)::

    Algorithm 1 (paper)                          guided_p_sample (original code)
    μ ← μ_θ(τ^i, i)                              repeat n_guide_steps: x ← x + scale·σ_i²·∇J(x, i) (0 for i < t_stopgrad);
                                                 condition x
    τ^{i−1} ~ N(μ + α Σ ∇J(μ), Σ^i)              μ ← μ_θ(x, i);  τ^{i−1} ~ N(μ, Σ^i)
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from diffuser.diffusion.conditioning import Conditions, apply_conditioning
from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.diffusion.schedule import extract


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


def guided_p_sample(
    diffusion: GaussianDiffusion,
    x: torch.Tensor,
    cond: Conditions,
    t: torch.Tensor,
    generator: torch.Generator | None,
    *,
    guide: ValueGuide,
    scale: float = 0.1,
    n_guide_steps: int = 2,
    t_stopgrad: int = 2,
    scale_grad_by_std: bool = True,
    diffusers_grad_scale: bool = False,
    step: Callable | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One guided reverse step x_t → x_{t−1}; returns it and the values J of the last guide step (B,).

    ``step(diffusion, x, cond, t, generator) → (x_{t−1}, _)`` is the reverse step taken from the guided x_t (a
    scheduler's ``step``; default ``diffusion.p_sample``, the DDPM step). ``diffusers_grad_scale`` scales the
    gradient by exp(½·σ_t) instead, as diffusers' ValueGuidedRLPipeline does (its compatibility mode only).
    """
    step = step or (lambda d, x_t, c, t_, g: d.p_sample(x_t, c, t_, g))
    variance = extract(diffusion.schedule.posterior_log_variance_clipped, t, x.shape).exp()
    if n_guide_steps == 0 or scale == 0 or bool((t < t_stopgrad).all()):
        # No guide step can move x (the original computes the gradients and zeroes them): score the plans once,
        # so they can still be ranked, with no backward pass. Same result.
        x_prev, _ = step(diffusion, x, cond, t, generator)
        return x_prev, guide(x, t)
    for _ in range(n_guide_steps):
        values, grad = guide.gradients(x, t)
        if diffusers_grad_scale:  # diffusers reads the std its scheduler returns as a log variance: exp(½·σ_t)
            grad = (0.5 * variance.sqrt()).exp() * grad
        elif scale_grad_by_std:  # the flag's name says std; the original multiplies by the variance since 2022-10-17
            grad = variance * grad
        grad[t < t_stopgrad] = 0
        x = apply_conditioning(x + scale * grad, cond, diffusion.action_dim)
    x_prev, _ = step(diffusion, x, cond, t, generator)
    return x_prev, values


def guided_sample_fn(
    guide: ValueGuide, *, scale: float, n_guide_steps: int, t_stopgrad: int, scale_grad_by_std: bool,
    diffusers_grad_scale: bool = False, step: Callable | None = None,
) -> Callable:
    """A ``sample_fn`` for GaussianDiffusion.p_sample_loop that runs guided_p_sample with these settings."""

    def sample_fn(diffusion, x, cond, t, generator):
        return guided_p_sample(
            diffusion, x, cond, t, generator, guide=guide, scale=scale, n_guide_steps=n_guide_steps,
            t_stopgrad=t_stopgrad, scale_grad_by_std=scale_grad_by_std, diffusers_grad_scale=diffusers_grad_scale,
            step=step,
        )

    return sample_fn
