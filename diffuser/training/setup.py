"""Run-folder setup for train.py: resume an existing folder, record the resolved config, open the logger."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

import diffuser
from diffuser.config import TrainConfig
from diffuser.data.minari import describe_minari, is_minari, parse_minari_name
from diffuser.data.sequence import SequenceDataset
from diffuser.runs.checkpoint import read_config, write_config
from diffuser.runs.git import write_git_info
from diffuser.runs.logger import Logger

# written by record_config, not in TrainConfig
DERIVED_KEYS = ("dims", "dataset_path", "dataset_info", "version", "value_target_statistics")


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
    if getattr(dataset, "targets", "raw") == "standardized":  # value predictions ×std + mean are discounted returns
        mean, std = dataset.target_statistics
        record["value_target_statistics"] = {"mean": mean, "std": std}
    if is_minari(config.env.dataset):  # what the data is and how plan.py scores it (env version, reference scores)
        record["dataset_info"] = describe_minari(parse_minari_name(config.env.dataset)).record()
    record["version"] = diffuser.__version__
    write_config(Path(config.run_dir), record)
    return record


def open_train_run(config: TrainConfig, dataset: SequenceDataset, dataset_path: Path, world_size: int) -> Logger:
    """Write the run folder's config.yaml and git info and start the run's logger (rank 0 only)."""
    run_dir = Path(config.run_dir)
    record = record_config(config, dataset, dataset_path)
    record["git_commit"] = write_git_info(run_dir)
    record["world_size"] = world_size
    return Logger(
        run_dir, **dataclasses.asdict(config.logger), job_type="train", config=record,
        group=f"{config.env.name}-{config.exp_name}",
        name=f"{config.env.name}__{config.exp_name}__s{config.seed}__{run_dir.name}",
    )
