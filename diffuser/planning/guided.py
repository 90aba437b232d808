"""Value-guided receding-horizon planning (locomotion): every env step, plan from the current state and act.

N environments are planned in one call: each observation is repeated ``batch_size`` times, all N·batch_size
candidates are denoised together with guidance, and each env executes the first action of its highest-value plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.guides.sampling import guided_sample_fn
from diffuser.guides.value_guide import ValueGuide


@dataclass
class PlanStep:
    """One planning call for N envs: actions (N, action_dim) to execute, the chosen plans' unnormalized actions
    (N, H, action_dim) and observations (N, H, observation_dim), and their values (N,)."""

    actions: np.ndarray
    plan_actions: np.ndarray
    plan_observations: np.ndarray
    values: np.ndarray


class GuidedPlanner:
    """observation (N, observation_dim) → first action of the best of ``batch_size`` guided plans per env."""

    def __init__(
        self,
        diffusion: GaussianDiffusion,
        guide: ValueGuide | None,
        *,
        batch_size: int = 64,
        scale: float = 0.1,
        n_guide_steps: int = 2,
        t_stopgrad: int = 2,
        scale_grad_by_std: bool = True,
    ):
        self.diffusion = diffusion
        self.guide = guide
        self.batch_size = batch_size
        self.sample_fn = None
        if guide is not None:
            self.sample_fn = guided_sample_fn(
                guide, scale=scale, n_guide_steps=n_guide_steps, t_stopgrad=t_stopgrad,
                scale_grad_by_std=scale_grad_by_std,
            )

    @property
    def device(self) -> torch.device:
        return self.diffusion.schedule.betas.device

    @torch.no_grad()
    def __call__(self, observations: np.ndarray, generator: torch.Generator | None = None) -> PlanStep:
        """Plan for N envs at once; observations are raw (unnormalized)."""
        device = self.device
        observations = torch.as_tensor(np.asarray(observations), dtype=torch.float32, device=device)
        n = observations.shape[0]
        states = self.diffusion.normalize_observation(observations).repeat_interleave(self.batch_size, dim=0)
        sample = self.diffusion.conditional_sample({0: states}, sample_fn=self.sample_fn, generator=generator)
        values = sample.values.reshape(n, self.batch_size)
        best = values.argmax(dim=1) + torch.arange(n, device=device) * self.batch_size
        trajectories = self.diffusion.unnormalize(sample.trajectories[best]).cpu().numpy()
        action_dim = self.diffusion.action_dim
        return PlanStep(
            actions=trajectories[:, 0, :action_dim],
            plan_actions=trajectories[..., :action_dim],
            plan_observations=trajectories[..., action_dim:],
            values=values.max(dim=1).values.cpu().numpy(),
        )
