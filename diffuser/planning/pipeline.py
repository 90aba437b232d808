"""``ValueGuidedRLPipeline``: the object and the call Hugging Face diffusers' users know, over this project's planner.

    pipeline = ValueGuidedRLPipeline.from_pretrained("runs/hopper-medium-v2/cpu")   # or a diffusers-layout folder
    action = pipeline(obs)                      # obs (observation_dim,) → (action_dim,)
    actions = pipeline(observations)            # (N, observation_dim) → (N, action_dim): N envs in one call

The constructor takes diffusers' names in diffusers' order, ``(value_function, unet, scheduler, env)``, and the
call diffusers' keywords with its defaults (``batch_size=64, n_guide_steps=2, scale=0.1``). Each call builds (or
reuses) a :class:`~diffuser.planning.guided.GuidedPlanner` and asks it for one plan per observation: the sampling,
guidance and choice of the best candidate are the planner's, not this file's.

Two modes (``compatibility``):
- ``"paper"`` (default): the original code's per-dimension normalizer, carried in the weights, and the guide
  gradient scaled by the posterior variance σ_t².
- ``"diffusers"``: diffusers' ValueGuidedRLPipeline as it is: one mean and std per dataset key (actions,
  observations) from ``env.get_dataset()`` and the gradient scaled by exp(½·σ_t); the full DDPM schedule.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.diffusion.guidance import ValueGuide
from diffuser.diffusion.normalization import GaussianNormalizer, Normalizer, scalar_statistics
from diffuser.diffusion.schedulers import DDPMScheduler, make_scheduler
from diffuser.planning.guided import GuidedPlanner
from diffuser.planning.plan import Plan
from diffuser.runs.load import Run, load_run

MODES = ("paper", "diffusers")


@dataclass
class PipelineOutput:
    """What ``pipeline(obs, return_plan=True)`` returns.

    actions: (action_dim,) for one observation, (N, action_dim) for N; the first action of each env's best plan.
    plan: each env's chosen plan, unnormalized: actions (N, H, action_dim), observations (N, H, observation_dim),
    values (N,) (the guide's value of the plan; zeros without a value function).
    """

    actions: np.ndarray
    plan: Plan


class ValueGuidedRLPipeline:
    """Value-guided planning from diffusers' constructor and call; see the module docstring.

    value_function: a ValueDiffusion (a value run's model), a bare value network ``(x, t) → (B, 1)``, a ``Run`` or a
        run folder; None plans unguided (candidates then carry value 0 and the first is executed).
    unet: a GaussianDiffusion (normalizer inside), a ``Run`` or a run folder.
    scheduler: ``DDPMScheduler()`` (the paper's, default), ``DDPMScheduler(n_sample_steps=k)`` (strided),
        ``DDIMScheduler(k, eta)``, or a name ("ddpm", "ddim").
    env: a D4RL name ("hopper-medium-v2"), a gym/gymnasium env, or None (the networks' dims suffice). The dims are
        checked against it; an env with ``get_dataset()`` supplies the statistics in the "diffusers" mode.
    """

    def __init__(
        self,
        value_function: nn.Module | Run | str | Path | None,
        unet: GaussianDiffusion | Run | str | Path,
        scheduler: DDPMScheduler | str | None = None,
        env: Any = None,
        *,
        compatibility: str = "paper",
        device: str | torch.device | None = None,
    ):
        if compatibility not in MODES:
            raise ValueError(f"compatibility={compatibility!r}: valid {list(MODES)} (paper: per-dimension "
                             "normalization and σ_t² scaling; diffusers: diffusers' pipeline as it is)")
        unet = _model(unet, "unet")
        if not isinstance(unet, GaussianDiffusion) or not hasattr(unet.model, "downs"):
            raise TypeError(f"unet: expected this project's GaussianDiffusion over a TemporalUnet (a diffusion run's "
                            f"model, a Run or a run folder), got {type(unet).__name__}")
        value = _model(value_function, "value_function") if value_function is not None else None
        value_net = value.model if isinstance(value, GaussianDiffusion) else value
        if isinstance(scheduler, str):
            scheduler = make_scheduler(scheduler)
        self.scheduler = scheduler or DDPMScheduler()
        self.env_name = env if isinstance(env, str) else getattr(getattr(env, "spec", None), "id", None)
        self.env = env
        self.compatibility = compatibility
        _check_shapes(unet, value_net, env)
        if isinstance(value, GaussianDiffusion):
            _check_normalizers(unet, value)
        if compatibility == "diffusers":
            if type(self.scheduler) is not DDPMScheduler or self.scheduler.n_sample_steps not in (
                    None, unet.n_diffusion_steps):
                raise ValueError(f"compatibility='diffusers' samples as diffusers does, with the full DDPM schedule: "
                                 f"drop scheduler={self.scheduler!r}")
            if callable(getattr(env, "get_dataset", None)):  # diffusers' statistics: one mean/std per dataset key
                unet = with_normalizer(unet, scalar_normalizer(env.get_dataset(), unet.action_dim,
                                                               unet.observation_dim))
        self.unet = unet
        self.value_function = value_net
        self.value_horizon = getattr(value_net, "horizon", None)
        self.record: dict[str, Any] = {}
        self._planner: GuidedPlanner | None = None
        self._settings: tuple | None = None
        if device is not None:
            self.to(device)

    # ------------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        value_path: str | Path | None = None,
        *,
        checkpoint: str | None = None,
        scheduler: DDPMScheduler | str | None = None,
        env: Any = None,
        compatibility: str = "paper",
        device: str | torch.device = "cpu",
        horizon: int | None = None,
    ) -> "ValueGuidedRLPipeline":
        """A pipeline from a folder in diffusers' layout (``save_pretrained``'s or the hub's), or from this project's
        runs: a diffusion run folder (or ``runs/<env>/<exp_name>``, its newest run) and ``value_path``, by default
        the newest run of ``<exp_name>_value`` beside it. ``checkpoint`` names a step folder of the diffusion run.

        A hub folder records neither dims nor normalizer nor horizon: ``env`` gives the dims (and, with
        ``get_dataset()``, the data the normalizer is fitted on, as diffusers does); ``horizon`` the networks'
        (default 32, the hub's hopper-medium-v2)."""
        from diffuser.runs.pretrained import is_pipeline_folder, read_pipeline, run_pair

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path} not found: pass a run folder, runs/<env>/<exp_name>, or a folder in "
                                    "diffusers' layout (unet/, value_function/, scheduler/)")
        if is_pipeline_folder(path):
            parts = read_pipeline(path, env, compatibility, str(device), horizon)
        else:
            parts = run_pair(path, Path(value_path) if value_path is not None else None, checkpoint, str(device))
        from diffuser.envs.locomotion import is_locomotion

        if env is None and parts.env_name is not None and is_locomotion(parts.env_name):
            env = parts.env_name  # checks the dims; a run of another dataset keeps env None
        pipeline = cls(parts.value, parts.unet, scheduler or parts.scheduler, env, compatibility=compatibility,
                       device=device)
        pipeline.env_name = pipeline.env_name or parts.env_name
        pipeline.record = parts.record
        return pipeline

    def save_pretrained(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write diffusers' layout (unet/, value_function/, scheduler/, model_index.json) plus our normalizer/ and
        pipeline_config.json; ``diffusers.UNet1DModel.from_pretrained(folder, subfolder="unet")`` reads it."""
        from diffuser.runs.pretrained import save_pipeline

        value = _ValueHolder(self.value_function) if self.value_function is not None else None
        return save_pipeline(Path(folder), self.unet, value, self.scheduler, env_name=self.env_name,
                             compatibility=self.compatibility, record=self.record, overwrite=overwrite)

    # ------------------------------------------------------------------------------------------------ planning
    @property
    def device(self) -> torch.device:
        return self.unet.schedule.betas.device

    def to(self, device: str | torch.device) -> "ValueGuidedRLPipeline":
        """Move both networks (and the normalizer) to ``device``; returns self."""
        self.unet.to(device)
        if self.value_function is not None:
            self.value_function.to(device)
        self._planner, self._settings = None, None
        return self

    def reset(self) -> None:
        """Forget the previous plans of the warm start (call at the start of new episodes)."""
        if self._planner is not None:
            self._planner.reset()

    def __call__(
        self,
        obs: np.ndarray | torch.Tensor,
        batch_size: int = 64,
        planning_horizon: int | None = None,
        n_guide_steps: int = 2,
        scale: float = 0.1,
        *,
        t_stopgrad: int = 2,
        scale_grad_by_std: bool = True,
        num_inference_steps: int | None = None,
        warm_start: int = 0,
        generator: torch.Generator | None = None,
        return_plan: bool = False,
    ) -> np.ndarray | PipelineOutput:
        """Plan from ``obs`` (observation_dim,) or (N, observation_dim), raw, and return the first action of each
        env's best of ``batch_size`` guided plans: (action_dim,) or (N, action_dim); ``return_plan`` adds the plans.

        planning_horizon: None is the horizon the networks were trained with (32 for the locomotion presets, as
            diffusers' default); the value function takes only its own.
        num_inference_steps: sample over that many of the N training steps with this pipeline's scheduler.
        warm_start: k > 0 starts each env's next call from its previous plan, shifted and noised, for the last k
            steps (the paper's Sec. 5.4); the N envs of one call are envs 0 … N−1 of the next; ``reset()`` forgets.
        generator: the noise; without one, torch's global generator (as diffusers).
        """
        observations = self._observations(obs)
        horizon = planning_horizon or self.unet.horizon
        if self.value_function is not None and self.value_horizon is not None and horizon != self.value_horizon:
            raise ValueError(f"planning_horizon={horizon} but the value function was built for horizon "
                             f"{self.value_horizon} (its head is sized for it): pass planning_horizon="
                             f"{self.value_horizon}")
        scheduler = self.scheduler
        if num_inference_steps is not None:
            scheduler = copy.copy(scheduler)
            scheduler.n_sample_steps = num_inference_steps
        settings = (batch_size, horizon, n_guide_steps, scale, t_stopgrad, scale_grad_by_std, repr(scheduler),
                    warm_start)
        if settings != self._settings:
            guide = ValueGuide(self.value_function) if self.value_function is not None else None
            self._planner = GuidedPlanner(
                self.unet, guide, batch_size=batch_size, scale=scale, n_guide_steps=n_guide_steps,
                t_stopgrad=t_stopgrad, scale_grad_by_std=scale_grad_by_std, scheduler=scheduler,
                warm_start_steps=warm_start, horizon=horizon,
                diffusers_grad_scale=self.compatibility == "diffusers",
            )
            self._settings = settings
        env_ids = list(range(len(observations))) if warm_start else None
        plan = self._planner.plan(observations, generator=generator, env_ids=env_ids)
        actions = plan.first_actions if np.ndim(obs) == 2 else plan.first_actions[0]
        return PipelineOutput(actions, plan) if return_plan else actions

    def _observations(self, obs: np.ndarray | torch.Tensor) -> np.ndarray:
        """(observation_dim,) or (N, observation_dim) → (N, observation_dim) float32, or one error naming the size."""
        if isinstance(obs, torch.Tensor):
            obs = obs.detach().cpu().numpy()
        observations = np.asarray(obs, dtype=np.float32)
        size = self.unet.observation_dim
        if observations.ndim not in (1, 2) or observations.shape[-1] != size or observations.shape[0] == 0:
            raise ValueError(f"obs has shape {observations.shape}, but the networks take observations of size {size}: "
                             f"pass ({size},) for one env or (N, {size}) for N envs")
        if not np.isfinite(observations).all():
            raise ValueError("obs holds NaN or inf values")
        return observations.reshape(-1, size)


# ---------------------------------------------------------------------------------------------------- helpers
def _model(source: nn.Module | Run | str | Path, what: str) -> nn.Module:
    """A model from a module, a loaded Run or a run folder."""
    if isinstance(source, Run):
        return source.model
    if isinstance(source, (str, Path)):
        return load_run(source).model
    if not isinstance(source, nn.Module):
        raise TypeError(f"{what}: expected a model, a Run or a run folder, got {type(source).__name__}")
    return source


def _check_shapes(unet: GaussianDiffusion, value: nn.Module | None, env: Any) -> None:
    """Networks that disagree with each other or with the env: one error naming both shapes."""
    ours = f"(horizon {unet.horizon}, transition_dim {unet.transition_dim})"
    if value is not None:
        value_dim, value_horizon = getattr(value, "transition_dim", None), getattr(value, "horizon", None)
        if (value_dim is not None and value_dim != unet.transition_dim) or (
                value_horizon is not None and value_horizon != unet.horizon):
            raise ValueError(f"the unet {ours} and the value_function (horizon {value_horizon}, transition_dim "
                             f"{value_dim}) disagree: pass networks trained on the same data and horizon")
    if env is None:
        return
    if isinstance(env, str):
        from diffuser.envs.locomotion import DIMS, parse_locomotion_name

        try:
            parse_locomotion_name(env)
        except ValueError as error:
            raise ValueError(f"env={env!r}: {error} (or pass a gym/gymnasium env, or None)") from None
        observation_dim, action_dim = DIMS[parse_locomotion_name(env).env]
        name = env
    elif hasattr(env, "observation_space") and hasattr(env, "action_space"):
        observation_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
        name = getattr(getattr(env, "spec", None), "id", type(env).__name__)
    else:
        raise TypeError(f"env: expected a D4RL name, a gym/gymnasium env or None, got {type(env).__name__}")
    if (observation_dim, action_dim) != (unet.observation_dim, unet.action_dim):
        raise ValueError(f"env '{name}' has observation_dim {observation_dim} and action_dim {action_dim} but the "
                         f"networks take observation_dim {unet.observation_dim} and action_dim {unet.action_dim}: "
                         "pass the env they were trained for")


def _check_normalizers(unet: GaussianDiffusion, value: GaussianDiffusion) -> None:
    """The value model must have been trained on data normalized as the unet's (the same statistics)."""
    theirs = value.normalizer.state_dict()
    for name, stat in unet.normalizer.state_dict().items():
        other = theirs.get(name)
        if other is None or other.shape != stat.shape or not torch.allclose(stat, other.to(stat.device), rtol=1e-5,
                                                                             atol=1e-6):
            raise ValueError(f"the normalizer statistics '{name}' of the unet and the value_function differ: they "
                             "were trained on different data")


def scalar_normalizer(data: dict, action_dim: int, observation_dim: int) -> Normalizer:
    """diffusers' normalization as a per-dimension Gaussian normalizer: one mean/std per key, repeated."""
    normalizer = GaussianNormalizer(action_dim + observation_dim)
    mean, std = scalar_statistics(data, action_dim, observation_dim)
    normalizer.mean.copy_(mean)
    normalizer.std.copy_(std)
    return normalizer


def with_normalizer(diffusion: GaussianDiffusion, normalizer: Normalizer) -> GaussianDiffusion:
    """The same network and schedule with another normalizer (the caller's model is left as it is)."""
    other = GaussianDiffusion(
        diffusion.model, normalizer, horizon=diffusion.horizon, observation_dim=diffusion.observation_dim,
        action_dim=diffusion.action_dim, n_diffusion_steps=diffusion.n_diffusion_steps,
        predict_epsilon=diffusion.predict_epsilon, clip_denoised=diffusion.clip_denoised,
    )
    other.schedule = diffusion.schedule
    return other.to(diffusion.schedule.betas.device).eval()


class _ValueHolder:
    """A bare value network seen as save_pipeline expects a value model: ``.model`` and ``.horizon``."""

    def __init__(self, net: nn.Module):
        self.model = net
        self.horizon = getattr(net, "horizon", None)
