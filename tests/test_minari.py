"""Minari datasets: the h5py reader on mujoco and PointMaze layouts, the PointMaze <-> D4RL map checked against our
maze2d env, bad-input errors, the export round trip, and train.py / plan.py on a synthetic Minari store.

The store layout is built here with h5py alone (no minari import), as minari 0.5 writes it: episode_<i> groups with
T + 1 observation rows (Dict spaces as sub-groups), metadata.json with JSON-string spaces and env spec.
"""

import json
from itertools import pairwise

import h5py
import numpy as np
import pytest
import yaml

from conftest import locomotion_arrays
from diffuser.config import EnvConfig
from diffuser.data.d4rl import DatasetNotFoundError, write_d4rl
from diffuser.tasks import build_dataset, load_env_data
from diffuser.data.minari import (
    check_env,
    describe_minari,
    load_for_env,
    load_minari,
    parse_minari_name,
)
from diffuser.tools.minari import export_minari
from diffuser.data.pointmaze import (
    d4rl_action_to_pointmaze,
    d4rl_to_pointmaze,
    pointmaze_action_to_d4rl,
    pointmaze_to_d4rl,
)
from diffuser.data.preprocess import preprocess
from diffuser.data.sequence import split_episodes
from diffuser.envs.maze2d import Maze2dEnv, U_MAZE, WALL, parse_maze
from diffuser.envs.registry import evaluation_settings, normalized_score

HOPPER_SPEC = {"id": "Hopper-v5", "entry_point": "gymnasium.envs.mujoco.hopper_v5:HopperEnv",
               "max_episode_steps": 1000, "kwargs": {}}
UMAZE_MAP = [[1, 1, 1, 1, 1], [1, 0, 0, 0, 1], [1, 1, 1, 0, 1], [1, 0, 0, 0, 1], [1, 1, 1, 1, 1]]
UMAZE_SPEC = {"id": "PointMaze_UMaze-v3", "entry_point": "gymnasium_robotics.envs.maze.point_maze:PointMazeEnv",
              "max_episode_steps": 1000000,
              "kwargs": {"maze_map": UMAZE_MAP, "reward_type": "sparse", "continuing_task": True, "reset_target": True}}
HOPPER_LENGTHS = (5, 7, 4, 6, 3, 2, 4, 5, 3, 6, 8, 2)  # 12 episodes: episode_10 must come after episode_9


def _box(dim: int) -> dict:
    return {"type": "Box", "dtype": "float64", "shape": [dim], "low": [-np.inf] * dim, "high": [np.inf] * dim}


def write_minari(root, dataset_id, episodes, **metadata):
    """A Minari dataset at root/<id> in minari 0.5's HDF5 layout; *_spec metadata values are JSON-encoded strings."""
    data_dir = root / dataset_id / "data"
    data_dir.mkdir(parents=True)
    with h5py.File(data_dir / "main_data.hdf5", "w") as f:
        for i, ep in enumerate(episodes):
            group = f.create_group(f"episode_{i}")
            group.attrs["id"], group.attrs["total_steps"] = i, len(ep["actions"])
            if isinstance(ep["observations"], dict):
                for key, value in ep["observations"].items():
                    group[f"observations/{key}"] = value
            else:
                group["observations"] = ep["observations"]
            for key in ("actions", "rewards", "terminations", "truncations"):
                group[key] = ep[key]
            for key, value in ep.get("infos", {}).items():
                group[f"infos/{key}"] = value
    first = episodes[0]["observations"]
    space = ({"type": "Dict", "subspaces": {k: _box(v.shape[1]) for k, v in first.items()}}
             if isinstance(first, dict) else _box(first.shape[1]))
    meta = {"total_episodes": len(episodes), "total_steps": sum(len(e["actions"]) for e in episodes),
            "data_format": "hdf5", "observation_space": json.dumps(space),
            "action_space": json.dumps(_box(episodes[0]["actions"].shape[1])), "dataset_id": dataset_id,
            "minari_version": "0.5.4"}
    meta.update({k: json.dumps(v) if k.endswith("_spec") else v for k, v in metadata.items()})
    (data_dir / "metadata.json").write_text(json.dumps(meta))
    parts = dataset_id.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        root.joinpath(*parts[:depth], "namespace_metadata.json").write_text("{}")
    return data_dir / "main_data.hdf5"


