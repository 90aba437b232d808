"""A trained run as plan.py and the notebooks use it: ``load_run`` rebuilds the model from config.yaml and loads its
weights; the newest run of an experiment; checks that runs fit each other and the env."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffuser.config import DiffusionConfig, IQLConfig, ModelConfig
from diffuser.diffusion.normalization import make_normalizer
from diffuser.runs.build import build_model
from diffuser.runs.checkpoint import latest_checkpoint, load_weights, read_config


@dataclass
class Run:
    """A loaded run: its config, the model with EMA weights (eval mode), the step and the checkpoint folder."""

    path: Path
    config: dict[str, Any]
    model: nn.Module
    step: int
    checkpoint: Path


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", checkpoint: str | None = None) -> Run:
    """Rebuild a model from run_dir/config.yaml and load its (latest or named) model.safetensors."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    ckpt = run_dir / "checkpoints" / checkpoint if checkpoint else latest_checkpoint(run_dir)
    if ckpt is None or not (ckpt / "model.safetensors").is_file():
        raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'}: train longer than save_freq steps")
    dims = config["dims"]
    model = build_model(
        config["model"]["kind"],
        make_normalizer(config["env"]["normalizer"], dims["transition_dim"]),
        horizon=config["horizon"],
        observation_dim=dims["observation_dim"],
        action_dim=dims["action_dim"],
        model=ModelConfig(**config["model"]),
        diffusion=DiffusionConfig(**config["diffusion"]),
        iql=IQLConfig(**config.get("iql", {})),
        discount=config["env"].get("discount", 0.99),  # IQL runs only
    )
    step = load_weights(model, ckpt / "model.safetensors")
    return Run(run_dir, config, model.to(device).eval(), step, ckpt)


def find_latest_run(runs_root: str | Path, env_name: str, exp_name: str, argument: str = "diffusion_run") -> Path:
    """Newest run folder (by name, i.e. time) under runs_root/env_name/exp_name that has a checkpoint."""
    root = Path(runs_root) / env_name / exp_name
    runs = sorted(p for p in root.glob("*") if latest_checkpoint(p) is not None) if root.is_dir() else []
    if not runs:
        raise FileNotFoundError(
            f"no trained run found in {root}. Train one first with `python train.py` "
            f"(env={env_name}, exp_name={exp_name}), or pass {argument}=/path/to/run"
        )
    return runs[-1]


def check_env_dims(env, dims: dict[str, int], run_path: str | Path) -> None:
    """Refuse a run whose observation/action dims differ from the env's, naming both."""
    env_dims = {"observation_dim": env.observation_space.shape[0], "action_dim": env.action_space.shape[0]}
    for key, value in env_dims.items():
        if dims[key] != value:
            raise ValueError(
                f"run {run_path} was trained with {key}={dims[key]} but env '{env.spec.id}' has {key}={value}; "
                "evaluate it on the env it was trained for"
            )


def check_compatible(diffusion: Run, value: Run, discount: float) -> None:
    """Refuse a diffusion/value pair that was not trained on the same data and settings, naming both sides.

    Compares horizon, diffusion steps, dims, normalizer kind and statistics, and the value run's discount with the
    planning config's, so the original's 0.99/0.997 mismatch cannot happen silently.
    """
    a, b = diffusion.config, value.config
    if b["model"]["kind"] != "value":
        raise ValueError(f"value_run {value.path} holds a '{b['model']['kind']}' model, not a value model")
    pairs = {
        "horizon": (a["horizon"], b["horizon"]),
        "diffusion.n_diffusion_steps": (a["diffusion"]["n_diffusion_steps"], b["diffusion"]["n_diffusion_steps"]),
        "dims": (a["dims"], b["dims"]),
        "env.normalizer": (a["env"]["normalizer"], b["env"]["normalizer"]),
    }
    for key, (x, y) in pairs.items():
        if x != y:
            raise ValueError(f"diffusion run {diffusion.path} has {key}={x} but value run {value.path} has {key}={y}")
    if b["env"]["discount"] != discount:
        raise ValueError(
            f"value run {value.path} was trained with discount {b['env']['discount']} but planning uses "
            f"env.discount={discount}; retrain the value model or pass env.discount={b['env']['discount']}"
        )
    check_same_normalizer(diffusion, value, "value run")


def check_critic_compatible(diffusion: Run, critic: Run, kind: str = "iql", what: str = "critic run") -> None:
    """Refuse a run beside the diffusion run (an IQL critic; inverse or forward dynamics, kind "invdyn" or "dynamics")
    that was not trained on the diffusion run's data, naming both: model kind, dataset, dims, normalizer kind and
    statistics."""
    a, b = diffusion.config, critic.config
    if b["model"]["kind"] != kind:
        wanted, experiment = {"iql": ("an IQL critic", "locomotion_iql"),
                              "invdyn": ("an inverse-dynamics model", "locomotion_invdyn"),
                              "dynamics": ("a forward dynamics model", "locomotion_dynamics")}[kind]
        raise ValueError(f"{what.replace(' ', '_')} {critic.path} holds a '{b['model']['kind']}' model, not "
                         f"{wanted} (train one with `python train.py experiment={experiment}`)")
    pairs = {
        "env.name": (a["env"]["name"], b["env"]["name"]),
        "env.dataset": (a["env"].get("dataset"), b["env"].get("dataset")),
        "dims": (a["dims"], b["dims"]),
        "env.normalizer": (a["env"]["normalizer"], b["env"]["normalizer"]),
    }
    for key, (x, y) in pairs.items():
        if x != y:
            raise ValueError(f"diffusion run {diffusion.path} has {key}={x} but {what} {critic.path} has {key}={y}")
    check_same_normalizer(diffusion, critic, what)


def check_same_normalizer(diffusion: Run, other: Run, what: str) -> None:
    """Refuse a run whose normalizer statistics differ from the diffusion run's (fitted on other data)."""
    theirs = other.model.normalizer.state_dict()
    for name, stat in diffusion.model.normalizer.state_dict().items():
        if not torch.allclose(stat, theirs[name].to(stat.device), rtol=1e-5, atol=1e-6):
            raise ValueError(
                f"normalizer statistics '{name}' differ between diffusion run {diffusion.path} and {what} "
                f"{other.path}: they were fitted on different data"
            )
