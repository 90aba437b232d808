"""The schedule and the reverse step against an independent implementation: diffusers' DDPMScheduler.

diffusers' scheduler for its Diffuser port uses ``squaredcos_cap_v2`` betas (the cosine schedule, β capped at
0.999), ``prediction_type="sample"`` (the network predicts x0) and ``variance_type="fixed_small_log"`` (noise scale
exp(½·log σ²_t), as the original). Fed the same x̂0, x_t and generator, its ``step`` must give our ``p_sample``.
diffusers is in the dev extra, so these tests run wherever the suite does.
"""

import pytest
import torch
from diffusers import DDPMScheduler
from torch import nn

from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.diffusion.normalization import IdentityNormalizer
from diffuser.diffusion.schedule import respaced_timesteps

H, OBS, ACT = 4, 2, 1
D = OBS + ACT


class LinearDenoiser(nn.Module):
    """x̂0 (or ε̂) = 0.5·x + 0.01·t: depends on the input and on the step it is called with."""

    def forward(self, x, t):
        return 0.5 * x + 0.01 * t.to(x.dtype).reshape(-1, 1, 1)


def ours(n_steps, **kwargs) -> GaussianDiffusion:
    return GaussianDiffusion(LinearDenoiser(), IdentityNormalizer(D), horizon=H, observation_dim=OBS,
                             action_dim=ACT, n_diffusion_steps=n_steps, **kwargs)


def theirs(n_steps, prediction_type="sample", clip_sample=False) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=n_steps, beta_schedule="squaredcos_cap_v2",
                         prediction_type=prediction_type, variance_type="fixed_small_log", clip_sample=clip_sample,
                         clip_sample_range=1.0)


@pytest.mark.parametrize("n_steps", [20, 64, 256])
def test_cosine_betas_equal_diffusers_squaredcos_cap_v2(n_steps):
    torch.testing.assert_close(ours(n_steps).schedule.betas, theirs(n_steps).betas.float(), rtol=1e-5, atol=1e-7)


def test_q_sample_equals_diffusers_add_noise():
    diffusion, scheduler = ours(20), theirs(20)
    x0, noise = torch.randn(5, H, D), torch.randn(5, H, D)
    t = torch.tensor([0, 4, 10, 18, 19])
    torch.testing.assert_close(diffusion.q_sample(x0, t, noise), scheduler.add_noise(x0, noise, t),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("predict_epsilon,clip", [(False, False), (False, True), (True, False)])
def test_every_reverse_step_equals_diffusers_step(predict_epsilon, clip):
    """x0 prediction (locomotion), x0 prediction clamped to [−1, 1] (Maze2D) and ε prediction, at every t of N = 20:
    the same x̂0/ε̂, x_t and noise stream give the same x_{t-1}, noise included (none at t = 0)."""
    diffusion = ours(20, predict_epsilon=predict_epsilon, clip_denoised=clip)
    scheduler = theirs(20, "epsilon" if predict_epsilon else "sample", clip_sample=clip)
    x = 2 * torch.randn(3, H, D, generator=torch.Generator().manual_seed(0))
    for t in range(20):
        steps = torch.full((3,), t, dtype=torch.long)
        mine, _ = diffusion.p_sample(x, {}, steps, torch.Generator().manual_seed(t))
        reference = scheduler.step(diffusion.model(x, steps), t, x, generator=torch.Generator().manual_seed(t))
        torch.testing.assert_close(mine, reference.prev_sample, rtol=1e-5, atol=1e-5, msg=f"t={t}")


@pytest.mark.parametrize("n_sample_steps", [2, 5, 10])
def test_strided_sampler_equals_diffusers_with_the_same_timesteps(n_sample_steps):
    """A strided sampler over the kept training steps: diffusers' DDPM step with custom timesteps uses ᾱ of the
    kept steps and the posterior between consecutive kept steps, and calls the network with the training step.
    Whole loops from the same x_T and generator must agree at every step, not only at the last."""
    kept = respaced_timesteps(20, n_sample_steps)
    strided = ours(20).respace(n_sample_steps)
    scheduler = theirs(20)
    scheduler.set_timesteps(timesteps=kept[::-1])
    x_init = torch.randn(2, H, D, generator=torch.Generator().manual_seed(1))
    sample = strided.p_sample_loop((2, H, D), {}, x_init=x_init.clone(), n_steps=len(kept), return_chain=True,
                                   generator=torch.Generator().manual_seed(2))
    generator, x = torch.Generator().manual_seed(2), x_init.clone()
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(LinearDenoiser()(x, t.repeat(2)), t, x, generator=generator).prev_sample
        torch.testing.assert_close(sample.chain[:, i + 1], x, rtol=1e-5, atol=1e-5, msg=f"step {i} (t={int(t)})")