def hopper_episodes(lengths=HOPPER_LENGTHS, seed=0):
    """Episodes ending in a termination, a truncation, or neither (flushed mid-episode), in turn."""
    rng = np.random.default_rng(seed)
    episodes = []
    for i, n in enumerate(lengths):
        terminations, truncations = np.zeros(n, bool), np.zeros(n, bool)
        terminations[-1], truncations[-1] = i % 3 == 0, i % 3 == 1
        episodes.append({
            "observations": rng.normal(size=(n + 1, 11)), "actions": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
            "rewards": rng.normal(size=n), "terminations": terminations, "truncations": truncations,
            "infos": {"x_position": rng.normal(size=n + 1), "reward_forward": rng.normal(size=n)},
        })
    return episodes


def rollout_maze2d(n_steps, seed, start=None):
    """(n + 1, 4) D4RL states and (n, 2) actions of our maze2d-umaze env under random actions (from qpos start)."""
    env = Maze2dEnv(U_MAZE)
    obs, _ = env.reset(seed=seed)
    if start is not None:
        env.set_state(np.asarray(start, float), np.zeros(2))
        obs = env._get_obs()
    rng = np.random.default_rng(seed)
    states, actions = [obs], rng.uniform(-1, 1, (n_steps, 2))
    for a in actions:
        states.append(env.step(a)[0])
    return np.array(states), actions


def pointmaze_store(root, lengths=(80, 70), reset_length=60):
    """D4RL/pointmaze/umaze-v2 made from our env, mapped to PointMaze coordinates: one rollout cut (truncated, as at
    a goal reach) into ``lengths``, then an env reset and one more episode. Returns the D4RL-coordinate originals."""
    states, actions = rollout_maze2d(sum(lengths), seed=0, start=(1.0, 1.0))  # from the goal, wandering off
    reset_states, reset_actions = rollout_maze2d(reset_length, seed=1)
    cuts = np.cumsum((0, *lengths))
    pieces = [(states[a:b + 1], actions[a:b]) for a, b in pairwise(cuts)] + [(reset_states, reset_actions)]
    goal = np.array([-1.0, 1.0])  # centre of the 'G' cell (1, 1) in PointMaze coordinates
    episodes = []
    for s, a in pieces:
        pm = d4rl_to_pointmaze(s, 5, 5)
        n = len(a)
        truncations = np.zeros(n, bool)
        truncations[-1] = True
        episodes.append({
            "observations": {"achieved_goal": pm[:, :2], "desired_goal": np.tile(goal, (n + 1, 1)), "observation": pm},
            "actions": d4rl_action_to_pointmaze(a).astype(np.float32), "rewards": np.full(n, 7.0),
            "terminations": np.zeros(n, bool), "truncations": truncations,
            "infos": {"qpos": pm[:, :2], "qvel": pm[:, 2:], "goal": np.tile(goal, (n + 1, 1)),
                      "success": np.zeros(n + 1, bool)},
        })
    write_minari(root, "D4RL/pointmaze/umaze-v2", episodes, env_spec=UMAZE_SPEC, ref_min_score=23.85,
                 ref_max_score=161.86)
    observations = np.concatenate([s[:-1] for s, _ in pieces])
    return observations, np.concatenate([s[1:] for s, _ in pieces]), np.concatenate([a for _, a in pieces])


