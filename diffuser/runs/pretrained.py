"""Pipeline folders in Hugging Face diffusers' layout, written and read here; and the run pair a path names.

A folder as the hub's ``hopper-medium-v2`` ValueGuidedRLPipeline, plus what diffusers' folders lack::

  model_index.json                        diffusers' pipeline index (unet, value_function, scheduler)
  unet/config.json                        UNet1DModel config of the TemporalUnet
  unet/diffusion_pytorch_model.safetensors
  value_function/config.json              UNet1DModel config of the ValueFunction
  value_function/diffusion_pytorch_model.safetensors
  scheduler/scheduler_config.json         DDPMScheduler / DDIMScheduler config (N, cosine betas, x0 or ε)
  normalizer/normalizer.safetensors       ours: the per-dimension statistics the networks were trained with
  pipeline_config.json                    ours: env, horizon, dims, normalizer kind, sampler, provenance

``diffusers.UNet1DModel.from_pretrained(folder, subfolder="unet")`` reads our networks; a hub folder (no
normalizer/ or pipeline_config.json) reads here when its env (and, for the normalizer, its dataset) is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import diffuser
from diffuser.config import DiffusionConfig, ModelConfig
from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.diffusion.normalization import GaussianNormalizer, Normalizer, make_normalizer, scalar_statistics
from diffuser.diffusion.schedulers import DDIMScheduler, DDPMScheduler
from diffuser.models.key_maps import diffusers_config, infer_architecture, load_mapped, ours_to_diffusers
from diffuser.runs.build import build_model
from diffuser.runs.load import Run, check_compatible, find_latest_run, load_run
from diffuser.runs.sources import read_diffusers, read_json
from diffuser.utils.files import atomic_path

COMPONENTS = {"unet": "config.json", "value_function": "config.json", "scheduler": "scheduler_config.json"}
WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_VERSION = "0.42.1"  # the version whose UNet1DModel and schedulers the tests load these folders with
HUB_HORIZON = 32  # the hub's hopper-medium-v2 networks (their configs do not record it)


@dataclass
class PretrainedParts:
    """What a pipeline is built from: the diffusion model (normalizer inside), the value model or None, the
    scheduler, the env name (None where unknown) and a record of where they came from."""

    unet: GaussianDiffusion
    value: GaussianDiffusion | None
    scheduler: DDPMScheduler
    env_name: str | None
    record: dict[str, Any]


# ---------------------------------------------------------------------------------------------------- run folders
def run_pair(path: Path, value_path: Path | None, checkpoint: str | None, device: str) -> PretrainedParts:
    """A diffusion run (or an experiment folder: its newest run) and its value run: ``value_path``, else the newest
    run of ``<exp_name>_value`` beside it (where train.py puts experiment=locomotion_cpu_value's)."""
    if not (path / "config.yaml").is_file():  # an experiment folder: runs/<env>/<exp_name>
        path = find_latest_run(path.parent.parent, path.parent.name, path.name, argument="path")
    run = load_run(path, device, checkpoint)
    if run.config["model"]["kind"] != "diffusion":
        raise ValueError(f"{path} holds a '{run.config['model']['kind']}' model: pass the diffusion run first and "
                         "the value run as value_path")
    if value_path is None:
        experiment = path.parent  # runs/<env>/<exp_name>
        value_path = find_latest_run(experiment.parent.parent, experiment.parent.name, f"{experiment.name}_value",
                                     argument="value_path")
    elif not (Path(value_path) / "config.yaml").is_file():
        value_path = find_latest_run(Path(value_path).parent.parent, Path(value_path).parent.name,
                                     Path(value_path).name, argument="value_path")
    value = load_run(value_path, device)
    check_compatible(run, value, value.config["env"]["discount"])
    record = {"unet": _run_record(run), "value_function": _run_record(value)}
    return PretrainedParts(run.model, value.model, DDPMScheduler(), run.config["env"]["name"], record)


def _run_record(run: Run) -> dict[str, Any]:
    return {"run": str(run.path.resolve()), "checkpoint": run.checkpoint.name, "step": run.step}


# ---------------------------------------------------------------------------------------------------- writing
def save_pipeline(
    folder: Path, unet: GaussianDiffusion, value: GaussianDiffusion | None, scheduler: DDPMScheduler, *,
    env_name: str | None, compatibility: str, record: dict[str, Any], overwrite: bool = False,
) -> Path:
    """Write the layout above into ``folder`` atomically (a new folder; an existing one only with ``overwrite``)."""
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} already exists: pass overwrite=True to replace it, or another folder")
    if not _is_cosine(unet):
        raise ValueError("only the cosine beta schedule has a diffusers counterpart (squaredcos_cap_v2); "
                         "this model was trained with another")
    nets = {"unet": ("diffusion", unet.model)}
    if value is not None:
        nets["value_function"] = ("value", value.model)
    with atomic_path(folder, folder=True) as tmp:
        index = {"_class_name": "ValueGuidedRLPipeline", "_diffusers_version": DIFFUSERS_VERSION,
                 "scheduler": ["diffusers", type(scheduler).__name__]}
        for name, (kind, net) in nets.items():
            state = net.state_dict()
            arch = infer_architecture(state, kind, f"the {name}")
            if arch.attention:
                raise ValueError(f"the {name} has attention blocks (HalfCheetah preset), which diffusers' UNet1DModel "
                                 "lacks: keep its run folder instead")
            (tmp / name).mkdir()
            config = {**diffusers_config(kind, arch.transition_dim, arch.dim, arch.dim_mults),
                      "_diffusers_version": DIFFUSERS_VERSION}
            _write_json(tmp / name / "config.json", config)
            save_file(ours_to_diffusers(state, kind, f"the {name}"), str(tmp / name / WEIGHTS), {"format": "pt"})
            index[name] = ["diffusers", "UNet1DModel"]
        (tmp / "scheduler").mkdir()
        _write_json(tmp / "scheduler" / "scheduler_config.json", scheduler_config(unet, scheduler))
        (tmp / "normalizer").mkdir()
        normalizer = {k: v.detach().cpu().contiguous() for k, v in unet.normalizer.state_dict().items()}
        save_file(normalizer, str(tmp / "normalizer" / "normalizer.safetensors"), {"format": "pt"})
        _write_json(tmp / "model_index.json", index)
        _write_json(tmp / "pipeline_config.json", {
            "env": env_name, "horizon": unet.horizon, "observation_dim": unet.observation_dim,
            "action_dim": unet.action_dim, "normalizer": _normalizer_kind(unet.normalizer),
            "clip_denoised": unet.clip_denoised, "value_horizon": value.horizon if value is not None else None,
            "scheduler": {"name": scheduler.name, "n_sample_steps": scheduler.n_sample_steps,
                          "eta": getattr(scheduler, "eta", 0.0)},
            "compatibility": compatibility, "diffuser_version": diffuser.__version__, "sources": record,
        })
    return folder


