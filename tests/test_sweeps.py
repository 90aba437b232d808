"""Hydra multirun sweeps of train.py and plan.py, and the cluster launcher configs (SLURM via submitit, joblib)."""

import importlib.util
import json
import re
import subprocess
import sys
from configparser import ConfigParser
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from conftest import REPO
from diffuser.config import register_configs
from diffuser.launch import check_launcher
from test_smoke import run

CONFIGS = REPO / "configs"
TINY = ["trainer=debug", "logger=disabled", "model.dim=8", "diffusion.n_diffusion_steps=8", "trainer.sample_freq=0"]
register_configs()


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(f"hydra_plugins.{module}") is not None
    except ModuleNotFoundError:
        return False


SUBMITIT = installed("hydra_submitit_launcher")
needs_submitit = pytest.mark.skipif(not SUBMITIT, reason="hydra-submitit-launcher not installed (extra: cluster)")


def hydra_config(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose(config_name=name, overrides=overrides, return_hydra_config=True).hydra


@pytest.mark.slow
def test_train_and_plan_multiruns_give_each_job_its_own_folder(tmp_path, maze2d_dir):
    out = run("train.py", "-m", "seed=0,1", *TINY, f"runs_root={tmp_path}", env_dir=maze2d_dir)
    exp = tmp_path / "maze2d-umaze-v1" / "cpu"
    runs = sorted(p for p in exp.iterdir() if p.is_dir())
    assert [re.sub(r"^[\d_-]+_s", "s", p.name) for p in runs] == ["s0_job0", "s1_job1"], runs
    for seed, run_dir in enumerate(runs):  # every job a complete run folder, beside single runs
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["seed"] == seed and Path(config["run_dir"]) == run_dir
        assert f"seed={seed}" in (run_dir / ".hydra" / "overrides.yaml").read_text()
        assert (run_dir / "checkpoints" / "latest.txt").read_text().strip() == "step_0000004"
        assert f"run folder: {run_dir}" in out.stdout
    assert (exp / "multirun.yaml").is_file()

    # Plan: 2 plan seeds x 2 guide scales of one run; each evaluation its own plans/ folder.
    run("plan.py", "-m", "seed=0,2", "guide.scale=0.01,0.1", f"diffusion_run={runs[0]}", "planner.n_episodes=2",
        "planner.max_episode_steps=5", "logger=disabled", f"runs_root={tmp_path}", env_dir=maze2d_dir)
    plans = sorted((runs[0] / "plans").iterdir())
    settings = sorted((r["config"]["seed"], r["config"]["guide"]["scale"]) for r in
                      (json.loads((p / "results.json").read_text()) for p in plans))
    assert settings == [(0, 0.01), (0, 0.1), (2, 0.01), (2, 0.1)]
    assert [p.name for p in (tmp_path / "sweeps").iterdir()][0].startswith("plan_")
    assert not (REPO / "multirun").exists()

    out = subprocess.run([sys.executable, "-m", "diffuser.tools.aggregate", *map(str, plans)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("guide.scale=")]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [("guide.scale=0.01", "2", "1", "4"),
                                                         ("guide.scale=0.1", "2", "1", "4")]
    assert "warning" not in out.stdout  # plan seeds 0 and 2 with 2 episodes each: disjoint env seeds


def test_sweep_folders_compose_per_job():
    train = hydra_config("train", ["seed=2", "hydra.job.num=3"])
    assert train.sweep.dir == "runs/maze2d-umaze-v1/cpu"  # sweep jobs sit beside single runs
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_s2_job3", train.sweep.subdir)
    plan = hydra_config("plan", [])
    assert re.fullmatch(r"runs/sweeps/plan_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", plan.sweep.dir)


def test_slurm_launcher_file_and_cluster_extra():
    config = yaml.safe_load((CONFIGS / "hydra" / "launcher" / "slurm.yaml").read_text())
    assert config["defaults"] == ["submitit_slurm", "_self_"]
    assert config["tasks_per_node"] == config["gpus_per_node"] == 1  # one training process per GPU
    assert config["max_num_timeout"] == 0
    setup = ConfigParser()
    setup.read(REPO / "setup.cfg")
    extra = setup["options.extras_require"]["cluster"].split()
    assert any(p.startswith("hydra-submitit-launcher") for p in extra)
    assert any(p.startswith("hydra-joblib-launcher") for p in extra)


@pytest.mark.parametrize("launcher, module", [("slurm", "hydra_submitit_launcher"),
                                              ("submitit_local", "hydra_submitit_launcher"),
                                              ("joblib", "hydra_joblib_launcher")])
def test_a_launcher_without_its_plugin_is_one_line_naming_the_package(launcher, module):
    if installed(module):
        check_launcher(launcher)
    else:
        with pytest.raises(SystemExit, match=rf"hydra/launcher={launcher} needs the hydra-.*-launcher package: "
                                             r"pip install -e '\.\[cluster\]'"):
            check_launcher(launcher)
    check_launcher("basic")  # Hydra's own


@needs_submitit
def test_slurm_launcher_composes_over_submitit_slurm():
    launcher = hydra_config("train", ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]).launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.tasks_per_node) == ("gpu", 1, 1)
    assert launcher.timeout_min == 4320 and launcher.submitit_folder.endswith(".submitit/%j")
    plan = hydra_config("plan", ["hydra/launcher=slurm"]).launcher
    assert plan._target_.endswith("SlurmLauncher")


@pytest.mark.skipif(not installed("hydra_joblib_launcher"), reason="hydra-joblib-launcher not installed")
def test_joblib_launcher_composes_for_plan():
    launcher = hydra_config("plan", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=4"]).launcher
    assert launcher._target_.endswith("JoblibLauncher") and launcher.n_jobs == 4


@pytest.mark.slow
@needs_submitit
def test_submitit_local_sweep_trains_every_seed(tmp_path, maze2d_dir):
    run("train.py", "-m", "hydra/launcher=submitit_local", "seed=0,1", *TINY, f"runs_root={tmp_path}",
        env_dir=maze2d_dir)
    exp = tmp_path / "maze2d-umaze-v1" / "cpu"
    runs = sorted(p for p in exp.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(runs) == 2 and all((p / "checkpoints" / "latest.txt").is_file() for p in runs)
    assert sorted(yaml.safe_load((p / "config.yaml").read_text())["seed"] for p in runs) == [0, 1]
    assert (exp / ".submitit").is_dir()  # the jobs' logs