def test_reads_mujoco_layout_in_episode_order(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    episodes = hopper_episodes()
    write_minari(tmp_path, "mujoco/hopper/medium-v0", episodes, env_spec=HOPPER_SPEC, ref_min_score=-1.5,
                 ref_max_score=300.0)
    data = load_minari("mujoco/hopper/medium-v0")
    cat = lambda key, rows=slice(None): np.concatenate([e[key][rows] for e in episodes])
    np.testing.assert_array_equal(data["observations"], cat("observations", slice(0, -1)).astype(np.float32))
    np.testing.assert_array_equal(data["next_observations"], cat("observations", slice(1, None)).astype(np.float32))
    np.testing.assert_array_equal(data["actions"], cat("actions"))
    np.testing.assert_array_equal(data["rewards"], cat("rewards").astype(np.float32))
    np.testing.assert_array_equal(data["terminals"], cat("terminations"))
    assert data["observations"].dtype == np.float32 and data["rewards"].dtype == np.float32
    # timeouts = truncations, plus the end of each episode that neither terminated nor was truncated
    ends = np.cumsum(HOPPER_LENGTHS) - 1
    assert np.flatnonzero(data["timeouts"]).tolist() == [e for i, e in enumerate(ends) if i % 3 != 0]
    assert np.flatnonzero(data["terminals"]).tolist() == [e for i, e in enumerate(ends) if i % 3 == 0]
    np.testing.assert_array_equal(data["infos/x_position"], np.concatenate(
        [e["infos"]["x_position"][:-1] for e in episodes]).astype(np.float32))  # T + 1 info rows → first T
    np.testing.assert_array_equal(data["infos/reward_forward"], np.concatenate(
        [e["infos"]["reward_forward"] for e in episodes]).astype(np.float32))
    assert split_episodes(data).lengths.tolist() == list(HOPPER_LENGTHS)

    info = describe_minari("mujoco/hopper/medium-v0")
    assert (info.env_id, info.gym_version, info.reference) == ("Hopper-v5", "v5", "dataset")
    assert (info.ref_min_score, info.ref_max_score) == (-1.5, 300.0) and info.total_episodes == 12
    assert "NOT D4RL" in info.label() and info.record()["reference"] == "dataset"


def test_pointmaze_map_matches_our_env_physics():
    """A D4RL-coordinate rollout, mapped by docs/d4rl_and_envs.md §3.1, moves as a ball in PointMaze's centred maze."""
    states, actions = rollout_maze2d(3000, seed=0)
    grid = parse_maze(U_MAZE)
    n_rows, n_cols = grid.shape
    pm, pm_actions = d4rl_to_pointmaze(states, n_rows, n_cols), d4rl_action_to_pointmaze(actions)
    # PointMaze cell (i, j) spans x in [j − W/2, j + 1 − W/2], y in [H/2 − i − 1, H/2 − i]: the ball stays in free
    # cells and, pressed against walls, its centre comes about its radius (0.1) from their faces.
    i = np.floor(n_rows / 2 - pm[:, 1]).astype(int)
    j = np.floor(pm[:, 0] + n_cols / 2).astype(int)
    assert (grid[i, j] != WALL).all()
    wall_i, wall_j = np.nonzero(grid == WALL)
    cx, cy = wall_j + 0.5 - n_cols / 2, n_rows / 2 - wall_i - 0.5
    gap = np.hypot(np.maximum(np.abs(pm[:, :1] - cx) - 0.5, 0), np.maximum(np.abs(pm[:, 1:2] - cy) - 0.5, 0))
    assert 0.05 < gap.min() < 0.105  # soft contacts let it sink in a little at speed
    # Euler step: x_{t+1} − x_t = dt · v_{t+1} in the mapped coordinates too (velocity signs)
    np.testing.assert_allclose(pm[1:, :2] - pm[:-1, :2], 0.01 * pm[1:, 2:], atol=1e-9)
    # the mapped action pushes the mapped velocity (action signs; wall contacts blur it, a wrong map flips it)
    dv = pm[1:, 2:] - np.clip(pm[:-1, 2:], -5, 5)
    for axis in range(2):
        assert np.corrcoef(dv[:, axis], pm_actions[:, axis])[0, 1] > 0.5
    # the reader's inverse is exact
    np.testing.assert_allclose(pointmaze_to_d4rl(pm, n_rows, n_cols), states, atol=1e-12)
    np.testing.assert_array_equal(pointmaze_action_to_d4rl(pm_actions), actions)


def test_pointmaze_reads_back_in_d4rl_coordinates(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    observations, next_observations, actions = pointmaze_store(tmp_path)
    data = load_minari("D4RL/pointmaze/umaze-v2")
    np.testing.assert_allclose(data["observations"], observations, atol=1e-5)
    np.testing.assert_allclose(data["next_observations"], next_observations, atol=1e-5)
    np.testing.assert_allclose(data["actions"], actions, atol=1e-6)
    np.testing.assert_allclose(data["infos/qpos"], observations[:, :2], atol=1e-5)
    np.testing.assert_allclose(data["infos/goal"], np.tile([0.8, 0.8], (210, 1)), atol=1e-6)  # G centre in qpos
    assert np.flatnonzero(data["timeouts"]).tolist() == [79, 149, 209] and not data["terminals"].any()
    assert np.flatnonzero(data["resets"]).tolist() == [149]  # goal-reach cuts continue; the reset does not
    # rewards relabelled as D4RL's files: the fixed goal (1, 1), the row's own position, ≤ 0.5
    at_goal = np.linalg.norm(observations[:, :2] - 1.0, axis=1) <= 0.5
    assert at_goal.any() and not at_goal.all()
    np.testing.assert_array_equal(data["rewards"], at_goal.astype(np.float32))
    assert (data["infos/minari_rewards"] == 7).all()
    # maze2d_set_terminals re-segments at the fixed goal but keeps the reset
    timeouts = preprocess(data, ["maze2d_set_terminals"], "maze2d-umaze-v1")["timeouts"]
    assert timeouts[149] and not timeouts[79]

    info = describe_minari("D4RL/pointmaze/umaze-v2")
    assert (info.maze, info.reward_type, info.reference) == ("umaze", "sparse", "d4rl")
    check_env(info, "maze2d-umaze-v1")
    with pytest.raises(ValueError, match="pass env=maze2d_umaze"):
        check_env(info, "maze2d-medium-v1")


def test_training_data_from_a_pointmaze_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    pointmaze_store(tmp_path)
    env = EnvConfig(dataset="minari:D4RL/pointmaze/umaze-v2", preprocess=["maze2d_set_terminals"])
    data, path = load_env_data(env)
    assert path == tmp_path / "D4RL/pointmaze/umaze-v2/data/main_data.hdf5"
    dataset = build_dataset(data, env, horizon=16, kind="diffusion")
    assert (dataset.observation_dim, dataset.action_dim) == (4, 2) and len(dataset) > 0


def test_bad_inputs_get_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MINARI_DATASETS_PATH", raising=False)
    with pytest.raises(DatasetNotFoundError) as info:
        describe_minari("mujoco/hopper/medium-v0")
    message = str(info.value)
    assert "home/.minari/datasets/mujoco/hopper/medium-v0/data/main_data.hdf5" in message
    assert "$MINARI_DATASETS_PATH is not set" in message and "minari download mujoco/hopper/medium-v0" in message
    assert "\n" not in message
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "store"))
    with pytest.raises(DatasetNotFoundError, match="store/mujoco/hopper/medium-v0/data/main_data.hdf5"):
        describe_minari("mujoco/hopper/medium-v0")
    with pytest.raises(ValueError, match="not a Minari dataset id"):
        parse_minari_name("minari:hopper")

    path = write_minari(tmp_path / "store", "mujoco/hopper/medium-v0", hopper_episodes(), env_spec=HOPPER_SPEC)
    with h5py.File(path, "a") as f:
        del f["episode_3/actions"]
    with pytest.raises(KeyError, match=r"main_data.hdf5: episode_3 has no 'actions'"):
        load_minari("mujoco/hopper/medium-v0")
    info = describe_minari("mujoco/hopper/medium-v0")
    with pytest.raises(ValueError, match="collected in Hopper-v5, but env.name=walker2d-medium-v2.*hopper-medium-v2"):
        check_env(info, "walker2d-medium-v2")
    (path.parent / "metadata.json").unlink()
    with pytest.raises(FileNotFoundError, match="metadata.json not found"):
        describe_minari("mujoco/hopper/medium-v0")


