"""Run-folder setup for train.py: the folder of a multirun job, resume an existing folder, record the resolved config,
draw samples."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

import diffuser
from diffuser.config import TrainConfig
from diffuser.data.minari import describe_minari, is_minari, parse_minari_name
from diffuser.data.sequence import SequenceDataset
from diffuser.runs.checkpoint import read_config, write_config
from diffuser.runs.logger import Logger

DERIVED_KEYS = ("dims", "dataset_path", "dataset_info", "version")  # written by record_config, not in TrainConfig


def job_run_dir(run_dir: str) -> str:
    """In a multirun (-m), the folder Hydra made for this job (hydra.sweep.subdir of train.yaml), unless run_dir was
    given on the command line: parallel jobs with the same seed then never share (and resume) one run folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return run_dir
    hydra = HydraConfig.get()
    given = any(o.lstrip("+~").split("=")[0] == "run_dir" for o in hydra.overrides.task)
    return hydra.runtime.output_dir if hydra.mode == RunMode.MULTIRUN and not given else run_dir


def drop_stray_job_folder(own: str, agreed: str) -> None:
    """Remove the folder Hydra made for this rank when it differs from rank 0's (SLURM tasks compose the config
    one by one, so their timestamped job folders can differ by a second); only Hydra's own files are in it."""
    path = Path(own)
    if path.resolve() != Path(agreed).resolve() and path.is_dir():
        names = {p.name for p in path.iterdir()}
        if names <= {".hydra", "train.log"}:
            shutil.rmtree(path, ignore_errors=True)


def resume_config(config: TrainConfig) -> TrainConfig:
    """If config.run_dir already holds a run, return its saved config (only trainer.n_train_steps may change, and
    run_dir is where the folder is now)."""
    run_dir = Path(config.run_dir)
    if not (run_dir / "config.yaml").is_file():
        return config
    saved = {k: v for k, v in read_config(run_dir).items() if k not in DERIVED_KEYS}
    if "imported_from" in saved:
        raise ValueError(
            f"{run_dir} holds imported weights ({saved['imported_from'].get('source', 'another implementation')}) "
            "with no trainer state to resume: plan with it, or train into a new run_dir"
        )
    saved_cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), saved)
    resumed: TrainConfig = OmegaConf.to_object(saved_cfg)  # type: ignore[assignment]
    resumed.trainer.n_train_steps = config.trainer.n_train_steps
    resumed.run_dir = config.run_dir  # the folder as it is now (it may have been moved or copied since)
    ignored = _differences(dataclasses.asdict(config), dataclasses.asdict(resumed))
    if ignored:
        print(f"resuming {run_dir} with its saved config; ignoring different values for: {', '.join(ignored)}")
    return resumed


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in a:
        if isinstance(a[key], dict) and isinstance(b.get(key), dict):
            out += _differences(a[key], b[key], f"{prefix}{key}.")
        elif a[key] != b.get(key):
            out.append(prefix + key)
    return out


def record_config(config: TrainConfig, dataset: SequenceDataset, dataset_path: Path) -> dict[str, Any]:
    """Write run_dir/config.yaml: the resolved config plus derived dims, dataset file (and, for Minari data, what
    it is: ``dataset_info``) and package version."""
    record = dataclasses.asdict(config)
    record["dims"] = {
        "observation_dim": dataset.observation_dim,
        "action_dim": dataset.action_dim,
        "transition_dim": dataset.transition_dim,
    }
    record["dataset_path"] = str(dataset_path)
    if is_minari(config.env.dataset):  # what the data is and how plan.py scores it (env version, reference scores)
        record["dataset_info"] = describe_minari(parse_minari_name(config.env.dataset)).record()
    record["version"] = diffuser.__version__
    write_config(Path(config.run_dir), record)
    return record


def sample_plans(model: nn.Module, dataset: SequenceDataset, n_samples: int, seed: int) -> np.ndarray:
    """Plans sampled from the conditions (start, and goal for Maze2D) of random dataset windows, with the model the
    trainer passes (its EMA copy): unnormalized observations (n_samples, H, observation_dim)."""
    idx = np.random.default_rng(seed).choice(len(dataset), n_samples)
    device = next(model.parameters()).device
    batch = dataset.get_batch(idx).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    trajectories = model.conditional_sample(batch.conditions, generator=generator).trajectories
    return model.unnormalize(trajectories)[..., model.action_dim :].cpu().numpy()


def maze2d_sample_fn(
    dataset: SequenceDataset, logger: Logger, run_dir: Path, env_name: str, n_samples: int, seed: int
) -> Callable[[nn.Module, int], None]:
    """Every call samples plans between the start and end states of random windows and logs their picture."""
    from diffuser.envs.maze2d import MAZE2D_SPECS, parse_maze
    from diffuser.utils.rendering import save_maze2d_figure

    maze_arr = parse_maze(MAZE2D_SPECS[env_name].layout)

    def sample(model: nn.Module, step: int) -> None:
        observations = sample_plans(model, dataset, n_samples, seed + step)
        path = Path(run_dir) / "media" / f"samples_{step:07d}.png"
        image = save_maze2d_figure(path, maze_arr, list(observations), list(observations[:, -1, :2]))
        logger.log_image("media/plan", image, step)

    return sample


def locomotion_sample_fn(
    dataset: SequenceDataset, logger: Logger, run_dir: Path, env_name: str, gym_version: str, n_samples: int,
    seed: int,
) -> Callable[[nn.Module, int], None] | None:
    """Every call samples plans from the first states of random windows and logs their MuJoCo composites, one row
    per plan. None (with a warning) when MuJoCo cannot render here, so training goes on without pictures."""
    from diffuser.utils.rendering import LocomotionRenderer, save_image, stack_images

    try:
        renderer = LocomotionRenderer.for_env(env_name, gym_version)
    except Exception as error:  # no OpenGL backend: mujoco raises from its own GL loaders
        print(f"warning: sampled plans will not be rendered ({type(error).__name__}: {error}); "
              "set MUJOCO_GL=egl or MUJOCO_GL=osmesa for offscreen rendering")
        return None

    def sample(model: nn.Module, step: int) -> None:
        observations = sample_plans(model, dataset, n_samples, seed + step)
        image = stack_images([renderer.composite(o, every=max(1, len(o) // 8)) for o in observations])
        save_image(Path(run_dir) / "media" / f"samples_{step:07d}.png", image)
        logger.log_image("media/plan", image, step)

    return sample


def make_sample_fn(
    dataset: SequenceDataset, logger: Logger, run_dir: Path, *, model_kind: str, env_name: str, gym_version: str,
    n_samples: int, seed: int,
) -> Callable[[nn.Module, int], None] | None:
    """The trainer's every-sample_freq picture of sampled plans: Maze2D paths or locomotion MuJoCo composites;
    None for value and BC models, which sample nothing."""
    from diffuser.envs.locomotion import is_locomotion

    if model_kind != "diffusion":
        return None
    if is_locomotion(env_name):
        return locomotion_sample_fn(dataset, logger, run_dir, env_name, gym_version, n_samples, seed)
    return maze2d_sample_fn(dataset, logger, run_dir, env_name, n_samples, seed)
