"""Behaviour policies (every loader) and D4RL-style collection: shapes, episode flags, determinism, safe unpickling."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from diffuser.data.d4rl import load_d4rl, write_d4rl
from diffuser.tools import collect as collect_mod
from diffuser.tools.collect import collect, collect_dataset, main, policies_dir, rollout
from diffuser.tools.policies import (
    GaussianPolicy,
    LinearPolicy,
    PolicyLoadError,
    RandomPolicy,
    TanhGaussianPolicy,
    UnsafePickleError,
    load_d4rl_policy,
    load_policy,
    load_sb3_zip,
    safe_load_pickle,
)
from diffuser.envs.locomotion import make_locomotion_env

D4RL_KEYS = (
    "observations",
    "next_observations",
    "actions",
    "rewards",
    "terminals",
    "timeouts",
    "infos/qpos",
    "infos/qvel",
)


@pytest.fixture(scope="module")
def policies() -> Path:
    """The shared behaviour-policy folder; tests that need it skip when it is absent."""
    try:
        return policies_dir()
    except FileNotFoundError as e:
        pytest.skip(f"behaviour policies not available ({e})")


def zoo(policies: Path, algo: str, env: str) -> Path:
    return policies / "rl-zoo" / algo / f"{env}-v3_1" / f"{env}-v3.zip"


def episode_bounds(terminals: np.ndarray, timeouts: np.ndarray) -> list[tuple[int, int]]:
    ends = np.flatnonzero(terminals | timeouts) + 1
    return list(zip(np.concatenate([[0], ends[:-1]]), ends))


# ------------------------------------------------------------------------------------------------ policies


SB3_CASES = [
    ("sac", "Hopper", TanhGaussianPolicy, 11, 3),
    ("tqc", "Hopper", TanhGaussianPolicy, 11, 3),
    ("ppo", "Hopper", GaussianPolicy, 11, 3),
    ("ppo", "Walker2d", GaussianPolicy, 17, 6),  # time feature: the network takes 18 inputs
    ("a2c", "HalfCheetah", GaussianPolicy, 17, 6),
    ("trpo", "Walker2d", GaussianPolicy, 17, 6),
    ("ars", "HalfCheetah", LinearPolicy, 17, 6),
]


@pytest.mark.parametrize("algo, env, cls, obs_dim, act_dim", SB3_CASES)
def test_sb3_policies_load_and_act(policies, algo, env, cls, obs_dim, act_dim):
    policy = load_sb3_zip(zoo(policies, algo, env))
    assert isinstance(policy, cls) and policy.kind == f"sb3-{algo}"
    assert (policy.observation_dim, policy.action_dim) == (obs_dim, act_dim)
    obs = np.random.default_rng(0).normal(size=(5, obs_dim))
    steps = np.arange(5) * 100
    a1, lp1 = policy.act(obs, np.random.default_rng(1), steps=steps)
    a2, _ = policy.act(obs, np.random.default_rng(2), steps=steps)
    assert a1.shape == (5, act_dim) and a1.dtype == np.float32
    assert np.all(np.abs(a1) <= 1.0)
    if algo == "ars":  # deterministic linear policy
        assert lp1 is None and np.array_equal(a1, a2)
    else:
        assert lp1.shape == (5,) and lp1.dtype == np.float32 and np.all(np.isfinite(lp1))
        assert not np.array_equal(a1, a2)  # sampled
    assert (policy.normalizer is not None) == (algo not in ("sac", "tqc"))


def test_ppo_walker2d_time_feature(policies):
    policy = load_sb3_zip(zoo(policies, "ppo", "Walker2d"), deterministic=True)
    assert policy.needs_steps and policy.time_feature_max_steps == 1000
    obs = np.random.default_rng(0).normal(size=(2, 17)) * 0.1
    with pytest.raises(ValueError, match="time feature"):
        policy.act(obs, np.random.default_rng(0))
    early, _ = policy.act(obs, np.random.default_rng(0), steps=np.array([0, 0]))
    late, _ = policy.act(obs, np.random.default_rng(0), steps=np.array([900, 900]))
    assert not np.allclose(early, late)
    # The network input is [obs, 1 − t/1000], normalized with the 18-dim VecNormalize statistics.
    x = policy._inputs(obs, np.array([0, 500]))
    feature = (np.array([1.0, 0.5]) - policy.normalizer.mean[-1]) / policy.normalizer.scale[-1]
    np.testing.assert_allclose(x[:, -1], np.clip(feature, -10, 10), rtol=1e-6)


def test_vecnormalize_statistics(policies):
    policy = load_sb3_zip(zoo(policies, "ppo", "Hopper"))
    state = safe_load_pickle(zoo(policies, "ppo", "Hopper").parent / "Hopper-v3" / "vecnormalize.pkl")
    obs = np.random.default_rng(0).normal(size=(3, 11)) * 50
    expected = np.clip((obs - state.obs_rms.mean) / np.sqrt(state.obs_rms.var + 1e-8), -10, 10)
    np.testing.assert_allclose(policy.normalizer(obs), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "algo, env, name, minimum",
    [("trpo", "Hopper", "hopper-medium-v2", 3000.0), ("tqc", "HalfCheetah", "halfcheetah-medium-v2", 10000.0)],
)
def test_loaded_weights_behave_like_the_trained_agent(policies, algo, env, name, minimum):
    """One deterministic episode reaches the return the agent is known for (wrong layers/normalization would not)."""
    policy = load_sb3_zip(zoo(policies, algo, env), deterministic=True)
    env_ = make_locomotion_env(name)
    obs, _ = env_.reset(seed=0)
    total, done = 0.0, False
    while not done:
        action, _ = policy.act(obs[None], np.random.default_rng(0))
        obs, reward, terminated, truncated, _ = env_.step(action[0])
        total, done = total + reward, terminated or truncated
    assert total > minimum


def test_cs285_expert(policies):
    path = policies / "cs285" / "experts" / "Hopper.pkl"
    policy = load_policy(path, deterministic=True)
    assert isinstance(policy, GaussianPolicy) and policy.kind == "cs285-expert"
    assert (policy.observation_dim, policy.action_dim) == (11, 3)
    raw = safe_load_pickle(path)["GaussianPolicy"]
    obs = np.random.default_rng(0).normal(size=(4, 11))
    mean, meansq = raw["obsnorm"]["Standardizer"]["mean_1_D"], raw["obsnorm"]["Standardizer"]["meansq_1_D"]
    h = (obs - mean) / (np.sqrt(np.maximum(0, meansq - mean**2)) + 1e-6)
    for name in ("layer_0", "layer_2"):
        layer = raw["hidden"]["FeedforwardNet"][name]["AffineLayer"]
        h = np.tanh(h @ layer["W"] + layer["b"])
    expected = np.clip(h @ raw["out"]["AffineLayer"]["W"] + raw["out"]["AffineLayer"]["b"], -1, 1)
    actions, log_probs = policy.act(obs, np.random.default_rng(0))
    np.testing.assert_allclose(actions, expected, atol=1e-4)
    assert log_probs is None
    sampled, log_probs = load_policy(path).act(obs, np.random.default_rng(0))
    assert log_probs.shape == (4,) and np.all(np.abs(sampled) <= 1)


def test_d4rl_metadata_policy(tmp_path):
    rng = np.random.default_rng(0)
    sizes = [(8, 11), (8, 8), (3, 8), (3, 8)]  # fc0, fc1, last_fc, last_fc_log_std in torch (out, in) layout
    params = {
        n: (rng.normal(size=s).astype(np.float32) * 0.5, rng.normal(size=s[0]).astype(np.float32) * 0.1)
        for n, s in zip(("fc0", "fc1", "last_fc", "last_fc_log_std"), sizes)
    }
    arrays = {
        "observations": np.zeros((4, 11), np.float32),
        "actions": np.zeros((4, 3), np.float32),
        "rewards": np.zeros(4, np.float32),
        "terminals": np.zeros(4, bool),
        "metadata/policy/nonlinearity": np.bytes_(b"relu"),
        "metadata/policy/output_distribution": np.bytes_(b"tanh_gaussian"),
    }
    for name, (w, b) in params.items():
        arrays[f"metadata/policy/{name}/weight"], arrays[f"metadata/policy/{name}/bias"] = w, b
    path = write_d4rl(tmp_path / "hopper_medium-v2.hdf5", arrays)

    policy = load_policy(path)
    assert isinstance(policy, TanhGaussianPolicy) and policy.kind == "d4rl-sac"
    assert (policy.observation_dim, policy.action_dim) == (11, 3)
    obs = rng.normal(size=(5, 11)).astype(np.float32)

    def relu(x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0)

    h = relu(relu(obs @ params["fc0"][0].T + params["fc0"][1]) @ params["fc1"][0].T + params["fc1"][1])
    mu = h @ params["last_fc"][0].T + params["last_fc"][1]
    log_std = np.clip(h @ params["last_fc_log_std"][0].T + params["last_fc_log_std"][1], -20, 2)
    np.testing.assert_allclose(load_d4rl_policy(path, deterministic=True).act(obs, rng)[0], np.tanh(mu), atol=1e-5)

    actions, log_probs = policy.act(obs, np.random.default_rng(7))
    eps = np.random.default_rng(7).standard_normal(mu.shape, dtype=np.float32)
    u = torch.tensor(mu + np.exp(log_std) * eps, dtype=torch.float64)
    normal = torch.distributions.Normal(torch.tensor(mu, dtype=torch.float64), torch.tensor(np.exp(log_std)).double())
    expected = (normal.log_prob(u) - torch.log1p(-(torch.tanh(u) ** 2))).sum(-1).numpy()
    np.testing.assert_allclose(actions, np.tanh(u.numpy()), atol=1e-5)
    np.testing.assert_allclose(log_probs, expected, rtol=1e-4, atol=1e-3)


def test_random_policy():
    policy = load_policy("random", action_dim=6)
    assert isinstance(policy, RandomPolicy) and load_policy("random:3").action_dim == 3
    actions, log_probs = policy.act(np.zeros((100, 17)), np.random.default_rng(0))
    assert actions.shape == (100, 6) and actions.dtype == np.float32
    assert np.all(np.abs(actions) <= 1) and actions.min() < -0.9 and actions.max() > 0.9
    np.testing.assert_allclose(log_probs, -6 * np.log(2), rtol=1e-6)


# ------------------------------------------------------------------------------------------------ unpickling


class _SystemCall:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _EvalCall:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


@pytest.mark.parametrize("payload", ["system", "eval"])
def test_malicious_pickle_is_refused(tmp_path, payload):
    marker = tmp_path / "pwned"
    evil = _SystemCall(f"touch {marker}") if payload == "system" else _EvalCall(f"open({str(marker)!r}, 'w')")
    path = tmp_path / "Hopper.pkl"
    path.write_bytes(pickle.dumps({"GaussianPolicy": evil}))
    with pytest.raises(UnsafePickleError, match=payload) as info:
        safe_load_pickle(path)
    assert str(path) in str(info.value)
    with pytest.raises(UnsafePickleError):
        load_policy(path)
    assert not marker.exists()


def test_malicious_vecnormalize_is_refused(tmp_path, policies):
    marker = tmp_path / "pwned"
    run = tmp_path / "ppo" / "Hopper-v3_1"
    (run / "Hopper-v3").mkdir(parents=True)
    shutil.copy(zoo(policies, "ppo", "Hopper"), run / "Hopper-v3.zip")
    shutil.copy(zoo(policies, "ppo", "Hopper").parent / "Hopper-v3" / "config.yml", run / "Hopper-v3" / "config.yml")
    (run / "Hopper-v3" / "vecnormalize.pkl").write_bytes(pickle.dumps(_SystemCall(f"touch {marker}")))
    with pytest.raises(UnsafePickleError, match="vecnormalize.pkl"):
        load_sb3_zip(run / "Hopper-v3.zip")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 5])
def test_restricted_unpickler_reads_numpy(tmp_path, protocol):
    data = {"a": np.arange(6, dtype=np.float64).reshape(2, 3), "b": np.float32(1.5), "c": [np.bool_(True), "x"]}
    path = tmp_path / "arrays.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = safe_load_pickle(path)
    np.testing.assert_array_equal(loaded["a"], data["a"])
    assert loaded["b"] == np.float32(1.5) and loaded["c"][1] == "x"


# ------------------------------------------------------------------------------------------------ errors


def test_unknown_file_kind(tmp_path):
    path = tmp_path / "policy.onnx"
    path.write_bytes(b"\0")
    with pytest.raises(PolicyLoadError, match=r"unknown file kind '\.onnx'"):
        load_policy(path)


def test_observation_size_mismatch(tmp_path, policies):
    hopper_policy = load_policy(zoo(policies, "sac", "Hopper"))
    with pytest.raises(PolicyLoadError) as info:
        collect("walker2d-medium-v2", hopper_policy, 100, 0, tmp_path / "x.hdf5", n_envs=1)
    message = str(info.value)
    assert "size 11" in message and "size 17" in message and "walker2d-medium-v2" in message
    assert "Hopper-v3.zip" in message
    assert not (tmp_path / "x.hdf5").exists()


# ------------------------------------------------------------------------------------------------ collection


@pytest.fixture(scope="module")
def hopper_file(tmp_path_factory) -> Path:
    """hopper-random-v2, 400 steps over 4 envs: many short episodes that end in env termination."""
    return collect("hopper-random-v2", "random", 400, 0, tmp_path_factory.mktemp("c") / "h.hdf5", n_envs=4)


def test_collect_round_trips_through_reader(hopper_file):
    data = load_d4rl(hopper_file)
    for key in D4RL_KEYS + ("infos/action_log_probs",):
        assert key in data, key
    n = len(data["rewards"])
    assert 0 < n <= 400
    shapes = {
        "observations": (n, 11),
        "next_observations": (n, 11),
        "actions": (n, 3),
        "rewards": (n,),
        "terminals": (n,),
        "timeouts": (n,),
        "infos/qpos": (n, 6),
        "infos/qvel": (n, 6),
        "infos/action_log_probs": (n,),
    }
    for key, shape in shapes.items():
        assert data[key].shape == shape, key
        assert data[key].dtype == (bool if key in ("terminals", "timeouts") else np.float32), key
    assert np.all(np.abs(data["actions"]) <= 1)
    with h5py.File(hopper_file) as f:
        attrs = dict(f.attrs)
    assert attrs["env"] == "hopper-random-v2" and attrs["gym_version"] == "v4" and attrs["seed"] == 0
    assert attrs["n_steps"] == 400 and attrs["policy_kind"] == "random"
    assert attrs["n_episodes"] == int((data["terminals"] | data["timeouts"]).sum())


def test_episodes_are_whole_and_consistent(hopper_file):
    data = load_d4rl(hopper_file)
    terminals, timeouts = data["terminals"], data["timeouts"]
    assert terminals[-1] or timeouts[-1]  # only whole episodes
    bounds = episode_bounds(terminals, timeouts)
    assert bounds[-1][1] == len(terminals)
    obs, next_obs, qpos, qvel = data["observations"], data["next_observations"], data["infos/qpos"], data["infos/qvel"]
    for start, end in bounds:
        assert end - start <= 1000
        np.testing.assert_array_equal(next_obs[start : end - 1], obs[start + 1 : end])
    # Hopper observation = qpos[1:] + clip(qvel, ±10): infos/qpos and infos/qvel belong to the same row.
    np.testing.assert_allclose(obs[:, :5], qpos[:, 1:], atol=1e-6)
    np.testing.assert_allclose(obs[:, 5:], np.clip(qvel, -10, 10), atol=1e-6)
    assert not timeouts.any()  # random Hopper falls long before step 1000


def test_terminals_match_env_termination(hopper_file):
    data = load_d4rl(hopper_file)
    env = make_locomotion_env("hopper-random-v2").unwrapped
    env.reset(seed=0)
    healthy = []
    for next_obs in data["next_observations"].astype(np.float64):
        env.set_state(np.concatenate([[0.0], next_obs[:5]]), next_obs[5:])
        healthy.append(env.is_healthy)
    np.testing.assert_array_equal(data["terminals"], ~np.array(healthy))


def test_timeouts_only_at_step_1000(tmp_path):
    path = collect("halfcheetah-random-v2", "random", 2000, 0, tmp_path / "hc.hdf5", n_envs=2, verbose=False)
    data = load_d4rl(path)
    assert len(data["rewards"]) == 2000
    assert np.flatnonzero(data["timeouts"]).tolist() == [999, 1999]
    assert not data["terminals"].any()  # HalfCheetah never terminates


def test_same_seed_same_file(tmp_path, hopper_file):
    again = collect("hopper-random-v2", "random", 400, 0, tmp_path / "again.hdf5", n_envs=4, verbose=False)
    first, second = load_d4rl(hopper_file), load_d4rl(again)
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    assert hopper_file.read_bytes() == again.read_bytes()
    other = load_d4rl(collect("hopper-random-v2", "random", 400, 1, tmp_path / "s1.hdf5", n_envs=4, verbose=False))
    assert not np.array_equal(other["observations"][:5], first["observations"][:5])


def test_medium_expert_is_medium_then_expert(tmp_path, policies):
    path = collect_dataset("hopper-medium-expert-v2", size=2400, seed=0, path=tmp_path / "me.hdf5", n_envs=2)
    data = load_d4rl(path)
    medium = rollout("hopper-medium-v2", str(zoo(policies, "sac", "Hopper")), 1200, 0, n_envs=2)
    n = medium.n_steps
    assert 0 < n <= 1200 and n < len(data["rewards"]) <= 2400
    for key, value in medium.arrays.items():
        np.testing.assert_array_equal(data[key][:n], value)
    assert data["terminals"][n - 1] or data["timeouts"][n - 1]
    with h5py.File(path) as f:
        assert f.attrs["policy_kind"] == "sb3-sac + sb3-tqc"


def test_cli_writes_and_reports(tmp_path, capsys):
    out = main(
        ["--dataset", "hopper-random-v2", "--size", "200", "--output", str(tmp_path / "r.hdf5"), "--n-envs", "2"]
    )
    assert out == tmp_path / "r.hdf5" and out.is_file()
    printed = capsys.readouterr().out
    assert "steps" in printed and "episodes" in printed and "normalized" in printed and "env steps/s" in printed


def test_cli_names_missing_policy_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(collect_mod, "DEFAULT_POLICIES_DIR", tmp_path / "absent")
    monkeypatch.setenv("DIFFUSER_POLICIES_DIR", str(tmp_path / "also-absent"))
    with pytest.raises(SystemExit) as info:
        main(["--dataset", "hopper-medium-v2", "--size", "100", "--output", str(tmp_path / "m.hdf5")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "absent") in err and str(tmp_path / "also-absent") in err
    assert "--policy" in err and "DIFFUSER_POLICIES_DIR" in err
