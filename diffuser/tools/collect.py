"""Collect D4RL-style locomotion datasets with a behaviour policy in gymnasium MuJoCo envs (docs/d4rl_and_envs.md §2.1).

``n_envs`` envs step in lockstep and the policy acts on all of them in one batched call per step. Actions are sampled
from the stochastic policy, episodes last at most 1000 steps (``timeouts`` marks the row where step 1000 is reached,
``terminals`` the row where the env terminated), and only whole episodes are kept. Episodes are ordered by the step
at which they started (env index breaks ties), which does not favour short episodes, and the dataset is cut before
the first episode that would overflow ``n_steps``, as D4RL cut its files (hopper-medium-v2 holds 999,906 steps).

Usage: ``python -m diffuser.tools.collect --dataset hopper-medium-v2 [--size N] [--seed S] [--output FILE]``.
"""

from __future__ import annotations

import argparse
import heapq
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffuser.data.d4rl import default_dataset_dir, file_names, write_d4rl
from diffuser.tools.policies import Policy, check_policy_fits, load_policy
from diffuser.envs.locomotion import (
    GYM_NAMES,
    locomotion_normalized_score,
    make_locomotion_env,
    parse_locomotion_name,
)

MAX_EPISODE_STEPS = 1000  # D4RL locomotion episode cap
DEFAULT_SIZE = 1_000_000
POLICIES_ENV_VAR = "DIFFUSER_POLICIES_DIR"

DEFAULT_POLICIES_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "policies"

# Behaviour policy of each "<env>-<level>": a path under the policies folder (see its README) or "random".
# Comments: our return on gymnasium -v4 with sampled actions (30-100 episodes, seed 0) vs D4RL's v2 dataset.
RECIPES: dict[str, str] = {
    "hopper-random": "random",
    "hopper-medium": "rl-zoo/sac/Hopper-v3_1/Hopper-v3.zip",  # 1421 ± 526, length 386 (D4RL 1422 ± 379)
    "hopper-expert": "rl-zoo/tqc/Hopper-v3_1/Hopper-v3.zip",  # 3307 ± 641 (D4RL 3511 ± 329)
    "walker2d-random": "random",
    "walker2d-medium": "rl-zoo/ppo/Walker2d-v3_1/Walker2d-v3.zip",  # 2489 ± 1364, time feature (D4RL 2852 ± 1095)
    # Sampled TQC Walker2d falls often (3063 ± 1063); the cs285 expert sampled is closest (4900 ± 890; D4RL 4921 ± 136).
    "walker2d-expert": "cs285/experts/Walker2d.pkl",
    "halfcheetah-random": "random",
    # ARS is deterministic: 4189 ± 1768, median 4955, ~10% of episodes fail (return < 500) (D4RL 4770 ± 356).
    "halfcheetah-medium": "rl-zoo/ars/HalfCheetah-v3_1/HalfCheetah-v3.zip",
    "halfcheetah-expert": "rl-zoo/tqc/HalfCheetah-v3_1/HalfCheetah-v3.zip",  # 11495 ± 177 (D4RL 10656 ± 442)
}
COMPOSITE_LEVELS = {"medium-expert": ("medium", "expert")}  # concatenated parts, each of half the size


@dataclass
class Rollout:
    """Whole episodes in D4RL layout plus what it took to collect them."""

    arrays: dict[str, np.ndarray]
    episode_returns: np.ndarray
    env_steps: int  # every env step simulated, including episodes that were cut or still running at the end
    seconds: float
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return len(self.arrays["rewards"])


def policies_dir() -> Path:
    """The behaviour-policy folder: ``$DIFFUSER_POLICIES_DIR``, else ``<repo>/../shared/data/policies``.

    Raises FileNotFoundError saying where it looked and what to pass when neither exists.
    """
    looked = []
    if os.environ.get(POLICIES_ENV_VAR):
        looked.append(Path(os.environ[POLICIES_ENV_VAR]).expanduser())
    looked.append(DEFAULT_POLICIES_DIR)
    for candidate in looked:
        if candidate.is_dir():
            return candidate
    lines = "\n".join(f"  {p}" for p in looked)
    raise FileNotFoundError(
        f"behaviour-policy folder not found. Looked in:\n{lines}\n"
        f"Pass --policy PATH (an SB3 .zip, a cs285 .pkl, a D4RL .hdf5 or 'random') or set ${POLICIES_ENV_VAR}."
    )


