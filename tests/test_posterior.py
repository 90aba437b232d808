"""The cosine schedule, the DDPM posterior and the reverse step, checked against forms derived independently.

diffusion/schedule.py computes q(x_{t-1} | x_t, x0) with the closed-form coefficients of Ho et al. (2020, eq. 7).
Here the posterior is derived other ways: as a product of two Gaussians (Bayes' rule in precision form), by
Monte Carlo over the forward process, and by hand on a three-step schedule with round betas. The reverse step is
checked against those, and its noise scale is measured.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.diffusion.normalization import IdentityNormalizer
from diffuser.diffusion.schedule import DiffusionSchedule

H, OBS, ACT = 4, 2, 1
D = OBS + ACT

# A three-step schedule to work by hand: α = 0.9, 0.8, 0.5 and ᾱ = 0.9, 0.72, 0.36.
HAND_BETAS = (0.1, 0.2, 0.5)


def forward_process(betas):
    """α_t and ᾱ_t of a beta sequence, by a plain running product (float64)."""
    alphas, alphas_cumprod, running = [], [], 1.0
    for beta in betas:
        running *= 1.0 - beta
        alphas.append(1.0 - beta)
        alphas_cumprod.append(running)
    return alphas, alphas_cumprod


def bayes_posterior(betas, t, x0, x_t):
    """q(x_{t-1} | x_t, x0) ∝ q(x_{t-1} | x0) · q(x_t | x_{t-1}), in precision form.

    Prior N(√ᾱ_{t-1} x0, 1 − ᾱ_{t-1}); likelihood in x_{t-1}: N(x_t / √α_t, β_t / α_t). Precisions add; the mean
    is the precision-weighted mean. At t = 0 the prior is a point mass at x0 (ᾱ_{-1} = 1).
    """
    _, alphas_cumprod = forward_process(betas)
    if t == 0:
        return x0, 0.0
    return gaussian_product(alphas_cumprod[t - 1], alphas_cumprod[t], x0, x_t)


def gaussian_product(alpha_cumprod_prev, alpha_cumprod, x0, x_t):
    """Posterior of the earlier of two noise levels ᾱ_prev > ᾱ given x0 and the later one: the prior
    N(√ᾱ_prev x0, 1 − ᾱ_prev) times the transition x_t ~ N(√a x_prev, 1 − a), a = ᾱ / ᾱ_prev."""
    a = alpha_cumprod / alpha_cumprod_prev
    prior_mean, prior_var = math.sqrt(alpha_cumprod_prev) * x0, 1.0 - alpha_cumprod_prev
    like_mean, like_var = x_t / math.sqrt(a), (1.0 - a) / a
    variance = 1.0 / (1.0 / prior_var + 1.0 / like_var)
    return variance * (prior_mean / prior_var + like_mean / like_var), variance


def diffusion_with(betas, model=None, clip_denoised=False) -> GaussianDiffusion:
    """A GaussianDiffusion over (B, H, D) running the given betas, with ``model`` as its x0 predictor."""
    diffusion = GaussianDiffusion(model or nn.Identity(), IdentityNormalizer(D), horizon=H, observation_dim=OBS,
                                  action_dim=ACT, n_diffusion_steps=len(betas), clip_denoised=clip_denoised)
    diffusion.schedule = DiffusionSchedule(len(betas), betas=torch.tensor(betas, dtype=torch.float32))
    return diffusion


def steps(t, batch=1):
    return torch.full((batch,), t, dtype=torch.long)


def test_posterior_worked_by_hand_on_a_three_step_schedule():
    """x0 = 1, x_t = 2. t = 1: precision 1/0.1 + 0.8/0.2 = 14, mean (10·√0.9·1 + 5·√0.8·2)/14.
    t = 2: precision 1/0.28 + 0.5/0.5 = 32/7, mean (7/32)(√0.72·1/0.28 + √0.5·2/0.5)."""
    diffusion = diffusion_with(HAND_BETAS)
    x0, x_t = torch.ones(1, H, D), torch.full((1, H, D), 2.0)
    for t, mean, variance in [
        (1, (10 * math.sqrt(0.9) + 10 * math.sqrt(0.8)) / 14, 1 / 14),
        (2, 7 / 32 * (math.sqrt(0.72) / 0.28 + 2 * math.sqrt(0.5) / 0.5), 7 / 32),
    ]:
        got_mean, got_variance, got_log_variance = diffusion.q_posterior(x0, x_t, steps(t))
        torch.testing.assert_close(got_mean, torch.full_like(x0, mean))
        assert got_variance.item() == pytest.approx(variance, rel=1e-6)
        assert got_log_variance.item() == pytest.approx(math.log(variance), rel=1e-6)
    # t = 0: ᾱ_{-1} = 1, so the posterior is x0 itself; the log variance is clipped at log(1e-20), as the original's.
    mean, variance, log_variance = diffusion.q_posterior(x0, x_t, steps(0))
    torch.testing.assert_close(mean, x0)
    assert variance.item() == 0 and log_variance.item() == pytest.approx(math.log(1e-20))


@pytest.mark.parametrize("n_steps", [20, 64])
def test_posterior_equals_the_gaussian_product_at_every_step(n_steps):
    """The code's coefficients against Bayes' rule, on the cosine schedule the presets use."""
    diffusion = GaussianDiffusion(nn.Identity(), IdentityNormalizer(D), horizon=H, observation_dim=OBS,
                                  action_dim=ACT, n_diffusion_steps=n_steps)
    betas = diffusion.schedule.betas.double().tolist()
    x0, x_t = 0.7, -1.3
    for t in range(n_steps):
        mean, variance, _ = diffusion.q_posterior(torch.full((1, H, D), x0), torch.full((1, H, D), x_t), steps(t))
        expected_mean, expected_variance = bayes_posterior(betas, t, x0, x_t)
        assert mean[0, 0, 0].item() == pytest.approx(expected_mean, rel=1e-4, abs=1e-5), f"mean at t={t}"  # float32
        assert variance.item() == pytest.approx(expected_variance, rel=1e-5, abs=1e-12), f"variance at t={t}"


def test_posterior_matches_a_monte_carlo_of_the_forward_process():
    """Draw x_{t-1} ~ q(x_{t-1} | x0) and x_t ~ q(x_t | x_{t-1}) (400k pairs, seed 0); regressing x_{t-1} on x_t
    gives slope coef2, intercept coef1·x0 and residual variance σ_t². Tolerances are ~10 standard errors."""
    diffusion = GaussianDiffusion(nn.Identity(), IdentityNormalizer(D), horizon=H, observation_dim=OBS,
                                  action_dim=ACT, n_diffusion_steps=20)
    betas = diffusion.schedule.betas.double().numpy()
    alphas, alphas_cumprod = forward_process(betas)
    rng, n, x0 = np.random.default_rng(0), 400_000, 0.7
    for t in (1, 5, 12):
        x_prev = math.sqrt(alphas_cumprod[t - 1]) * x0 + math.sqrt(1 - alphas_cumprod[t - 1]) * rng.normal(size=n)
        x_t = math.sqrt(alphas[t]) * x_prev + math.sqrt(betas[t]) * rng.normal(size=n)
        slope, intercept = np.polyfit(x_t, x_prev, 1)
        residual_variance = (x_prev - (slope * x_t + intercept)).var()
        # q_posterior at x0 = 0, x_t = 1 is coef2; at x0 = 1, x_t = 0 it is coef1.
        coef2 = diffusion.q_posterior(torch.zeros(1, H, D), torch.ones(1, H, D), steps(t))[0][0, 0, 0].item()
        coef1 = diffusion.q_posterior(torch.ones(1, H, D), torch.zeros(1, H, D), steps(t))[0][0, 0, 0].item()
        variance = diffusion.q_posterior(torch.zeros(1, H, D), torch.zeros(1, H, D), steps(t))[1].item()
        assert slope == pytest.approx(coef2, abs=5e-3), f"t={t}"
        assert intercept == pytest.approx(coef1 * x0, abs=5e-3), f"t={t}"
        assert residual_variance == pytest.approx(variance, rel=2e-2), f"t={t}"


def cosine_alphas_cumprod(n_steps, s=0.008):
    """Nichol & Dhariwal (2021, eq. 17): ᾱ_t = f(t)/f(0), f(t) = cos²((t/N + s)/(1 + s)·π/2); step t of the code
    is the paper's t + 1 (the code's ᾱ_0 is the first noised level)."""
    f = [math.cos((i / n_steps + s) / (1 + s) * math.pi / 2) ** 2 for i in range(n_steps + 1)]
    return [f[t + 1] / f[0] for t in range(n_steps)]


@pytest.mark.parametrize("n_steps", [20, 64, 256])
def test_cosine_schedule_and_q_sample_follow_the_paper_formula(n_steps):
    """ᾱ_t = f(t+1)/f(0) wherever β is not clipped (all but the last step, where β = 0.999), and
    q_sample(x0, t, ε) = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε, read off at (x0, ε) = (1, 0) and (0, 1)."""
    diffusion = GaussianDiffusion(nn.Identity(), IdentityNormalizer(D), horizon=H, observation_dim=OBS,
                                  action_dim=ACT, n_diffusion_steps=n_steps)
    expected = cosine_alphas_cumprod(n_steps)
    got = diffusion.schedule.alphas_cumprod.double().tolist()
    np.testing.assert_allclose(got[:-1], expected[:-1], rtol=2e-5, atol=1e-9)
    assert diffusion.schedule.betas[-1].item() == pytest.approx(0.999)
    ones, zeros = torch.ones(1, H, D), torch.zeros(1, H, D)
    for t in (0, n_steps // 2, n_steps - 2):
        signal = diffusion.q_sample(ones, steps(t), zeros)[0, 0, 0].item()
        noise = diffusion.q_sample(zeros, steps(t), ones)[0, 0, 0].item()
        assert signal == pytest.approx(math.sqrt(expected[t]), rel=2e-5)
        assert noise == pytest.approx(math.sqrt(1 - expected[t]), rel=2e-5)


def test_strided_posterior_joins_the_kept_noise_levels():
    """A strided sampler over training steps [0, 5, 10, 14, 19] of N = 20: its step i is the posterior between the
    kept levels ᾱ_{t_{i-1}} and ᾱ_{t_i} of the training schedule (step 0: x0 itself)."""
    kept = [0, 5, 10, 14, 19]
    strided = GaussianDiffusion(nn.Identity(), IdentityNormalizer(D), horizon=H, observation_dim=OBS,
                                action_dim=ACT, n_diffusion_steps=20).respace(len(kept))
    _, levels = forward_process(DiffusionSchedule(20).betas.double().tolist())  # running product of 1 − β
    x0, x_t = 0.7, -1.3
    for i in range(1, len(kept)):
        mean, variance, _ = strided.q_posterior(torch.full((1, H, D), x0), torch.full((1, H, D), x_t), steps(i))
        expected_mean, expected_variance = gaussian_product(levels[kept[i - 1]], levels[kept[i]], x0, x_t)
        assert mean[0, 0, 0].item() == pytest.approx(expected_mean, rel=1e-4, abs=1e-5), f"step {i}"
        assert variance.item() == pytest.approx(expected_variance, rel=1e-4), f"step {i}"
    mean, variance, _ = strided.q_posterior(torch.full((1, H, D), x0), torch.full((1, H, D), x_t), steps(0))
    assert mean[0, 0, 0].item() == pytest.approx(x0, rel=1e-5) and variance.item() == 0


class ConstantX0(nn.Module):
    """Predicts the same x0 whatever the input."""

    def __init__(self, x0: torch.Tensor):
        super().__init__()
        self.x0 = x0

    def forward(self, x, t):
        return self.x0.expand_as(x)


def test_reverse_step_noise_has_the_posterior_std():
    """With a fixed x0 prediction, x_{t-1} − μ over 6,000 × H × D draws has mean 0 and std σ_t (not σ_t²): the
    original adds exp(½·log σ²_t)·z, the same as σ_t·z for t > 0. Tolerance 3%, about 20 standard errors."""
    betas = DiffusionSchedule(20).betas.double().tolist()
    x0_value, x_t_value, batch = 0.4, -0.8, 6000
    diffusion = diffusion_with(betas, ConstantX0(torch.full((1, H, D), x0_value)))
    generator = torch.Generator().manual_seed(0)
    for t in (1, 2, 5, 10):
        mean, variance = bayes_posterior(betas, t, x0_value, x_t_value)
        out, _ = diffusion.p_sample(torch.full((batch, H, D), x_t_value), {}, steps(t, batch), generator)
        residual = out.double() - mean
        assert residual.std().item() == pytest.approx(math.sqrt(variance), rel=3e-2), f"t={t}"
        assert abs(residual.mean().item()) < 5 * math.sqrt(variance / residual.numel()), f"t={t}"
    out, _ = diffusion.p_sample(torch.full((batch, H, D), x_t_value), {}, steps(0, batch), generator)
    torch.testing.assert_close(out, torch.full_like(out, x0_value))  # t = 0: no noise, x_{-1} = x̂0


class HalfPlusTenth(nn.Module):
    """x̂0 = 0.5·x_t + 0.1: depends on the input, so the step uses x_t twice (in x̂0 and in the posterior mean)."""

    def forward(self, x, t):
        return 0.5 * x + 0.1


def test_three_step_sampling_loop_by_hand():
    """The whole loop on the three-step schedule, from a given x_2, conditioned on the first state:
    x_{t-1} = μ(x̂0(x_t), x_t) + σ_t·z_t for t = 2, 1 (z drawn in that order from the generator), x̂0 at t = 0, and
    the condition written back after every step. μ and σ² come from the Gaussian product, not from the code."""
    x_init = torch.tensor([[[0.3, -1.2, 2.0], [1.5, 0.4, -0.6], [-2.2, 0.9, 0.1], [0.0, 1.0, -1.0]]])
    cond = {0: torch.tensor([[0.25, -0.75]])}
    diffusion = diffusion_with(HAND_BETAS, HalfPlusTenth())
    sample = diffusion.p_sample_loop((1, H, D), cond, x_init=x_init.clone(), n_steps=3,
                                     generator=torch.Generator().manual_seed(3), return_chain=True)

    generator = torch.Generator().manual_seed(3)
    x = x_init.double().clone()
    x[0, 0, ACT:] = cond[0][0].double()
    expected_chain = [x.clone()]
    for t in (2, 1, 0):
        z = torch.randn((1, H, D), generator=generator).double()  # drawn at t = 0 too, and multiplied by 0
        mean = torch.empty_like(x)
        variance = 0.0
        for index in np.ndindex(*x.shape):
            mean[index], variance = bayes_posterior(HAND_BETAS, t, 0.5 * x[index].item() + 0.1, x[index].item())
        x = mean + math.sqrt(variance) * z
        x[0, 0, ACT:] = cond[0][0].double()
        expected_chain.append(x.clone())
    torch.testing.assert_close(sample.chain[0].double(), torch.cat(expected_chain), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sample.trajectories.double(), x, rtol=1e-5, atol=1e-5)


def test_clip_denoised_clamps_x0_before_the_posterior_mean():
    """Maze2D (clip_denoised): x̂0 = 0.5·x + 0.1 = 1.6 at x = 3 is clamped to 1 before μ is formed; t = 1."""
    diffusion = diffusion_with(HAND_BETAS, HalfPlusTenth(), clip_denoised=True)
    x = torch.full((1, H, D), 3.0)
    mean, variance, _ = diffusion.p_mean_variance(x, {}, steps(1))
    expected_mean, expected_variance = bayes_posterior(HAND_BETAS, 1, 1.0, 3.0)
    torch.testing.assert_close(mean, torch.full_like(x, expected_mean))
    assert variance.item() == pytest.approx(expected_variance, rel=1e-6)
