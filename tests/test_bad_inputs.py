"""Bad-input survey: one row per bad input per entry point, each answered by ONE clear error.

Every row of ``ROWS`` feeds one bad input to the function an entry point calls (``load_env_data``,
``build_dataset``, ``build_model``, ``check_overrides``, ``check_compatible``, ``load_policy``, ``load_weights``,
``load_run``) and asserts on the message: it must name the thing that is wrong (file, key, option, value) and say
what to do. ``user_errors`` turns these exceptions into one ``error: ...`` line with exit status 1 in train.py and
plan.py; the few ``SUBPROCESS_ROWS`` check that path end to end (slow).

Rows covered elsewhere in more depth, referenced here rather than repeated:
  - NaN/inf counts per key: tests/test_reliability.py::test_nan_in_hdf5_arrays_is_refused_with_counts.
  - truncated/damaged HDF5 and safetensors, trainer state: tests/test_reliability.py (test_truncated_*,
    test_altered_*), tests/test_datasets.py::test_reader_refuses_mismatched_rows_and_non_hdf5.
  - unknown config options with the valid list: tests/test_configs.py::test_unknown_option_lists_the_valid_ones,
    tests/test_smoke.py::test_bad_input_gets_one_clear_error (also a missing Maze2D dataset and no trained run).
  - diffusion/value run mismatch through plan.py (discount, horizon, a non-value run):
    tests/test_locomotion.py::test_train_value_bc_and_plan_with_guidance.
  - policy files (unsafe pickles, observation size mismatch): tests/test_collect.py.
  - weights of the wrong shape, run/env dims mismatch: tests/test_checkpoint.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from conftest import locomotion_arrays
from diffuser.config import DiffusionConfig, EnvConfig, ModelConfig, TrainConfig
from diffuser.data.d4rl import DatasetNotFoundError, write_d4rl
from diffuser.launch import check_overrides
from diffuser.runs.build import build_model
from diffuser.runs.checkpoint import CheckpointError, load_weights
from diffuser.runs.load import Run, check_compatible, load_run
from diffuser.tasks import build_dataset, load_env_data


def _env(path: Path, **kw) -> EnvConfig:
    """A locomotion-style env config reading the file at ``path`` (no preprocessing)."""
    return EnvConfig(name="hopper-medium-v2", dataset=str(path), preprocess=[], normalizer="gaussian",
                     goal_conditioned=False, max_path_length=1000, drop_last_transition=False, **kw)


def _load(tmp_path: Path, **arrays) -> None:
    """Write locomotion arrays with ``arrays`` replaced (None deletes the key) and load them as train.py does."""
    data = {**locomotion_arrays(), **arrays}
    data = {k: v for k, v in data.items() if v is not None}
    load_env_data(_env(write_d4rl(tmp_path / "bad.hdf5", data)))


def missing_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    load_env_data(EnvConfig(name="hopper-medium-v2", preprocess=[]))


def missing_key(tmp_path, monkeypatch):
    _load(tmp_path, terminals=None)


def string_observations(tmp_path, monkeypatch):
    _load(tmp_path, observations=np.array([b"abc"] * 69))


def nan_actions(tmp_path, monkeypatch):
    actions = locomotion_arrays()["actions"]
    actions[3, 1] = np.nan
    _load(tmp_path, actions=actions)


def empty_dataset(tmp_path, monkeypatch):
    _load(tmp_path, observations=np.zeros((0, 3), np.float32), actions=np.zeros((0, 2), np.float32),
          rewards=np.zeros(0, np.float32), terminals=np.zeros(0, bool), timeouts=np.zeros(0, bool))


def no_episode_end(tmp_path, monkeypatch):
    data = {**locomotion_arrays(), "terminals": np.zeros(69, bool), "timeouts": np.zeros(69, bool)}
    build_dataset(data, _env(tmp_path), horizon=8, kind="diffusion")


def episodes_shorter_than_horizon(tmp_path, monkeypatch):
    build_dataset(locomotion_arrays(), _env(tmp_path, use_padding=False), horizon=32, kind="diffusion")


def horizon_above_max_path_length(tmp_path, monkeypatch):
    env = _env(tmp_path, use_padding=True)
    env.max_path_length = 30
    build_dataset(locomotion_arrays(), env, horizon=32, kind="diffusion")


def episode_above_max_path_length(tmp_path, monkeypatch):
    env = _env(tmp_path)
    env.max_path_length = 25
    build_dataset(locomotion_arrays(), env, horizon=8, kind="diffusion")


def horizon_unet_cannot_handle(tmp_path, monkeypatch):
    build_model("diffusion", torch.nn.Identity(), horizon=12, observation_dim=3, action_dim=2,
                model=ModelConfig(dim=8, dim_mults=[1, 2, 4, 8]), diffusion=DiffusionConfig(n_diffusion_steps=4))


def unknown_model_kind(tmp_path, monkeypatch):
    build_dataset(locomotion_arrays(), _env(tmp_path), horizon=8, kind="transformer")


def unknown_normalizer(tmp_path, monkeypatch):
    env = _env(tmp_path)
    env.normalizer = "minmax"
    build_dataset(locomotion_arrays(), env, horizon=8, kind="diffusion")


def unknown_preprocess_step(tmp_path, monkeypatch):
    path = write_d4rl(tmp_path / "x.hdf5", locomotion_arrays())
    env = _env(path)
    env.preprocess = ["maze2d_set_terminal"]
    load_env_data(env)


def unknown_config_option(tmp_path, monkeypatch):
    check_overrides(["trainer.n_steps=3"], TrainConfig)


def _run(path: str, kind: str = "diffusion", horizon: int = 32) -> Run:
    config = {"model": {"kind": kind}, "horizon": horizon, "diffusion": {"n_diffusion_steps": 20},
              "dims": {"observation_dim": 11, "action_dim": 3}, "env": {"normalizer": "gaussian", "discount": 0.997}}
    return Run(Path(path), config, torch.nn.Identity(), 0, Path(path))


def mismatched_runs(tmp_path, monkeypatch):
    check_compatible(_run("runs/diff", horizon=32), _run("runs/val", kind="value", horizon=16), discount=0.997)


def value_run_is_not_a_value_model(tmp_path, monkeypatch):
    check_compatible(_run("runs/diff"), _run("runs/other"), discount=0.997)


def wrong_policy_file(tmp_path, monkeypatch):
    from diffuser.tools.policies import load_policy

    path = tmp_path / "policy.onnx"
    path.write_bytes(b"\0")
    load_policy(path)


def unreadable_safetensors(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    load_weights(torch.nn.Linear(2, 2), path)


def not_a_run_folder(tmp_path, monkeypatch):
    load_run(tmp_path / "nowhere")


# (bad input, exception type, substrings the message must hold: the thing named, and what to do)
ROWS: list[tuple[Callable, type[Exception], list[str]]] = [
    (missing_dataset, DatasetNotFoundError, ["hopper-medium-v2", "hopper_medium-v2.hdf5", "Looked in",
                                             "diffuser.tools.collect", "env.dataset="]),
    (missing_key, KeyError, ["bad.hdf5", "missing required key(s) ['terminals']", "present keys"]),
    (string_observations, ValueError, ["bad.hdf5", "'observations' holds |S3 values, not numbers",
                                       "float, int or bool"]),
    (nan_actions, ValueError, ["bad.hdf5", "'actions' holds 1 NaN and 0 inf values in 1 of 69 rows",
                               "regenerate"]),
    (empty_dataset, ValueError, ["bad.hdf5", "'observations' has 0 rows", "empty", "regenerate"]),
    (no_episode_end, ValueError, ["no complete episode", "terminals or timeouts"]),
    (episodes_shorter_than_horizon, ValueError, ["horizon 32", "longest episode: 30 steps", "shorter horizon",
                                                 "env.use_padding=true"]),
    (horizon_above_max_path_length, ValueError, ["horizon 32", "env.max_path_length (30)"]),
    (episode_above_max_path_length, ValueError, ["30 steps", "max_path_length is 25", "env.max_path_length"]),
    (horizon_unet_cannot_handle, ValueError, ["horizon 12", "dim_mults (1, 2, 4, 8)", "multiple", "8"]),
    (unknown_model_kind, ValueError, ["'transformer'", "valid", "diffusion"]),
    (unknown_normalizer, ValueError, ["'minmax'", "valid", "gaussian"]),
    (unknown_preprocess_step, ValueError, ["'maze2d_set_terminal'", "valid", "maze2d_set_terminals"]),
    (unknown_config_option, SystemExit, ["'trainer.n_steps'", "Valid options of trainer", "n_train_steps"]),
    (mismatched_runs, ValueError, ["runs/diff has horizon=32", "runs/val has horizon=16"]),
    (value_run_is_not_a_value_model, ValueError, ["runs/other", "'diffusion' model, not a value model"]),
    (wrong_policy_file, ValueError, ["unknown file kind '.onnx'"]),
    (unreadable_safetensors, CheckpointError, ["model.safetensors", "not a readable safetensors"]),
    (not_a_run_folder, FileNotFoundError, ["nowhere", "not a run folder"]),
]


@pytest.mark.parametrize("make_bad, error, expected", [pytest.param(*row, id=row[0].__name__) for row in ROWS])
def test_bad_input_gets_one_clear_error(make_bad, error, expected, tmp_path, monkeypatch):
    with pytest.raises(error) as info:
        make_bad(tmp_path, monkeypatch)
    value = info.value
    message = str(value.args[0] if isinstance(value, (KeyError, SystemExit)) and value.args else value)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


# Through the entry points: the same errors come out as one `error: ...` line, exit status 1, no traceback.
SUBPROCESS_ROWS = [
    ("string_observations", "train.py", ["'observations' holds |S3 values, not numbers"]),
    ("horizon", "train.py", ["horizon 10 is invalid for dim_mults (1, 4, 8)"]),
    ("no_run", "plan.py", ["not a run folder"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, script, expected", SUBPROCESS_ROWS, ids=[r[0] for r in SUBPROCESS_ROWS])
def test_entry_point_reports_bad_input_in_one_line(name, script, expected, tmp_path):
    from test_smoke import run

    if name == "string_observations":
        data = {**locomotion_arrays(), "observations": np.array([b"abc"] * 69)}
        args = [f"env.dataset={write_d4rl(tmp_path / 'bad.hdf5', data)}"]
    elif name == "horizon":
        args = [f"env.dataset={write_d4rl(tmp_path / 'ok.hdf5', locomotion_arrays())}", "env.preprocess=[]",
                "env.name=hopper-medium-v2",  # a Maze2D name would first refuse a plan too short for the maze
                "horizon=10"]
    else:
        args = [f"diffusion_run={tmp_path / 'nowhere'}"]
    if script == "train.py":
        args += [f"run_dir={tmp_path / 'run'}", "env.generate_if_missing=false"]
    out = run(script, *args, "logger=disabled", env_dir=tmp_path, home=tmp_path / "home", check=False)
    text = out.stderr + out.stdout
    assert out.returncode == 1, text[-2000:]
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, text[-2000:]
    for part in expected:
        assert part in errors[0], errors[0]
