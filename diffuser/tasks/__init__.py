"""One task object per env family (maze2d.py, locomotion.py): see base.py for what a task supplies.

Adding a family: a new ``tasks/<family>.py`` with a Task subclass, one line in ``task_for``, and its configs.
"""

from __future__ import annotations

from diffuser.config import EnvConfig
from diffuser.tasks.base import Evaluation, Task, build_dataset


def task_for(name: str) -> Task:
    """The task of env (dataset) ``name``: Maze2D for maze2d-*, locomotion for D4RL locomotion names."""
    from diffuser.envs.locomotion import is_locomotion
    from diffuser.tasks.locomotion import LocomotionTask
    from diffuser.tasks.maze2d import Maze2dTask

    return Maze2dTask(name) if name.startswith("maze2d") and not is_locomotion(name) else LocomotionTask(name)


def load_env_data(env: EnvConfig):
    """Find (or generate) env's dataset, load and preprocess it: (arrays, path). See Task.load_data."""
    return task_for(env.name).load_data(env)


__all__ = ["Evaluation", "Task", "build_dataset", "load_env_data", "task_for"]
