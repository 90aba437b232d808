"""Locomotion end to end: diffusion, value and BC runs on a tiny hopper-shaped dataset, then guided planning."""

import json
import os

import imageio.v2 as imageio
import numpy as np
import pytest

from conftest import locomotion_arrays
from diffuser.data.d4rl import write_d4rl
from diffuser.envs.locomotion import locomotion_normalized_score, make_locomotion_env, parse_locomotion_name
from test_smoke import run


def test_names_envs_and_reference_scores():
    assert parse_locomotion_name("hopper-medium-expert-v2").level == "medium-expert"
    with pytest.raises(ValueError, match="not a locomotion dataset name"):
        parse_locomotion_name("hopper-mediocre-v2")
    env = make_locomotion_env("walker2d-medium-v2")
    assert env.spec.id == "Walker2d-v4" and env.observation_space.shape == (17,) and env.spec.max_episode_steps == 1000
    assert make_locomotion_env("hopper-medium-v2", "v5").spec.id == "Hopper-v5"
    assert locomotion_normalized_score("hopper-medium-v2", -20.272305) == pytest.approx(0.0)
    assert locomotion_normalized_score("halfcheetah-medium-v2", 12135.0) == pytest.approx(1.0)
    assert locomotion_normalized_score("hopper-medium-v2", 1422.1) == pytest.approx(0.4432, abs=1e-4)


@pytest.fixture(scope="module")
def hopper_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("d4rl_hopper")
    write_d4rl(root / "hopper-medium-v2.hdf5", locomotion_arrays((60, 45, 80), (True, False, True), 11, 3, seed=1))
    return root