def recipe_policies(dataset: str) -> list[tuple[str, str]]:
    """[(level, policy spec)] of a dataset name; medium-expert gives its medium and expert parts in that order."""
    parsed = parse_locomotion_name(dataset)
    levels = COMPOSITE_LEVELS.get(parsed.level, (parsed.level,))
    out = []
    for level in levels:
        key = f"{parsed.env}-{level}"
        if key not in RECIPES:
            raise ValueError(f"no collection recipe for '{dataset}' ({key}); recipes exist for {sorted(RECIPES)}")
        spec = RECIPES[key]
        out.append((level, spec if spec == "random" else str(policies_dir() / spec)))
    return out


class _StartOrderCut:
    """Keeps finished episodes in the order they started and stops before the first one that would overflow."""

    def __init__(self, n_steps: int) -> None:
        self.n_steps, self.total, self.done = n_steps, 0, False
        self.pending: list = []  # heap of (start iteration, env index, episode)
        self.kept: list[dict[str, np.ndarray]] = []

    def add(self, start: tuple[int, int], episode: dict[str, np.ndarray], first_running: tuple[int, int]) -> None:
        """Queue a finished episode; every queued episode that started before ``first_running`` becomes final."""
        heapq.heappush(self.pending, (*start, episode))
        while self.pending and self.pending[0][:2] < first_running and not self.done:
            ep = heapq.heappop(self.pending)[2]
            if self.total + len(ep["rewards"]) > self.n_steps:
                self.done = True
                return
            self.kept.append(ep)
            self.total += len(ep["rewards"])
            self.done = self.total == self.n_steps


