"""Config → objects: the one place that turns typed config fields into datasets and models."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffuser.baselines.bc import MLPPolicy
from diffuser.config import DiffusionConfig, EnvConfig, ModelConfig
from diffuser.datasets.d4rl import DatasetNotFoundError, find_dataset, load_d4rl
from diffuser.datasets.minari import is_minari, load_for_env
from diffuser.datasets.preprocess import preprocess
from diffuser.datasets.sequence import GoalDataset, SequenceDataset, ValueDataset
from diffuser.diffusion.gaussian import GaussianDiffusion, ValueDiffusion
from diffuser.diffusion.normalization import Normalizer
from diffuser.models import TemporalUnet, ValueFunction

MODEL_KINDS = ("diffusion", "value", "bc")


def _is_maze2d(name: str) -> bool:
    return name.startswith("maze2d")


def load_env_data(env: EnvConfig) -> tuple[dict[str, np.ndarray], Path]:
    """Find (or, for Maze2D with generate_if_missing, generate) the env's dataset, load and preprocess it.

    ``env.dataset=minari:<id>`` reads a Minari dataset from the local store instead (diffuser/datasets/minari.py).
    """
    name = env.dataset or env.name
    if is_minari(name):
        data, info = load_for_env(name, env.name)
        return preprocess(data, env.preprocess, env.name), info.path
    if _is_maze2d(env.name):
        how = f"python -m diffuser.datasets.maze2d_generate --env {env.name}  (or env.generate_if_missing=true)"
    else:
        how = (f"python -m diffuser.datasets.collect --dataset {env.name}, or bring a D4RL-layout HDF5 file "
               "and pass env.dataset=/path/to/file.hdf5")
    try:
        path = find_dataset(name, how_to_make=how)
    except DatasetNotFoundError:
        if not (env.generate_if_missing and _is_maze2d(env.name) and env.dataset is None):
            raise
        from diffuser.datasets.maze2d_generate import generate_maze2d

        print(f"dataset '{name}' not found: generating {env.generate_num_samples} steps with the D4RL procedure")
        path = generate_maze2d(env.name, env.generate_num_samples, seed=0)
    return preprocess(load_d4rl(path), env.preprocess, env.name), Path(path)


def build_dataset(data: dict[str, np.ndarray], env: EnvConfig, *, horizon: int, kind: str) -> SequenceDataset:
    """ValueDataset for value models; GoalDataset or SequenceDataset for diffusion models; horizon-1 windows for BC."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind '{kind}'; valid: {list(MODEL_KINDS)}")
    cls = SequenceDataset
    if kind == "value":
        cls = ValueDataset
    elif kind == "diffusion" and env.goal_conditioned:
        cls = GoalDataset
    return cls(
        data,
        horizon=1 if kind == "bc" else horizon,
        normalizer=env.normalizer,
        max_path_length=env.max_path_length,
        use_padding=env.use_padding,
        termination_penalty=env.termination_penalty,
        drop_last_transition=env.drop_last_transition,
        discount=env.discount,
    )


def build_model(
    kind: str,
    normalizer: Normalizer,
    *,
    horizon: int,
    observation_dim: int,
    action_dim: int,
    model: ModelConfig,
    diffusion: DiffusionConfig,
) -> GaussianDiffusion | MLPPolicy:
    """GaussianDiffusion over a TemporalUnet, ValueDiffusion over a ValueFunction, or the BC MLPPolicy."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind '{kind}'; valid: {list(MODEL_KINDS)}")
    if kind == "bc":
        return MLPPolicy(normalizer, observation_dim=observation_dim, action_dim=action_dim, hidden_dim=model.dim)
    transition_dim = observation_dim + action_dim
    net_cls = ValueFunction if kind == "value" else TemporalUnet
    net = net_cls(
        horizon=horizon,
        transition_dim=transition_dim,
        dim=model.dim,
        dim_mults=tuple(model.dim_mults),
        attention=model.attention,
    )
    wrapper = ValueDiffusion if kind == "value" else GaussianDiffusion
    return wrapper(
        net,
        normalizer,
        horizon=horizon,
        observation_dim=observation_dim,
        action_dim=action_dim,
        n_diffusion_steps=diffusion.n_diffusion_steps,
        beta_schedule=diffusion.beta_schedule,
        predict_epsilon=diffusion.predict_epsilon,
        clip_denoised=diffusion.clip_denoised,
        action_weight=diffusion.action_weight,
        loss_discount=diffusion.loss_discount,
    )
