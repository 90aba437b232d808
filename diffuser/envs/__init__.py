"""Environments: D4RL maze2d on the mujoco bindings. Importing this package registers the maze2d ids with gymnasium."""

from diffuser.envs.maze2d import MAZE2D_SPECS, Maze2dEnv, Maze2dSpec
from diffuser.envs.registry import (
    evaluation_settings,
    known_env_names,
    make_env,
    normalized_score,
    register_maze2d,
)

register_maze2d()

__all__ = [
    "MAZE2D_SPECS",
    "Maze2dEnv",
    "Maze2dSpec",
    "evaluation_settings",
    "known_env_names",
    "make_env",
    "normalized_score",
    "register_maze2d",
]
