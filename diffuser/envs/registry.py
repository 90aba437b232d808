"""Env registration and lookup by D4RL name: ``make_env(name, seed)`` and ``normalized_score(name, return)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium
import numpy as np

from diffuser.envs.locomotion import (
    GYM_NAMES,
    is_locomotion,
    locomotion_normalized_score,
    make_locomotion_env,
    parse_locomotion_name,
)
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


def normalized_score(name: str, episode_return: float, reference: Mapping[str, Any] | None = None) -> float:
    """D4RL normalized score as a fraction (0 = random reference, 1 = expert reference); ×100 to report.

    ``reference`` (ref_min_score, ref_max_score), e.g. a non-D4RL dataset's own recorded in its run's config.yaml,
    replaces D4RL's; NaN when it has none.
    """
    _check_name(name)
    if reference is not None:
        lo, hi = reference.get("ref_min_score"), reference.get("ref_max_score")
        return float("nan") if lo is None or hi is None else (episode_return - lo) / (hi - lo)
    if is_locomotion(name):
        return locomotion_normalized_score(name, episode_return)
    spec = MAZE2D_SPECS[name]
    return (episode_return - spec.ref_min_score) / (spec.ref_max_score - spec.ref_min_score)


def evaluation_settings(run_config: Mapping[str, Any], name: str, gym_version: str) -> tuple[str, dict | None]:
    """(gym_version, reference scores or None for D4RL's) to evaluate a run on env ``name``.

    A run trained on data that is not D4RL (Minari ``mujoco/*``) recorded in its config.yaml (``dataset_info``) the
    env version the data was collected in and the dataset's reference scores: those are used, never D4RL's.
    """
    info = run_config.get("dataset_info") or {}
    if info.get("reference") != "dataset":
        return gym_version, None
    if is_locomotion(name):
        expected = GYM_NAMES[parse_locomotion_name(name).env]
        collected = str(info.get("env_id") or "")
        if collected and collected.rsplit("-v", 1)[0] != expected:
            raise ValueError(f"the run was trained on minari:{info['id']}, collected in {collected}, but env.name="
                             f"{name} evaluates in {expected}; pass the env.name the run was trained with")
        if info.get("gym_version") and info["gym_version"] != gym_version:
            print(f"evaluating in {expected}-{info['gym_version']}, where minari:{info['id']} was collected "
                  f"(not env.gym_version={gym_version})")
            gym_version = info["gym_version"]
    reference = {"ref_min_score": info.get("ref_min_score"), "ref_max_score": info.get("ref_max_score")}
    print(f"scores: normalized with minari:{info['id']}'s own reference returns (min {reference['ref_min_score']}, "
          f"max {reference['ref_max_score']}), not D4RL's: not comparable with D4RL tables")
    return gym_version, reference
