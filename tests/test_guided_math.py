"""The guided step, t_stopgrad and the choice of plan, computed by hand with value functions known in closed form.

The guided step follows the original code (``n_step_guided_p_sample``): n_guide_steps times x ← x + scale·σ_t²·∇J(x)
with the conditions written back after each, no step for t < t_stopgrad, then the posterior step from the shifted
x. The posterior here comes from Bayes' rule (test_posterior.py), not from the code's coefficients.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.diffusion.guidance import ValueGuide, guided_p_sample, guided_sample_fn
from diffuser.diffusion.normalization import IdentityNormalizer
from diffuser.diffusion.schedule import respaced_timesteps
from diffuser.planning.guided import GuidedPlanner
from test_posterior import ACT, D, HAND_BETAS, OBS, H, bayes_posterior, diffusion_with

# J(x) = −½ Σ_{h,d} w_hd (x_hd − c_hd)², so ∇J = −w ⊙ (x − c): a gradient that changes between the two guide steps.
W = torch.linspace(0.5, 2.0, H * D).reshape(H, D)
C = torch.linspace(-1.0, 1.0, H * D).reshape(H, D).flip(0)


class Quadratic(nn.Module):
    def forward(self, x, t):
        return (-0.5 * W * (x - C) ** 2).sum(dim=(1, 2))[:, None]


class MeanOverTime(nn.Module):
    """x̂0 = the plan's mean row, at every row: mixes rows, so a state left unconditioned leaks into every row."""

    def forward(self, x, t):
        return x.mean(dim=1, keepdim=True).expand_as(x)


def condition(x, state):
    x = x.clone()
    x[:, 0, ACT:] = state
    return x