def rollout(
    env_name: str,
    policy: Policy | str | os.PathLike,
    n_steps: int,
    seed: int,
    gym_version: str = "v4",
    n_envs: int = 16,
    max_episode_steps: int = MAX_EPISODE_STEPS,
) -> Rollout:
    """Run ``n_envs`` envs in lockstep with one batched policy call per step; keep whole episodes up to ``n_steps``.

    ``policy`` is a policy object or a :func:`load_policy` spec. Env i is seeded once from ``SeedSequence(seed)``;
    the action noise comes from one generator shared by the batch, so (seed, n_envs) fixes the data.
    """
    if n_steps < 1 or n_envs < 1:
        raise ValueError(f"n_steps and n_envs must be positive, got {n_steps} and {n_envs}")
    wrappers = [make_locomotion_env(env_name, gym_version) for _ in range(n_envs)]
    envs = [w.unwrapped for w in wrappers]  # the episode cap is counted here, so the wrappers are bypassed
    obs_dim, act_dim = wrappers[0].observation_space.shape[0], wrappers[0].action_space.shape[0]
    gym_id = f"{GYM_NAMES[parse_locomotion_name(env_name).env]}-{gym_version}"
    if isinstance(policy, (str, os.PathLike)):
        policy = load_policy(policy, action_dim=act_dim)
    check_policy_fits(policy, f"{env_name} ({gym_id})", obs_dim, act_dim)

    env_seeds, policy_seed = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(policy_seed)
    T, rows = max_episode_steps, np.arange(n_envs)
    # Per-env episode buffers; obs row t is the observation of step t and row t + 1 its next observation.
    obs_buf = np.zeros((n_envs, T + 1, obs_dim))
    qpos_buf = np.zeros((n_envs, T, envs[0].data.qpos.size))
    qvel_buf = np.zeros((n_envs, T, envs[0].data.qvel.size))
    act_buf, logp_buf = np.zeros((n_envs, T, act_dim), np.float32), np.zeros((n_envs, T), np.float32)
    rew_buf = np.zeros((n_envs, T))

    def finished(i: int, t: int, terminated: bool) -> dict[str, np.ndarray]:
        """Env i's episode of t steps as float32/bool D4RL columns (copies), plus its return."""
        episode = {
            "observations": obs_buf[i, :t].astype(np.float32),
            "next_observations": obs_buf[i, 1 : t + 1].astype(np.float32),
            "actions": act_buf[i, :t].copy(),
            "rewards": rew_buf[i, :t].astype(np.float32),
            "terminals": np.zeros(t, bool),
            "timeouts": np.zeros(t, bool),
            "infos/qpos": qpos_buf[i, :t].astype(np.float32),
            "infos/qvel": qvel_buf[i, :t].astype(np.float32),
            "return": np.array(rew_buf[i, :t].sum()),
        }
        episode["terminals"][-1] = terminated
        episode["timeouts"][-1] = t == T
        if has_log_probs:
            episode["infos/action_log_probs"] = logp_buf[i, :t].copy()
        return episode

    obs = np.zeros((n_envs, obs_dim))
    for i, (env, s) in enumerate(zip(envs, env_seeds.generate_state(n_envs))):
        obs[i] = obs_buf[i, 0] = env.reset(seed=int(s))[0]
    t_env = np.zeros(n_envs, dtype=np.int64)
    starts = [(0, i) for i in range(n_envs)]  # (iteration its running episode started at, env index)
    cut = _StartOrderCut(n_steps)
    env_steps, iteration, has_log_probs = 0, 0, None
    start = time.perf_counter()
    while not cut.done:
        actions, log_probs = policy.act(obs, rng, steps=t_env)
        has_log_probs = (log_probs is not None) if has_log_probs is None else has_log_probs
        act_buf[rows, t_env] = actions
        if has_log_probs:
            logp_buf[rows, t_env] = log_probs
        for i, env in enumerate(envs):
            t = t_env[i]
            qpos_buf[i, t], qvel_buf[i, t] = env.data.qpos, env.data.qvel
            next_obs, reward, terminated, _, _ = env.step(actions[i])
            obs_buf[i, t + 1], rew_buf[i, t] = next_obs, reward
            t += 1
            if terminated or t == T:
                episode = finished(i, t, bool(terminated))
                obs_buf[i, 0] = next_obs = env.reset()[0]
                start_key, starts[i], t = starts[i], (iteration + 1, i), 0
                cut.add(start_key, episode, first_running=min(starts))
            obs[i], t_env[i] = next_obs, t
        env_steps += n_envs
        iteration += 1
    seconds = time.perf_counter() - start
    for w in wrappers:
        w.close()

    if not cut.kept:
        raise ValueError(f"{env_name}: the first whole episode is longer than n_steps={n_steps}; ask for more steps")
    keys = [k for k in cut.kept[0] if k != "return"]
    arrays = {k: np.concatenate([ep[k] for ep in cut.kept]) for k in keys}
    returns = np.array([float(ep["return"]) for ep in cut.kept])
    attrs = {
        "policy_kind": policy.kind,
        "policy_source": str(policy.source),
        "deterministic": bool(getattr(policy, "deterministic", False)),
    }
    return Rollout(arrays, returns, env_steps, seconds, attrs)


def summary(env_name: str, result: Rollout, label: str = "") -> str:
    """One line: steps, episodes, return mean ± std, normalized score ×100 and env steps/s."""
    r = result.episode_returns
    score = 100 * locomotion_normalized_score(env_name, float(r.mean()))
    return (
        f"{label or env_name}: {result.n_steps:,} steps, {len(r):,} episodes, return {r.mean():.1f} ± {r.std():.1f} "
        f"(normalized {score:.1f}), {result.env_steps / result.seconds:,.0f} env steps/s "
        f"({result.env_steps:,} simulated in {result.seconds:.1f} s)"
    )


def collect(
    env_name: str,
    policy: Policy | str | os.PathLike,
    n_steps: int,
    seed: int,
    path: str | os.PathLike,
    gym_version: str = "v4",
    n_envs: int = 16,
    max_episode_steps: int = MAX_EPISODE_STEPS,
    verbose: bool = True,
) -> Path:
    """Collect ``n_steps`` (whole episodes) with ``policy`` (object or load_policy spec) into a D4RL-layout file."""
    result = rollout(env_name, policy, n_steps, seed, gym_version, n_envs, max_episode_steps)
    return write_rollouts(env_name, [result], seed, path, gym_version, n_envs, n_steps, verbose=verbose)


