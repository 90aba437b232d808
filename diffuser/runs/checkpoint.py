"""Run folders: resolved config.yaml, safetensors weights (EMA, normalizer included) and trainer state for resuming.

runs/<env>/<exp_name>/<time>_s<seed>/
  config.yaml  metrics.jsonl  git.txt  git.diff  media/
  checkpoints/step_0001000/model.safetensors   EMA weights + normalizer buffers; metadata: step, version, sha256
  checkpoints/step_0001000/trainer_state.pt    raw weights, EMA, optimizer, step, RNG: resume only
  checkpoints/latest.txt                       name of the newest step folder
"""

from __future__ import annotations

import hashlib
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import diffuser
from diffuser.config import DiffusionConfig, ModelConfig
from diffuser.diffusion.normalization import make_normalizer
from diffuser.runs.build import build_model
from diffuser.utils.files import atomic_path, atomic_write_text


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted: unreadable, altered since it was saved, or holding NaN/inf."""


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Write the resolved config (plus derived values) as config.yaml."""
    atomic_write_text(Path(run_dir) / "config.yaml", yaml.safe_dump(config, sort_keys=False))


def read_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: '{run_dir}' is not a run folder (made by train.py)")
    return yaml.safe_load(path.read_text())


def weights_digest(state: dict[str, torch.Tensor], step: int) -> str:
    """sha256 over the step and the names, dtypes, shapes and bytes of a state dict (safetensors has no checksum)."""
    digest = hashlib.sha256(f"step={step}|".encode())
    for key in sorted(state):
        value = state[key].detach().contiguous().cpu()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_finite(state: dict[str, torch.Tensor], what: str, hint: str) -> None:
    """Raise CheckpointError naming ``what`` and the first tensor holding NaN or inf, with counts and ``hint``."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            n_nan, n_inf = int(torch.isnan(value).sum()), int(torch.isinf(value).sum())
            raise CheckpointError(f"{what}: '{key}' holds {n_nan} NaN and {n_inf} inf values out of "
                                  f"{value.numel()}; {hint}")


def save_checkpoint(
    run_dir: Path, step: int, ema_model: nn.Module, trainer_state: dict[str, Any], keep: int = 0
) -> Path:
    """Write checkpoints/step_XXXXXXX/{model.safetensors, trainer_state.pt} atomically, update latest.txt and keep
    only the newest ``keep`` step folders (0 keeps all).

    Weights holding NaN/inf are refused before anything is written, so the previous checkpoint stays the latest.
    model.safetensors records a sha256 of its step and tensors (metadata "sha256") that load_weights verifies.
    Temp entries left in checkpoints/ by an interrupted save are removed.
    """
    ckpt_root = Path(run_dir) / "checkpoints"
    name = f"step_{step:07d}"
    state = {k: v.detach().contiguous().cpu() for k, v in ema_model.state_dict().items()}
    check_finite(state, f"EMA weights at step {step}", "not saved; the previous checkpoint stays the latest")
    final = ckpt_root / name
    metadata = {"step": str(step), "version": diffuser.__version__, "sha256": weights_digest(state, step)}
    with atomic_path(final, folder=True) as tmp:
        save_file(state, tmp / "model.safetensors", metadata=metadata)
        torch.save(trainer_state, tmp / "trainer_state.pt")
    atomic_write_text(ckpt_root / "latest.txt", name + "\n")
    if keep > 0:
        for old in sorted(p for p in ckpt_root.glob("step_*") if p.is_dir())[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    for stale in ckpt_root.glob(".*"):  # temp folders/files of a save that was killed
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest step folder named in checkpoints/latest.txt, or None."""
    latest = Path(run_dir) / "checkpoints" / "latest.txt"
    if not latest.is_file():
        return None
    path = latest.parent / latest.read_text().strip()
    return path if path.is_dir() else None


def load_trainer_state(checkpoint_dir: Path) -> dict[str, Any]:
    """trainer_state.pt, read with weights_only=True (tensors and plain containers only).

    A truncated or damaged file raises CheckpointError naming it.
    """
    path = Path(checkpoint_dir) / "trainer_state.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError("no 'step' entry")
    except FileNotFoundError:
        raise
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError, pickle.UnpicklingError) as e:
        raise CheckpointError(f"{path}: not a readable trainer state ({type(e).__name__}: {str(e)[:200]}); "
                              "delete this step folder and point checkpoints/latest.txt at an earlier one") from e
    return state


def load_weights(module: nn.Module, path: Path) -> int:
    """Load a model.safetensors into ``module`` (strict); returns its step. Shape mismatches name both shapes.

    Raises CheckpointError naming the file when it is unreadable (truncated, damaged header), when its tensors no
    longer match the sha256 recorded at save time, or when they hold NaN/inf.
    """
    try:
        state = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    try:
        step = int(metadata.get("step", -1))
    except ValueError:
        raise CheckpointError(f"{path}: metadata step {metadata['step']!r} is not an integer; the file is damaged") \
            from None
    if "sha256" in metadata and weights_digest(state, step) != metadata["sha256"]:
        raise CheckpointError(f"{path}: step and tensors do not match the checksum saved with them; the file was "
                              "altered or damaged after saving")
    check_finite(state, str(path), "the weights diverged or the file is damaged; load an earlier checkpoint")
    own = module.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(f"{path}: '{key}' has shape {tuple(value.shape)} but the model expects "
                             f"{tuple(own[key].shape)}")
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    module.load_state_dict(state, strict=True)
    return step


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
    other = value.model.normalizer.state_dict()
    for name, stat in diffusion.model.normalizer.state_dict().items():
        if not torch.allclose(stat, other[name].to(stat.device), rtol=1e-5, atol=1e-6):
            raise ValueError(
                f"normalizer statistics '{name}' differ between diffusion run {diffusion.path} and value run "
                f"{value.path}: they were fitted on different data"
            )
