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
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import diffuser
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
