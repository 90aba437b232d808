"""Guided sampling: the properties that drifted in the original and in the diffusers port."""

import re

import numpy as np
import pytest
import torch
from torch import nn

from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.diffusion.guidance import ValueGuide, guided_p_sample, guided_sample_fn
from diffuser.diffusion.normalization import GaussianNormalizer, IdentityNormalizer
from diffuser.models import TemporalUnet, ValueFunction
from diffuser.planning.guided import GuidedPlanner

H, OBS, ACT, N_STEPS = 8, 3, 2, 6
D = OBS + ACT


def make_diffusion(seed=0):
    torch.manual_seed(seed)
    net = TemporalUnet(horizon=H, transition_dim=D, dim=8, dim_mults=(1, 2))
    return GaussianDiffusion(net, IdentityNormalizer(D), horizon=H, observation_dim=OBS, action_dim=ACT,
                             n_diffusion_steps=N_STEPS)


class FirstStateValue(nn.Module):
    """Analytic value: the mean over the plan of the first observation dimension."""

    def forward(self, x, t):
        return x[:, :, ACT].mean(dim=1, keepdim=True)


def sample(diffusion, guide=None, seed=0, **kwargs):
    cond = {0: torch.randn(16, OBS, generator=torch.Generator().manual_seed(1))}
    sample_fn = None if guide is None else guided_sample_fn(guide, **kwargs)
    return diffusion.conditional_sample(cond, sample_fn=sample_fn, generator=torch.Generator().manual_seed(seed))


GUIDE = dict(n_guide_steps=2, t_stopgrad=0, scale_grad_by_std=True)


def test_scale_zero_reproduces_the_unguided_sampler():
    diffusion = make_diffusion()
    guide = ValueGuide(FirstStateValue())
    unguided = sample(diffusion).trajectories
    guided = sample(diffusion, guide, scale=0.0, **GUIDE).trajectories
    assert torch.equal(guided, unguided)


def test_t_stopgrad_past_every_step_reproduces_the_unguided_sampler():
    diffusion = make_diffusion()
    guided = sample(diffusion, ValueGuide(FirstStateValue()), scale=10.0, n_guide_steps=2, t_stopgrad=N_STEPS,
                    scale_grad_by_std=True)
    assert torch.equal(guided.trajectories, sample(diffusion).trajectories)


class IdentityDenoiser(nn.Module):
    """Predicts x0 = x_t: an analytic stand-in for a trained model, so the guide's shifts carry to the output.
    (An untrained UNet's x0 prediction ignores them, and at t = 0 the sample is that prediction alone.)"""

    def forward(self, x, t):
        return x


def test_guidance_raises_an_analytic_value():
    diffusion = make_diffusion()
    diffusion.model = IdentityDenoiser()
    value = FirstStateValue()
    zero = torch.zeros(16, dtype=torch.long)
    unguided = value(sample(diffusion).trajectories, zero).mean()
    guided = value(sample(diffusion, ValueGuide(value), scale=50.0, **GUIDE).trajectories, zero).mean()
    assert guided > unguided + 0.1


