"""Gaussian diffusion over trajectories (Diffuser, Sec. 3) and the value model trained on noised trajectories.

Both wrappers own the dataset's normalizer as a submodule, so its statistics are saved with the weights.
All tensors inside are normalized; trajectories are (B, H, transition_dim) with actions first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffuser.diffusion.conditioning import Batch, Conditions, apply_conditioning
from diffuser.diffusion.normalization import Normalizer
from diffuser.diffusion.schedule import DiffusionSchedule, extract, respaced_timesteps


@dataclass
class Sample:
    """Output of a sampling loop. trajectories: (B, H, D) normalized; values: (B,); chain: (B, N+1, H, D) or None."""

    trajectories: torch.Tensor
    values: torch.Tensor
    chain: torch.Tensor | None = None


def loss_weights(horizon: int, transition_dim: int, action_dim: int, action_weight: float, loss_discount: float):
    """Weights W (H, D): loss_discount^h normalized to mean 1 over time, then W[0, :action_dim] = action_weight."""
    discounts = loss_discount ** torch.arange(horizon, dtype=torch.float32)
    discounts = discounts / discounts.mean()
    weights = discounts[:, None].repeat(1, transition_dim)
    weights[0, :action_dim] = action_weight
    return weights


class TimestepMap(nn.Module):
    """A network called with step i of a respaced schedule sees the training step timesteps[i]."""

    def __init__(self, model: nn.Module, timesteps: list[int]):
        super().__init__()
        self.model = model
        self.register_buffer("timesteps", torch.as_tensor(timesteps), persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.timesteps[t])


class GaussianDiffusion(nn.Module):
    """DDPM over (B, H, transition_dim) trajectories with inpainting conditions; predicts x0 by default.

    ``forward(batch)`` returns the training loss and a dict of logged floats; ``conditional_sample`` plans.
    """

    def __init__(
        self,
        model: nn.Module,
        normalizer: Normalizer,
        *,
        horizon: int,
        observation_dim: int,
        action_dim: int,
        n_diffusion_steps: int = 64,
        beta_schedule: str = "cosine",
        predict_epsilon: bool = False,
        clip_denoised: bool = False,
        action_weight: float = 1.0,
        loss_discount: float = 1.0,
    ):
        super().__init__()
        self.model = model
        self.normalizer = normalizer
        self.horizon = horizon
        self.observation_dim = observation_dim
        self.action_dim = action_dim
        self.transition_dim = observation_dim + action_dim
        self.n_diffusion_steps = n_diffusion_steps
        self.predict_epsilon = predict_epsilon
        self.clip_denoised = clip_denoised
        self.schedule = DiffusionSchedule(n_diffusion_steps, beta_schedule)
        weights = loss_weights(horizon, self.transition_dim, action_dim, action_weight, loss_discount)
        self.register_buffer("loss_weights", weights, persistent=False)

    # ------------------------------------------------------------------ normalization helpers
    def normalize_observation(self, observation: torch.Tensor) -> torch.Tensor:
        """Raw observations (..., observation_dim) → normalized, with the trajectory normalizer's state slice."""
        return self.normalizer.normalize(observation, slice(self.action_dim, None))

    def unnormalize(self, trajectories: torch.Tensor) -> torch.Tensor:
        """Normalized (B, H, D) trajectories → raw."""
        return self.normalizer.unnormalize(trajectories)

    # ------------------------------------------------------------------ closed forms
    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε."""
        s = self.schedule
        return (
            extract(s.sqrt_alphas_cumprod, t, x_start.shape) * x_start
            + extract(s.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise
        )

    def predict_start_from_noise(self, x_t: torch.Tensor, t: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """x̂0 from the network output: the output itself (x0-prediction) or (x_t − sqrt(1−ᾱ) ε̂)/sqrt(ᾱ)."""
        if not self.predict_epsilon:
            return output
        s = self.schedule
        return (
            extract(s.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
            - extract(s.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * output
        )

    def q_posterior(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean, variance and clipped log variance of q(x_{t−1} | x_t, x0)."""
        s = self.schedule
        mean = (
            extract(s.posterior_mean_coef1, t, x_t.shape) * x_start
            + extract(s.posterior_mean_coef2, t, x_t.shape) * x_t
        )
        return (
            mean,
            extract(s.posterior_variance, t, x_t.shape),
            extract(s.posterior_log_variance_clipped, t, x_t.shape),
        )

    def p_mean_variance(self, x: torch.Tensor, cond: Conditions, t: torch.Tensor):
        """Model mean and fixed variance of p(x_{t−1} | x_t); x̂0 is clamped to [−1, 1] if clip_denoised."""
        x_recon = self.predict_start_from_noise(x, t, self.model(x, t))
        if self.clip_denoised:
            x_recon = x_recon.clamp(-1.0, 1.0)
        return self.q_posterior(x_recon, x, t)

    def p_sample(
        self, x: torch.Tensor, cond: Conditions, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One reverse step x_t → x_{t−1} (no noise where t == 0); returns (x_{t−1}, values), values zeros."""
        mean, _, log_variance = self.p_mean_variance(x, cond, t)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        nonzero = (t != 0).to(x.dtype).reshape(-1, *((1,) * (x.ndim - 1)))
        values = torch.zeros(x.shape[0], device=x.device)
        return mean + nonzero * (0.5 * log_variance).exp() * noise, values

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def p_sample_loop(
        self,
        shape: tuple[int, int, int],
        cond: Conditions,
        *,
        sample_fn: Callable | None = None,
        return_chain: bool = False,
        generator: torch.Generator | None = None,
        x_init: torch.Tensor | None = None,
        n_steps: int | None = None,
    ) -> Sample:
        """Denoise from N(0, I) for t = N−1 … 0, conditioning the noise and every step's output.

        ``sample_fn(diffusion, x, cond, t, generator) → (x, values)`` replaces the plain ``p_sample`` (e.g. a guided
        step). The batch is returned in input order (each row keeps its own conditions). A warm start passes
        ``x_init``, a sample of x_t at t = n_steps − 1, and runs only t = n_steps−1 … 0.
        """
        device = self.schedule.betas.device
        x = torch.randn(shape, generator=generator, device=device) if x_init is None else x_init
        apply_conditioning(x, cond, self.action_dim)
        chain = [x] if return_chain else None
        values = torch.zeros(shape[0], device=device)
        for i in reversed(range(self.n_diffusion_steps if n_steps is None else n_steps)):
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            if sample_fn is None:
                x, values = self.p_sample(x, cond, t, generator)
            else:
                x, values = sample_fn(self, x, cond, t, generator)
            apply_conditioning(x, cond, self.action_dim)
            if return_chain:
                chain.append(x)
        return Sample(x, values, torch.stack(chain, dim=1) if return_chain else None)

    def conditional_sample(
        self, cond: Conditions, horizon: int | None = None, **kwargs
    ) -> Sample:
        """Sample len(cond[0]) trajectories of length ``horizon`` (default: the training horizon)."""
        batch_size = len(cond[0])
        return self.p_sample_loop((batch_size, horizon or self.horizon, self.transition_dim), cond, **kwargs)

    def respace(self, n_steps: int) -> GaussianDiffusion:
        """The same network sampled with n_steps evenly spaced steps of the N it was trained on (a strided
        sampler; n_steps = N gives the training schedule). Shares weights and normalizer with self."""
        timesteps = respaced_timesteps(self.n_diffusion_steps, n_steps)
        strided = GaussianDiffusion(
            TimestepMap(self.model, timesteps), self.normalizer, horizon=self.horizon,
            observation_dim=self.observation_dim, action_dim=self.action_dim, n_diffusion_steps=len(timesteps),
            predict_epsilon=self.predict_epsilon, clip_denoised=self.clip_denoised,
        )
        strided.schedule = self.schedule.respaced(timesteps)
        return strided.to(self.schedule.betas.device)

    # ------------------------------------------------------------------ training
    def loss(self, x_start: torch.Tensor, cond: Conditions) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted L2 between the (conditioned) prediction and its target at a uniform random step.

        x_start: (B, H, D) normalized clean trajectories. Logs ``a0_loss`` as the original's WeightedLoss does: the
        first action's unweighted error divided by its weight (action_weight), so 1/10 of the plain first-action
        error for locomotion and the plain error for Maze2D (weight 1); curves compare with the original's logs.
        """
        batch_size = x_start.shape[0]
        t = torch.randint(0, self.n_diffusion_steps, (batch_size,), device=x_start.device)
        noise = torch.randn_like(x_start)
        x_noisy = apply_conditioning(self.q_sample(x_start, t, noise), cond, self.action_dim)
        output = apply_conditioning(self.model(x_noisy, t), cond, self.action_dim)
        target = noise if self.predict_epsilon else x_start
        error = (output - target) ** 2
        loss = (error * self.loss_weights[: x_start.shape[1]]).mean()
        a0_loss = (error[:, 0, : self.action_dim] / self.loss_weights[0, : self.action_dim]).mean()
        return loss, {"loss": loss.detach(), "a0_loss": a0_loss.detach()}

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss of a batch (trajectories and conditions)."""
        return self.loss(batch.trajectories, batch.conditions)


class ValueDiffusion(GaussianDiffusion):
    """Value model J(x_t, t) trained by MSE against the return of the clean window, on noised conditioned inputs."""

    def loss(self, x_start: torch.Tensor, cond: Conditions, target: torch.Tensor):  # type: ignore[override]
        """MSE(V(x_t, t), target); x_start: (B, H, D), target: (B,). Logs prediction/target statistics (tensors on
        the device; the correlation is NaN where either side is constant)."""
        t = torch.randint(0, self.n_diffusion_steps, (x_start.shape[0],), device=x_start.device)
        x_noisy = apply_conditioning(self.q_sample(x_start, t, torch.randn_like(x_start)), cond, self.action_dim)
        pred = self.model(x_noisy, t).squeeze(-1)
        loss = F.mse_loss(pred, target)
        p, y = pred.detach().float(), target.detach().float()
        info = {
            "loss": loss.detach(),
            "corr": torch.corrcoef(torch.stack([p, y]))[0, 1] if len(p) > 1 else torch.tensor(float("nan")),
            "pred_mean": p.mean(),
            "pred_min": p.min(),
            "pred_max": p.max(),
            "targ_mean": y.mean(),
            "targ_min": y.min(),
            "targ_max": y.max(),
        }
        return loss, info

    def forward(self, batch: Batch):  # type: ignore[override]
        """Training loss of a batch with value targets."""
        return self.loss(batch.trajectories, batch.conditions, batch.values)
