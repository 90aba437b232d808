"""Schedulers (diffusion/schedulers.py): DDIM against diffusers' DDIMScheduler, DDIM at η = 1 against the DDPM step,
guidance under every scheduler, and planner.scheduler from the configs."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler as TheirDDIM
from torch import nn

from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.diffusion.guidance import ValueGuide
from diffuser.diffusion.normalization import IdentityNormalizer
from diffuser.diffusion.schedule import respaced_timesteps
from diffuser.diffusion.schedulers import DDIMScheduler, DDPMScheduler, make_scheduler
from diffuser.planning.guided import GuidedPlanner

H, OBS, ACT = 4, 2, 1
D = OBS + ACT


class LinearDenoiser(nn.Module):
    """x̂0 (or ε̂) = 0.5·x + 0.01·t: depends on the input and on the step it is called with."""

    def forward(self, x, t):
        return 0.5 * x + 0.01 * t.to(x.dtype).reshape(-1, 1, 1)


def ours(n_steps=20, model=None, **kwargs) -> GaussianDiffusion:
    return GaussianDiffusion(model or LinearDenoiser(), IdentityNormalizer(D), horizon=H, observation_dim=OBS,
                             action_dim=ACT, n_diffusion_steps=n_steps, **kwargs)


@pytest.mark.parametrize("n_sample_steps,eta,predict_epsilon", [(20, 0.0, False), (5, 0.0, False), (5, 0.5, False),
                                                                 (7, 1.0, True)])
def test_ddim_loop_equals_diffusers_ddim_step_by_step(n_sample_steps, eta, predict_epsilon):
    """diffusers' DDIMScheduler over the respaced betas (its N = our k kept steps, so its previous step is our
    previous kept step, and ᾱ_{−1} = 1 by set_alpha_to_one), fed the same x̂0/ε̂, x_t and generator."""
    diffusion = ours(predict_epsilon=predict_epsilon)
    scheduler = DDIMScheduler(n_sample_steps, eta=eta)
    sampled = scheduler.prepare(diffusion)
    kept = respaced_timesteps(20, n_sample_steps)
    theirs = TheirDDIM(num_train_timesteps=len(kept), trained_betas=sampled.schedule.betas.double().numpy(),
                       prediction_type="epsilon" if predict_epsilon else "sample", clip_sample=False,
                       set_alpha_to_one=True, steps_offset=0)
    theirs.set_timesteps(len(kept))
    x_init = torch.randn(3, H, D, generator=torch.Generator().manual_seed(1))
    sample = sampled.p_sample_loop((3, H, D), {}, x_init=x_init.clone(), n_steps=len(kept), return_chain=True,
                                   sample_fn=scheduler.step, generator=torch.Generator().manual_seed(2))
    generator, x = torch.Generator().manual_seed(2), x_init.clone()
    for i, t in enumerate(theirs.timesteps):
        output = LinearDenoiser()(x, torch.full((3,), kept[int(t)]))
        x = theirs.step(output, t, x, eta=eta, generator=generator).prev_sample
        torch.testing.assert_close(sample.chain[:, i + 1], x, rtol=1e-5, atol=1e-5, msg=f"step {i} (t={int(t)})")


def test_ddim_at_eta_one_is_the_ddpm_step():
    """Song et al.: with σ_t² the DDPM posterior variance, the DDIM update is the DDPM posterior sample (same noise)."""
    diffusion = ours()
    x = 2 * torch.randn(5, H, D, generator=torch.Generator().manual_seed(0))
    for t in (19, 10, 1):
        steps = torch.full((5,), t)
        ddim, _ = DDIMScheduler(eta=1.0).step(diffusion, x, {}, steps, torch.Generator().manual_seed(t))
        ddpm, _ = diffusion.p_sample(x, {}, steps, torch.Generator().manual_seed(t))
        torch.testing.assert_close(ddim, ddpm, rtol=1e-5, atol=1e-5)


def test_deterministic_ddim_needs_no_noise_and_lands_on_x0():
    """η = 0: the same output for any generator; at t = 0 (ᾱ_{−1} = 1) the step returns x̂0 itself."""
    diffusion = ours()
    x = torch.randn(2, H, D)
    steps = torch.full((2,), 7)
    a, _ = DDIMScheduler().step(diffusion, x, {}, steps, torch.Generator().manual_seed(0))
    b, _ = DDIMScheduler().step(diffusion, x, {}, steps, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    last, _ = DDIMScheduler().step(diffusion, x, {}, torch.zeros(2, dtype=torch.long), None)
    torch.testing.assert_close(last, 0.5 * x)


class IdentityDenoiser(nn.Module):
    def forward(self, x, t):
        return x


class FirstStateValue(nn.Module):
    def forward(self, x, t):
        return x[:, :, ACT].mean(dim=1, keepdim=True)


@pytest.mark.parametrize("scheduler", [DDPMScheduler(), DDPMScheduler(3), DDIMScheduler(3), DDIMScheduler(6, 0.5)])
def test_guidance_raises_an_analytic_value_under_every_scheduler(scheduler):
    diffusion = ours(6, model=IdentityDenoiser())
    value = FirstStateValue()
    observations = np.random.default_rng(0).normal(size=(4, OBS))
    kwargs = dict(batch_size=4, n_guide_steps=2, t_stopgrad=0, scheduler=scheduler)
    unguided = GuidedPlanner(diffusion, ValueGuide(value), scale=0.0, **kwargs)
    guided = GuidedPlanner(diffusion, ValueGuide(value), scale=50.0, **kwargs)
    low = unguided.plan(observations, generator=torch.Generator().manual_seed(0)).values
    high = guided.plan(observations, generator=torch.Generator().manual_seed(0)).values
    assert (high > low + 0.1).all(), (low, high)


def test_bad_scheduler_options_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown scheduler 'dpm'"):
        make_scheduler("dpm")
    with pytest.raises(ValueError, match="eta=0.5 applies to scheduler=ddim only"):
        make_scheduler("ddpm", eta=0.5)
    with pytest.raises(ValueError, match="eta=-1"):
        DDIMScheduler(eta=-1)
    with pytest.raises(ValueError, match="give the steps to the scheduler only"):
        GuidedPlanner(ours(), None, n_sample_steps=5, scheduler=DDIMScheduler(5))
    with pytest.raises(ValueError, match="n_sample_steps=30 must be between 1 and n_diffusion_steps=20"):
        GuidedPlanner(ours(), None, scheduler=DDIMScheduler(30))


def test_plan_config_scheduler_reaches_the_locomotion_planner():
    from hydra import compose, initialize_config_dir

    from diffuser.config import register_configs
    from diffuser.launch import plan_config
    from diffuser.runs.load import Run
    from diffuser.tasks import task_for
    from test_configs import CONFIGS

    register_configs()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose(config_name="plan", overrides=["env=locomotion", "planner=locomotion_cpu", "guide=none",
                                                     "planner.scheduler=ddim", "planner.n_sample_steps=5",
                                                     "planner.eta=0.5"])
    config = plan_config(cfg)
    run = Run(None, {"model": {"kind": "diffusion"}}, ours(), 0, None)
    planner = task_for(config.env.name).build_planner(run, None, config)
    assert isinstance(planner.scheduler, DDIMScheduler) and planner.scheduler.eta == 0.5
    assert planner.diffusion.n_diffusion_steps == 5
