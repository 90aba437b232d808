"""Export a D4RL-layout dataset (ours from maze2d_generate or collect, or a D4RL file) as a Minari dataset; `info`
shows what a stored Minari dataset is.

Usage: ``python -m diffuser.tools.minari info mujoco/hopper/medium-v0``;
``python -m diffuser.tools.minari export --dataset maze2d-umaze-v1 --id diffuser/maze2d-umaze/generated-v0``.

The layout is minari 0.5's HDF5 storage (docs/d4rl_and_envs.md §3.3): ``minari.load_dataset(id)`` reads it, and so does
:func:`diffuser.data.minari.load_minari`::

    <root>/<namespace>/namespace_metadata.json                      one per namespace level, {} when new
    <root>/<id>/data/metadata.json                                  totals, spaces, env spec, reference scores
    <root>/<id>/data/main_data.hdf5  episode_<i>/{observations, actions, rewards, terminations, truncations, infos/}

Episodes end at ``terminals | timeouts``; rows after the last end form a last episode, truncated there. An episode
of T rows stores T + 1 observations: its own T, then the one that followed its last step (``next_observations`` of
that row when the file has them, else the next episode's first row; the very last episode repeats its last row).
Every ``infos/*`` array of N rows is stored per episode (T rows); ``metadata/*`` and other keys are left out.
Observations stay as they are (maze2d: D4RL coordinates in a Box, not PointMaze's Dict), so the export is labelled
with our env's id and is read back as it was written.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from diffuser.data.d4rl import find_dataset, load_d4rl
from diffuser.data.minari import MAIN_FILE, describe_minari, parse_minari_name
from diffuser.utils.files import atomic_path

MINARI_FORMAT_VERSION = "0.5.0"  # the on-disk format written; minari 0.5.x loads it (checked with 0.5.4)
STANDARD_KEYS = ("observations", "next_observations", "actions", "rewards", "terminals", "timeouts")


def store_root() -> Path:
    """Where minari itself writes: ``$MINARI_DATASETS_PATH`` when set, else ``~/.minari/datasets``."""
    return Path(os.environ.get("MINARI_DATASETS_PATH") or "~/.minari/datasets").expanduser()


def episode_bounds(terminals: np.ndarray, timeouts: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each episode: ends after every terminal or timeout row, and at the end of the data."""
    ends = list(np.flatnonzero(np.asarray(terminals, bool) | np.asarray(timeouts, bool)) + 1)
    n = len(terminals)
    if not ends or ends[-1] < n:
        ends.append(n)
    starts = [0, *ends[:-1]]
    return list(zip(starts, ends))


def _box(values: np.ndarray, bounded: bool) -> str:
    """A gymnasium Box serialized as minari does: (-inf, inf), or [-1, 1] for actions that stay inside it."""
    dim = values.shape[1:]
    lo, hi = (-1.0, 1.0) if bounded else (-np.inf, np.inf)
    return json.dumps({"type": "Box", "dtype": str(values.dtype), "shape": list(dim),
                       "low": np.full(dim, lo).tolist(), "high": np.full(dim, hi).tolist()})


def _env_of(source: str, attrs: dict[str, Any]) -> tuple[str | None, str | None]:
    """(our env name, gymnasium id) of a file: from the generator's attrs, else from a dataset name."""
    from diffuser.envs.locomotion import GYM_NAMES, is_locomotion, parse_locomotion_name
    from diffuser.envs.maze2d import MAZE2D_SPECS

    name = str(attrs.get("env_name") or attrs.get("env") or Path(source).name.removesuffix(".hdf5"))
    if name in MAZE2D_SPECS:
        return name, name
    if is_locomotion(name):
        return name, str(attrs.get("gym_id") or f"{GYM_NAMES[parse_locomotion_name(name).env]}-v4")
    return None, None


def _metadata(data: dict, dataset_id: str, source: Path, attrs: dict, n_episodes: int) -> dict[str, Any]:
    """metadata.json fields: totals, spaces, provenance, our env's gymnasium spec and D4RL reference scores."""
    import gymnasium

    from diffuser.envs.locomotion import is_locomotion, parse_locomotion_name
    from diffuser.envs.maze2d import MAZE2D_SPECS
    from diffuser.envs.registry import register_maze2d

    register_maze2d()  # so the maze2d ids have a gymnasium spec to record
    env_name, env_id = _env_of(str(source), attrs)
    meta: dict[str, Any] = {
        "total_episodes": n_episodes,
        "total_steps": len(data["observations"]),
        "data_format": "hdf5",
        "observation_space": _box(data["observations"], bounded=False),
        "action_space": _box(data["actions"], bounded=bool(np.abs(data["actions"]).max() <= 1.0)),
        "dataset_id": dataset_id,
        "algorithm_name": str(attrs.get("generator") or attrs.get("policy_kind") or "unknown"),
        "minari_version": MINARI_FORMAT_VERSION,
        "description": f"Exported by diffuser.tools.minari from {source.name} "
                       f"({', '.join(f'{k}={v}' for k, v in attrs.items()) or 'no provenance attrs'}).",
    }
    if env_id is not None and env_id in gymnasium.registry:
        meta["env_spec"] = gymnasium.spec(env_id).to_json()
    if env_name in MAZE2D_SPECS:
        spec = MAZE2D_SPECS[env_name]
        meta["ref_min_score"], meta["ref_max_score"] = spec.ref_min_score, spec.ref_max_score
    elif env_name is not None and is_locomotion(env_name):
        parsed = parse_locomotion_name(env_name)
        meta["ref_min_score"], meta["ref_max_score"] = parsed.ref_min_score, parsed.ref_max_score
    return meta