def scheduler_config(unet: GaussianDiffusion, scheduler: DDPMScheduler) -> dict[str, Any]:
    """diffusers' scheduler_config.json for the model's training schedule (what diffusers' own DDPM/DDIM read)."""
    config = {
        "_class_name": type(scheduler).__name__, "_diffusers_version": DIFFUSERS_VERSION,
        "num_train_timesteps": unet.n_diffusion_steps, "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": "epsilon" if unet.predict_epsilon else "sample", "clip_sample": unet.clip_denoised,
        "clip_sample_range": 1.0,
    }
    if isinstance(scheduler, DDIMScheduler):
        config.update(set_alpha_to_one=True, steps_offset=0, timestep_spacing="linspace")
    else:
        config.update(variance_type="fixed_small_log")
    return config


def _is_cosine(unet: GaussianDiffusion) -> bool:
    from diffuser.diffusion.schedule import cosine_beta_schedule

    betas = unet.schedule.betas.detach().cpu()
    return bool(torch.allclose(betas, cosine_beta_schedule(len(betas)), rtol=1e-5, atol=1e-7))


def _normalizer_kind(normalizer: Normalizer) -> str:
    from diffuser.diffusion.normalization import NORMALIZERS

    return next(name for name, cls in NORMALIZERS.items() if type(normalizer) is cls)


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------------- reading
def is_pipeline_folder(path: Path) -> bool:
    """A folder in diffusers' layout (model_index.json, or any of its component folders)."""
    return (path / "model_index.json").is_file() or any((path / name).is_dir() for name in COMPONENTS)


