"""Fast planner modes: strided sampling, warm start and bf16 keep the sampler's meaning."""

import numpy as np
import pytest
import torch
from torch import nn

from diffuser.diffusion.guidance import ValueGuide
from diffuser.diffusion.schedule import DiffusionSchedule, respaced_timesteps
from diffuser.planning.guided import GuidedPlanner
from test_guides import ACT, D, H, N_STEPS, OBS, FirstStateValue, make_diffusion, sample


def test_respaced_timesteps_are_even_and_keep_both_ends():
    assert respaced_timesteps(20, 20) == list(range(20))
    assert respaced_timesteps(20, 5) == [0, 5, 10, 14, 19]
    assert respaced_timesteps(20, 2) == [0, 19]
    assert respaced_timesteps(20, 1) == [19]
    with pytest.raises(ValueError, match="n_sample_steps=21"):
        respaced_timesteps(20, 21)


def test_respaced_schedule_keeps_alphas_cumprod_and_is_the_identity_at_full_length():
    schedule = DiffusionSchedule(20)
    strided = schedule.respaced([0, 5, 10, 14, 19])
    torch.testing.assert_close(strided.alphas_cumprod, schedule.alphas_cumprod[[0, 5, 10, 14, 19]])
    full = schedule.respaced(list(range(20)))
    for name in ("betas", "posterior_variance", "posterior_mean_coef1", "posterior_mean_coef2"):
        torch.testing.assert_close(getattr(full, name), getattr(schedule, name), rtol=1e-5, atol=1e-6)


def test_full_length_respacing_samples_like_the_training_schedule():
    diffusion = make_diffusion()
    torch.testing.assert_close(
        sample(diffusion.respace(N_STEPS)).trajectories, sample(diffusion).trajectories, rtol=1e-4, atol=1e-4
    )


class ConstantDenoiser(nn.Module):
    """Predicts the same x0 whatever the input; records the training steps it is called with."""

    def __init__(self, x0):
        super().__init__()
        self.x0, self.calls = x0, []

    def forward(self, x, t):
        self.calls.append(t[0].item())
        return self.x0.expand(x.shape[0], -1, -1)


@pytest.mark.parametrize("n_steps", [1, 2, 4, N_STEPS])
def test_strided_sampler_lands_on_the_predicted_x0_and_calls_the_kept_steps(n_steps):
    diffusion = make_diffusion()
    x0 = torch.randn(1, H, D)
    diffusion.model = ConstantDenoiser(x0)
    out = sample(diffusion.respace(n_steps)).trajectories
    expected = x0.expand(16, -1, -1).clone()
    expected[:, 0, ACT:] = torch.randn(16, OBS, generator=torch.Generator().manual_seed(1))  # the inpainted state
    torch.testing.assert_close(out, expected)
    assert diffusion.model.calls == respaced_timesteps(N_STEPS, n_steps)[::-1]


def test_strided_planner_counts_t_stopgrad_in_training_steps():
    planner = GuidedPlanner(make_diffusion(), ValueGuide(FirstStateValue()), batch_size=2, n_sample_steps=3,
                            t_stopgrad=3)
    assert planner.diffusion.model.timesteps.tolist() == [0, 2, 5]
    step = planner.plan(np.zeros((2, OBS)), generator=torch.Generator().manual_seed(0))
    assert step.first_actions.shape == (2, ACT)


def test_warm_start_shifts_the_previous_plan_and_denoises_only_the_last_steps():
    diffusion = make_diffusion()
    diffusion.model = ConstantDenoiser(torch.randn(1, H, D))
    planner = GuidedPlanner(diffusion, ValueGuide(FirstStateValue()), batch_size=3, warm_start_steps=2,
                            scale=0.1, n_guide_steps=1, t_stopgrad=0)
    observations = np.random.default_rng(0).normal(size=(2, OBS))
    planner.reset()
    planner.plan(observations, generator=torch.Generator().manual_seed(0), env_ids=[0, 1])
    assert diffusion.model.calls == list(range(N_STEPS))[::-1]  # no previous plan: a full, cold sample
    previous = {i: plan.clone() for i, plan in planner.previous.items()}

    diffusion.model.calls.clear()
    planner.plan(observations[1:], generator=torch.Generator().manual_seed(0), env_ids=[1])
    assert diffusion.model.calls == [1, 0]
    # The start point: env 1's plan shifted by one step (last row repeated), noised to t = 1, per candidate.
    noise = torch.randn(3, H, D, generator=torch.Generator().manual_seed(5))
    x = planner.warm_start([1], torch.Generator().manual_seed(5))
    shifted = torch.cat([previous[1][1:], previous[1][-1:]])[None].expand(3, -1, -1)
    torch.testing.assert_close(x, diffusion.q_sample(shifted, torch.ones(3, dtype=torch.long), noise))

    planner.reset()
    diffusion.model.calls.clear()
    planner.plan(observations, generator=torch.Generator().manual_seed(0), env_ids=[0, 1])
    assert len(diffusion.model.calls) == N_STEPS  # a new episode starts cold again
    with pytest.raises(ValueError, match=r"warm_start_steps=7 .*unset, it is guide.t_stopgrad \+ 2"):
        GuidedPlanner(diffusion, None, warm_start_steps=N_STEPS + 1)


def test_bf16_planner_runs_the_networks_in_bfloat16():
    diffusion = make_diffusion()
    observations = np.random.default_rng(0).normal(size=(2, OBS))
    planner = GuidedPlanner(diffusion, ValueGuide(FirstStateValue()), batch_size=4, bf16=True)
    step = planner.plan(observations, generator=torch.Generator().manual_seed(0))
    assert step.first_actions.dtype == np.float32 and np.isfinite(step.observations).all()
    np.testing.assert_allclose(step.observations[:, 0], observations, atol=1e-5)  # still inpainted
    # At t = 0 the sample is the network's x0 prediction itself, so under autocast it holds bfloat16 values.
    actions = torch.from_numpy(step.actions)
    assert torch.equal(actions.bfloat16().float(), actions)
    fp32 = GuidedPlanner(diffusion, ValueGuide(FirstStateValue()), batch_size=4).plan(observations).actions
    assert not torch.equal(torch.from_numpy(fp32).bfloat16().float(), torch.from_numpy(fp32))