@pytest.mark.parametrize("t,t_stopgrad,scale_grad_by_std,guided", [
    (2, 2, True, True),     # t = t_stopgrad is guided: no step only for t < t_stopgrad
    (2, 1, False, True),    # the raw gradient, not multiplied by σ_t²
    (1, 2, True, False),    # below t_stopgrad: the plain step, and J of the unshifted x
])
def test_two_guide_steps_by_hand(t, t_stopgrad, scale_grad_by_std, guided):
    """x1 = cond(x + s·σ²∇J(x)), x2 = cond(x1 + s·σ²∇J(x1)); values J(x1); x_{t-1} = μ(x̂0(x2), x2) + σ_t·z.
    On the three-step schedule σ²_2 = 7/32 and σ²_1 = 1/14 (worked in test_posterior.py)."""
    diffusion = diffusion_with(HAND_BETAS, MeanOverTime())
    x = torch.randn(2, H, D, generator=torch.Generator().manual_seed(0))
    state = torch.tensor([[0.5, -0.5], [1.5, 0.25]])
    steps = torch.full((2,), t, dtype=torch.long)
    out, values = guided_p_sample(diffusion, x.clone(), {0: state}, steps, torch.Generator().manual_seed(1),
                                  guide=ValueGuide(Quadratic()), scale=0.5, n_guide_steps=2, t_stopgrad=t_stopgrad,
                                  scale_grad_by_std=scale_grad_by_std)

    variance = {1: 1 / 14, 2: 7 / 32}[t]
    step = 0.5 * (variance if scale_grad_by_std else 1.0)
    x_shifted, expected_values = x, -0.5 * (W * (x - C) ** 2).sum(dim=(1, 2))
    if guided:
        x1 = condition(x + step * (-W * (x - C)), state)
        x_shifted = condition(x1 + step * (-W * (x1 - C)), state)
        expected_values = -0.5 * (W * (x1 - C) ** 2).sum(dim=(1, 2))
    mean, _ = bayes_posterior(HAND_BETAS, t, MeanOverTime()(x_shifted, steps), x_shifted)
    z = torch.randn((2, H, D), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, mean + math.sqrt(variance) * z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(values, expected_values, rtol=1e-5, atol=1e-5)


class RecordingValue(nn.Module):
    """J = Σ x; records each call's step (as the network sees it) and whether a gradient is being taken."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[int, bool]] = []

    def forward(self, x, t):
        self.calls.append((int(t[0]), torch.is_grad_enabled()))
        return x.sum(dim=(1, 2))[:, None]

    def guided_steps(self) -> list[int]:
        return [t for t, grad in self.calls if grad]


def six_step_diffusion() -> GaussianDiffusion:
    return GaussianDiffusion(MeanOverTime(), IdentityNormalizer(D), horizon=H, observation_dim=OBS, action_dim=ACT,
                             n_diffusion_steps=6)


@pytest.mark.parametrize("t_stopgrad,guided", [(0, [5, 4, 3, 2, 1, 0]), (2, [5, 4, 3, 2]), (3, [5, 4, 3])])
def test_t_stopgrad_guides_the_steps_at_or_above_it(t_stopgrad, guided):
    """Over a whole 6-step loop with two guide steps each: a gradient is taken twice at every t ≥ t_stopgrad and
    never below it, where the plans are only scored."""
    value = RecordingValue()
    sample_fn = guided_sample_fn(ValueGuide(value), scale=0.1, n_guide_steps=2, t_stopgrad=t_stopgrad,
                                 scale_grad_by_std=True)
    six_step_diffusion().conditional_sample({0: torch.zeros(2, OBS)}, sample_fn=sample_fn,
                                            generator=torch.Generator().manual_seed(0))
    assert value.guided_steps() == [t for t in guided for _ in range(2)]
    assert [t for t, grad in value.calls if not grad] == [t for t in range(6)[::-1] if t not in guided]


@pytest.mark.parametrize("t_stopgrad,guided", [(1, [5, 2]), (2, [5, 2]), (3, [5]), (6, [])])
def test_strided_planner_counts_t_stopgrad_in_training_steps(t_stopgrad, guided):
    """A strided sampler over training steps [0, 2, 5] guides the kept steps whose training step is ≥ t_stopgrad
    (the original's t_stopgrad counts training steps), and its value network sees training steps."""
    assert respaced_timesteps(6, 3) == [0, 2, 5]
    value = RecordingValue()
    planner = GuidedPlanner(six_step_diffusion(), ValueGuide(value), batch_size=2, scale=0.1, n_guide_steps=2,
                            t_stopgrad=t_stopgrad, n_sample_steps=3)
    planner.plan(np.zeros((1, OBS)), generator=torch.Generator().manual_seed(0))
    assert value.guided_steps() == [t for t in guided for _ in range(2)]
    assert [t for t, grad in value.calls if not grad] == [t for t in (5, 2, 0) if t not in guided]


class CopyX(nn.Module):
    """x̂0 = x_t. At t = 0 the posterior mean is x̂0 itself, so a returned plan is the input of the last step."""

    def forward(self, x, t):
        return x


class LastAction(nn.Module):
    """J = the first action entry of the plan's last row (never conditioned)."""

    def forward(self, x, t):
        return x[:, -1, :1]


def test_planner_executes_the_plan_with_the_highest_value():
    """Per env, the executed plan is the candidate whose last action, read off the returned candidates here, is the
    largest (the original sorts by value, descending, and executes the first)."""
    diffusion = GaussianDiffusion(CopyX(), IdentityNormalizer(D), horizon=H, observation_dim=OBS, action_dim=ACT,
                                  n_diffusion_steps=5)
    samples = []
    sample = diffusion.conditional_sample

    def spy(*args, **kwargs):
        samples.append(sample(*args, **kwargs))
        return samples[-1]

    diffusion.conditional_sample = spy
    planner = GuidedPlanner(diffusion, ValueGuide(LastAction()), batch_size=8, t_stopgrad=5)  # scored, never moved
    step = planner.plan(np.array([[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]]), generator=torch.Generator().manual_seed(0))

    candidates = samples[0].trajectories.reshape(3, 8, H, D)
    values = candidates[:, :, -1, 0]
    best = values.argmax(dim=1)
    assert (values.max(dim=1).values > values.min(dim=1).values + 1e-3).all()  # the best and the worst differ
    chosen = candidates[torch.arange(3), best]
    np.testing.assert_allclose(step.actions, chosen[..., :ACT].numpy(), atol=1e-6)
    np.testing.assert_allclose(step.observations, chosen[..., ACT:].numpy(), atol=1e-6)
    np.testing.assert_allclose(step.first_actions, chosen[:, 0, :ACT].numpy(), atol=1e-6)
    np.testing.assert_allclose(step.values, values.max(dim=1).values.numpy(), atol=1e-5)
