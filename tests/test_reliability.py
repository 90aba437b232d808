"""Reliability: NaN guard, crash-safe resume, determinism, and damaged checkpoint/dataset files.

Subprocess tests reuse test_smoke's ``run`` on the session's tiny generated Maze2D dataset.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from conftest import REPO, locomotion_arrays
from diffuser.config import DiffusionConfig, ModelConfig
from diffuser.data.d4rl import load_d4rl, write_d4rl
from diffuser.data.sequence import SequenceDataset
from diffuser.diffusion.normalization import make_normalizer
from diffuser.planning.maze2d import Maze2dPlanner
from diffuser.runs.build import build_model
from diffuser.data.maze2d_generation import generate_maze2d
from diffuser.training.trainer import NonFiniteLossError, Trainer
from diffuser.runs.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_trainer_state,
    load_weights,
    save_checkpoint,
    write_config,
)
from diffuser.runs.load import load_run
from diffuser.runs.logger import Logger
from test_smoke import run

TINY = ["trainer=debug", "logger=disabled", "model.dim=8", "diffusion.n_diffusion_steps=8", "trainer.sample_freq=0"]


def tiny_diffusion(horizon=8, seed=0):
    ds = SequenceDataset(locomotion_arrays(), horizon=horizon, normalizer="gaussian", use_padding=True)
    torch.manual_seed(seed)
    model = build_model("diffusion", ds.normalizer, horizon=horizon, observation_dim=3, action_dim=2,
                        model=ModelConfig(dim=8, dim_mults=[1, 4]), diffusion=DiffusionConfig(n_diffusion_steps=4))
    return model, ds


def tiny_trainer(run_dir, model, ds, seed=0, **kwargs):
    options = dict(n_train_steps=6, batch_size=4, gradient_accumulate_every=1, step_start_ema=2, update_ema_every=1,
                   log_freq=1, save_freq=2, keep_checkpoints=3, seed=seed, progress=False)
    return Trainer(model, ds, Logger(run_dir, backend="disabled"), run_dir, **{**options, **kwargs})


def metric_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------------------------------- NaN guard
class BreaksAt(nn.Module):
    """Wraps a diffusion model; from forward call ``n`` on, its loss (or only its gradient) becomes NaN."""

    def __init__(self, inner: nn.Module, n: int, what: str):
        super().__init__()
        self.inner, self.n, self.what, self.calls = inner, n, what, 0

    def forward(self, batch):
        self.calls += 1
        loss, info = self.inner(batch)
        if self.calls >= self.n and self.what == "loss":
            loss = loss * float("nan")
        elif self.calls >= self.n:  # value 0, gradient 0.5 / sqrt(0) * 0 = NaN
            loss = loss + torch.sqrt(next(self.inner.parameters()).reshape(-1)[:1] * 0).sum()
        return loss, info


@pytest.mark.parametrize("what", ["loss", "gradient"])
def test_nan_stops_training_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path, what):
    inner, ds = tiny_diffusion()
    trainer = tiny_trainer(tmp_path, BreaksAt(inner, n=6, what=what), ds, n_train_steps=10)
    with pytest.raises(NonFiniteLossError, match=rf"step 6: the {what}.* is nan.*step_0000004"):
        trainer.train()
    assert latest_checkpoint(tmp_path).name == "step_0000004"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest.txt", "step_0000002",
                                                                          "step_0000004"]
    fresh = BreaksAt(tiny_diffusion()[0], n=6, what=what)
    assert load_weights(fresh, latest_checkpoint(tmp_path) / "model.safetensors") == 4
    assert all(torch.isfinite(p).all() for p in fresh.state_dict().values())
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters()), "the bad step was not applied"
    assert [row["step"] for row in metric_rows(tmp_path)] == [1, 2, 3, 4, 5]


def test_non_finite_weights_are_never_saved(tmp_path):
    model, _ = tiny_diffusion()
    save_checkpoint(tmp_path, 2, model, {"step": 2})
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("inf")
    with pytest.raises(CheckpointError, match="step 4.*0 NaN and 1 inf.*not saved"):
        save_checkpoint(tmp_path, 4, model, {"step": 4})
    assert latest_checkpoint(tmp_path).name == "step_0000002"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest.txt", "step_0000002"]


@pytest.mark.slow
def test_train_py_divergence_is_one_error_line_and_exit_1(tmp_path, maze2d_dir):
    # Adam's first step moves every weight by about the learning rate: 1e30 makes step 2's loss NaN.
    run_dir = tmp_path / "run"
    out = run("train.py", *TINY, f"run_dir={run_dir}", "trainer.learning_rate=1e30", "trainer.n_train_steps=6",
              "trainer.save_freq=1", env_dir=maze2d_dir, check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    error = [line for line in out.stderr.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "training stopped at step 2: the loss is nan" in error[0]
    assert "step_0000001" in error[0]
    assert load_run(run_dir).step == 1  # load_weights refuses NaN/inf, so the kept checkpoint is finite


# ------------------------------------------------------------------------------------------- crash-safe resume
def kill_during_training(args, env_dir, run_dir, rows: int) -> None:
    """Start train.py and SIGKILL it once a checkpoint exists and metrics.jsonl holds ``rows`` rows."""
    env = {**os.environ, "D4RL_DATASET_DIR": str(env_dir), "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    latest, metrics, deadline = run_dir / "checkpoints" / "latest.txt", run_dir / "metrics.jsonl", time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if latest.is_file() and metrics.is_file() and metrics.read_text().count("\n") >= rows:
                break
            time.sleep(0.005)
        assert proc.poll() is None, f"train.py ended (rc {proc.returncode}) before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_curve(tmp_path, maze2d_dir):
    args = [*TINY, "trainer.n_train_steps=40", "trainer.save_freq=5", "trainer.keep_checkpoints=3"]
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    run("train.py", *args, f"run_dir={reference}", env_dir=maze2d_dir)
    rows = random.Random().randint(6, 30)  # a different moment each run: any moment must be safe
    kill_during_training([*args, f"run_dir={crashed}"], maze2d_dir, crashed, rows)
    out = run("train.py", *args, f"run_dir={crashed}", env_dir=maze2d_dir)

    resumed_at = int(out.stdout.split(" from step ")[1].split()[0])
    assert 5 <= resumed_at <= rows + 1 and resumed_at % 5 == 0, (rows, resumed_at)
    assert (crashed / "checkpoints" / "latest.txt").read_text().strip() == "step_0000040"
    got, want = metric_rows(crashed), metric_rows(reference)
    assert [r["step"] for r in got] == list(range(1, 41)), f"killed after {rows} rows: each step logged once"
    for key in ("train/loss", "train/a0_loss", "train/grad_norm"):
        np.testing.assert_allclose([r[key] for r in got], [r[key] for r in want], rtol=1e-5, err_msg=key)
    final = {name: load_file(d / "checkpoints" / "step_0000040" / "model.safetensors")
             for name, d in (("crashed", crashed), ("reference", reference))}
    for key, value in final["reference"].items():
        torch.testing.assert_close(final["crashed"][key], value, rtol=1e-5, atol=1e-7)

    # Nothing half-written: no temp leftovers, every checkpoint file and text file reads back.
    leftovers = [p for p in crashed.rglob(".*") if p.name != ".hydra" and ".hydra" not in p.parent.parts]
    assert leftovers == []
    model = load_run(crashed).model
    for step_dir in sorted((crashed / "checkpoints").glob("step_*")):
        assert load_weights(model, step_dir / "model.safetensors") == int(step_dir.name[5:])
        assert load_trainer_state(step_dir)["step"] == int(step_dir.name[5:])
    assert yaml.safe_load((crashed / "config.yaml").read_text())["trainer"]["n_train_steps"] == 40


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path):
    logger = Logger(tmp_path, backend="disabled")
    for step in (1, 2, 3):
        logger.log({"train/loss": 0.5}, step)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "train/lo')  # a write torn by the kill
    logger.drop_after(2)
    assert [row["step"] for row in metric_rows(tmp_path)] == [1, 2]
    logger.drop_after(0)
    assert (tmp_path / "metrics.jsonl").read_text() == ""


# ------------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_maze2d_dataset(tmp_path):
    a, b, c = (load_d4rl(generate_maze2d("maze2d-umaze-v1", 3000, seed=s, path=tmp_path / f"{i}.hdf5"))
               for i, s in enumerate((0, 0, 1)))
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["observations"], c["observations"])


def test_same_seed_same_training_curve(tmp_path):
    def curve(name, seed):
        model, ds = tiny_diffusion(seed=seed)
        torch.manual_seed(seed)
        trainer = tiny_trainer(tmp_path / name, model, ds, seed=seed)
        trainer.train()
        return [(r["train/loss"], r["train/grad_norm"]) for r in metric_rows(tmp_path / name)], trainer.ema_model

    (first, ema_a), (second, ema_b), (other, _) = curve("a", 0), curve("b", 0), curve("c", 1)
    assert first == second and first != other
    for x, y in zip(ema_a.state_dict().values(), ema_b.state_dict().values()):
        assert torch.equal(x, y)


def test_same_seed_same_plans_on_cpu(tmp_path):
    normalizer_data = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    model_cfg, diffusion_cfg = ModelConfig(dim=8, dim_mults=[1, 2]), DiffusionConfig(n_diffusion_steps=4)
    torch.manual_seed(0)
    model = build_model("diffusion", make_normalizer("limits", 6).fit(normalizer_data), horizon=16,
                        observation_dim=4, action_dim=2, model=model_cfg, diffusion=diffusion_cfg)
    write_config(tmp_path, {"model": model_cfg.__dict__, "diffusion": diffusion_cfg.__dict__, "horizon": 16,
                            "env": {"normalizer": "limits"},
                            "dims": {"observation_dim": 4, "action_dim": 2, "transition_dim": 6}})
    save_checkpoint(tmp_path, 3, model, {"step": 3})
    starts, goals = np.array([[1.0, 1.0, 0.1, -0.2], [3.0, 2.0, 0.0, 0.3]]), np.array([[3.0, 3.0], [1.0, 1.0]])

    def plan(seed):
        planner = Maze2dPlanner(load_run(tmp_path, "cpu").model)  # a fresh load each time
        return planner.plan(starts, goals, torch.Generator().manual_seed(seed))

    a, b, c = plan(0), plan(0), plan(1)
    assert np.array_equal(a.observations, b.observations) and np.array_equal(a.actions, b.actions)
    assert not np.array_equal(a.observations, c.observations)


# ---------------------------------------------------------------------------------------- damaged safetensors
def tiny_checkpoint(tmp_path):
    """A checkpoint of a 2-tensor module (a short header, so every byte can be flipped quickly)."""
    module = nn.Linear(3, 2)
    return module, save_checkpoint(tmp_path, 5, module, {"step": 5}) / "model.safetensors"


def test_every_flipped_header_byte_is_an_error_or_harmless(tmp_path):
    module, path = tiny_checkpoint(tmp_path)
    raw = path.read_bytes()
    header_end = 8 + int.from_bytes(raw[:8], "little")
    want = {k: v.clone() for k, v in module.state_dict().items()}
    errors = 0
    for i in range(header_end):
        damaged = bytearray(raw)
        damaged[i] ^= 0x01
        path.write_bytes(bytes(damaged))
        try:
            step = load_weights(module, path)
        except ValueError as e:  # CheckpointError, or the key-mismatch ValueError: both name the file
            assert str(path) in str(e), (i, str(e))
            errors += 1
            continue
        assert step == 5 and all(torch.equal(module.state_dict()[k], v) for k, v in want.items()), i
    assert errors > header_end // 2


def test_altered_tensor_data_fails_its_checksum(tmp_path):
    module, path = tiny_checkpoint(tmp_path)
    raw = path.read_bytes()
    header_end = 8 + int.from_bytes(raw[:8], "little")
    for i in range(header_end, len(raw)):
        damaged = bytearray(raw)
        damaged[i] ^= 0x10
        path.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError, match=rf"{path}: step and tensors do not match the checksum"):
            load_weights(module, path)


def test_nan_weights_without_a_checksum_are_refused_with_counts(tmp_path):
    path = tmp_path / "model.safetensors"  # written by another tool: no sha256 metadata
    save_file({"weight": torch.tensor([[1.0, float("nan"), 2.0], [float("inf"), 0.0, 0.0]]),
               "bias": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match=rf"{path}: 'weight' holds 1 NaN and 1 inf values out of 6"):
        load_weights(nn.Linear(3, 2), path)


def test_truncated_trainer_state_is_a_clear_error(tmp_path):
    _, path = tiny_checkpoint(tmp_path)
    state = path.parent / "trainer_state.pt"
    raw = state.read_bytes()
    for cut in (0, 10, len(raw) // 2, len(raw) - 1):
        state.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError, match=rf"{state}: not a readable trainer state"):
            load_trainer_state(path.parent)


# --------------------------------------------------------------------------------------------- damaged HDF5
def test_truncated_hdf5_names_the_file(tmp_path):
    path = write_d4rl(tmp_path / "data.hdf5", locomotion_arrays())
    raw = path.read_bytes()
    for cut in (0, 100, len(raw) // 2, len(raw) - 1):
        path.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match=rf"{path}: not a readable HDF5 file"):
            load_d4rl(path)


def test_altered_hdf5_data_fails_its_checksum_and_metadata_damage_names_the_file(tmp_path):
    path = write_d4rl(tmp_path / "data.hdf5", locomotion_arrays())
    with h5py.File(path, "r") as f:
        chunk = f["observations"].id.get_chunk_info(0)
    raw = path.read_bytes()
    damaged = bytearray(raw)
    damaged[chunk.byte_offset + chunk.size // 2] ^= 0x10
    path.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=rf"{path}: not a readable HDF5 file"):
        load_d4rl(path)
    # Flipping any of a sample of bytes either reads back or raises a ValueError naming the file: h5py's own
    # RuntimeError/KeyError never escape.
    for i in np.random.default_rng(0).choice(len(raw), 150, replace=False):
        damaged = bytearray(raw)
        damaged[i] ^= 0x10
        path.write_bytes(bytes(damaged))
        try:
            load_d4rl(path)
        except ValueError as e:
            assert str(path) in str(e), (i, str(e))
        except KeyError as e:  # a damaged key name: "missing required key(s)", naming the file
            assert str(path) in str(e), (i, str(e))


def test_nan_in_hdf5_arrays_is_refused_with_counts(tmp_path):
    arrays = locomotion_arrays()
    arrays["observations"][[3, 7], 1] = np.nan
    arrays["rewards"][5] = np.inf
    path = write_d4rl(tmp_path / "data.hdf5", arrays)
    with pytest.raises(ValueError, match=rf"{path}: 'observations' holds 2 NaN and 0 inf values in 2 of 69 rows "
                                         r"\(first rows \[3, 7\]\)"):
        load_d4rl(path)
    arrays["observations"][[3, 7], 1] = 0.0
    path = write_d4rl(tmp_path / "data.hdf5", arrays)
    with pytest.raises(ValueError, match="'rewards' holds 0 NaN and 1 inf values in 1 of 69 rows"):
        load_d4rl(path)


def test_the_package_never_loads_a_file_unsafely():
    """Every torch.load passes weights_only=True, and pickles are read only through RestrictedUnpickler."""
    root = Path(__file__).resolve().parents[1]
    for path in [*root.glob("diffuser/**/*.py"), root / "train.py", root / "plan.py"]:
        text = path.read_text()
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"
        unsafe_yaml = ("yaml.unsafe_load", "Loader=yaml.Loader", "UnsafeLoader", "FullLoader")  # SafeLoader only
        for unsafe in ("pickle.load(", "pickle.loads(", "allow_pickle=True", *unsafe_yaml, " eval(", "(eval("):
            assert unsafe not in text, f"{path} uses {unsafe.strip(' (')}"
