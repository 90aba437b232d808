"""Read Minari datasets from the local store with h5py alone (no ``minari`` import) into D4RL-layout arrays.

The store is ``$MINARI_DATASETS_PATH`` (searched first, when set), then ``~/.minari/datasets``; the dataset
``<namespace>/<env>/<name>-vN``: ``<root>/<id>/data/{main_data.hdf5,metadata.json}`` (docs/d4rl_and_envs.md §3.3); each
``episode_<i>`` group holds T steps: ``observations`` has T + 1 rows (a Dict space is a sub-group per key),
``actions``, ``rewards``, ``terminations``, ``truncations`` have T, ``infos/<key>`` T or T + 1. Episodes are joined
in id order into the flat arrays :func:`diffuser.data.d4rl.load_d4rl` returns::

    observations = obs[:-1]   next_observations = obs[1:]   terminals = terminations   infos/<key> = first T rows
    timeouts = truncations, plus the last step of every episode that did not terminate (a Minari episode is one)

``D4RL/pointmaze/*`` (gymnasium-robotics PointMaze: Dict observations, centred coordinates) is mapped back to D4RL
maze2d coordinates by the exact inverse of docs/d4rl_and_envs.md §3.1 (observations, actions, goals), rewards relabelled
as D4RL's files are (the maze's fixed goal, the row's own position, ≤ 0.5), and ``resets`` marks the rows after which
the stream jumps (an env reset; goal-reach truncations continue where they stopped). Everything else, ``mujoco/*``
first of all, is **not D4RL**: runs trained on it are evaluated in the env it was collected in and normalized with
the dataset's own reference scores (``MinariInfo.record()``, saved in the run's config.yaml). Our own maze2d data
exported to Minari (env spec ``maze2d-*``) is read as it was written and scored like our maze2d data.

Usage: ``python -m diffuser.tools.minari info mujoco/hopper/medium-v0`` (what it is, where it was found);
``python -m diffuser.tools.minari export --dataset maze2d-umaze-v1 --id diffuser/maze2d-umaze/generated-v0``
writes one of our D4RL-layout datasets as a Minari dataset (diffuser/tools/minari.py).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from diffuser.data.d4rl import DatasetNotFoundError

PREFIX = "minari:"  # env.dataset=minari:<id>
_ID = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*-v\d+$")
MAIN_FILE = "main_data.hdf5"
STEP_KEYS = ("actions", "rewards", "terminations", "truncations")


def is_minari(name: str | None) -> bool:
    """True for dataset names of the form ``minari:<id>``."""
    return bool(name) and str(name).startswith(PREFIX)


def parse_minari_name(name: str) -> str:
    """``minari:D4RL/pointmaze/umaze-v2`` (or the bare id) → ``D4RL/pointmaze/umaze-v2``; a clear error otherwise."""
    dataset_id = name.removeprefix(PREFIX)
    if not _ID.match(dataset_id) or ".." in dataset_id.split("/"):
        raise ValueError(f"'{name}' is not a Minari dataset id: expected minari:<namespace>/<env>/<name>-v<N>, "
                         "e.g. minari:D4RL/pointmaze/umaze-v2 or minari:mujoco/hopper/medium-v0")
    return dataset_id


def minari_roots() -> list[tuple[str, Path]]:
    """Store roots searched, in order, with how each was chosen: ``$MINARI_DATASETS_PATH`` (if set), the default."""
    roots = []
    if os.environ.get("MINARI_DATASETS_PATH"):
        roots.append(("$MINARI_DATASETS_PATH", Path(os.environ["MINARI_DATASETS_PATH"]).expanduser()))
    roots.append(("default", Path("~/.minari/datasets").expanduser()))
    return roots


def find_minari(dataset_id: str) -> Path:
    """The ``data`` folder of a dataset id in the first store root that holds its main_data.hdf5."""
    for _, root in minari_roots():
        if (root / dataset_id / "data" / MAIN_FILE).is_file():
            return root / dataset_id / "data"
    looked = " and ".join(f"{root / dataset_id / 'data' / MAIN_FILE} ({how})" for how, root in minari_roots())
    unset = "" if os.environ.get("MINARI_DATASETS_PATH") else " ($MINARI_DATASETS_PATH is not set)"
    raise DatasetNotFoundError(
        f"Minari dataset '{dataset_id}' not found: looked for {looked}{unset}. To get it: on a machine with internet "
        f"run `pip install \"minari[hdf5]\" && minari download {dataset_id}`, copy the folder "
        f"~/.minari/datasets/{dataset_id} from there to {minari_roots()[-1][1] / dataset_id} here, or set "
        "MINARI_DATASETS_PATH to the store root that holds it"
    )


def read_metadata(data_dir: Path) -> dict[str, Any]:
    """metadata.json, with its JSON-string fields (spaces, env specs) decoded to dicts."""
    path = Path(data_dir) / "metadata.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a Minari dataset keeps it next to {MAIN_FILE}; re-copy the "
                                "whole dataset folder")
    try:
        meta = json.loads(path.read_text())
        for key in ("observation_space", "action_space", "env_spec", "eval_env_spec"):
            if isinstance(meta.get(key), str):
                meta[key] = json.loads(meta[key])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); re-copy or re-download the dataset") from None
    if meta.get("data_format", "hdf5") != "hdf5":
        raise ValueError(f"{path}: data_format '{meta['data_format']}' is not supported, only hdf5; re-create the "
                         "dataset with data_format='hdf5'")
    return meta


@dataclass(frozen=True)
class MinariInfo:
    """What a Minari dataset is and how runs trained on it are evaluated; ``record()`` goes into config.yaml."""

    id: str
    path: Path  # main_data.hdf5
    env_id: str | None  # gymnasium id it was collected in (metadata env_spec), e.g. Hopper-v5, PointMaze_UMaze-v3
    maze: str | None  # PointMaze datasets: open | umaze | medium | large (None: not PointMaze)
    reward_type: str | None  # PointMaze datasets: sparse | dense
    ref_min_score: float | None
    ref_max_score: float | None
    total_episodes: int
    total_steps: int

    @property
    def is_pointmaze(self) -> bool:
        return self.maze is not None

    @property
    def reference(self) -> str:
        """'d4rl': maze2d data (PointMaze converted, or our maze2d port's), scored with the maze2d env's D4RL
        references; 'dataset': anything else (mujoco/*), not D4RL, scored with the dataset's own references."""
        return "d4rl" if self.is_pointmaze or str(self.env_id).startswith("maze2d-") else "dataset"

    @property
    def gym_version(self) -> str | None:
        """'v5' for Hopper-v5; None without an env spec."""
        return self.env_id.rsplit("-", 1)[1] if self.env_id and "-v" in self.env_id else None

    def label(self) -> str:
        """One line saying what the data is and how it will be scored."""
        size = f"{self.total_steps} steps, {self.total_episodes} episodes"
        if self.reference == "d4rl":
            what = ("PointMaze data converted to D4RL maze2d coordinates, rewards relabelled at the maze's fixed goal"
                    if self.is_pointmaze else f"maze2d data in D4RL coordinates, collected in {self.env_id}")
            return f"minari:{self.id} ({size}): {what}; evaluated with the maze2d env's D4RL reference scores"
        return (f"warning: minari:{self.id} ({size}) is NOT D4RL data (collected in {self.env_id or 'an unknown env'})"
                f"; plan.py evaluates in that env and normalizes with the dataset's own reference returns (min "
                f"{self.ref_min_score}, max {self.ref_max_score}), never D4RL's: do not compare with D4RL tables")

    def record(self) -> dict[str, Any]:
        """Plain fields for the run's config.yaml (``dataset_info``), read back by plan.py."""
        return {"source": "minari", "id": self.id, "reference": self.reference, "env_id": self.env_id,
                "gym_version": self.gym_version, "ref_min_score": self.ref_min_score,
                "ref_max_score": self.ref_max_score, "maze": self.maze, "total_episodes": self.total_episodes,
                "total_steps": self.total_steps}


def describe_minari(dataset_id: str) -> MinariInfo:
    """Locate a dataset and read its metadata.json (not the episodes)."""
    data_dir = find_minari(dataset_id)
    meta = read_metadata(data_dir)
    env_spec = meta.get("env_spec") or {}
    space = meta.get("observation_space") or {}
    if not space:  # older files: look at the first episode
        with h5py.File(data_dir / MAIN_FILE, "r") as f:
            first = f.get("episode_0/observations")
            is_dict = isinstance(first, h5py.Group)
            space = {"type": "Dict", "subspaces": dict.fromkeys(first)} if is_dict else {"type": "Box"}
    maze = reward_type = None
    if space.get("type") == "Dict":
        keys = sorted(space.get("subspaces") or {})
        pointmaze = str(env_spec.get("id", "")).startswith("PointMaze") or "pointmaze" in dataset_id.split("/")
        if not pointmaze or not {"observation", "desired_goal"} <= set(keys):
            raise ValueError(f"{data_dir / 'metadata.json'}: Dict observations (keys {keys}) are only understood "
                             "for PointMaze datasets (observation, desired_goal); flatten them to a Box first")
        from diffuser.data.pointmaze import pointmaze_maze

        maze = pointmaze_maze(dataset_id, env_spec, data_dir / "metadata.json")
        reward_type = (env_spec.get("kwargs") or {}).get("reward_type") or (
            "dense" if "dense" in dataset_id.rsplit("/", 1)[-1] else "sparse")
    ref = [meta.get(k) for k in ("ref_min_score", "ref_max_score")]
    return MinariInfo(
        id=dataset_id, path=data_dir / MAIN_FILE, env_id=env_spec.get("id"), maze=maze, reward_type=reward_type,
        ref_min_score=None if ref[0] is None else float(ref[0]),
        ref_max_score=None if ref[1] is None else float(ref[1]),
        total_episodes=int(meta.get("total_episodes", -1)), total_steps=int(meta.get("total_steps", -1)),
    )


def _leaves(group: h5py.Group, prefix: str, skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Every dataset under a group as {prefix + relative/path: array}, except the top-level names in ``skip``."""
    out: dict[str, np.ndarray] = {}
    for key, node in group.items():
        if key in skip:
            continue
        if isinstance(node, h5py.Group):
            out.update(_leaves(node, f"{prefix}{key}/"))
        else:
            out[prefix + key] = node[()]
    return out


def _read_episodes(info: MinariInfo) -> list[dict[str, np.ndarray]]:
    """One dict per episode, in id order: obs (and goal, PointMaze) T + 1 rows; actions, rewards, terminals,
    timeouts and infos/<key> T rows."""
    try:
        f = h5py.File(info.path, "r")
    except OSError as e:
        raise ValueError(f"{info.path}: not a readable HDF5 file, truncated or damaged ({e})") from None
    episodes = []
    with f:
        names = sorted((k for k in f if k.startswith("episode_")), key=lambda k: int(k.split("_")[1]))
        if not names:
            raise ValueError(f"{info.path}: holds no episode_<i> groups, the dataset is empty; re-copy it")
        for name in names:
            ep = f[name]
            for key in ("observations", *STEP_KEYS):
                if key not in ep:
                    raise KeyError(f"{info.path}: {name} has no '{key}' (present: {sorted(ep)}); the file is "
                                   "incomplete: re-copy or re-download the dataset")
            obs = ep["observations"]
            if info.is_pointmaze:
                for key in ("observation", "desired_goal"):
                    if key not in obs:
                        raise KeyError(f"{info.path}: {name}/observations has no '{key}' (present: {sorted(obs)})")
                step = {"obs": obs["observation"][()], "goal": obs["desired_goal"][()]}
            else:
                step = {"obs": obs[()]}
            step.update({key: ep[key][()] for key in STEP_KEYS})
            n = len(step["actions"])
            for key in ("obs", "goal"):
                if key in step and len(step[key]) != n + 1:
                    raise ValueError(f"{info.path}: {name}/observations has {len(step[key])} rows for {n} actions; "
                                     "a Minari episode holds T + 1 observations (the reset one included)")
            for key in STEP_KEYS[1:]:
                if len(step[key]) != n:
                    raise ValueError(f"{info.path}: {name}/{key} has {len(step[key])} rows but there are {n} actions")
            if n == 0:
                continue
            terminals, timeouts = step.pop("terminations").astype(bool), step.pop("truncations").astype(bool)
            timeouts[-1] |= not terminals[-1]  # a Minari episode is an episode, however its last step is flagged
            step.update(terminals=terminals, timeouts=timeouts)
            skip = ("qpos", "qvel", "goal") if info.is_pointmaze else ()  # rebuilt from the mapped observations
            infos = _leaves(ep["infos"], "infos/", skip) if isinstance(ep.get("infos"), h5py.Group) else {}
            step.update({k: v[:n] for k, v in infos.items() if len(v) in (n, n + 1)})
            episodes.append(step)
    if not episodes:
        raise ValueError(f"{info.path}: every episode has 0 steps, the dataset is empty; re-copy it")
    return episodes


def load_minari(dataset_id: str) -> dict[str, np.ndarray]:
    """A Minari dataset as flat D4RL-layout arrays (float32, (N, 1) squeezed); PointMaze in maze2d coordinates."""
    info = describe_minari(dataset_id)
    episodes = _read_episodes(info)
    obs = [ep["obs"] for ep in episodes]
    data = {"observations": np.concatenate([o[:-1] for o in obs]),
            "next_observations": np.concatenate([o[1:] for o in obs])}
    for key in ("actions", "rewards", "terminals", "timeouts"):
        data[key] = np.concatenate([ep[key] for ep in episodes])
    info_keys = sorted({k for ep in episodes for k in ep if k.startswith("infos/")})
    partial = [k for k in info_keys if any(k not in ep for ep in episodes)]
    if partial:
        print(f"minari: {info.path}: info keys {partial} are missing in some episodes and were left out")
    for key in info_keys:
        if key not in partial:
            data[key] = np.concatenate([ep[key] for ep in episodes])
    if info.is_pointmaze:
        from diffuser.data.pointmaze import pointmaze_to_maze2d

        goals = [ep["goal"] for ep in episodes]
        data = pointmaze_to_maze2d(data, obs, goals, maze=info.maze, reward_type=info.reward_type)
    return _finish(data, info.path)


def _finish(data: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    """Squeeze (N, 1), float64 → float32, and refuse NaN/inf in the training arrays, naming the file and key."""
    for key, value in data.items():
        if value.ndim == 2 and value.shape[1] == 1:
            value = value[:, 0]
        data[key] = value.astype(np.float32) if value.dtype == np.float64 else value
    for key in ("observations", "next_observations", "actions", "rewards"):
        value = data[key]
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{path}: '{key}' holds {value.dtype} values, not numbers")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError(f"{path}: '{key}' holds {int(np.isnan(value).sum())} NaN and "
                             f"{int(np.isinf(value).sum())} inf values; the file is damaged: re-copy it")
    return data


def check_env(info: MinariInfo, env_name: str) -> None:
    """Refuse a dataset whose env is not the one ``env_name`` trains and evaluates in, saying what to pass."""
    from diffuser.data.pointmaze import POINTMAZE_LAYOUTS, maze2d_name, maze_walls
    from diffuser.envs.locomotion import (
        GYM_NAMES,
        GYM_VERSIONS,
        is_locomotion,
        parse_locomotion_name,
    )
    from diffuser.envs.maze2d import MAZE2D_SPECS

    what = f"env.dataset=minari:{info.id}"
    if info.is_pointmaze:
        match = [n for n, s in MAZE2D_SPECS.items() if np.array_equal(maze_walls(s.layout),
                                                                    maze_walls(POINTMAZE_LAYOUTS[info.maze]))]
        if env_name not in match:
            hint = (f"pass env=maze2d_{info.maze} (env.name={maze2d_name(info.maze, 'sparse')})" if match
                    else "no maze2d env here has that maze, so runs on it could not be evaluated")
            raise ValueError(f"{what} is the PointMaze {info.maze} maze, but env.name={env_name} is not: {hint}")
        return
    collected = info.env_id or (info.id.split("/")[-2] if "/" in info.id else "an unknown env")
    base = collected.rsplit("-v", 1)[0].lower()
    if is_locomotion(env_name):
        expected = GYM_NAMES[parse_locomotion_name(env_name).env]
        if base != expected.lower():
            ours = [k for k, v in GYM_NAMES.items() if v.lower() == base]
            hint = (f"pass env.name={ours[0]}-medium-v2 (any level: the name picks the env)" if ours else
                    f"runs here are evaluated in {', '.join(GYM_NAMES.values())} only")
            raise ValueError(f"{what} was collected in {collected}, but env.name={env_name} evaluates in "
                             f"{expected}: {hint}")
        if info.gym_version is not None and info.gym_version not in GYM_VERSIONS:
            raise ValueError(f"{what} was collected in {info.env_id}; runs here are evaluated in gymnasium "
                             f"{'/'.join(GYM_VERSIONS)} envs only")
    elif env_name in MAZE2D_SPECS and (info.env_id not in MAZE2D_SPECS or not np.array_equal(
            maze_walls(MAZE2D_SPECS[info.env_id].layout), maze_walls(MAZE2D_SPECS[env_name].layout))):
        raise ValueError(f"{what} was collected in {collected}, not in a maze2d env with env.name={env_name}'s "
                         "maze; pass the env the dataset was made in")


def load_for_env(name: str, env_name: str) -> tuple[dict[str, np.ndarray], MinariInfo]:
    """``minari:<id>`` for training on ``env_name``: check they fit, say what the data is, load it."""
    info = describe_minari(parse_minari_name(name))
    check_env(info, env_name)
    print(info.label())
    return load_minari(info.id), info