def test_guide_step_by_hand():
    """One guided step = p_sample applied to x + scale·σ_t²·∇J, re-conditioned, for t ≥ t_stopgrad."""
    diffusion = make_diffusion()
    guide = ValueGuide(FirstStateValue())
    x = torch.randn(4, H, D)
    cond = {0: torch.zeros(4, OBS)}
    t = torch.tensor([3, 3, 1, 1])
    out, values = guided_p_sample(diffusion, x.clone(), cond, t, torch.Generator().manual_seed(0), guide=guide,
                                  scale=0.5, n_guide_steps=1, t_stopgrad=2, scale_grad_by_std=True)
    variance = diffusion.schedule.posterior_variance[t].reshape(4, 1, 1)
    grad = torch.zeros_like(x)
    grad[:, :, ACT] = 1.0 / H
    grad[t < 2] = 0
    shifted = x + 0.5 * variance * grad
    shifted[:, 0, ACT:] = 0
    expected, _ = diffusion.p_sample(shifted, cond, t, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(values, x[:, :, ACT].mean(1))


def test_steps_below_t_stopgrad_score_the_plans_without_moving_them():
    """Where every gradient would be zeroed (t < t_stopgrad), the step is p_sample(x) and the values are J(x, t)."""
    diffusion = make_diffusion()
    guide = ValueGuide(FirstStateValue())
    x, cond, t = torch.randn(4, H, D), {0: torch.zeros(4, OBS)}, torch.tensor([1, 1, 1, 1])
    out, values = guided_p_sample(diffusion, x.clone(), cond, t, torch.Generator().manual_seed(0), guide=guide,
                                  scale=0.5, n_guide_steps=2, t_stopgrad=2, scale_grad_by_std=True)
    expected, _ = diffusion.p_sample(x.clone(), cond, t, torch.Generator().manual_seed(0))
    assert torch.equal(out, expected) and torch.equal(values, guide(x, t))


def test_value_guide_gradient_matches_finite_differences():
    torch.manual_seed(0)
    guide = ValueGuide(ValueFunction(horizon=H, transition_dim=D, dim=8, dim_mults=(1, 4)).double())
    x = torch.randn(2, H, D, dtype=torch.float64)
    t = torch.tensor([1, 4])
    _, grad = guide.gradients(x, t)
    eps = 1e-6
    for index in [(0, 0, 0), (1, 5, 3), (0, 7, 4)]:
        bump = torch.zeros_like(x)
        bump[index] = eps
        numeric = (guide(x + bump, t).sum() - guide(x - bump, t).sum()) / (2 * eps)
        assert grad[index].item() == pytest.approx(numeric.item(), rel=1e-4, abs=1e-8)


def test_planner_picks_the_best_plan_per_env_and_conditions_on_each_state():
    diffusion = make_diffusion()
    diffusion.normalizer = GaussianNormalizer(D).fit(np.random.default_rng(0).normal(2.0, 3.0, size=(100, D)))
    planner = GuidedPlanner(diffusion, ValueGuide(FirstStateValue()), batch_size=8, scale=0.1, n_guide_steps=1,
                            t_stopgrad=0)
    observations = np.array([[1.0, 2.0, 3.0], [-4.0, 0.5, 2.0], [0.0, 0.0, 0.0]])
    step = planner.plan(observations, generator=torch.Generator().manual_seed(0))
    assert step.first_actions.shape == (3, ACT) and step.observations.shape == (3, H, OBS)
    np.testing.assert_allclose(step.observations[:, 0], observations, atol=1e-5)
    np.testing.assert_allclose(step.first_actions, step.actions[:, 0])
    assert step.values.shape == (3,)


def test_unguided_planner_runs_without_a_value_model():
    planner = GuidedPlanner(make_diffusion(), None, batch_size=2)
    step = planner.plan(np.zeros((2, OBS)), generator=torch.Generator().manual_seed(0))
    assert step.first_actions.shape == (2, ACT) and (step.values == 0).all()


@pytest.mark.parametrize("options,named", [
    ({"scale": -0.1}, "guide.scale=-0.1"),
    ({"scale": float("nan")}, "guide.scale=nan"),
    ({"n_guide_steps": -1}, "guide.n_guide_steps=-1"),
    ({"t_stopgrad": -1}, "guide.t_stopgrad=-1"),
    ({"t_stopgrad": N_STEPS + 1}, f"guide.t_stopgrad={N_STEPS + 1}"),
])
def test_a_guide_option_out_of_range_is_refused_by_name(options, named):
    with pytest.raises(ValueError, match=f"^{re.escape(named)} must"):
        GuidedPlanner(make_diffusion(), ValueGuide(FirstStateValue()), **options)
    GuidedPlanner(make_diffusion(), None, **options)  # unguided: the guide's options are not used
