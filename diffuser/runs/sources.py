"""Weights of other implementations under our key names: the original Diffuser code's ``state_*.pt`` and diffusers'
``UNet1DModel`` folders. Read by ``tools/import_weights.py`` (into run folders) and ``runs/pretrained.py`` (into a
pipeline). Files are read with safetensors or ``torch.load(weights_only=True)``: never arbitrary pickled objects.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from diffuser.models.key_maps import (
    Architecture,
    diffusers_architecture,
    diffusers_scheduler_settings,
    diffusers_to_ours,
    infer_architecture,
    original_to_ours,
    original_wrapper_settings,
    split_original_state,
)

DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
DIFFUSERS_SUBFOLDERS = {"diffusion": "unet", "value": "value_function"}


@dataclass
class SourceWeights:
    """Network weights read from another implementation, already under our key names."""

    state: dict[str, Tensor]
    arch: Architecture
    step: int
    record: dict[str, Any]  # provenance, written to config.yaml as `imported_from`
    schedule: dict[str, Tensor] = field(default_factory=dict)  # the original's wrapper buffers, checked vs ours


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def torch_load_weights(path: Path, what: str) -> Any:
    """torch.load with weights_only=True (tensors and plain containers only); a refusal is one line naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError, AttributeError,
            pickle.UnpicklingError) as e:
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{path}: not a readable {what} ({type(e).__name__}: {reason}); only tensors and plain "
                         "containers are loaded (weights_only=True), never arbitrary pickled objects") from None


def _state_dict(value: Any, source: str, what: str) -> dict[str, Tensor]:
    if not isinstance(value, Mapping) or not value or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items()
    ):
        raise ValueError(f"{source}: '{what}' is not a state dict (a mapping of names to tensors)")
    return dict(value)


def read_original(path: Path, weights: str = "ema") -> SourceWeights:
    """An original ``state_*.pt`` ({'step', 'model', 'ema'}): its ``weights`` entry (EMA by default, as the original
    plans with) under our key names, with the wrapper's schedule buffers kept for checking."""
    data = torch_load_weights(Path(path), "original Diffuser checkpoint")
    if not isinstance(data, Mapping) or weights not in data:
        found = sorted(map(str, data))[:6] if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(f"{path}: not an original Diffuser checkpoint: expected a dict with 'step', 'model' and "
                         f"'ema' (trainer.save's state_*.pt), found {found}")
    step = data.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"{path}: 'step' is {step!r}, not a non-negative int")
    net, wrapper, kind = split_original_state(_state_dict(data[weights], str(path), weights), str(path))
    state, layout = original_to_ours(net, kind)
    arch = original_wrapper_settings(wrapper, infer_architecture(state, kind, str(path)))
    record = {"source": "original", "path": str(Path(path).resolve()), "sha256": file_sha256(Path(path)),
              "weights": weights, "step": step, "layout": layout}
    return SourceWeights(state, arch, step, record, wrapper)


def diffusers_folder(folder: Path, kind: str | None) -> Path:
    """The model folder holding config.json: ``folder`` itself, or a pipeline's unet/ or value_function/."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"diffusers folder {folder} not found")
    if (folder / "config.json").is_file():
        return folder
    present = [k for k, sub in DIFFUSERS_SUBFOLDERS.items() if (folder / sub / "config.json").is_file()]
    if kind in present:
        return folder / DIFFUSERS_SUBFOLDERS[kind]
    if len(present) == 1 and kind is None:
        return folder / DIFFUSERS_SUBFOLDERS[present[0]]
    if present:
        raise ValueError(f"{folder} is a pipeline folder holding {[DIFFUSERS_SUBFOLDERS[k] for k in present]}: "
                         f"pass --kind diffusion (unet/) or --kind value (value_function/)")
    raise FileNotFoundError(f"no config.json in {folder} (nor in its unet/ or value_function/): not a diffusers "
                            "model folder")


def read_diffusers(folder: Path, kind: str | None = None) -> SourceWeights:
    """A UNet1DModel folder (config.json + diffusion_pytorch_model.safetensors or .bin) under our key names; N
    and the prediction type come from a scheduler/scheduler_config.json beside it when there is one."""
    folder = diffusers_folder(folder, kind)
    config_path = folder / "config.json"
    arch = diffusers_architecture(read_json(config_path), str(config_path))
    record: dict[str, Any] = {"source": "diffusers", "path": str(folder.resolve())}
    for scheduler_path in (folder.parent / "scheduler" / "scheduler_config.json",
                           folder / "scheduler" / "scheduler_config.json"):
        if scheduler_path.is_file():
            scheduler = read_json(scheduler_path)
            arch = diffusers_scheduler_settings(scheduler, arch, str(scheduler_path))
            record["scheduler"] = {k: v for k, v in scheduler.items() if not k.startswith("_")}
            break
    weights = next((folder / name for name in DIFFUSERS_WEIGHTS if (folder / name).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"no {' or '.join(DIFFUSERS_WEIGHTS)} in {folder}")
    if weights.suffix == ".safetensors":
        try:
            raw = load_file(str(weights))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{weights}: not a readable safetensors file ({e})") from None
    else:
        raw = torch_load_weights(weights, "diffusers weights file")
    state = diffusers_to_ours(_state_dict(raw, str(weights), "weights"), arch.kind, str(weights))
    record.update(weights_file=weights.name, sha256=file_sha256(weights), step=0)
    return SourceWeights(state, arch, 0, record)


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value
