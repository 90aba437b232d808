"""Env registration and lookup by D4RL name: ``make_env(name, seed)`` and ``normalized_score(name, return)``."""

from __future__ import annotations

import gymnasium
import numpy as np

from diffuser.envs.locomotion import is_locomotion, locomotion_normalized_score, make_locomotion_env
from diffuser.envs.maze2d import MAZE2D_SPECS

MAZE2D_ENTRY_POINT = "diffuser.envs.maze2d:Maze2dEnv"


def register_maze2d() -> None:
    """Register every id of MAZE2D_SPECS with gymnasium; ids already registered are left alone."""
    for name, spec in MAZE2D_SPECS.items():
        if name in gymnasium.registry:
            continue
        gymnasium.register(
            id=name,
            entry_point=MAZE2D_ENTRY_POINT,
            max_episode_steps=spec.max_episode_steps,
            kwargs=dict(
                layout=spec.layout,
                reward_type=spec.reward_type,
                ref_min_score=spec.ref_min_score,
                ref_max_score=spec.ref_max_score,
                reset_target=False,
            ),
        )


def known_env_names() -> list[str]:
    """Every Maze2D name make_env and normalized_score accept (plus D4RL locomotion names, see locomotion.py)."""
    return sorted(MAZE2D_SPECS)


def _check_name(name: str) -> None:
    """Raise a ValueError listing the known names when ``name`` is not one of them."""
    if name not in MAZE2D_SPECS and not is_locomotion(name):
        raise ValueError(
            f"unknown env name {name!r}; known names: {', '.join(known_env_names())}, "
            "or a D4RL locomotion name such as hopper-medium-v2"
        )


def make_env(name: str, seed: int | None = None) -> gymnasium.Env:
    """gymnasium.make(name) with the TimeLimit; a seed seeds the env RNG (the next reset() equals reset(seed=seed))."""
    _check_name(name)
    if is_locomotion(name):
        env = make_locomotion_env(name)
    else:
        register_maze2d()
        env = gymnasium.make(name)
    if seed is not None:
        env.unwrapped.np_random = np.random.default_rng(seed)
        env.action_space.seed(seed)
        env.observation_space.seed(seed)
    return env


def normalized_score(name: str, episode_return: float) -> float:
    """D4RL normalized score as a fraction (0 = random reference, 1 = expert reference); ×100 to report."""
    _check_name(name)
    if is_locomotion(name):
        return locomotion_normalized_score(name, episode_return)
    spec = MAZE2D_SPECS[name]
    return (episode_return - spec.ref_min_score) / (spec.ref_max_score - spec.ref_min_score)
