"""Why value guidance helps or not: three measurements of a locomotion diffusion run and its critics (a value run,
an IQL run, or both), on fresh behaviour-policy episodes that no model saw.

1. **Held-out windows.** The value model's J(τ, 0) on windows of the fresh episodes against their true discounted
   return-to-go, computed as training computes it (the run's discount and termination penalty, windows padded with
   zero rows past an episode's end): Pearson and Spearman correlation.
2. **Candidates of one state.** For states of the fresh episodes, K unguided plans each; every plan's H actions are
   executed open loop from that state in the simulator, then the behaviour policy (the policy whose returns the value
   model learned) takes over until the episode's 1000 steps are up (``--repeats`` continuations, averaged; sampled
   as in the data, or by the policy's mean with ``--continuation deterministic``, which takes the continuation's
   sampling noise out of the realized returns; with sampled ones, their split-half Spearman says how much ranking
   that noise leaves measurable). Per state: the Spearman correlation of the plans' predicted values with these
   realized discounted returns, and the realized return of the plan the value model would pick against the mean and
   the best candidate. Every critic given scores the same candidates:
   ``value`` (the value run), ``iql_v`` (Σ_h V(s_h)) and ``iql_q`` (Q(s_0, a_0)) of the IQL run, and with a
   forward dynamics run beside the IQL run, ``rollout`` (the plan's actions played through the model, then V)
   (``planning/critics.py``). Beside them, as a reference no critic has, ``simulator``: the part of each realized
   return that the plan's own H steps earned in the simulator (rewards and the fall penalty), what a critic that
   predicted those H steps exactly, and nothing after them, would rank by.
3. **Guidance size.** At every denoising step t, the guide's shift ‖scale·σ_t²·∇J‖ (per plan) against the noise
   σ_t‖z‖ the step adds, and how far guidance moves the first action: the same noise with and without the gradient.

    python -m diffuser.tools.value_check --diffusion-run runs/hopper-medium-v2/cpu/<time>_s0 \\
        --value-run runs/hopper-medium-v2/cpu_value/<time>_s0 --iql-run runs/hopper-medium-v2/iql/<time>_s0 \\
        --dynamics-run runs/hopper-medium-v2/dynamics/<time>_s0 --output value_check.json

Measurements 1 and 3 need the value run; realized returns use its discount and termination penalty (without one:
--discount and --penalty).
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.diffusion.guidance import ValueGuide, guided_p_sample
from diffuser.diffusion.schedule import extract
from diffuser.envs.locomotion import healthy
from diffuser.planning.critics import IQL_RULES, IQLPlanCritic, RolloutCritic
from diffuser.runs.load import check_compatible, check_critic_compatible, load_run
from diffuser.utils.files import atomic_write_text

EPISODE_STEPS = 1000


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n−1 of x (ties broken by order; the values compared here are continuous)."""
    out = np.empty(len(x))
    out[np.argsort(x, kind="stable")] = np.arange(len(x))
    return out


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(ranks(x), ranks(y))


def discounted_sum(rewards: np.ndarray, discount: float) -> float:
    return float((rewards * discount ** np.arange(len(rewards))).sum())


def episode_windows(
    episode: dict[str, np.ndarray], horizon: int, discount: float, penalty: float, every: int
) -> tuple[np.ndarray, np.ndarray]:
    """Windows [a, s] (n, H, D) raw, starting every ``every`` steps, zero rows past the episode's end, and their
    discounted return-to-go (n,) with ``penalty`` added to the last reward of an episode that ended in a fall."""
    n = len(episode["rewards"])
    rows = np.concatenate([episode["actions"], episode["observations"]], axis=1)
    rows = np.concatenate([rows, np.zeros((horizon, rows.shape[1]), rows.dtype)])
    rewards = episode["rewards"].astype(np.float64).copy()
    if episode["terminals"][-1]:
        rewards[-1] += penalty
    starts = np.arange(0, min(n - 1, EPISODE_STEPS - horizon), every)
    windows = np.stack([rows[s : s + horizon] for s in starts])
    return windows, np.array([discounted_sum(rewards[s:], discount) for s in starts])