def test_plan_scores_non_d4rl_runs_with_their_own_reference():
    record = {"dataset_info": {"source": "minari", "id": "mujoco/hopper/medium-v0", "reference": "dataset",
                               "env_id": "Hopper-v5", "gym_version": "v5", "ref_min_score": 0.0,
                               "ref_max_score": 200.0}}
    gym_version, reference = evaluation_settings(record, "hopper-medium-v2", "v4")
    assert gym_version == "v5" and normalized_score("hopper-medium-v2", 100.0, reference) == 0.5
    assert normalized_score("hopper-medium-v2", 100.0) == pytest.approx((100 + 20.272305) / (3234.3 + 20.272305))
    assert evaluation_settings({}, "hopper-medium-v2", "v4") == ("v4", None)
    assert evaluation_settings({"dataset_info": {"reference": "d4rl"}}, "maze2d-umaze-v1", "v4") == ("v4", None)
    with pytest.raises(ValueError, match="collected in Hopper-v5"):
        evaluation_settings(record, "walker2d-medium-v2", "v4")
    no_refs = {"dataset_info": {**record["dataset_info"], "ref_min_score": None, "ref_max_score": None}}
    assert np.isnan(normalized_score("hopper-medium-v2", 1.0, evaluation_settings(no_refs, "hopper-medium-v2",
                                                                                  "v5")[1]))


