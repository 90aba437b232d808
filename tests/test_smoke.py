"""train.py and plan.py end to end, run as a user runs them, on a tiny generated Maze2D dataset."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import REPO


def run(script, *args, env_dir, check=True, home=None):
    env = {**os.environ, "D4RL_DATASET_DIR": str(env_dir), "WANDB_MODE": "disabled"}
    if home is not None:  # hide the user's own ~/.d4rl datasets
        env["HOME"] = str(home)
    out = subprocess.run([sys.executable, script, *args], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(f"{script} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


@pytest.mark.slow
def test_train_resume_and_plan(tmp_path, maze2d_dir):
    run_dir = tmp_path / "run"
    common = ["trainer=debug", "logger=disabled", f"run_dir={run_dir}", "model.dim=8", "diffusion.n_diffusion_steps=8"]
    run("train.py", *common, env_dir=maze2d_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["dims"] == {"observation_dim": 4, "action_dim": 2, "transition_dim": 6}
    assert (run_dir / "checkpoints" / "step_0000004" / "model.safetensors").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "git.txt").is_file()
    assert list((run_dir / "media").glob("samples_*.png"))
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    keys = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert {"train/loss", "train/a0_loss", "train/grad_norm", "train/lr", "train/steps_per_sec"} <= set(keys)

    # Running again on the same folder resumes it (here: extended to 6 steps).
    out = run("train.py", *common, "trainer.n_train_steps=6", env_dir=maze2d_dir)
    assert "resuming" in out.stdout
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert (run_dir / "checkpoints" / "latest.txt").read_text().strip() == "step_0000006"

    out = run("plan.py", f"diffusion_run={run_dir}", "planner.n_episodes=3", "planner.max_episode_steps=5",
              "logger=disabled", env_dir=maze2d_dir)
    plan_dir = next((run_dir / "plans").iterdir())
    results = json.loads((plan_dir / "results.json").read_text())
    assert len(results["episodes"]) == 3 and results["train_step"] == 6
    assert all(e["length"] == 5 for e in results["episodes"])
    assert [e["seed"] for e in results["episodes"]] == [0, 1, 2]
    assert "normalized_score_mean" in results["summary"] and "normalized_score_se" in results["summary"]
    assert len(list((plan_dir / "media" / "plans").glob("episode_*.png"))) == 3
    # The default planner is closed loop: plans of 64, 96 or 128 steps (the run's H 128), replans recorded.
    assert results["config"]["planner"]["replan_lag"] > 0 and (plan_dir / "media" / "failures.png").is_file()
    assert all(e["plan_lengths"][0] in (64, 96, 128) for e in results["episodes"])
    # The paper's planner: one plan of the training horizon per episode.
    run("plan.py", f"diffusion_run={run_dir}", "planner=maze2d", "planner.n_episodes=2", "planner.max_episode_steps=5",
        "planner.video=false", "logger=disabled", "seed=7", env_dir=maze2d_dir)
    paper = json.loads(next((run_dir / "plans").glob("*_s7")).joinpath("results.json").read_text())
    assert [e["plan_lengths"] for e in paper["episodes"]] == [[128], [128]]
    # A replanning option out of range: one error line, and no plan folder (every option's message:
    # tests/test_planning.py::test_planner_options_out_of_range_are_refused_by_name and test_needs_replan_by_hand).
    before = sorted((run_dir / "plans").iterdir())
    out = run("plan.py", f"diffusion_run={run_dir}", "planner.replan_lag=-1", "logger=disabled", env_dir=maze2d_dir,
              check=False)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and lines[-1].startswith("error: planner.replan_lag"), out.stderr[-2000:]
    assert sorted((run_dir / "plans").iterdir()) == before

    # A copied run folder resumes where it is now, leaving the original alone.
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    run("train.py", *common[:2], f"run_dir={copy}", "trainer.n_train_steps=8", env_dir=maze2d_dir)
    assert (copy / "checkpoints" / "latest.txt").read_text().strip() == "step_0000008"
    assert (run_dir / "checkpoints" / "latest.txt").read_text().strip() == "step_0000006"


@pytest.mark.slow
def test_bad_input_gets_one_clear_error(tmp_path, maze2d_dir):
    out = run("train.py", "trainer.n_steps=3", env_dir=maze2d_dir, check=False)
    assert out.returncode != 0 and "Valid options of trainer" in out.stderr + out.stdout
    out = run("train.py", "env.generate_if_missing=false", "logger=disabled", f"runs_root={tmp_path}",
              env_dir=tmp_path / "empty", home=tmp_path / "home", check=False)
    text = out.stderr + out.stdout
    assert out.returncode != 0 and "maze2d-umaze-sparse-v1.hdf5" in text and "maze2d_generate" in text
    out = run("plan.py", f"runs_root={tmp_path / 'none'}", "logger=disabled", env_dir=maze2d_dir, check=False)
    assert out.returncode != 0 and "no trained run found" in out.stderr + out.stdout
