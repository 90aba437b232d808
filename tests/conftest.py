"""Shared fixtures: tiny D4RL-layout files written by the project's own writer, no downloads."""

from __future__ import annotations

import os
from pathlib import Path

# Offscreen MuJoCo rendering without a display; mujoco reads this once, when it is first imported.
if "DISPLAY" not in os.environ:
    os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest

from diffuser.data.d4rl import write_d4rl

REPO = Path(__file__).resolve().parents[1]


def locomotion_arrays(lengths=(12, 20, 7, 30), terminal=(True, False, True, False), obs_dim=3, act_dim=2, seed=0):
    """Episodes of the given lengths back to back; episode i ends in a terminal or a timeout."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    end = np.cumsum(lengths) - 1
    terminals[end[np.array(terminal)]] = True
    timeouts[end[~np.array(terminal)]] = True
    return {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
    }


@pytest.fixture
def locomotion_file(tmp_path: Path) -> Path:
    """A tiny locomotion-like file: 4 episodes of lengths 12, 20, 7, 30 (two end in terminals)."""
    return write_d4rl(tmp_path / "tiny-locomotion-v2.hdf5", locomotion_arrays())


@pytest.fixture(scope="session")
def maze2d_dir(tmp_path_factory) -> Path:
    """A directory holding a small generated maze2d-umaze-v1 dataset (20k steps), for $D4RL_DATASET_DIR."""
    from diffuser.data.maze2d_generation import generate_maze2d

    root = tmp_path_factory.mktemp("d4rl")
    generate_maze2d("maze2d-umaze-v1", 20_000, seed=0, path=root / "maze2d-umaze-sparse-v1.hdf5")
    return root