def test_export_round_trip(tmp_path, monkeypatch):
    arrays = locomotion_arrays((12, 20, 7, 30), (True, False, True, False), obs_dim=11, act_dim=3)
    rng = np.random.default_rng(3)
    # next_observations continue the observations inside episodes; each episode's last one is its own
    arrays["next_observations"] = np.concatenate([arrays["observations"][1:], arrays["observations"][:1]])
    ends = np.flatnonzero(arrays["terminals"] | arrays["timeouts"])
    arrays["next_observations"][ends] = rng.normal(size=(len(ends), 11))
    arrays["infos/qpos"] = rng.normal(size=(69, 6)).astype(np.float32)
    attrs = {"env": "hopper-medium-v2", "gym_id": "Hopper-v4", "generator": "diffuser.tools.collect"}
    source = write_d4rl(tmp_path / "hopper_medium-v2.hdf5", arrays, attrs=attrs)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "store"))
    out = export_minari(source, "diffuser/hopper/medium-v0")
    assert out == tmp_path / "store/diffuser/hopper/medium-v0"
    assert (tmp_path / "store/diffuser/namespace_metadata.json").is_file()
    meta = json.loads((out / "data/metadata.json").read_text())
    assert (meta["total_episodes"], meta["total_steps"], meta["data_format"]) == (4, 69, "hdf5")
    assert json.loads(meta["env_spec"])["id"] == "Hopper-v4" and meta["ref_max_score"] == 3234.3
    assert json.loads(meta["observation_space"])["shape"] == [11]
    with h5py.File(out / "data/main_data.hdf5", "r") as f:
        assert sorted(f) == ["episode_0", "episode_1", "episode_2", "episode_3"]
        assert f["episode_1/observations"].shape == (21, 11) and f["episode_1/infos/qpos"].shape == (20, 6)
        np.testing.assert_array_equal(f["episode_1/observations"][-1], arrays["next_observations"][31])
        assert f["episode_0/terminations"][-1] and f["episode_1/truncations"][-1]

    data = load_minari("diffuser/hopper/medium-v0")
    for key, value in arrays.items():
        np.testing.assert_array_equal(data[key], value, err_msg=key)
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_minari(source, "diffuser/hopper/medium-v0")
    with pytest.raises(ValueError, match="not D4RL's"):
        export_minari(source, "D4RL/hopper/medium-v0")

    # data ending mid-episode: the rest is one more episode, truncated where the data ends
    arrays["timeouts"][-1] = False
    export_minari(write_d4rl(tmp_path / "cut.hdf5", arrays), "diffuser/hopper/cut-v0")
    data = load_minari("diffuser/hopper/cut-v0")
    assert data["timeouts"][-1] and split_episodes(data).lengths.tolist() == [12, 20, 7, 30]