@pytest.mark.slow
def test_train_value_bc_and_plan_with_guidance(tmp_path, hopper_dir):
    base = ["experiment=locomotion", "trainer=debug", "logger=disabled", "model.dim=8"]
    # Diffusion and value runs land where plan.py looks by default: runs_root/env/{exp_name, exp_name_value}/<time>.
    runs = tmp_path / "runs"
    run("train.py", *base, f"runs_root={runs}", "exp_name=cpu", env_dir=hopper_dir)
    run("train.py", *base, "model=value_unet", f"runs_root={runs}", "exp_name=cpu_value", env_dir=hopper_dir)
    (diffusion,) = (runs / "hopper-medium-v2" / "cpu").iterdir()
    (value,) = (runs / "hopper-medium-v2" / "cpu_value").iterdir()
    bc = tmp_path / "bc"
    run("train.py", *base, "model=mlp_bc", "model.dim=16", f"run_dir={bc}", env_dir=hopper_dir)
    metrics = [json.loads(line) for line in (value / "metrics.jsonl").read_text().splitlines()]
    assert {"value/loss", "value/corr", "value/pred_mean", "value/targ_mean"} <= set(metrics[0])

    plan = ["env=locomotion", "planner=locomotion", "planner.n_episodes=2", "planner.max_episode_steps=4",
            "planner.batch_size=3", "logger=disabled"]
    out = run("plan.py", *plan, f"runs_root={runs}", env_dir=hopper_dir).stdout
    assert f"run: {diffusion}" in out and f"value run: {value}" in out
    assert "guide: scale 0.1, t_stopgrad 2" in out  # guide=value resolved for hopper-medium-v2 (test_presets.py)
    out = next((diffusion / "plans").iterdir())
    results = json.loads((out / "results.json").read_text())
    assert [e["seed"] for e in results["episodes"]] == [0, 1]
    assert all(1 <= e["length"] <= 4 for e in results["episodes"])
    assert results["summary"]["seconds_per_step"] > 0 and results["value_run"] == str(value)
    assert results["summary"]["falls"] == sum(e["terminal"] for e in results["episodes"])
    assert (out / "media" / "rollout.mp4").stat().st_size > 0
    # MuJoCo composites: sampled plans while training (sample_freq 2 of 4 steps), each episode's first plan here.
    assert sorted(p.name for p in (diffusion / "media").iterdir()) == ["samples_0000002.png", "samples_0000004.png"]
    assert imageio.imread(out / "media" / "plans.png").shape == (240, 2 * 320, 3)  # 2 episodes side by side

    # The fast modes go through the same loop.
    fast = ["planner.n_sample_steps=5", "planner.warm_start_steps=2", "planner.bf16=true", "planner.video=false"]
    run("plan.py", *plan, *fast, f"diffusion_run={diffusion}", f"value_run={value}", env_dir=hopper_dir)
    results = json.loads(sorted((diffusion / "plans").iterdir())[-1].joinpath("results.json").read_text())
    assert results["config"]["planner"]["warm_start_steps"] == 2 and len(results["episodes"]) == 2

    run("plan.py", *plan, f"diffusion_run={bc}", "guide=none", "planner.video=false", env_dir=hopper_dir)
    results = json.loads((next((bc / "plans").iterdir()) / "results.json").read_text())
    assert len(results["episodes"]) == 2 and np.isfinite(results["summary"]["normalized_score_mean"])

    # Planner options out of range are refused in one line, before a plan folder is made.
    folders = sorted((diffusion / "plans").iterdir())
    bad = run("plan.py", *plan, "planner.n_sample_steps=50", f"diffusion_run={diffusion}", f"value_run={value}",
              env_dir=hopper_dir, check=False)
    assert bad.returncode == 1 and "error: n_sample_steps=50 must be between 1" in bad.stderr
    assert "Traceback" not in bad.stderr and sorted((diffusion / "plans").iterdir()) == folders
    bad = run("plan.py", *plan, "guide.scale=-1", f"diffusion_run={diffusion}", f"value_run={value}",
              env_dir=hopper_dir, check=False)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("error: guide.scale=-1.0 must be")
    assert sorted((diffusion / "plans").iterdir()) == folders

    # Mismatched pairs are refused with one line naming both sides.
    bad = run("plan.py", *plan, f"diffusion_run={diffusion}", f"value_run={value}", "env.discount=0.99",
              env_dir=hopper_dir, check=False)
    assert bad.returncode != 0 and "discount 0.997" in bad.stderr and "env.discount=0.99" in bad.stderr
    short = tmp_path / "value_h16"
    run("train.py", *base, "model=value_unet", "horizon=16", f"run_dir={short}", env_dir=hopper_dir)
    bad = run("plan.py", *plan, f"diffusion_run={diffusion}", f"value_run={short}", env_dir=hopper_dir, check=False)
    assert bad.returncode != 0 and "horizon=32" in bad.stderr and "horizon=16" in bad.stderr
    bad = run("plan.py", *plan, f"diffusion_run={diffusion}", f"runs_root={tmp_path / 'none'}", env_dir=hopper_dir,
              check=False)
    assert bad.returncode != 0 and "cpu_value" in bad.stderr and "value_run=" in bad.stderr


@pytest.mark.parametrize("name", ["hopper-medium-v2", "walker2d-medium-v2"])
def test_rendering_follows_the_agent(name, monkeypatch):
    """The rollout video keeps the agent in the picture after it has moved 20 m forward."""
    monkeypatch.setenv("MUJOCO_GL", os.environ.get("MUJOCO_GL", "egl"))
    env = make_locomotion_env(name, render_mode="rgb_array", width=128, height=128)
    env.reset(seed=0)
    model = env.unwrapped
    qpos = model.data.qpos.copy()
    qpos[0] += 20.0  # root x
    model.set_state(qpos, model.data.qvel.copy())
    frame = model.render().astype(int)
    r, g, b = frame[..., 0], frame[..., 1], frame[..., 2]
    body = (r > g + 15) & (r >= b)  # red leads in the bodies (brown, purple), not in the floor or the sky
    assert body.sum() > 30, "the agent is not in the picture"
    columns = np.flatnonzero(body.any(axis=0))
    assert 32 < columns.mean() < 96  # near the middle, not at an edge
