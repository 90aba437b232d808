"""Samplers as objects: which steps of the training schedule a plan is denoised over, and the reverse step taken.

- ``DDPMScheduler()``: the paper's sampler, every one of the N training steps, x_{t−1} ~ N(μ̃_t(x_t, x̂0), σ_t²).
- ``DDPMScheduler(n_sample_steps=k)``: the strided sampler, the same step over k evenly spaced training steps with
  the schedule respaced between them (``GaussianDiffusion.respace``; Nichol & Dhariwal 2021, Sec. 4).
- ``DDIMScheduler(n_sample_steps=k, eta=η)``: DDIM (Song et al. 2021, eq. 12) over the same k steps,
  x_{t−1} = sqrt(ᾱ_{t−1}) x̂0 + sqrt(1 − ᾱ_{t−1} − σ_t²) ε̂ + σ_t z, σ_t = η·sqrt((1 − ᾱ_{t−1})/(1 − ᾱ_t))·
  sqrt(1 − ᾱ_t/ᾱ_{t−1}); η = 0 is deterministic, η = 1 is the DDPM step.

A scheduler takes no tensors of its own: ``prepare(diffusion)`` returns the diffusion whose schedule it walks, and
``step`` has the signature of a ``p_sample_loop`` ``sample_fn`` (or of the step a guided sampler ends with).

Guidance is defined alike for every scheduler (``diffusion/guidance.py``): the guide moves x_t by
scale·σ_t²·∇J(x_t, t) with σ_t² the DDPM posterior variance between the sampler's consecutive steps (DDIM's σ_t² at
η = 1, whatever η), then the scheduler's own step runs from the moved x_t.
"""

from __future__ import annotations

import torch

from diffuser.diffusion.conditioning import Conditions
from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.diffusion.schedule import extract


class DDPMScheduler:
    """The paper's DDPM sampler over all N training steps, or strided over n_sample_steps of them."""

    name = "ddpm"

    def __init__(self, n_sample_steps: int | None = None):
        if n_sample_steps is not None and n_sample_steps < 1:
            raise ValueError(f"n_sample_steps={n_sample_steps} must be at least 1 (None: all training steps)")
        self.n_sample_steps = n_sample_steps

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_sample_steps={self.n_sample_steps})"

    def prepare(self, diffusion: GaussianDiffusion) -> GaussianDiffusion:
        """The diffusion this sampler walks: ``diffusion`` itself, or respaced to n_sample_steps of its N steps."""
        if self.n_sample_steps is None or self.n_sample_steps == diffusion.n_diffusion_steps:
            return diffusion
        return diffusion.respace(self.n_sample_steps)

    def step(
        self, diffusion: GaussianDiffusion, x: torch.Tensor, cond: Conditions, t: torch.Tensor,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t → x_{t−1} (B, H, D) and zero values (B,): ``diffusion.p_sample``."""
        return diffusion.p_sample(x, cond, t, generator)


class DDIMScheduler(DDPMScheduler):
    """DDIM over n_sample_steps evenly spaced training steps (None: all N), with noise level eta (0: deterministic)."""

    name = "ddim"

    def __init__(self, n_sample_steps: int | None = None, eta: float = 0.0):
        super().__init__(n_sample_steps)
        if eta < 0:
            raise ValueError(f"eta={eta} must be ≥ 0 (0: deterministic DDIM, 1: the DDPM step)")
        self.eta = float(eta)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_sample_steps={self.n_sample_steps}, eta={self.eta})"

    def step(
        self, diffusion: GaussianDiffusion, x: torch.Tensor, cond: Conditions, t: torch.Tensor,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t → x_{t−1} by DDIM's eq. 12 on the diffusion's (respaced) schedule; ᾱ_{−1} = 1, so t = 0 gives x̂0."""
        s = diffusion.schedule
        x0 = diffusion.predict_start_from_noise(x, t, diffusion.model(x, t))
        if diffusion.clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
        alpha = extract(s.alphas_cumprod, t, x.shape)
        alpha_prev = extract(s.alphas_cumprod_prev, t, x.shape)
        eps = (x - alpha.sqrt() * x0) / (1 - alpha).sqrt()
        sigma = self.eta * ((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev)).sqrt()
        x_prev = alpha_prev.sqrt() * x0 + (1 - alpha_prev - sigma**2).clamp(min=0).sqrt() * eps
        if self.eta > 0:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x_prev = x_prev + sigma * noise
        return x_prev, torch.zeros(x.shape[0], device=x.device)


SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}


def make_scheduler(name: str, n_sample_steps: int | None = None, eta: float = 0.0) -> DDPMScheduler:
    """A scheduler by name ("ddpm": the paper's, strided when n_sample_steps is set; "ddim")."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; valid: {sorted(SCHEDULERS)}")
    if name == "ddpm":
        if eta:
            raise ValueError(f"eta={eta} applies to scheduler=ddim only (DDPM's noise is fixed by the schedule)")
        return DDPMScheduler(n_sample_steps)
    return DDIMScheduler(n_sample_steps, eta)