def write_rollouts(
    env_name: str,
    results: list[Rollout],
    seed: int,
    path: str | os.PathLike,
    gym_version: str,
    n_envs: int,
    n_steps: int,
    verbose: bool = True,
) -> Path:
    """Concatenate rollouts (medium-expert: medium then expert) and write them with their provenance as root attrs."""
    keys = [k for k in results[0].arrays if all(k in r.arrays for r in results)]  # log-probs only if all have them
    arrays = {k: np.concatenate([r.arrays[k] for r in results]) for k in keys}
    attrs = {
        "env": env_name,
        "gym_version": gym_version,
        "gym_id": f"{GYM_NAMES[parse_locomotion_name(env_name).env]}-{gym_version}",
        "policy_kind": " + ".join(r.attrs["policy_kind"] for r in results),
        "policy_source": " + ".join(r.attrs["policy_source"] for r in results),
        "deterministic": " + ".join(str(r.attrs["deterministic"]) for r in results),
        "seed": int(seed),
        "n_steps": int(n_steps),
        "n_envs": int(n_envs),
        "n_episodes": int(sum(len(r.episode_returns) for r in results)),
        "generator": "diffuser.tools.collect",
    }
    path = write_d4rl(path, arrays, attrs)
    if verbose:
        for r in results if len(results) > 1 else []:
            print("  " + summary(env_name, r, label=r.attrs["policy_kind"]))
        returns = np.concatenate([r.episode_returns for r in results])
        merged = Rollout(arrays, returns, sum(r.env_steps for r in results), sum(r.seconds for r in results))
        print(f"{summary(env_name, merged)} -> {path}")
    return path


def collect_dataset(
    dataset: str,
    size: int | None = None,
    seed: int = 0,
    path: str | os.PathLike | None = None,
    policy: str | None = None,
    gym_version: str = "v4",
    n_envs: int = 16,
) -> Path:
    """Collect a named dataset (e.g. ``hopper-medium-v2``) with its recipe; medium-expert = medium + expert halves."""
    parsed = parse_locomotion_name(dataset)
    if policy is not None and parsed.level in COMPOSITE_LEVELS:
        parts_named = " + ".join(COMPOSITE_LEVELS[parsed.level])
        raise ValueError(f"a single --policy cannot make {dataset}, which is {parts_named}; collect the parts")
    parts = recipe_policies(dataset) if policy is None else [(parsed.level, policy)]
    size = size if size is not None else DEFAULT_SIZE * len(parts)
    path = Path(path) if path is not None else default_dataset_dir() / file_names(dataset)[0]
    # Each part is the stand-alone dataset of its level with the same seed, as D4RL built medium-expert.
    sizes = [size // len(parts) + (1 if k < size % len(parts) else 0) for k in range(len(parts))]
    results = [rollout(dataset, spec, n, seed, gym_version, n_envs) for (_, spec), n in zip(parts, sizes)]
    return write_rollouts(dataset, results, seed, path, gym_version, n_envs, size)


def main(argv: list[str] | None = None) -> Path:
    """Command line: ``python -m diffuser.tools.collect --dataset hopper-medium-v2``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="D4RL locomotion name, e.g. hopper-medium-v2")
    parser.add_argument("--size", type=int, default=None, help="steps to keep (default 1M; 2M for medium-expert)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the envs and the policy's action noise")
    parser.add_argument("--output", type=Path, default=None, help="output file (default: where the reader looks)")
    parser.add_argument("--policy", default=None, help="behaviour policy file or 'random' instead of the recipe's")
    parser.add_argument("--gym-version", default="v4", choices=["v4", "v5"], help="gymnasium env version")
    parser.add_argument("--n-envs", type=int, default=16, help="envs stepped together (one batched policy call)")
    args = parser.parse_args(argv)
    try:
        return collect_dataset(
            args.dataset, args.size, args.seed, args.output, args.policy, args.gym_version, args.n_envs
        )
    except (FileNotFoundError, ValueError, pickle.UnpicklingError) as e:
        parser.exit(2, f"collect: error: {e}\n")


if __name__ == "__main__":
    main()