def test_export_of_generated_maze2d_trains_on_its_env(tmp_path, monkeypatch):
    from diffuser.data.maze2d_generation import generate_maze2d

    source = generate_maze2d("maze2d-umaze-v1", 2000, seed=0, path=tmp_path / "maze2d-umaze-sparse-v1.hdf5")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "store"))
    export_minari(source, "diffuser/maze2d-umaze/generated-v0")
    data, info = load_for_env("minari:diffuser/maze2d-umaze/generated-v0", "maze2d-umaze-v1")
    with h5py.File(source, "r") as f:
        for key in ("observations", "actions", "rewards", "terminals", "infos/goal", "infos/qpos"):
            np.testing.assert_array_equal(data[key], f[key][()], err_msg=key)
        timeouts = f["timeouts"][()]
    assert not timeouts[-1] and data["timeouts"][-1]  # the rows after the last goal switch: an episode cut there
    np.testing.assert_array_equal(data["timeouts"][:-1], timeouts[:-1])
    assert info.env_id == "maze2d-umaze-v1" and info.ref_max_score == 161.86 and info.reference == "d4rl"
    with pytest.raises(ValueError, match="not in a maze2d env"):
        check_env(info, "maze2d-medium-v1")


@pytest.mark.slow
def test_train_py_on_a_pointmaze_store(tmp_path, monkeypatch):
    from test_smoke import run

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "store"))
    pointmaze_store(tmp_path / "store")
    run_dir = tmp_path / "run"
    out = run("train.py", "env.dataset=minari:D4RL/pointmaze/umaze-v2", "trainer=debug", "logger=disabled",
              f"run_dir={run_dir}", "model.dim=8", "diffusion.n_diffusion_steps=4", "horizon=16", "env.stride=8",
              "env.use_padding=true",  # a span of 121 env steps (U-Maze needs 120) over episodes of 60-94
              env_dir=tmp_path / "no_d4rl", home=tmp_path / "home")
    assert "converted to D4RL maze2d coordinates" in out.stdout
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["dataset_info"]["reference"] == "d4rl" and config["dataset_info"]["maze"] == "umaze"
    assert config["dims"] == {"observation_dim": 4, "action_dim": 2, "transition_dim": 6}
    assert (run_dir / "checkpoints" / "step_0000004" / "model.safetensors").is_file()


@pytest.mark.slow
def test_train_and_plan_on_a_mujoco_store_use_its_env_and_reference(tmp_path, monkeypatch):
    from test_smoke import run

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "store"))
    write_minari(tmp_path / "store", "mujoco/hopper/medium-v0", hopper_episodes(lengths=(40, 30, 50)),
                 env_spec=HOPPER_SPEC, ref_min_score=0.0, ref_max_score=1000.0)
    bc = tmp_path / "bc"
    out = run("train.py", "experiment=locomotion_bc", "env.dataset=minari:mujoco/hopper/medium-v0", "trainer=debug",
              "logger=disabled", "model.dim=16", f"run_dir={bc}", env_dir=tmp_path / "no_d4rl", home=tmp_path / "home")
    assert "is NOT D4RL data (collected in Hopper-v5)" in out.stdout
    info = yaml.safe_load((bc / "config.yaml").read_text())["dataset_info"]
    assert info["reference"] == "dataset" and info["gym_version"] == "v5" and info["ref_max_score"] == 1000.0

    out = run("plan.py", "env=locomotion", "planner=locomotion", f"diffusion_run={bc}", "guide=none",
              "planner.n_episodes=1", "planner.max_episode_steps=3", "planner.video=false", "logger=disabled",
              env_dir=tmp_path / "no_d4rl", home=tmp_path / "home")
    assert "evaluating in Hopper-v5" in out.stdout and "not D4RL's" in out.stdout
    results = json.loads((next((bc / "plans").iterdir()) / "results.json").read_text())
    assert results["dataset_info"]["id"] == "mujoco/hopper/medium-v0"
    episode = results["episodes"][0]
    assert episode["normalized_score"] == pytest.approx(100 * episode["return"] / 1000.0)
