"""Config → data: find (or generate) the env's dataset and build its window dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffuser.config import EnvConfig
from diffuser.data.d4rl import DatasetNotFoundError, find_dataset, load_d4rl
from diffuser.data.minari import is_minari, load_for_env
from diffuser.data.preprocess import preprocess
from diffuser.data.sequence import GoalDataset, SequenceDataset, ValueDataset
from diffuser.runs.build import MODEL_KINDS


def _is_maze2d(name: str) -> bool:
    return name.startswith("maze2d")


def load_env_data(env: EnvConfig) -> tuple[dict[str, np.ndarray], Path]:
    """Find (or, for Maze2D with generate_if_missing, generate) the env's dataset, load and preprocess it.

    ``env.dataset=minari:<id>`` reads a Minari dataset from the local store instead (diffuser/data/minari.py).
    """
    name = env.dataset or env.name
    if is_minari(name):
        data, info = load_for_env(name, env.name)
        return preprocess(data, env.preprocess, env.name), info.path
    if _is_maze2d(env.name):
        how = f"python -m diffuser.tools.maze2d_generate --env {env.name}  (or env.generate_if_missing=true)"
    else:
        how = (f"python -m diffuser.tools.collect --dataset {env.name}, or bring a D4RL-layout HDF5 file "
               "and pass env.dataset=/path/to/file.hdf5")
    try:
        path = find_dataset(name, how_to_make=how)
    except DatasetNotFoundError:
        if not (env.generate_if_missing and _is_maze2d(env.name) and env.dataset is None):
            raise
        from diffuser.tools.maze2d_generate import generate_maze2d

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