def split_episodes(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """D4RL-layout columns → one dict per episode (episodes end at terminals or timeouts)."""
    ends = np.flatnonzero(arrays["terminals"] | arrays["timeouts"]) + 1
    starts = np.concatenate([[0], ends[:-1]])
    return [{k: v[s:e] for k, v in arrays.items()} for s, e in zip(starts, ends)]


def realized_returns(
    env_name: str, gym_version: str, qpos: np.ndarray, qvel: np.ndarray, t0: int, actions: np.ndarray, policy,
    discount: float, penalty: float, seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Execute each plan's actions (K, H, action_dim) open loop from the state (qpos, qvel) reached at episode step
    t0, then the behaviour policy until step 1000 or a fall: discounted returns (K,), the penalty at a fall, and
    the part of them the plan's own H steps earned (K,)."""
    from diffuser.envs.locomotion import make_locomotion_env

    k, horizon = actions.shape[:2]
    envs = [make_locomotion_env(env_name, gym_version).unwrapped for _ in range(k)]
    obs = np.zeros((k, envs[0].observation_space.shape[0]))
    for i, env in enumerate(envs):
        env.reset(seed=seed + i)
        env.set_state(qpos, qvel)
        obs[i] = env._get_obs()
    rng = np.random.default_rng(seed)
    returns, planned, weight, alive = np.zeros(k), np.zeros(k), np.ones(k), np.ones(k, dtype=bool)
    for t in range(EPISODE_STEPS - t0):
        if t < horizon:
            act = actions[:, t]
        else:
            act, _ = policy.act(obs, rng, steps=np.full(k, t0 + t))
        for i in np.flatnonzero(alive):
            obs[i], reward, terminated, _, _ = envs[i].step(act[i])
            earned = weight[i] * (reward + (penalty if terminated else 0.0))
            returns[i] += earned
            planned[i] += earned if t < horizon else 0.0
            alive[i] = not terminated
        weight *= discount
        if not alive.any():
            break
    for env in envs:
        env.close()
    return returns, planned


@torch.no_grad()
def sample_candidates(diffusion: GaussianDiffusion, observation: np.ndarray, k: int, seed: int) -> torch.Tensor:
    """K unguided plans (normalized, (K, H, D)) from one raw observation."""
    state = diffusion.normalize_observation(torch.as_tensor(observation, dtype=torch.float32)[None])
    generator = torch.Generator().manual_seed(seed)
    return diffusion.conditional_sample({0: state.repeat(k, 1)}, generator=generator).trajectories


def guidance_size(
    diffusion: GaussianDiffusion, guide: ValueGuide, observations: np.ndarray, *, batch_size: int, scale: float,
    n_guide_steps: int, t_stopgrad: int, seed: int,
) -> dict:
    """Per denoising step: mean ‖scale·σ_t²·∇J‖ of a guide step and the noise's σ_t·√(H·D); and the first action
    of every candidate with and without guidance under the same noise."""
    states = diffusion.normalize_observation(torch.as_tensor(observations, dtype=torch.float32))
    states = states.repeat_interleave(batch_size, dim=0)
    shifts: dict[int, list[float]] = {}

    def logged(diff, x, cond, t, generator):
        _, grad = guide.gradients(x, t)
        variance = extract(diff.schedule.posterior_log_variance_clipped, t, x.shape).exp()
        step = 0.0 if int(t[0]) < t_stopgrad else scale * (variance * grad).flatten(1).norm(dim=1).mean().item()
        shifts.setdefault(int(t[0]), []).append(step)
        return guided_p_sample(
            diff, x, cond, t, generator, guide=guide, scale=scale, n_guide_steps=n_guide_steps, t_stopgrad=t_stopgrad
        )

    def first_actions(sample_fn) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            x = diffusion.conditional_sample({0: states}, sample_fn=sample_fn, generator=generator).trajectories
        return diffusion.unnormalize(x)[:, 0, : diffusion.action_dim].numpy()

    guided, plain = first_actions(logged), first_actions(None)
    variances = diffusion.schedule.posterior_log_variance_clipped.exp()
    size = diffusion.horizon * (diffusion.action_dim + diffusion.observation_dim)
    steps = sorted(shifts, reverse=True)
    spread = plain.reshape(len(observations), batch_size, -1).std(axis=1).mean()
    return {
        "t": steps,
        "guide_shift": [float(np.mean(shifts[t])) for t in steps],
        "noise": [float(variances[t].sqrt() * np.sqrt(size)) if t > 0 else 0.0 for t in steps],
        "first_action_moved": float(np.linalg.norm(guided - plain, axis=1).mean()),
        "first_action_spread": float(spread),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--diffusion-run", required=True)
    parser.add_argument("--value-run", default=None, help="the value UNet's run (critic 'value')")
    parser.add_argument("--iql-run", default=None, help="an IQL run (critics 'iql_v' and 'iql_q')")
    parser.add_argument("--dynamics-run", default=None, help="a forward dynamics run, with --iql-run (critic "
                        "'rollout')")
    parser.add_argument("--rollout-steps", type=int, default=None, help="actions the rollout critic plays forward "
                        "(default: the whole plan)")
    parser.add_argument("--checkpoint", default=None, help="the diffusion run's step folder (default: latest)")
    parser.add_argument("--value-checkpoint", default=None, help="the value run's step folder (default: latest)")
    parser.add_argument("--episodes-steps", type=int, default=50_000, help="fresh behaviour-policy steps")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the fresh episodes (not the data's)")
    parser.add_argument("--window-every", type=int, default=25, help="window starts every this many steps")
    parser.add_argument("--states", type=int, default=12)
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=4, help="behaviour-policy continuations per candidate (mean)")
    parser.add_argument("--continuation", choices=["sampled", "deterministic"], default="sampled",
                        help="how the behaviour policy acts after a plan: sampled, as in the data, or by its mean, "
                             "so a candidate's realized return has no sampling noise (then --repeats 1 suffices)")
    parser.add_argument("--discount", type=float, default=0.997, help="of realized returns, without a value run")
    parser.add_argument("--penalty", type=float, default=-100.0, help="at a fall in realized returns, without a "
                        "value run")
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--n-guide-steps", type=int, default=2)
    parser.add_argument("--t-stopgrad", type=int, default=2)
    parser.add_argument("--output", default=None, help="write the measurements as JSON here")
    args = parser.parse_args(argv)

    from diffuser.launch import user_errors
    from diffuser.tools.collect import recipe_policies, rollout
    from diffuser.tools.policies import load_policy

    with user_errors():  # a folder that is not a run, a mismatched pair, no behaviour policy: one line, exit 1
        if args.dynamics_run is not None and args.iql_run is None:
            raise ValueError("--dynamics-run needs --iql-run: the rollout critic ends in the IQL run's V")
        if args.value_run is None and args.iql_run is None:
            raise ValueError("give a critic to check: --value-run, --iql-run or both")
        diffusion_run = load_run(args.diffusion_run, checkpoint=args.checkpoint)
        critics: dict[str, ValueGuide] = {}
        value_run = iql_run = None
        if args.value_run is not None:
            value_run = load_run(args.value_run, checkpoint=args.value_checkpoint)
            check_compatible(diffusion_run, value_run, value_run.config["env"]["discount"])
            critics["value"] = ValueGuide(value_run.model.model)
        if args.iql_run is not None:
            iql_run = load_run(args.iql_run)
            check_critic_compatible(diffusion_run, iql_run)
            for rule in IQL_RULES:
                critics[rule] = ValueGuide(IQLPlanCritic(iql_run.model, diffusion_run.model.normalizer, rule))
        dynamics_run = None
        if args.dynamics_run is not None:
            dynamics_run = load_run(args.dynamics_run)
            check_critic_compatible(diffusion_run, dynamics_run, kind="dynamics", what="dynamics run")
            critics["rollout"] = ValueGuide(RolloutCritic(
                dynamics_run.model, iql_run.model, diffusion_run.model.normalizer,
                partial(healthy, diffusion_run.config["env"]["name"]), steps=args.rollout_steps))
        (_, spec), *_ = recipe_policies(diffusion_run.config["env"]["name"])
        policy = load_policy(spec, action_dim=diffusion_run.model.action_dim)
        continuation = policy if args.continuation == "sampled" else load_policy(
            spec, action_dim=diffusion_run.model.action_dim, deterministic=True)
    env = diffusion_run.config["env"]
    diffusion = diffusion_run.model
    name, gym_version = env["name"], env.get("gym_version", "v4")
    discount, penalty = args.discount, args.penalty
    if value_run is not None:
        discount, penalty = value_run.config["env"]["discount"], value_run.config["env"]["termination_penalty"]
    tick = time.perf_counter()
    fresh = rollout(name, policy, args.episodes_steps, args.seed, gym_version)
    episodes = split_episodes(fresh.arrays)
    print(f"{len(episodes)} fresh episodes ({fresh.n_steps} steps, seed {args.seed}) in {fresh.seconds:.0f} s")

    # 1. Held-out windows (the value run).
    held_out = None
    if "value" in critics:
        windows, targets = zip(*(episode_windows(e, diffusion.horizon, discount, penalty, args.window_every)
                                 for e in episodes))
        windows, targets = np.concatenate(windows), np.concatenate(targets)
        x = diffusion.normalizer.normalize(torch.as_tensor(windows, dtype=torch.float32))
        with torch.no_grad():
            predicted = torch.cat([critics["value"](b, torch.zeros(len(b), dtype=torch.long))
                                   for b in x.split(1024)]).numpy()
        held_out = {"n_windows": len(targets), "pearson": pearson(predicted, targets),
                    "spearman": spearman(predicted, targets)}
        print(f"1. held-out windows: {held_out['n_windows']}, Pearson {held_out['pearson']:.3f}, "
              f"Spearman {held_out['spearman']:.3f}")

    # 2. Candidates of one state: states drawn from all episodes' steps; every critic scores the same candidates.
    rng = np.random.default_rng(args.seed)
    lengths = np.array([len(e["rewards"]) for e in episodes])
    per_state = []
    for s in range(args.states):
        e = int(rng.choice(len(episodes), p=lengths / lengths.sum()))
        t0 = int(rng.integers(0, min(lengths[e], EPISODE_STEPS - diffusion.horizon)))
        episode = episodes[e]
        plans = sample_candidates(diffusion, episode["observations"][t0], args.candidates, args.seed + s)
        with torch.no_grad():
            t = torch.zeros(len(plans), dtype=torch.long)
            values = {c: critic(plans, t).numpy() for c, critic in critics.items()}
        actions = diffusion.unnormalize(plans)[..., : diffusion.action_dim].numpy()
        repeats, planned = realized_returns(name, gym_version, episode["infos/qpos"][t0], episode["infos/qvel"][t0],
                                            t0, np.repeat(actions, args.repeats, axis=0), continuation, discount,
                                            penalty, args.seed + 1000 * s)
        repeats = repeats.reshape(len(actions), args.repeats)
        realized = repeats.mean(axis=1)
        # the simulator's own H steps of each plan (the same in every repeat): a reference no critic has
        values["simulator"] = planned.reshape(len(actions), args.repeats).mean(axis=1)
        record = {"episode_step": t0, "realized": realized.tolist(), "mean": float(realized.mean()),
                  "best": float(realized.max()), "critics": {}}
        if args.repeats >= 2 and args.continuation == "sampled":  # how far the realized returns rank themselves
            half = args.repeats // 2
            record["split_half"] = spearman(repeats[:, :half].mean(axis=1), repeats[:, half:].mean(axis=1))
        for c, v in values.items():
            record["critics"][c] = {"spearman": spearman(v, realized), "predicted": v.tolist(),
                                    "picked": float(realized[v.argmax()])}
        per_state.append(record)
        print(f"2. state {s} (step {t0}): realized mean {record['mean']:.0f} best {record['best']:.0f}; " + "; ".join(
            f"{c} Spearman {r['spearman']:+.2f} picked {r['picked']:.0f}" for c, r in record["critics"].items()))
    halves = [r["split_half"] for r in per_state if "split_half" in r]
    candidates = {
        "states": per_state,
        "continuation": args.continuation,
        # Spearman of one half of the continuations' returns against the other: the ranking the noise of the
        # sampled continuations leaves measurable (a critic's Spearman against the mean of all of them can exceed it
        # somewhat, since that mean is less noisy than either half)
        "split_half_spearman": float(np.mean(halves)) if halves else None,
        "best_minus_mean": float(np.mean([r["best"] - r["mean"] for r in per_state])),
        "critics": {c: {
            "mean_spearman": float(np.mean([r["critics"][c]["spearman"] for r in per_state])),
            "spearman_se": float(np.std([r["critics"][c]["spearman"] for r in per_state]) / np.sqrt(len(per_state))),
            "picked_minus_mean": float(np.mean([r["critics"][c]["picked"] - r["mean"] for r in per_state])),
        } for c in per_state[0]["critics"]},
    }
    if halves:
        print(f"2. the realized returns' own split-half Spearman (noise of {args.repeats} sampled continuations): "
              f"{candidates['split_half_spearman']:+.3f}")
    for c, r in candidates["critics"].items():
        c = "simulator (the plans' own H steps in the simulator: a reference no critic has)" if c == "simulator" else c
        print(f"2. {c}: mean Spearman over states {r['mean_spearman']:+.3f} ± {r['spearman_se']:.3f}; realized "
              f"return of its pick − candidate mean {r['picked_minus_mean']:+.1f} "
              f"(best − mean {candidates['best_minus_mean']:+.1f})")

    # 3. Guidance size (the value run), on 4 of those states.
    size = None
    if "value" in critics:
        starts = np.stack([episodes[0]["observations"][0]] + [
            episodes[int(i)]["observations"][len(episodes[int(i)]["rewards"]) // 2]
            for i in rng.choice(len(episodes), 3)])
        size = guidance_size(diffusion, critics["value"], starts, batch_size=args.candidates, scale=args.scale,
                             n_guide_steps=args.n_guide_steps, t_stopgrad=args.t_stopgrad, seed=args.seed)
        for t, shift, noise in zip(size["t"], size["guide_shift"], size["noise"]):
            print(f"3. t={t:2d}: guide shift {shift:.4f} (per step of {args.n_guide_steps}), noise σ√n {noise:.3f}")
        print(f"3. guidance moved the first action by {size['first_action_moved']:.4f} on average; the candidates' "
              f"first actions spread {size['first_action_spread']:.4f} (std)")

    report = {
        "diffusion_run": str(diffusion_run.path), "diffusion_step": diffusion_run.step,
        "value_run": None if value_run is None else str(value_run.path),
        "value_step": None if value_run is None else value_run.step,
        "iql_run": None if iql_run is None else str(iql_run.path),
        "iql_step": None if iql_run is None else iql_run.step,
        "dynamics_run": None if dynamics_run is None else str(dynamics_run.path),
        "discount": discount, "penalty": penalty, "arguments": vars(args),
        "held_out": held_out, "candidates": candidates, "guidance": size, "seconds": time.perf_counter() - tick,
    }
    if args.output:
        atomic_write_text(Path(args.output), json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
