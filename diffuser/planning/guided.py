"""Value-guided receding-horizon planning (locomotion): every env step, plan from the current state and act.

N environments are planned in one call: each observation is repeated ``batch_size`` times, all N·batch_size
candidates are denoised together with guidance, and each env executes the first action of its highest-value plan.

The defaults are the original code's sampler ("exact"). Fast modes, each off by default:
- ``n_sample_steps``: a strided sampler over that many of the N training steps (``GaussianDiffusion.respace``);
- ``scheduler``: a sampler object (``diffusion/schedulers.py``: DDPM, strided DDPM, DDIM), in place of
  ``n_sample_steps``;
- ``warm_start_steps`` = k: from the second call of an episode on, start from the env's previous best plan shifted
  by one step (the paper's Sec. 5.4), noised to the sampler's step k − 1, and denoise only the last k steps;
- ``bf16``: run the networks under bfloat16 autocast (CPU or CUDA);
- ``compile``: a torch.compile mode for the denoiser and the guide's network (``reduce-overhead``: CUDA graphs);
- ``inverse_dynamics``: execute f(s_0, ŝ_1) of an inverse-dynamics model instead of the chosen plan's first action.

Selection (not in the paper, off by default): ``selector``, a critic other than the guide (``planning/critics.py``),
ranks the candidates instead of the guide's values; ``fresh_candidates`` adds that many unguided candidates per env
from fresh noise with a cheap sampler (``fresh_scheduler``, e.g. DDIM over 4 steps), so that the candidates differ
even when the warm start makes the guided ones near copies of the previous plan.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from diffuser.baselines.inverse_dynamics import InverseDynamics
from diffuser.diffusion.gaussian import GaussianDiffusion, TimestepMap
from diffuser.diffusion.guidance import ValueGuide, guided_sample_fn
from diffuser.diffusion.schedulers import DDPMScheduler
from diffuser.planning.plan import Plan
from diffuser.utils.compiling import compiled


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
        n_sample_steps: int | None = None,
        scheduler: DDPMScheduler | None = None,
        warm_start_steps: int = 0,
        bf16: bool = False,
        horizon: int | None = None,
        diffusers_grad_scale: bool = False,
        selector: ValueGuide | None = None,
        fresh_candidates: int = 0,
        fresh_scheduler: DDPMScheduler | None = None,
        compile: str | None = None,
        inverse_dynamics: InverseDynamics | None = None,
    ):
        if scheduler is not None and n_sample_steps is not None:
            raise ValueError(f"n_sample_steps={n_sample_steps} and scheduler={scheduler!r}: give the steps to the "
                             "scheduler only")
        if guide is not None:
            check_guide_options(scale, n_guide_steps, t_stopgrad, diffusion.n_diffusion_steps)
        if fresh_candidates < 0:
            raise ValueError(f"fresh_candidates={fresh_candidates} must be >= 0 (unguided candidates per env from "
                             "fresh noise; planner.fresh_candidates)")
        if fresh_candidates and fresh_scheduler is None:
            raise ValueError("fresh_candidates needs a fresh_scheduler (planner.fresh_steps: DDIM steps)")
        self.fresh_candidates = fresh_candidates
        self.fresh_diffusion = fresh_scheduler.prepare(diffusion) if fresh_candidates else None
        plain_ddpm = fresh_scheduler is None or type(fresh_scheduler) is DDPMScheduler
        self.fresh_step = None if plain_ddpm else fresh_scheduler.step
        self.selector = selector
        self.inverse_dynamics = inverse_dynamics
        if compile is not None:  # the denoiser and the guide's network, compiled in place for their fixed shapes
            diffusion.model = compiled(diffusion.model, compile, "planner.compile")
            if guide is not None:
                guide = ValueGuide(compiled(guide.model, compile, "planner.compile"))
        scheduler = scheduler or DDPMScheduler(n_sample_steps)
        sampled = scheduler.prepare(diffusion)
        if sampled is not diffusion:
            timesteps = sampled.model.timesteps
            # t_stopgrad counts training steps: guide none of the sampler's steps below it.
            t_stopgrad = int((timesteps < t_stopgrad).sum())
            if guide is not None:
                guide = ValueGuide(TimestepMap(guide.model, timesteps.tolist()))
        diffusion = sampled
        if not 0 <= warm_start_steps <= diffusion.n_diffusion_steps:
            raise ValueError(
                f"warm_start_steps={warm_start_steps} must be between 0 (off) and the sampler's "
                f"{diffusion.n_diffusion_steps} steps (planner.warm_start_steps; unset, it is guide.t_stopgrad + 2)"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1 (candidate plans per env)")
        self.diffusion = diffusion
        self.guide = guide
        self.scheduler = scheduler
        self.batch_size = batch_size
        self.horizon = horizon or diffusion.horizon
        self.warm_start_steps = warm_start_steps
        self.bf16 = bf16
        self.previous: dict[int, torch.Tensor] = {}  # env id → its last executed plan (normalized, (H, D))
        # DDPM's step is p_sample_loop's own; any other scheduler replaces it.
        step = None if type(scheduler) is DDPMScheduler else scheduler.step
        self.sample_fn = step
        if guide is not None:
            self.sample_fn = guided_sample_fn(
                guide, scale=scale, n_guide_steps=n_guide_steps, t_stopgrad=t_stopgrad,
                scale_grad_by_std=scale_grad_by_std, diffusers_grad_scale=diffusers_grad_scale, step=step,
            )

    @property
    def device(self) -> torch.device:
        return self.diffusion.schedule.betas.device

    def reset(self) -> None:
        """Forget the previous plans (call at the start of new episodes)."""
        self.previous.clear()

    def warm_start(self, env_ids: list[int], generator: torch.Generator | None) -> torch.Tensor | None:
        """x at the sampler's step warm_start_steps − 1 for every candidate: the previous plan shifted one step (its
        last row repeated) and noised, or None when off or when an env has no previous plan."""
        if not self.warm_start_steps or not env_ids or any(i not in self.previous for i in env_ids):
            return None
        plans = torch.stack([self.previous[i] for i in env_ids])
        shifted = torch.cat([plans[:, 1:], plans[:, -1:]], dim=1).repeat_interleave(self.batch_size, dim=0)
        t = torch.full((len(shifted),), self.warm_start_steps - 1, device=self.device, dtype=torch.long)
        noise = torch.randn(shifted.shape, generator=generator, device=self.device)
        return self.diffusion.q_sample(shifted, t, noise)

    @torch.no_grad()
    def plan(
        self, observations: np.ndarray, goals: np.ndarray | None = None, generator: torch.Generator | None = None,
        env_ids: list[int] | None = None,
    ) -> Plan:
        """Plan for N envs at once; observations are raw (unnormalized). ``env_ids`` name the envs across calls
        (needed by the warm start; without them every call starts from noise); goals are unused (the guide
        sets the goal)."""
        device = self.device
        observations = torch.as_tensor(np.asarray(observations), dtype=torch.float32, device=device)
        n = observations.shape[0]
        states = self.diffusion.normalize_observation(observations).repeat_interleave(self.batch_size, dim=0)
        env_ids = None if env_ids is None else [int(i) for i in env_ids]
        x_init = self.warm_start(env_ids, generator) if env_ids is not None else None
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with autocast:
            sample = self.diffusion.conditional_sample(
                {0: states}, horizon=self.horizon, sample_fn=self.sample_fn, generator=generator, x_init=x_init,
                n_steps=self.warm_start_steps if x_init is not None else None,
            )
            candidates, values = sample.trajectories, sample.values
            if self.fresh_candidates:
                fresh = self.fresh_diffusion.conditional_sample(
                    {0: states[:: self.batch_size].repeat_interleave(self.fresh_candidates, dim=0)},
                    horizon=self.horizon, sample_fn=self.fresh_step, generator=generator,
                ).trajectories
                candidates = torch.cat([candidates.unflatten(0, (n, self.batch_size)),
                                        fresh.unflatten(0, (n, self.fresh_candidates))], dim=1).flatten(0, 1)
            scorer = self.selector or (self.guide if (self.fresh_candidates and self.guide is not None) else None)
            if scorer is not None:  # every candidate scored alike, on the clean plans
                values = scorer(candidates, torch.zeros(len(candidates), dtype=torch.long, device=device))
            elif self.fresh_candidates:  # unguided: the first candidate of each env
                values = torch.zeros(len(candidates), device=device)
        k = self.batch_size + self.fresh_candidates
        values = values.float().reshape(n, k)
        best = values.argmax(dim=1) + torch.arange(n, device=device) * k
        chosen = candidates[best].float()
        if env_ids is not None:
            self.previous.update(zip(env_ids, chosen))
        action_dim = self.diffusion.action_dim
        raw = self.diffusion.unnormalize(chosen)
        if self.inverse_dynamics is not None:  # execute f(s_0, ŝ_1) instead of the planned first action
            raw[:, 0, :action_dim] = self.inverse_dynamics.act(raw[:, 0, action_dim:], raw[:, 1, action_dim:])
        trajectories = raw.cpu().numpy()
        best = values.max(dim=1).values.cpu().numpy()
        return Plan(trajectories[..., :action_dim], trajectories[..., action_dim:], values=best)


def check_guide_options(scale: float, n_guide_steps: int, t_stopgrad: int, n_diffusion_steps: int) -> None:
    """One clear error for a guide option out of range (guide.scale, guide.n_guide_steps, guide.t_stopgrad)."""
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"guide.scale={scale} must be a finite number >= 0 (0: the value only ranks the "
                         "candidates; the original uses 0.1, or 0.001 for halfcheetah)")
    if n_guide_steps < 0:
        raise ValueError(f"guide.n_guide_steps={n_guide_steps} must be >= 0 (gradient steps per denoising step)")
    if not 0 <= t_stopgrad <= n_diffusion_steps:
        raise ValueError(f"guide.t_stopgrad={t_stopgrad} must be between 0 and the model's {n_diffusion_steps} "
                         "diffusion steps (no gradient for t < t_stopgrad)")