def _write_episodes(path: Path, data: dict[str, np.ndarray], bounds: list[tuple[int, int]]) -> None:
    obs, n = data["observations"], len(data["observations"])
    infos = {k: v for k, v in data.items() if k.startswith("infos/") and len(v) == n}
    if "next_observations" in data:
        inner = np.ones(n, bool)
        inner[[end - 1 for _, end in bounds]] = False
        if not np.allclose(data["next_observations"][:-1][inner[:-1]], obs[1:][inner[:-1]]):
            print("minari export: warning: next_observations do not continue the observations inside episodes; "
                  "Minari keeps one observation sequence, so only each episode's last next_observation is kept")
    with h5py.File(path, "w") as f:
        for i, (start, end) in enumerate(bounds):
            if "next_observations" in data:
                last = data["next_observations"][end - 1]
            else:
                last = obs[end] if end < n else obs[end - 1]
            terminations = np.asarray(data["terminals"][start:end], bool)
            truncations = np.asarray(data.get("timeouts", np.zeros(n, bool))[start:end], bool)
            truncations[-1] |= not terminations[-1]  # the data ends mid-episode: cut there
            ep = f.create_group(f"episode_{i}")
            ep.attrs["id"], ep.attrs["total_steps"] = i, end - start
            ep.create_dataset("observations", data=np.concatenate([obs[start:end], last[None]]))
            ep.create_dataset("actions", data=data["actions"][start:end])
            ep.create_dataset("rewards", data=np.asarray(data["rewards"][start:end], np.float64))
            ep.create_dataset("terminations", data=terminations)
            ep.create_dataset("truncations", data=truncations)
            for key, value in infos.items():
                ep.create_dataset(key, data=value[start:end])


def export_minari(source: str | os.PathLike, dataset_id: str, *, root: str | os.PathLike | None = None,
                  overwrite: bool = False) -> Path:
    """Write the D4RL-layout dataset ``source`` (a name or path, as find_dataset resolves it) as Minari ``dataset_id``.

    Returns the dataset folder ``<root>/<id>``. It is built beside its final place and renamed into it, so a
    half-written dataset is never visible; an existing one is refused unless ``overwrite``.
    """
    dataset_id = parse_minari_name(dataset_id)
    if dataset_id.split("/")[0] == "D4RL":
        raise ValueError(f"'{dataset_id}': the D4RL namespace holds Farama's D4RL recreations; our data is not "
                         "D4RL's: pick another namespace, e.g. diffuser/<env>/<name>-v0")
    path = find_dataset(source)
    data = load_d4rl(path)
    with h5py.File(path, "r") as f:
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    root = Path(root).expanduser() if root is not None else store_root()
    final = root / dataset_id
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; pass --overwrite to replace it, or choose another --id")
    bounds = episode_bounds(data["terminals"], data.get("timeouts", np.zeros(len(data["terminals"]), bool)))
    with atomic_path(final, folder=True) as tmp:
        (tmp / "data").mkdir()
        _write_episodes(tmp / "data" / MAIN_FILE, data, bounds)
        meta = _metadata(data, dataset_id, path, attrs, len(bounds))
        meta["dataset_size"] = round((tmp / "data" / MAIN_FILE).stat().st_size / 2**20, 1)
        (tmp / "data" / "metadata.json").write_text(json.dumps(meta))
    parts = dataset_id.split("/")[:-1]
    for depth in range(1, len(parts) + 1):  # minari lists namespaces by these files
        marker = root.joinpath(*parts[:depth], "namespace_metadata.json")
        if not marker.exists():
            marker.write_text("{}")
    print(f"minari export: {path} -> {final} ({len(bounds)} episodes, {len(data['observations'])} steps)")
    return final


def main(argv: list[str] | None = None) -> None:
    """Command line: ``info <id>`` and ``export --dataset <name or path> --id <namespace/env/name-vN>``."""
    parser = argparse.ArgumentParser(prog="python -m diffuser.tools.minari", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    info_cmd = commands.add_parser("info", help="where a Minari dataset is, what it holds, how it is scored")
    info_cmd.add_argument("id", help="dataset id, e.g. D4RL/pointmaze/umaze-v2")
    export = commands.add_parser("export", help="write a D4RL-layout dataset as a Minari dataset")
    export.add_argument("--dataset", required=True, help="dataset name (e.g. maze2d-umaze-v1) or HDF5 path")
    export.add_argument("--id", required=True, help="Minari id to write, e.g. diffuser/maze2d-umaze/generated-v0")
    export.add_argument("--root", type=Path, default=None, help="store root (default: $MINARI_DATASETS_PATH, "
                                                                 "else ~/.minari/datasets)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that id")
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            info = describe_minari(parse_minari_name(args.id))
            print(json.dumps({**info.record(), "path": str(info.path)}, indent=2))
            print(info.label())
        else:
            export_minari(args.dataset, args.id, root=args.root, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, KeyError, ValueError) as e:
        parser.exit(2, f"minari: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}\n")


if __name__ == "__main__":
    main()
