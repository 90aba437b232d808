"""Beta schedules and the DDPM coefficients derived from them."""

from __future__ import annotations

import math

import torch
from torch import nn


def cosine_beta_schedule(n_diffusion_steps: int, s: float = 0.008) -> torch.Tensor:
    """Cosine schedule of Nichol & Dhariwal: betas (N,), clipped to [0, 0.999], computed in float64."""
    steps = torch.arange(n_diffusion_steps + 1, dtype=torch.float64)
    alphas_cumprod = torch.cos(((steps / n_diffusion_steps) + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(0, 0.999).float()


def linear_beta_schedule(n_diffusion_steps: int, beta_start: float = 1e-4, beta_end: float = 2e-2) -> torch.Tensor:
    """Linear schedule of Ho et al. (2020), scaled to N steps."""
    scale = 1000 / n_diffusion_steps
    return torch.linspace(beta_start * scale, beta_end * scale, n_diffusion_steps, dtype=torch.float64).float()


BETA_SCHEDULES = {"cosine": cosine_beta_schedule, "linear": linear_beta_schedule}


class DiffusionSchedule(nn.Module):
    """Float32 buffers of a beta schedule: everything q_sample and q_posterior need, indexed by step t."""

    def __init__(self, n_diffusion_steps: int, beta_schedule: str = "cosine", betas: torch.Tensor | None = None):
        super().__init__()
        if betas is None:
            if beta_schedule not in BETA_SCHEDULES:
                raise ValueError(f"unknown beta_schedule '{beta_schedule}'; valid: {sorted(BETA_SCHEDULES)}")
            betas = BETA_SCHEDULES[beta_schedule](n_diffusion_steps)
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1), alphas_cumprod[:-1]])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)

        self.n_diffusion_steps = n_diffusion_steps
        buffers = {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
            "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod),
        }
        for name, value in buffers.items():
            # Derived from n_diffusion_steps alone, so not part of the saved weights.
            self.register_buffer(name, value.float(), persistent=False)

    def respaced(self, timesteps: list[int]) -> "DiffusionSchedule":
        """The schedule over a subsequence of steps (Nichol & Dhariwal 2021, Sec. 4): same ᾱ at the kept steps,
        β'_i = 1 − ᾱ_{t_i} / ᾱ_{t_{i−1}}. Step i of the result is step timesteps[i] of this one."""
        alphas_cumprod = self.alphas_cumprod.double()[torch.as_tensor(timesteps)]
        previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        return DiffusionSchedule(len(timesteps), betas=(1 - alphas_cumprod / previous).float())


def respaced_timesteps(n_diffusion_steps: int, n_steps: int) -> list[int]:
    """n_steps of the N training steps, evenly spaced from 0 to N − 1 (one step: N − 1, x0 straight from noise)."""
    if not 1 <= n_steps <= n_diffusion_steps:
        raise ValueError(f"n_sample_steps={n_steps} must be between 1 and n_diffusion_steps={n_diffusion_steps}")
    if n_steps == 1:
        return [n_diffusion_steps - 1]
    return sorted({round(i * (n_diffusion_steps - 1) / (n_steps - 1)) for i in range(n_steps)})


def extract(a: torch.Tensor, t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Gather a[t] per batch element and reshape to broadcast against ``shape``: (B,) → (B, 1, 1)."""
    return a.gather(-1, t).reshape(t.shape[0], *((1,) * (len(shape) - 1)))