def read_pipeline(
    folder: Path, env: Any, compatibility: str, device: str, horizon: int | None = None
) -> PretrainedParts:
    """Our networks, normalizer and scheduler from a folder in diffusers' layout, ours or the hub's.

    The hub's folders record neither the horizon (``horizon``, else 32: theirs), the dims (read from ``env``) nor the
    normalizer: it is fitted on ``env.get_dataset()`` (per dimension, or diffusers' one mean/std per key in the
    compatibility mode), the data path diffusers itself takes.
    """
    folder = Path(folder)
    missing = [f"{name}/{config}" for name, config in COMPONENTS.items() if not (folder / name / config).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} has no {', '.join(missing)}: a ValueGuidedRLPipeline folder holds unet/, "
                                "value_function/ and scheduler/")
    meta = read_json(folder / "pipeline_config.json") if (folder / "pipeline_config.json").is_file() else {}
    observation_dim, action_dim = meta.get("observation_dim"), meta.get("action_dim")
    if observation_dim is None:
        if not hasattr(env, "observation_space"):
            raise ValueError(f"{folder} records no dims (no pipeline_config.json, as the hub's folders): pass env= "
                             "the gym/gymnasium env the networks were trained for")
        observation_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    sched = read_json(folder / "scheduler" / "scheduler_config.json")
    kind = sched.get("_class_name", "DDPMScheduler")
    if kind not in ("DDPMScheduler", "DDIMScheduler"):
        raise ValueError(f"{folder / 'scheduler'}: a {kind}; only DDPMScheduler and DDIMScheduler have a "
                         "counterpart here (diffuser.DDPMScheduler, diffuser.DDIMScheduler)")
    saved = meta.get("scheduler") or {}
    scheduler = (DDIMScheduler(saved.get("n_sample_steps"), saved.get("eta", 0.0)) if kind == "DDIMScheduler"
                 else DDPMScheduler(saved.get("n_sample_steps")))

    if (folder / "normalizer" / "normalizer.safetensors").is_file():
        normalizer = make_normalizer(meta.get("normalizer", "gaussian"), observation_dim + action_dim)
        state = _load_safetensors(folder / "normalizer" / "normalizer.safetensors")
        normalizer.load_state_dict(state, strict=True)
    elif callable(getattr(env, "get_dataset", None)):
        data = env.get_dataset()
        if compatibility == "diffusers":
            mean, std = scalar_statistics(data, action_dim, observation_dim)
            normalizer = GaussianNormalizer(observation_dim + action_dim)
            normalizer.mean.copy_(mean)
            normalizer.std.copy_(std)
        else:
            transitions = np.concatenate([np.asarray(data["actions"]), np.asarray(data["observations"])], axis=1)
            normalizer = GaussianNormalizer(observation_dim + action_dim).fit(transitions)
    else:
        raise FileNotFoundError(
            f"{folder} has no normalizer/ (diffusers' folders carry none): pass env= a D4RL-style env with "
            "get_dataset() to fit it, as diffusers does, or import the networks with "
            "`python -m diffuser.tools.import_weights diffusers`, which fits it on the dataset")

    horizon = horizon or meta.get("horizon", HUB_HORIZON)
    models = {}
    for name, model_kind in (("unet", "diffusion"), ("value_function", "value")):
        source = read_diffusers(folder / name)
        arch = source.arch
        if arch.kind != model_kind:
            raise ValueError(f"{folder / name} holds a {arch.kind} network, not the {name}")
        if arch.transition_dim != observation_dim + action_dim:
            raise ValueError(f"{folder / name} takes transition_dim {arch.transition_dim} but the pipeline's dims are "
                             f"action_dim {action_dim} + observation_dim {observation_dim} = "
                             f"{observation_dim + action_dim}")
        net_horizon = (meta.get("value_horizon") or horizon) if model_kind == "value" else horizon
        model = build_model(
            model_kind, normalizer, horizon=net_horizon, observation_dim=observation_dim, action_dim=action_dim,
            model=ModelConfig(kind=model_kind, dim=arch.dim, dim_mults=list(arch.dim_mults)),
            diffusion=DiffusionConfig(n_diffusion_steps=arch.n_diffusion_steps, predict_epsilon=arch.predict_epsilon,
                                      clip_denoised=bool(meta.get("clip_denoised", sched.get("clip_sample", False)))),
        )
        load_mapped(model.model, source.state, str(folder / name))
        models[name] = model.to(device).eval()
    record = {**meta.get("sources", {}), "folder": str(folder.resolve())}
    return PretrainedParts(models["unet"], models["value_function"], scheduler, meta.get("env"), record)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from None

